"""j-trVAE on a CUDA GPU: training samples/s, achieved FLOP/s as a fraction of the dense peak, and
encoding patches/s, for the paper's network (encoder 2×256, spatial MLP decoder 3×256, tanh, no
latent skips) with K = 4 classes, rotation and translation on, at 28×28 and 48×48.

    python benchmarks/bench_gpu.py [--batch 512] [--seconds 5] [--peak-bf16 989e12 --peak-tf32 495e12]

FLOPs are counted two ways: from the network shapes (formula below, multiply-add = 2 FLOPs,
backward = 2 × forward) and by torch.utils.flop_counter on one real step (matrix products only);
the fraction of peak uses the counted figure. Per image, forward, P = W² pixels, K classes, h = 256:

    encoder      2·(P·h + h·h + h·(2D + K + 8))          (+ the same MLP again for the canonical class head)
    decoder      2·P·2·h  +  K·P·(2·2·h² + 2·h)           (coordinates once; two h×h layers + output per class)

(the equivariant encoder's rows have the counted figure only). Encoding is timed through
``encode_array`` from host memory, as ``microvae encode`` runs: with ``--no-scores`` (the encoder
alone) and with scores (also 1 + K decoder passes over every pixel).

Writes results/gpu.json and results/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from microvae.models import JTRVAE, JTRVAEConfig, beta_schedule


def paper_config(size: int, **changes) -> JTRVAEConfig:
    return JTRVAEConfig(
        **(
            dict(
                image_size=size,
                n_classes=4,
                latent_dim=2,
                encoder_hidden=(256, 256),
                decoder_hidden=(256, 256, 256),
                latent_skips=False,
                canonical_class_head=False,
            )
            | changes
        )
    )


def shape_flops_per_image(config: JTRVAEConfig) -> float:
    """Training FLOPs per image (forward + backward) from the network shapes, matrix products only."""
    p, h, k, d = config.image_size**2, 256, config.n_classes, config.latent_dim
    encoder = 2 * (p * h + h * h + h * (2 * d + k + 8))
    if config.canonical_class_head:
        encoder += 2 * (p * h + h * h + h * k)
    decoder = 2 * p * 2 * h + k * p * (2 * 2 * h * h + 2 * h)
    return 3.0 * (encoder + decoder)


def timed(step, seconds: float) -> tuple[int, float]:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    torch.cuda.synchronize()
    return steps, time.perf_counter() - started


def train_step_fn(model: JTRVAE, x: torch.Tensor, precision: str, pixel_fraction: float = 1.0):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    betas = beta_schedule(0, 10, model.config)
    generator = torch.Generator(device=x.device).manual_seed(0)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            terms = model.loss_terms(x, generator, pixel_fraction=pixel_fraction)
            loss = model.weighted_loss(terms, betas)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


#: Training variants timed: the paper's network, with the canonical class head, with the equivariant encoder.
VARIANTS = {"paper": {}, "canonical class head": {"canonical_class_head": True}, "equivariant encoder": {"encoder": "equivariant"}}


def measure_training(size: int, precision: str, batch: int, seconds: float, variant: str) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = precision in ("tf32", "bf16")
    config = paper_config(size, **VARIANTS[variant])
    torch.manual_seed(0)
    model = JTRVAE(config).cuda()
    x = torch.rand(batch, 1, size, size, device="cuda")
    step = train_step_fn(model, x, precision)
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    counted = counter.get_total_flops() / batch
    steps, elapsed = timed(step, seconds)
    rate = steps * batch / elapsed
    return {
        "size": size,
        "precision": precision,
        "variant": variant,
        "batch": batch,
        "samples_per_s": rate,
        "flops_per_image_counted": counted,
        "flops_per_image_shapes": shape_flops_per_image(config) if config.encoder == "mlp" else None,
        "achieved_flops": rate * counted,
    }


@torch.no_grad()
def measure_encoding(size: int, precision: str, batch: int, seconds: float, scores: bool) -> dict:
    """``encode_array`` (the code behind ``microvae encode``) on host patches: the copy to the GPU,
    the encoder, and with ``scores`` the recon_error pass and the K-class −ELBO pass."""
    from microvae.encoding import encode_array

    torch.backends.cuda.matmul.allow_tf32 = precision in ("tf32", "bf16")
    model = JTRVAE(paper_config(size)).cuda().eval()
    patches = max(batch, 4 * batch if scores else 64 * batch)
    images = torch.rand(patches, 1, size, size).numpy()
    options = dict(recon_error=scores, neg_elbo=scores, amp=precision == "bf16", batch_size=batch, device="cuda")
    encode_array(model, images[:batch], **options)  # warm-up
    torch.cuda.synchronize()
    rounds, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or rounds == 0:
        encode_array(model, images, **options)
        rounds += 1
    elapsed = time.perf_counter() - started
    return {"size": size, "precision": precision, "batch": batch, "scores": scores, "patches_per_s": rounds * patches / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--encode-batch", type=int, default=8192)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--peak-bf16", type=float, default=989e12, help="dense bf16 peak FLOP/s (H100 SXM: 989e12)")
    parser.add_argument("--peak-tf32", type=float, default=495e12, help="dense TF32 peak FLOP/s (H100 SXM: 495e12)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    peaks = {"fp32": 67e12, "tf32": args.peak_tf32, "bf16": args.peak_bf16}
    device = torch.cuda.get_device_name()
    training, encoding = [], []
    for size in (28, 48):
        for precision in ("fp32", "tf32", "bf16"):
            for variant in VARIANTS:
                row = measure_training(size, precision, args.batch, args.seconds, variant)
                row["fraction_of_peak"] = row["achieved_flops"] / peaks[precision]
                training.append(row)
                print(
                    f"train {size}² {precision:4s} {variant:20s} {row['samples_per_s']:10.0f} samples/s "
                    f"{row['achieved_flops'] / 1e12:6.1f} TFLOP/s ({100 * row['fraction_of_peak']:.0f}% of "
                    f"{peaks[precision] / 1e12:.0f}); FLOPs/image counted {row['flops_per_image_counted'] / 1e9:.2f} G, "
                    f"shapes {(row['flops_per_image_shapes'] or float('nan')) / 1e9:.2f} G",
                    flush=True,
                )
        for precision in ("tf32", "bf16"):
            for scores in (False, True):
                row = measure_encoding(size, precision, args.encode_batch, args.seconds, scores)
                encoding.append(row)
                print(f"encode {size}² {precision:4s} scores={scores!s:5s} {row['patches_per_s']:12.0f} patches/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"device": device, "torch": torch.__version__, "batch": args.batch, "peaks": peaks}
    (args.out / "gpu.json").write_text(json.dumps({"meta": meta, "training": training, "encoding": encoding}, indent=2))
    lines = [
        f"<!-- python benchmarks/bench_gpu.py | {meta} -->",
        "| patch | precision | variant | samples/s | TFLOP/s | of peak |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['size']}² | {r['precision']} | {r['variant']} | {r['samples_per_s']:.0f} | "
        f"{r['achieved_flops'] / 1e12:.1f} | {100 * r['fraction_of_peak']:.0f}% |"
        for r in training
    ]
    lines += ["", "| patch | precision | scores | encode patches/s |", "|---|---|---|---|"]
    lines += [f"| {r['size']}² | {r['precision']} | {r['scores']} | {r['patches_per_s']:.0f} |" for r in encoding]
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

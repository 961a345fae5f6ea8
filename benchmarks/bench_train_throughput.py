"""Training throughput of the j-trVAE on CPU: samples/s of the full training step (forward, enumerated
ELBO over K classes, backward, Adam) for the paper's networks (encoder 2×256, spatial MLP decoder 3×256, tanh) at 28×28 and 48×48 with
K = 4, rotation and translation on, scoring all pixels, a quarter, and the default pixel fraction.

    python benchmarks/bench_train_throughput.py [--threads N] [--steps S] [--compile]

Writes results/train_throughput.json and .md. The side-by-side run against pyroVED's jiVAE and AtomAI's
jrVAE is bench_peers.py, which reuses this script's paper_config, training_step and time_steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from microvae.models import JTRVAEConfig, beta_schedule
from microvae.training import TrainConfig, build_model


def paper_config(size: int, **changes) -> JTRVAEConfig:
    """The paper's widths (encoder 2×256, spatial MLP decoder 3×256), K = 4, D = 2, rotation and
    translation on; every other field at microvae's default unless given in ``changes``."""
    return JTRVAEConfig(
        **(dict(image_size=size, n_classes=4, latent_dim=2, decoder="mlp", encoder_hidden=(256, 256), decoder_hidden=(256, 256, 256)) | changes)
    )


def training_step(config: JTRVAEConfig, x: torch.Tensor, pixel_fraction: float = 1.0, seed: int = 0, compiled: bool = False):
    """(step, model): ``step()`` is one iteration of microvae.training's inner loop on the batch ``x``
    (loss terms with the class enumerated, β-weighted loss, backward, Adam), on ``x``'s device;
    ``compiled``: the forward pass through ``torch.compile``, as ``train --compile`` runs it."""
    model = build_model(config, seed).to(x.device)
    if compiled:
        model.compile()
    optimizer = torch.optim.Adam(model.parameters(), lr=TrainConfig().lr)
    betas = beta_schedule(0, 10, config)
    generator = torch.Generator(device=x.device).manual_seed(seed)

    def step():
        terms = model(x, generator, pixel_fraction=pixel_fraction)  # forward = loss_terms
        loss = model.weighted_loss(terms, betas)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, model


def time_steps(step, batch: int, *, steps: int | None = None, seconds: float | None = None, warmup: int = 1, device: torch.device | str = "cpu") -> dict:
    """Run ``warmup`` untimed steps, then either ``steps`` steps or whole steps until ``seconds`` have
    passed (at least one); CUDA is synchronised before the clock starts and before it stops."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    done, started = 0, time.perf_counter()
    while True:
        step()
        done += 1
        if (done >= steps) if steps is not None else (time.perf_counter() - started >= (seconds or 0.0)):
            break
    sync()
    elapsed = time.perf_counter() - started
    return {"steps": done, "samples": done * batch, "seconds": elapsed, "samples_per_s": done * batch / elapsed}


def measure(size: int, batch: int, steps: int, pixel_fraction: float = 1.0, compiled: bool = False) -> float:
    step, _ = training_step(paper_config(size), torch.rand(batch, 1, size, size), pixel_fraction, compiled=compiled)
    return time_steps(step, batch, steps=steps, warmup=3 if compiled else 1)["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="also time the default-fraction step compiled (train --compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in (28, 48):
        for fraction in sorted({1.0, 0.25, TrainConfig().scored_fraction(size * size)}, reverse=True):
            rate = measure(size, args.batch, args.steps, fraction)
            label = "mlp" + ("" if fraction == 1.0 else f" (pixel_fraction {fraction:.3g})")
            rows.append({"size": size, "decoder": label, "samples_per_s": rate})
            print(f"{size}×{size}  {label:28s} {rate:9.1f} samples/s", flush=True)
        if args.compile:
            fraction = TrainConfig().scored_fraction(size * size)
            rate = measure(size, args.batch, args.steps, fraction, compiled=True)
            label = f"mlp (pixel_fraction {fraction:.3g}, compiled)"
            rows.append({"size": size, "decoder": label, "samples_per_s": rate})
            print(f"{size}×{size}  {label:28s} {rate:9.1f} samples/s", flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    meta = {
        "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load": list(np.round(__import__("os").getloadavg(), 2)),
    }
    (results / "train_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"<!-- python benchmarks/bench_train_throughput.py --threads {args.threads}{' --compile' if args.compile else ''} | {meta} -->",
        "| patch | decoder | samples/s |",
        "|---|---|---|",
    ]
    lines += [f"| {r['size']}×{r['size']} | {r['decoder']} | {r['samples_per_s']:.1f} |" for r in rows]
    (results / "train_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

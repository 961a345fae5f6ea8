"""Training throughput of the j-trVAE on CPU: samples/s of the full training step (forward, enumerated
ELBO over K classes, backward, Adam) for the paper's networks (encoder 2×256, decoder 3×256 tanh;
the resample decoder uses 2×256) at 28×28 and 48×48 with K = 4, rotation and translation on.

    python benchmarks/bench_train_throughput.py [--threads N] [--steps S]

Writes results/train_throughput.json and .md. Peers (pyroVED jiVAE, AtomAI jrVAE) are not run by this
script yet; ../shared/notes/peers.md reports their figures on the same kind of machine (pyroVED jiVAE,
28², width 256: about 20 samples/s; 48², width 256: about 5.4 samples/s).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from microvae.models import JTRVAE, JTRVAEConfig, beta_schedule


def measure(size: int, decoder: str, batch: int, steps: int, pixel_fraction: float = 1.0) -> float:
    hidden = (256, 256, 256) if decoder == "mlp" else (256, 256)
    config = JTRVAEConfig(image_size=size, n_classes=4, latent_dim=2, decoder=decoder, encoder_hidden=(256, 256), decoder_hidden=hidden)
    torch.manual_seed(0)
    model = JTRVAE(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, size, size)
    betas = beta_schedule(0, 10, config)
    generator = torch.Generator().manual_seed(0)

    def step():
        terms = model.loss_terms(x, generator, pixel_fraction=pixel_fraction)
        loss = model.weighted_loss(terms, betas)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in (28, 48):
        for decoder, fraction in (("mlp", 1.0), ("mlp", 0.25), ("resample", 1.0)):
            rate = measure(size, decoder, args.batch, args.steps, fraction)
            label = decoder + ("" if fraction == 1.0 else f" (pixel_fraction {fraction})")
            rows.append({"size": size, "decoder": label, "samples_per_s": rate})
            print(f"{size}×{size}  {label:28s} {rate:9.1f} samples/s", flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    meta = {"threads": args.threads, "batch": args.batch, "steps": args.steps, "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "load": list(np.round(__import__("os").getloadavg(), 2))}
    (results / "train_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"<!-- python benchmarks/bench_train_throughput.py --threads {args.threads} | {meta} -->", "| patch | decoder | samples/s |", "|---|---|---|"]
    lines += [f"| {r['size']}×{r['size']} | {r['decoder']} | {r['samples_per_s']:.1f} |" for r in rows]
    (results / "train_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

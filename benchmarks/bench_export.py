"""Export on a large scan: rendering every map of 100k patches onto a 4096×4096 grid and writing the
ImageJ TIFFs, timed per step (the PNG previews are excluded: matplotlib's cost does not depend on
microvae).

    python benchmarks/bench_export.py [--size 4096] [--patches 100000] [--classes 3] [--latent-dim 2]

Writes results/export.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from microvae.export import build_maps, write_tiff


def fake_encoded(n: int, classes: int, latent_dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    probs = rng.dirichlet(np.ones(classes), size=n).astype(np.float32)
    return {
        "class": probs.argmax(1),
        "class_probs": probs,
        "z_mean": rng.normal(size=(n, latent_dim)).astype(np.float32),
        "angle_rad": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        "shift_px": rng.normal(size=(n, 2)).astype(np.float32),
        "recon_error": rng.random(n).astype(np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(args.patches)))
    step = args.size / side  # a jittered lattice of patch centres
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[: args.patches]
    coords = (grid + 0.5) * step + rng.normal(0, 0.1 * step, size=grid.shape)
    encoded = fake_encoded(len(coords), args.classes, args.latent_dim, rng)
    radius = step  # every pixel covered
    started = time.perf_counter()
    maps = build_maps((args.size, args.size), coords, encoded, radius)
    render_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        for name, array in maps.maps.items():
            write_tiff(Path(folder) / f"{name}.tif", array, 0.01, "nm")
        tiff_s = time.perf_counter() - started
    row = {"size": args.size, "patches": len(coords), "maps": len(maps.maps), "render_s": render_s, "tiff_s": tiff_s, "coverage": maps.coverage}
    print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export.json").write_text(json.dumps(row, indent=2))
    (args.out / "export.md").write_text(
        "| scan | patches | maps | render all maps (s) | write TIFFs (s) |\n|---|---|---|---|---|\n"
        f"| {args.size}² | {len(coords)} | {len(maps.maps)} | {render_s:.1f} | {tiff_s:.1f} |\n"
    )


if __name__ == "__main__":
    main()

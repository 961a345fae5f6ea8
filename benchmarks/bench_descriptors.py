"""An independent check of the classical feature spaces on a generator the project never tuned on:
"molecules" of Gaussian atoms, three kinds, turned, scaled and moved, over a slow background,
under Poisson noise.

    OMP_NUM_THREADS=1 python benchmarks/bench_descriptors.py [--seeds 0 1 2] [--doses 30 10]
        [--n 600] [--threads 1] [--quick]

Generator: the zoo member ``molecules`` (:func:`microvae.zoo.make_molecules`, moved there from
this file on 2026-11-30; its own random stream, so its draws differ from this file's first
results): Gaussian atoms (sigma 1.3 px, amplitude 1), bond length 4 px; class 0 a dimer, class 1
a bent trimer (bond angle 120°), class 2 a linear trimer, in shares 60 / 30 / 10 %. Each molecule
turned uniformly in [0, 2π), its bond length scaled by U(0.85, 1.15), its centroid moved by U(±2)
px in row and col from the window centre; a random plane (range up to 0.3 across the window,
random direction) plus 0.2 below it; Poisson counts at ``dose`` per unit intensity; then one
global min–max (0.1 / 99.9 percentiles, clipped) over the whole set.

Spaces, each clustered by k-means (K = 3, ``standardize_columns=False``) with the seed:
:func:`microvae.baselines.object_descriptor` (scale-invariant, and sized: ``sized=True``),
:func:`microvae.baselines.fourier_descriptor` and :func:`microvae.baselines.pca_features`. Scores: matched accuracy and ARI against the generator's
classes, and the seconds of features + clustering. One row per (dose, seed, space) in
results/descriptors.json; results/descriptors.md: median and worst seed per (dose, space).
``--quick``: seed 0, dose 30, n = 300, to results/descriptors_quick.*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from microvae.artifacts import atomic_file
from microvae.baselines import cluster, fourier_descriptor, object_descriptor, pca_features
from microvae.metrics import adjusted_rand_index, matched_accuracy
from microvae.zoo import make_molecules

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SPACES = {
    "object descriptor": lambda patches, seed: object_descriptor(patches),
    "sized object descriptor": lambda patches, seed: object_descriptor(patches, sized=True),
    "Fourier descriptor": lambda patches, seed: fourier_descriptor(patches),
    "PCA": lambda patches, seed: pca_features(patches, seed=seed),
}


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through the project's temporary-file-and-rename (:func:`microvae.artifacts.atomic_file`)."""
    with atomic_file(path) as temp:
        temp.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--doses", type=float, nargs="+", default=[30.0, 10.0])
    parser.add_argument("--n", type=int, default=600, help="patches per (dose, seed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, dose 30, n = 300; writes results/descriptors_quick.*")
    args = parser.parse_args()
    name = "descriptors_quick" if args.quick else "descriptors"
    if args.quick:
        args.seeds, args.doses, args.n = [0], [30.0], 300
    torch.set_num_threads(args.threads)
    command = (
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} python benchmarks/bench_descriptors.py"
        + (" --quick" if args.quick else f" --seeds {' '.join(map(str, args.seeds))} --doses {' '.join(f'{d:g}' for d in args.doses)} --n {args.n}")
        + f" --threads {args.threads}"
    )
    meta = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"this 2-core machine ({platform.machine()}, {os.cpu_count()} CPUs)",
        "torch": torch.__version__,
        "n": args.n,
        "window": 24,
    }
    rows = []
    started_all = time.perf_counter()
    for dose in args.doses:
        for seed in args.seeds:
            case = make_molecules(seed, n=args.n, size="ci", dose=dose)
            patches, labels = case.patches, case.labels
            for space, features_of in SPACES.items():
                started = time.perf_counter()
                predicted = cluster(features_of(patches, seed), 3, method="kmeans", seed=seed, standardize_columns=False)
                seconds = time.perf_counter() - started
                row = {
                    "dose": dose,
                    "seed": seed,
                    "space": space,
                    "accuracy": matched_accuracy(labels, predicted),
                    "ari": adjusted_rand_index(labels, predicted),
                    "cluster_sizes": sorted(np.bincount(predicted, minlength=3).tolist(), reverse=True),
                    "seconds": seconds,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta["total_seconds"] = time.perf_counter() - started_all
    write_atomically(RESULTS / f"{name}.json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Classical feature spaces on Gaussian-atom molecules (an independent check)",
        "",
        f"`{command}` — {meta['date']}, {meta['machine']}, torch {meta['torch']}, {meta['total_seconds']:.0f} s in all.",
        "",
        f"{args.n} patches of {meta['window']} px per (dose, seed): dimers / bent trimers / linear trimers in 60 / 30 / 10 %, "
        "turned, scaled ± 15 %, moved ± 2 px, on a sloped background, Poisson noise at `dose` counts per unit intensity. "
        "k-means (K = 3) of each space; matched accuracy and ARI against the true kinds over seeds "
        f"{', '.join(map(str, args.seeds))}; seconds of features + clustering (median).",
        "",
        "| dose | space | accuracy median | accuracy worst | ARI median | accuracy per seed | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for dose in args.doses:
        for space in SPACES:
            mine = [row for row in rows if row["dose"] == dose and row["space"] == space]
            accuracies = [row["accuracy"] for row in mine]
            lines.append(
                f"| {dose:g} | {space} | {statistics.median(accuracies):.3f} | {min(accuracies):.3f} | "
                f"{statistics.median(row['ari'] for row in mine):.3f} | {' / '.join(f'{a:.3f}' for a in accuracies)} | "
                f"{statistics.median(row['seconds'] for row in mine):.2f} |"
            )
    write_atomically(RESULTS / f"{name}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

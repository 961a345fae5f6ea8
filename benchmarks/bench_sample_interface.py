"""The README's main job on the shipped real scan, at several seeds: do the two classes split along
the oxide interface?

    python benchmarks/bench_sample_interface.py [--seeds 0 1 2] [--threads 1] [--quick]

Runs ``sample_data/pipeline.toml`` (its settings, the seed replaced) on the shipped dm3 scan and
scores the encoded classes as ``tests/stages/test_sample_study.py`` does: the interface row is the
step that best splits the scan's profile of column brightness, and away from it (± 60 px) the share
of each side's columns that fall in that side's majority class. Also the partition the classes
started from (``init/selection.json``'s ``chosen``), scored the same way, and the mean class
confidence. Writes results/sample_interface.{json,md} (``--quick``: seed 0 only, to
results/sample_interface_quick.*).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from microvae.images import read_scans
from microvae.stages.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests" / "stages"))
from test_sample_study import SAMPLE, SCAN, interface_row  # noqa: E402  (the test's own definitions)


def side_shares(coords: np.ndarray, classes: np.ndarray, boundary: int) -> list[float]:
    """Share of the columns above (row < boundary − 60) and below (row > boundary + 60) that are in
    their side's majority class."""
    shares = []
    for side in (coords[:, 0] < boundary - 60, coords[:, 0] > boundary + 60):
        counts = np.bincount(classes[side], minlength=2)
        shares.append(float(counts.max() / counts.sum()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the test uses 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0 only; writes results/sample_interface_quick.*")
    args = parser.parse_args()
    name = "sample_interface_quick" if args.quick else "sample_interface"
    if args.quick:
        args.seeds = [0]
    torch.set_num_threads(args.threads)
    image = read_scans(str(SCAN))[0].data[0].astype(np.float64)
    boundary = interface_row(image)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            settings = (SAMPLE / "pipeline.toml").read_text().replace("seed = 0", f"seed = {seed}")
            (folder / "pipeline.toml").write_text(settings)
            started = time.perf_counter()
            run_pipeline(folder / "pipeline.toml", [str(SCAN)], folder / "study")
            seconds = time.perf_counter() - started
            with h5py.File(folder / "study" / "encoded.h5") as handle:
                coords, classes, probs = handle["coords"][:], handle["class"][:], handle["class_probs"][:]
            chosen = json.loads((folder / "study" / "run" / "init" / "selection.json").read_text())["chosen"]
            start = np.load(folder / "study" / "run" / "init" / "initial_classes.npz")["labels"]
        row = {
            "seed": seed,
            "threads": args.threads,
            "start": chosen,
            "start_sides": side_shares(coords, start, boundary),
            "model_sides": side_shares(coords, classes, boundary),
            "confidence": float(probs.max(1).mean()),
            "seconds": seconds,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# The shipped oxide-interface scan at several seeds",
        "",
        f"`python benchmarks/bench_sample_interface.py --seeds {' '.join(map(str, args.seeds))} --threads {args.threads}`: share of the "
        "columns above / below the interface (± 60 px away) in their side's majority class.",
        "",
        "| seed | start | start's split | model's split | confidence | s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        start_split, model_split = (" / ".join(f"{100 * v:.1f} %" for v in row[key]) for key in ("start_sides", "model_sides"))
        lines.append(f"| {row['seed']} | {row['start']} | {start_split} | {model_split} | {row['confidence']:.3f} | {row['seconds']:.0f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

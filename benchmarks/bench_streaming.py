"""Larger than memory: extract, train and encode a patches artifact of ~2 million 32×32 patches
(8 GB of float32) with bounded resident memory, each stage a separate `microvae` process measured
by GNU time's `-v` report (maximum resident set size, wall clock).

    python benchmarks/bench_streaming.py            # 2 scans of 4096², grid step 4: 2.06 M patches
    python benchmarks/bench_streaming.py --quick    # 2 scans of 1024²: 0.12 M patches, streamed anyway

Training is one epoch of the paper's layout at width 16, batches of 256, 2 % of the pixels per step
(the point is memory, not the model); the CPU time is dominated by that epoch and by encoding with
scores, whose decoder passes (reconstruction error, −ELBO) render every pixel for every class;
``encode --no-scores`` (the encoder alone) is timed as well. Writes results/streaming.{json,md}
(results/streaming_quick.* with --quick).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from microvae.synthetic import make_lattice

RESULTS = Path(__file__).resolve().parent / "results"


def measured(command: list[str], folder: Path, name: str) -> dict:
    """Run ``command`` under /usr/bin/time -v; its peak RSS (MB), wall time (s) and exit code."""
    report = folder / f"{name}.time"
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", "-o", str(report)] + command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    text = report.read_text()
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    row = {"stage": name, "peak_rss_mb": round(rss_kb / 1024, 1), "wall_s": round(wall, 1), "summary": json.loads(done.stdout.strip().splitlines()[-1])}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()
    size = 1024 if args.quick else args.size
    cli = [sys.executable, "-m", "microvae.cli"]
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        folder = Path(folder)
        scans = []
        for seed in (1, 2):
            path = folder / f"scan{seed}.tif"
            tifffile.imwrite(path, make_lattice(shape=(size, size), seed=seed).image.astype(np.float32))
            scans.append(str(path))
        patches, run, encoded = folder / "patches.h5", folder / "run", folder / "encoded.h5"
        limit = ["--memory-limit-gb", "0.05" if args.quick else "1"]
        rows = [measured(cli + ["extract", *scans, "--grid", str(args.grid), "--window", "32", "-o", str(patches), "--json", "-q"], folder, "extract")]
        file_gb = patches.stat().st_size / 1e9
        count = int(rows[0]["summary"]["patches"])
        rows.append(
            measured(
                cli
                + [
                    "train",
                    str(patches),
                    "-o",
                    str(run),
                    "--classes",
                    "2",
                    "--epochs",
                    "1",
                    "--hidden",
                    "16",
                    "--batch-size",
                    "256",
                    "--pixel-fraction",
                    "0.02",
                    "--min-pixels",
                    "16",
                    "--val-fraction",
                    "0.005",
                    "--device",
                    "cpu",
                    "--json",
                    "-q",
                    *limit,
                ],
                folder,
                "train",
            )
        )
        rows.append(measured(cli + ["encode", str(run), str(patches), "-o", str(encoded), "--device", "cpu", "--json", "-q", *limit], folder, "encode"))
        rows.append(
            measured(
                cli + ["encode", str(run), str(patches), "-o", str(folder / "latents.h5"), "--no-scores", "--device", "cpu", "--json", "-q", *limit],
                folder,
                "encode --no-scores",
            )
        )
    meta = {
        "quick": args.quick,
        "scans": f"2 × {size}²",
        "grid_step": args.grid,
        "patches": count,
        "float32_gb": round(count * 32 * 32 * 4 / 1e9, 2),
        "file_gb": round(file_gb, 2),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load_at_end": open("/proc/loadavg").read().split()[:3],
    }
    name = "streaming_quick" if args.quick else "streaming"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"<!-- python benchmarks/bench_streaming.py{' --quick' if args.quick else ''} | {meta} -->",
        "| stage | patches | peak RSS (MB) | wall (s) | patches/s |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['stage']} | {count} | {row['peak_rss_mb']:.0f} | {row['wall_s']:.0f} | {count / row['wall_s']:.0f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

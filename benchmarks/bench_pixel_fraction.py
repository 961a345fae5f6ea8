"""Class discovery at the default pixel subset against all pixels, on the benchmark zoo.

    python benchmarks/bench_pixel_fraction.py [--members cards_60,digits,perovskite_film,two_phase,stm_defects]
        [--seeds 0 1 2] [--size ci|bench] [--epochs 30] [--fractions 0.05 1.0] [--methods default]
        [--threads 1] [--no-baselines] [--out benchmarks/results/pixel_fraction] [--quick]

Each step of ``microvae train`` scores a random subset of the pixels (``TrainConfig.pixel_fraction``,
5 %, raised to ``min_pixels`` = 40 per patch: 6.9 % of a 24² patch, 10 % of a 20² one), an unbiased
estimate of the reconstruction term; the throughput tables (``bench_peers.py``) compare that step
with peers that score every pixel. This benchmark measures what the subset costs in quality: the
same training as :mod:`bench_discovery` (microvae's defaults through the CLI's library call, told
only K, rotation and translation), the same members, seeds and epochs, once per pixel fraction
(``--fractions``; 1.0 = every pixel), scored the same way (matched accuracy, ARI, the angle's
circular correlation where objects turn, defects outside the clean class on ``stm_defects``) plus
the held-out −ELBO over all pixels. Equal epochs mean an equal number of patches seen; the seconds
per run say what each fraction costs in time (the class initialisation's short pose run included).
``--methods default,none`` adds ``--class-init none`` runs (classes from random weights), where
the classes come from the joint objective rather than from a classical partition. The classical
baselines of ``bench_discovery`` (PCA + k-means, PCA + GMM, Fourier + k-means, and multi-reference
alignment where objects move) run once per (member, seed) on the same patches.

One JSON line per (member, seed, method, fraction) is appended to OUT.jsonl as it finishes (a rerun
skips what is there); OUT.md is the table, with a header comment naming the command, date, load and
versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_discovery import case_record, passes, score, train_default  # noqa: E402

from microvae.alignment import aligned_kmeans  # noqa: E402
from microvae.baselines import baseline_labels  # noqa: E402
from microvae.config import TrainConfig  # noqa: E402
from microvae.zoo import make_case  # noqa: E402

MEMBERS = "cards_60,digits,perovskite_film,two_phase,stm_defects"


def run_member_seed(member: str, seed: int, args, done: set) -> list[dict]:
    case = make_case(member, seed, args.size)
    n_pixels = int(case.patches.shape[-1] * case.patches.shape[-2])
    common = {**case_record(member, seed, case, args.size, args.epochs), "threads": args.threads}
    rows = []
    for method in args.methods.split(","):
        for fraction in args.fractions:
            if (member, seed, f"microvae_{method}", fraction, args.size, args.epochs) in done:
                continue
            extra = {"pixel_fraction": fraction, **({"class_init": "none"} if method == "none" else {})}
            scored = TrainConfig(pixel_fraction=fraction).scored_fraction(n_pixels)
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                encoded, verdict = train_default(case, seed, args.epochs, "cpu", Path(folder), extra)
                seconds = time.perf_counter() - started
            row = {
                **common,
                "method": f"microvae_{method}",
                "pixel_fraction": fraction,
                "scored_fraction": scored,
                "scored_pixels": int(round(scored * n_pixels)),
                "seconds": seconds,
                **score(case, encoded["class"], encoded["angle_rad"]),
                "confidence": float(encoded["class_probs"].max(1).mean()),
                "chosen_start": verdict.get("chosen_start"),
                "warnings": len(verdict.get("warnings", [])),
                "heldout_neg_elbo": encoded["heldout_neg_elbo"],
                "load_1min": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(
                f"{member} seed {seed} {method} pixel_fraction {fraction} ({row['scored_pixels']} of {n_pixels} px): "
                f"accuracy {row['accuracy']:.3f}, ARI {row['ari']:.3f}, start {row['chosen_start']}, "
                f"held-out -ELBO {row['heldout_neg_elbo']:.2f}, {seconds:.0f} s",
                flush=True,
            )
    if args.baselines and (member, seed, "pca_kmeans", None, args.size, args.epochs) not in done:
        started = time.perf_counter()
        labels = baseline_labels(case.patches, case.n_classes, seed=seed)
        seconds = (time.perf_counter() - started) / len(labels)
        for name, found in labels.items():
            rows.append({**common, "method": name, "pixel_fraction": None, "seconds": seconds, **score(case, found)})
        if case.rotation or case.translation:
            started = time.perf_counter()
            aligned = aligned_kmeans(case.patches, labels["pca_kmeans"], case.n_classes, case.rotation, case.translation)
            rows.append(
                {
                    **common,
                    "method": "aligned_kmeans",
                    "pixel_fraction": None,
                    "seconds": time.perf_counter() - started,
                    **score(case, aligned.labels, aligned.angle_rad if case.rotation else None),
                }
            )
    return rows


def table(rows: list[dict]) -> list[str]:
    """Markdown lines: per member, method and pixel fraction, median / worst seed and seconds."""
    lines = [
        "| member | method | pixel fraction (scored px / patch) | seeds | accuracy median / worst | ARI median / worst | "
        "angle corr median / worst | defects outside clean | meets bar (seeds) | held-out −ELBO median | "
        "s per run (median) | time vs default subset |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["member"], row["method"], row.get("pixel_fraction")), []).append(row)

    def order(key):
        member, method, fraction = key
        return member, not method.startswith("microvae"), method, fraction if fraction is not None else 0.0

    for key in sorted(groups, key=order):
        member, method, fraction = key
        group = groups[key]

        def stat(name: str) -> str:
            values = [r[name] for r in group if name in r and r[name] == r[name]]
            return f"{statistics.median(values):.3f} / {min(values):.3f}" if values else "–"

        seconds = statistics.median(r["seconds"] for r in group)
        if fraction is None:
            label, elbo, ratio = "–", "–", ""
        else:
            label = f"{fraction:g} ({group[0]['scored_pixels']} of {group[0]['window'] ** 2})"
            elbo = f"{statistics.median(r['heldout_neg_elbo'] for r in group):.2f}"
            base = groups.get((member, method, 0.05))
            ratio = f"{seconds / statistics.median(r['seconds'] for r in base):.1f}×" if base else ""
        lines.append(
            f"| {member} | {method} | {label} | {len(group)} | {stat('accuracy')} | {stat('ari')} | "
            f"{stat('angle_corr')} | {stat('defects_outside_clean')} | "
            f"{sum(passes(member, r) for r in group)}/{len(group)} | {elbo} | {seconds:.1f} | {ratio} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default=MEMBERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", default="ci", choices=("bench", "ci"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 1.0])
    parser.add_argument("--methods", default="default", help="'default' and/or 'none' (--class-init none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pixel_fraction"))
    parser.add_argument("--note", default="", help="a remark for the results header (e.g. what else ran on the machine); not part of the command written there")
    parser.add_argument("--quick", action="store_true", help="smoke run: two_phase, seed 0, 5 epochs; writes results/pixel_fraction_quick.*")
    args = parser.parse_args()
    if args.quick:
        args.members, args.seeds, args.epochs = "two_phase", [0], 5
        args.out = str(Path(__file__).parent / "results" / "pixel_fraction_quick")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    done = {(r["member"], r["seed"], r["method"], r.get("pixel_fraction"), r["size"], r["epochs"]) for r in rows}
    started, load_start = time.time(), [round(v, 2) for v in os.getloadavg()]
    for member in args.members.split(","):
        for seed in args.seeds:
            new = run_member_seed(member, seed, args, done)
            with jsonl.open("a") as handle:
                for row in new:
                    handle.write(json.dumps(row) + "\n")
            rows += new
    command = [a for i, a in enumerate(sys.argv[1:]) if a != "--note" and not a.startswith("--note=") and (i == 0 or sys.argv[i] != "--note")]
    meta = {
        "command": " ".join(["python", "benchmarks/bench_pixel_fraction.py", *command]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "wall_s": round(time.time() - started, 1),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_start": load_start,
        "load": [round(v, 2) for v in os.getloadavg()],
        "note": args.note,
        "versions": {name: version(name) for name in ("torch", "numpy")},
    }
    members = args.members.split(",")
    shown = [r for r in rows if r["member"] in members and r["size"] == args.size and r["epochs"] == args.epochs]
    loads = [r["load_1min"] for r in shown if "load_1min" in r]
    during = f", 1-min load after each run {min(loads)}–{max(loads)}" if loads else ""
    shared = f"; shared: the load exceeded the {args.threads} thread(s) this run used" if loads and max(loads) > args.threads + 0.5 else ""
    text = "\n".join(
        [
            f"<!-- {meta['command']} | {meta['date']} | device cpu, {args.threads} thread(s), {meta['cpus']} cores, "
            f"{meta['wall_s']:.0f} s wall | load at the start {load_start}{during}, at the end {meta['load']}{shared}"
            + (f" | {args.note}" if args.note else "")
            + f" | {meta['versions']} -->",
            f"# Pixel subset against all pixels\n\n{args.size} size, {args.epochs} epochs, seeds "
            f"{', '.join(map(str, sorted({r['seed'] for r in shown})))}. Median and worst over seeds; "
            "'time vs default subset' is the median seconds per run over the 0.05 row's. The held-out "
            "−ELBO scores every pixel of the validation patches (nats per patch, lower is better).\n",
            *table(shown),
        ]
    )
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": shown}, indent=1))
    print(text)


if __name__ == "__main__":
    main()

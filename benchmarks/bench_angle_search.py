"""Is the angle that microvae's encoder gives worse than the one its decoder can read?

On the turning zoo members the default model's classes are right while its angle is not (cards
±120°: circular correlation modulo symmetry about 0.1, while template alignment handed the truth
reaches 0.84; ``bench_discovery.py``). This benchmark trains the default model on one member and
seed (as ``bench_discovery.py`` does) and scores two angles of every patch against the truth:

- ``encoder``: the angle the encoder gives (what ``microvae encode`` writes);
- ``search``: the turn, of ``--turns`` evenly spaced ones refined by a parabola, at which the
  decoder's likelihood of the patch is highest, with the class (argmax), z (posterior mean) and
  shift (posterior mean) held at the encoder's values; ``search z=0`` the same with z = 0.

It reports the scores and the seconds each took. Not part of the default: at 72 turns the search
decodes every patch 72 times (192 s for 2 000 patches of 32² on 2 CPU cores, against 76 s of
training).

Usage::

    python benchmarks/bench_angle_search.py --member cards_120 --seed 0
    python benchmarks/bench_angle_search.py --quick     # smoke run: CI size, 5 epochs, 12 turns

Appends one JSON line per run to ``benchmarks/results/angle_search.jsonl`` and rewrites
``angle_search.md``, the table of every line (``angle_search_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_discovery import score, train_default

from microvae.encoding import encode_array
from microvae.run_folder import load_run
from microvae.zoo import make_case


@torch.no_grad()
def search_angles(model, patches: np.ndarray, classes: np.ndarray, z: np.ndarray, shift_px: np.ndarray, turns: int = 72, batch_size: int = 64) -> np.ndarray:
    """(N,) angle in rad of each (N, C, W, W) patch at which the decoder's likelihood is highest,
    over ``turns`` turns refined by a parabola; class (N,), z (N, D) and shift (N, 2) px fixed."""
    n_classes = model.config.n_classes
    angles = torch.arange(turns) * (2 * math.pi / turns)
    found = np.zeros(len(patches))
    for start in range(0, len(patches), batch_size):
        images = torch.as_tensor(patches[start : start + batch_size]).float()
        count = len(images)
        latents = torch.as_tensor(z[start : start + count]).float().repeat_interleave(turns, 0)
        shift = torch.as_tensor(shift_px[start : start + count]).float().repeat_interleave(turns, 0) / model.half_width_px if model.config.translation else None
        onehot = torch.nn.functional.one_hot(torch.as_tensor(classes[start : start + count]), n_classes).float().repeat_interleave(turns, 0)
        outputs = model.decoder_logits(latents, angles.repeat(count), shift, class_vectors=onehot)[:, 0]  # (count·turns, P, C)
        target = images.flatten(2).transpose(1, 2).repeat_interleave(turns, 0)  # (count·turns, P, C)
        cost = model._negative_log_likelihood(outputs[:, None], target[:, None])[:, 0].view(count, turns)  # the model's own −log p
        best = cost.argmin(1)
        left = cost.gather(1, ((best - 1) % turns)[:, None])[:, 0]
        right = cost.gather(1, ((best + 1) % turns)[:, None])[:, 0]
        middle = cost.gather(1, best[:, None])[:, 0]
        curvature = left - 2 * middle + right
        step = torch.where(curvature > 0, 0.5 * (left - right) / curvature, torch.zeros_like(curvature)).clamp(-0.5, 0.5)
        found[start : start + count] = ((best.float() + step) * (2 * math.pi / turns)).numpy()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", default="cards_120")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="bench", choices=("bench", "ci"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--turns", type=int, default=72)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "angle_search"))
    parser.add_argument("--quick", action="store_true", help="smoke run: CI size, 5 epochs, 12 turns; writes results/angle_search_quick.*")
    args = parser.parse_args()
    if args.quick:
        args.size, args.epochs, args.turns, args.out = "ci", 5, 12, args.out + "_quick"
    case = make_case(args.member, args.seed, args.size)
    row = {"member": args.member, "seed": args.seed, "size": args.size, "epochs": args.epochs, "turns": args.turns}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        train_default(case, args.seed, args.epochs, "cpu", Path(folder), {})
        row["train_s"] = time.perf_counter() - started
        model, _ = load_run(Path(folder) / "run", device="cpu")
    model.eval()
    encoded = encode_array(model, case.patches, device="cpu", recon_error=False)
    row["encoder"] = score(case, encoded["class"], encoded["angle_rad"])
    for name, z in (("search", encoded["z_mean"]), ("search z=0", np.zeros_like(encoded["z_mean"]))):
        started = time.perf_counter()
        angles = search_angles(model, case.patches, encoded["class"], z, encoded["shift_px"], args.turns)
        row[name] = {**score(case, encoded["class"], angles), "seconds": time.perf_counter() - started}
    for name in ("encoder", "search", "search z=0"):
        print(f"{name:<11} angle corr {row[name]['angle_corr']:+.3f}  modulo symmetry {row[name].get('angle_corr_sym', float('nan')):+.3f}")
    with open(args.out + ".jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    write_table(Path(args.out + ".jsonl"), Path(args.out + ".md"))


def write_table(lines: Path, table: Path) -> None:
    """Markdown of every run in ``lines``: angle correlation (as it is / modulo symmetry) of each source, and seconds."""
    out = [
        "# Angle from the encoder against a search of the decoder's likelihood",
        "",
        "`python benchmarks/bench_angle_search.py`; circular correlation with the true angle per class, averaged (as it is / modulo symmetry).",
        "",
        "| member | seed | size | epochs | turns | encoder | search | search z=0 | train s | search s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for text in lines.read_text().splitlines():
        row = json.loads(text)
        cells = [f"{row[k]['angle_corr']:+.3f} / {row[k].get('angle_corr_sym', float('nan')):+.3f}" for k in ("encoder", "search", "search z=0")]
        out.append(
            f"| {row['member']} | {row['seed']} | {row['size']} | {row['epochs']} | {row['turns']} | {' | '.join(cells)} | {row['train_s']:.0f} | {row['search']['seconds']:.0f} |"
        )
    table.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

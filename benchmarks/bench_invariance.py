"""Invariance of the learned code (``microvae diagnose``): a rotation- and translation-invariant VAE
against a plain VAE with the same widths, trained on the same cards turned by any angle.

    python benchmarks/bench_invariance.py [--epochs 30] [--n 3000] [--size 28] [--classes 0]

For each model: the drift of the continuous latents (mean |Δz| in units of each latent's sd over the
data) under 90°/180°/270° turns and ±1 px circular shifts (the exact pixel permutations), under 30°
and 45° turns and ±1 px re-cut shifts (the cards rendered again turned, or seen through a window
moved by one pixel: nothing interpolated, nothing wrapped round), and under the same turns
interpolated within each patch (what ``diagnose`` does on a bare stack); class changes, and the
angle and shift latents' errors.
Goal (issue 5): the invariant model's drift ≤ 0.1 sd where the plain VAE's is not. Writes
results/invariance.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from microvae.cards import CardsDataset, make_cards, render_moved
from microvae.diagnose import invariance_report, report_dict
from microvae.encoding import encode_array
from microvae.metrics import circular_correlation
from microvae.models import JTRVAEConfig
from microvae.training import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--classes", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="train only the models whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cards = make_cards(args.n, size=args.size, max_angle_deg=180.0, seed=1)
    models = {
        "j-trVAE (rotation + translation, angle prior 0)": JTRVAEConfig(image_size=args.size, n_classes=args.classes, angle_prior_concentration=0.0),
        "j-trVAE, equivariant encoder": JTRVAEConfig(image_size=args.size, n_classes=args.classes, angle_prior_concentration=0.0, encoder="equivariant"),
        "plain VAE (same widths)": JTRVAEConfig(image_size=args.size, n_classes=args.classes, rotation=False, translation=False),
    }
    report = {}
    for name, config in models.items():
        if args.only not in name:
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            train = TrainConfig(epochs=args.epochs, seed=0, device=args.device, val_fraction=0.0, checkpoint_every=args.epochs)
            model = fit(cards.images, config, train, run_dir).model
        shown = CardsDataset(*(value[:1000] for value in (cards.images, cards.labels, cards.angle_rad, cards.shear_rad, cards.scale, cards.shift_px)))
        rows = invariance_report(model, shown.images, device=args.device, source=lambda turn, shift: render_moved(shown, turn, shift))
        in_patch = [
            replace(row, transform=f"{row.transform} (in the patch)")
            for row in invariance_report(model, shown.images, device=args.device)
            if row.transform.startswith("turn")
        ]
        encoded = encode_array(model, cards.images[:1000], device=args.device)
        quality = {
            "recon_error": float(encoded["recon_error"].mean()),
            "pixel_variance": float(cards.images[:1000].var()),
            "angle_corr": float(circular_correlation(cards.angle_rad[:1000], encoded["angle_rad"])) if config.rotation else None,
            "angle_concentration_median": float(np.median(encoded["angle_concentration"])) if config.rotation else None,
        }
        summary = report_dict(
            rows,
            [
                "30°/45° turns and re-cut shifts: the cards rendered again turned or moved; "
                "'(in the patch)': turned by interpolation within each patch, as diagnose does on a bare stack"
            ],
        )
        summary["rows"] += report_dict(in_patch)["rows"]
        report[name] = {**summary, **quality, "train_seconds": round(time.perf_counter() - started, 1)}
        print(name, json.dumps(report[name]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "invariance.json"
    if args.only and previous.exists():  # keep the other models' rows from the last full run
        report = {**json.loads(previous.read_text())["models"], **report}
    meta = {"epochs": args.epochs, "n": args.n, "size": args.size, "classes": args.classes, "cards": "±180°", "torch": torch.__version__}
    (RESULTS / "invariance.json").write_text(json.dumps({"meta": meta, "models": report}, indent=2))
    lines = [
        f"<!-- python benchmarks/bench_invariance.py | {meta} -->",
        "| model | transform | z drift (sd) | class changed | angle error (°) | shift error (px) |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in report.items():
        for row in result["rows"]:
            fmt = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
            lines.append(
                f"| {name} | {row['transform']} | {row['z_drift']:.3f} | {fmt(row['class_changed'], '.3f')} | {fmt(row['angle_error_deg'], '.1f')} | {fmt(row.get('shift_error_px'), '.2f')} |"
            )
    lines += ["", "| model | recon error (MSE) | pixel variance | angle circular corr. | train s |", "|---|---|---|---|---|"]
    for name, result in report.items():
        corr = "—" if result["angle_corr"] is None else f"{result['angle_corr']:.3f}"
        lines.append(f"| {name} | {result['recon_error']:.4f} | {result['pixel_variance']:.4f} | {corr} | {result['train_seconds']} |")
    (RESULTS / "invariance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How well the default j-trVAE recipe learns the cards: matched accuracy, ARI and the circular
correlation of the learned angle with the true one (per suit, then averaged), over rotation ranges
and seeds. One line per run, then a summary table.

    python benchmarks/bench_cards_quality.py [--angles 12 60 120] [--seeds 0 1 2] [--epochs 45] [--device auto]
        [--set class_balance=0 --set latent_dim=1]      # any JTRVAEConfig field, to compare recipes
        [--train-set pixel_fraction=0.1]               # any TrainConfig field

Writes results/cards_quality.json and .md (a CUDA GPU makes a run take seconds; one CPU core, minutes).
"""

from __future__ import annotations

import argparse
import ast
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from microvae.cards import make_cards
from microvae.encoding import encode_array
from microvae.metrics import adjusted_rand_index, circular_correlation, matched_accuracy
from microvae.models import JTRVAEConfig
from microvae.training import TrainConfig, fit


def score(cards, encoded) -> dict:
    predicted = encoded["class"]
    per_suit = [circular_correlation(cards.angle_rad[cards.labels == s], encoded["angle_rad"][cards.labels == s]) for s in range(4)]
    return {
        "accuracy": matched_accuracy(cards.labels, predicted),
        "ari": adjusted_rand_index(cards.labels, predicted),
        "angle_corr": float(np.mean(per_suit)),
        "class_counts": np.bincount(predicted, minlength=4).tolist(),
    }


def parse_settings(pairs: list[str]) -> dict:
    settings = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            settings[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            settings[name] = text
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--angles", type=float, nargs="+", default=[12.0, 60.0, 120.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=45)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="settings", action="append", default=[], help="NAME=VALUE for JTRVAEConfig")
    parser.add_argument("--train-set", dest="train_settings", action="append", default=[], help="NAME=VALUE for TrainConfig")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = parse_settings(args.settings)
    train_settings = parse_settings(args.train_settings)
    rows = []
    for angle in args.angles:
        cards = make_cards(args.n, size=args.size, max_angle_deg=angle, seed=1)
        for seed in args.seeds:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as run_dir:
                train = TrainConfig(epochs=args.epochs, seed=seed, device=args.device, val_fraction=0.0, checkpoint_every=args.epochs, **train_settings)
                result = fit(cards.images, JTRVAEConfig(image_size=args.size, **settings), train, run_dir)
                row = {
                    "max_angle_deg": angle,
                    "seed": seed,
                    **score(cards, encode_array(result.model, cards.images, device=args.device)),
                    "final_loss": result.history[-1]["loss"],
                    "seconds": time.perf_counter() - started,
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "settings": settings,
        "train_settings": train_settings,
        "scored_fraction": TrainConfig(**train_settings).scored_fraction(args.size**2),
        "epochs": args.epochs,
        "n": args.n,
        "size": args.size,
        "device": args.device,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    (args.out / "cards_quality.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"<!-- python benchmarks/bench_cards_quality.py | {meta} -->",
        "| ±angle | seeds | accuracy (each) | ARI (mean) | angle corr (mean) | s/run |",
        "|---|---|---|---|---|---|",
    ]
    for angle in args.angles:
        mine = [r for r in rows if r["max_angle_deg"] == angle]
        accuracies = " ".join(f"{r['accuracy']:.3f}" for r in mine)
        lines.append(
            f"| {angle:g}° | {len(mine)} | {accuracies} | "
            f"{np.mean([r['ari'] for r in mine]):.3f} | {np.mean([r['angle_corr'] for r in mine]):.3f} | "
            f"{np.mean([r['seconds'] for r in mine]):.0f} |"
        )
    (args.out / "cards_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

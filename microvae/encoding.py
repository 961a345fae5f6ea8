"""What a trained model says about each patch, and whether a new scan lies outside what it saw.

:func:`microvae.training.encode_array` gives per patch the reconstruction error and the
negative ELBO (nats, the model's loss at β = 1, one fixed-seed draw of the latents).
:class:`ScoreStatistics` summarises them on the training patches (saved in the run folder as ``training_stats.json``) so that
:func:`scan_summaries` can compare every new scan with the training data, as the paper's Fig. 7
does for a scan with new defect types: a scan whose patches reconstruct much worse, or have a
much lower ELBO, than the training patches is outside the model's experience.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

STATS_FILE = "training_stats.json"


@dataclass
class ScoreStatistics:
    """Distribution of a per-patch score over a set of patches."""

    mean: float
    sd: float
    p50: float
    p95: float
    p99: float
    count: int

    @classmethod
    def of(cls, values: np.ndarray) -> "ScoreStatistics":
        values = np.asarray(values, dtype=np.float64)
        p50, p95, p99 = np.percentile(values, [50, 95, 99]) if values.size else (np.nan,) * 3
        return cls(float(values.mean()), float(values.std()), float(p50), float(p95), float(p99), int(values.size))


def write_training_statistics(run_dir: str | Path, recon_error: np.ndarray, neg_elbo: np.ndarray) -> None:
    """Save the training patches' score distributions as ``training_stats.json`` in the run folder."""
    from .artifacts import atomic_file

    record = {"recon_error": asdict(ScoreStatistics.of(recon_error)), "neg_elbo": asdict(ScoreStatistics.of(neg_elbo))}
    with atomic_file(Path(run_dir) / STATS_FILE) as temp:
        temp.write_text(json.dumps(record, indent=2))


def read_training_statistics(run_dir: str | Path) -> dict[str, ScoreStatistics] | None:
    path = Path(run_dir) / STATS_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        return {name: ScoreStatistics(**values) for name, values in record.items()}
    except (ValueError, TypeError) as error:
        raise InputError(f"{path}: unreadable training statistics ({error})") from error


def scan_summaries(image_index: np.ndarray, recon_error: np.ndarray | None, neg_elbo: np.ndarray | None,
                   names: list[str], training: dict[str, ScoreStatistics] | None) -> list[dict]:
    """Per scan: mean recon error and negative ELBO, and how they compare with the training patches.

    ``recon_error_ratio`` and ``neg_elbo_ratio`` are the scan's mean over the training mean;
    ``beyond_training_p99`` is the fraction of the scan's patches whose negative ELBO exceeds the 99th
    percentile of the training patches (about 0.01 for a scan like the training data). Without
    scores (None, ``encode --no-scores``) only the patch counts.
    """
    summaries = []
    for index, name in enumerate(names):
        members = image_index == index
        entry = {"scan": name, "patches": int(members.sum())}
        if members.any() and recon_error is not None and neg_elbo is not None:
            entry["mean_recon_error"] = float(recon_error[members].mean())
            entry["mean_neg_elbo"] = float(neg_elbo[members].mean())
            if training:
                entry["recon_error_ratio"] = entry["mean_recon_error"] / max(training["recon_error"].mean, 1e-12)
                entry["neg_elbo_ratio"] = entry["mean_neg_elbo"] / max(abs(training["neg_elbo"].mean), 1e-12)
                entry["beyond_training_p99"] = float((neg_elbo[members] > training["neg_elbo"].p99).mean())
        summaries.append(entry)
    return summaries

"""The run folder of ``microvae train``: what it holds, how a run is started, resumed or found complete.

Layout (``RUN_DIR/``): ``config.json`` (model and training settings), ``provenance.json`` (inputs,
their hashes, the extraction recipe, the training scans' calibration), ``checkpoints/last.pt`` and
``final.pt``, ``log.csv`` and ``loss.png``, ``training_stats.json`` (for out-of-distribution
checks), ``init/`` (how the classes started), ``class_templates.npz`` (with rotation: each class's
template, for ``encode``'s template angle, :mod:`microvae.templates`) and ``summary.json`` (the
verdict). An ensemble's
folder holds ``member_<i>/`` run folders and ``ensemble.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import artifacts
from .config import JTRVAEConfig, TrainConfig
from .devices import resolve_device
from .errors import InputError, OutputError, ParameterError
from .models import JTRVAE

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "ENSEMBLE_FILE",
    "RUN_FILES",
    "RUN_PROVENANCE",
    "STATS_FILE",
    "RunPaths",
    "ScoreStatistics",
    "load_checkpoint",
    "load_run",
    "member_dir",
    "prepare_run_dir",
    "read_run_provenance",
    "read_training_statistics",
    "run_patch_side",
    "write_training_statistics",
]

RUN_PROVENANCE = "provenance.json"
RUN_FILES = ("config.json", RUN_PROVENANCE, "log.csv", "loss.png", "checkpoints", "training_stats.json", "init", "class_templates.npz", "summary.json")


def prepare_run_dir(run_dir: Path, fingerprint: str, epochs: int, force: bool) -> str:
    """Whether a run folder starts a new run, resumes one or holds a complete one.

    Parameters
    ----------
    run_dir : Path
        The run folder (may not exist yet).
    fingerprint : str
        The run's provenance fingerprint (inputs and settings).
    epochs : int
        The epochs the run is to train.
    force : bool
        Clear the run's own files (:data:`RUN_FILES`) when the folder holds another run or other
        files, and start anew.

    Returns
    -------
    str
        ``"new"`` (no folder, an empty one, or one cleared under ``force``), ``"resume"`` (the same
        fingerprint, not finished) or ``"complete"`` (the same fingerprint, with ``final.pt``,
        ``summary.json`` and a log of at least ``epochs`` rows).

    Raises
    ------
    OutputError
        ``run_dir`` is a file, or holds another run or files that are not a run, without
        ``force``.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder; the run needs a folder")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "new"
    record_path = run_dir / RUN_PROVENANCE
    record = None
    if record_path.exists():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = None
    if record is not None and record.get("fingerprint") == fingerprint:
        log = run_dir / "log.csv"
        final = run_dir / "checkpoints" / "final.pt"
        stats = run_dir / "summary.json"  # written last: a run killed before it is not complete
        if final.exists() and log.exists() and stats.exists() and sum(1 for _ in log.open()) - 1 >= epochs:
            return "complete"
        return "resume"
    if not force:
        what = "another microvae run (other inputs or settings)" if record is not None else "files that are not a microvae run"
        raise OutputError(f"{run_dir}: holds {what}; pass --force to replace the run, or choose another folder")
    import shutil

    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return "new"


def read_run_provenance(run_dir: str | Path) -> dict[str, Any]:
    """The ``provenance.json`` of a run folder ({} for runs trained through the library only).

    Parameters
    ----------
    run_dir : str or path
        The run folder.

    Returns
    -------
    dict of str to Any
        The record: stage, parameters, inputs, upstream chain, fingerprint, ``recipe``,
        ``input_kind``, ``patch_shape``, ``training_images``.

    Raises
    ------
    InputError
        Unreadable, or written with another schema version.
    """
    path = Path(run_dir) / RUN_PROVENANCE
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise InputError(f"{path}: unreadable run provenance ({error})") from error
    if not isinstance(record, dict):
        raise InputError(f"{path}: unreadable run provenance (expected a JSON object)")
    artifacts.check_schema_version(
        path, int(record.get("schema_version", artifacts.SCHEMA_VERSION)), what="run folder schema", remedy="use the microvae that trained it, or retrain"
    )
    return record


def run_patch_side(run_dir: str | Path) -> int | None:
    """The patch side W of a trained run, from its config.json.

    Parameters
    ----------
    run_dir : str or path
        The run folder.

    Returns
    -------
    int or None
        W in px; None where config.json cannot be read (the encode stage then names what is
        wrong with the run folder).
    """
    try:
        return int(json.loads((Path(run_dir) / "config.json").read_text())["model"]["image_size"])
    except Exception:
        return None


CHECKPOINT_FORMAT = "microvae-jtrvae-checkpoint"


CHECKPOINT_VERSION = 1


@dataclass
class RunPaths:
    """Where a run folder keeps its files.

    Attributes
    ----------
    run_dir : Path
        The run folder; the properties name ``config.json`` (:attr:`config`), ``checkpoints/``,
        ``checkpoints/last.pt`` (:attr:`last`), ``checkpoints/final.pt`` (:attr:`final`),
        ``log.csv`` (:attr:`log`) and ``loss.png`` (:attr:`plot`) in it.
    """

    run_dir: Path

    @property
    def config(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def final(self) -> Path:
        return self.checkpoints / "final.pt"

    @property
    def log(self) -> Path:
        return self.run_dir / "log.csv"

    @property
    def plot(self) -> Path:
        return self.run_dir / "loss.png"


def load_checkpoint(path: Path | str) -> dict:
    """Read a checkpoint with ``weights_only=True`` (onto the CPU).

    Parameters
    ----------
    path : path or str
        The ``.pt`` file.

    Returns
    -------
    dict
        The payload: ``format``, ``version``, ``epoch``, ``model_state``, the optimiser's,
        scaler's and generators' states, ``rng`` and ``history``.

    Raises
    ------
    InputError
        Missing, unreadable (truncated, corrupt), foreign, or of another checkpoint format version.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise InputError(f"{path}: no such checkpoint") from error
    except Exception as error:  # corrupt file, foreign pickle
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise InputError(f"{path}: not a readable microvae checkpoint, truncated or corrupt ({cause})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a microvae j-trVAE checkpoint")
    from .artifacts import check_schema_version

    check_schema_version(
        path, int(payload.get("version", 0)), what="checkpoint format", supported=CHECKPOINT_VERSION, remedy="use the microvae that trained it, or retrain"
    )
    return payload


def load_run(run_dir: Path | str, device: str = "cpu") -> tuple[JTRVAE, dict]:
    """Rebuild the model of a run folder from config.json and its final (else last) checkpoint.

    Parameters
    ----------
    run_dir : path or str
        The run folder (a single run, or one member of an ensemble).
    device : str, default "cpu"
        A torch device name (:func:`microvae.devices.resolve_device`) the model is moved to.

    Returns
    -------
    model : JTRVAE
        The model, in eval mode.
    configs : dict
        ``{'model': JTRVAEConfig, 'train': TrainConfig, 'epoch': int}`` (the checkpoint's epoch).

    Raises
    ------
    InputError
        Not a run folder, config.json unreadable or of another schema version, the checkpoint
        missing, corrupt, of another format version, or not this model's.
    """
    paths = RunPaths(Path(run_dir))
    if not paths.config.exists():
        raise InputError(f"{paths.run_dir}: not a training run folder (no config.json)")
    try:
        settings = json.loads(paths.config.read_text())
        from .artifacts import SCHEMA_VERSION, check_schema_version

        check_schema_version(
            paths.config, int(settings.get("schema_version", SCHEMA_VERSION)), what="run folder schema", remedy="use the microvae that trained it, or retrain"
        )  # no key: written before versions were recorded
        model_config = JTRVAEConfig.from_dict(settings["model"])
        train_config = TrainConfig.from_dict(settings["train"])
    except (ValueError, KeyError, TypeError, AttributeError, ParameterError) as error:
        raise InputError(f"{paths.config}: unreadable run configuration ({error})") from error
    source = paths.final if paths.final.exists() else paths.last
    checkpoint = load_checkpoint(source)
    model = JTRVAE(model_config)
    try:
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, RuntimeError) as error:
        raise InputError(f"{source}: checkpoint does not fit the model of {paths.config} (another run's checkpoint, or a damaged file)") from error
    model = model.to(resolve_device(device)).eval()
    return model, {"model": model_config, "train": train_config, "epoch": int(checkpoint["epoch"])}


STATS_FILE = "training_stats.json"


@dataclass
class ScoreStatistics:
    """Distribution of a per-patch score over a set of patches.

    Attributes
    ----------
    mean, sd : float
        Mean and standard deviation (in the score's units).
    p50, p95, p99 : float
        Percentiles (NaN for no values).
    count : int
        The number of patches.
    """

    mean: float
    sd: float
    p50: float
    p95: float
    p99: float
    count: int

    @classmethod
    def of(cls, values: np.ndarray) -> ScoreStatistics:
        """The statistics of some values.

        Parameters
        ----------
        values : (N,) ndarray
            One score per patch (taken as float64).

        Returns
        -------
        ScoreStatistics
            Their distribution.
        """
        values = np.asarray(values, dtype=np.float64)
        p50, p95, p99 = np.percentile(values, [50, 95, 99]) if values.size else (np.nan,) * 3
        return cls(float(values.mean()), float(values.std()), float(p50), float(p95), float(p99), int(values.size))


def write_training_statistics(run_dir: str | Path, recon_error: np.ndarray, neg_elbo: np.ndarray) -> None:
    """Save the training patches' score distributions as ``training_stats.json`` in the run folder.

    Parameters
    ----------
    run_dir : str or path
        The run folder (the file is written atomically).
    recon_error : (N,) ndarray
        Each training patch's reconstruction error.
    neg_elbo : (N,) ndarray
        Each training patch's −ELBO (nats).
    """
    from .artifacts import atomic_file

    record = {"recon_error": asdict(ScoreStatistics.of(recon_error)), "neg_elbo": asdict(ScoreStatistics.of(neg_elbo))}
    with atomic_file(Path(run_dir) / STATS_FILE) as temp:
        temp.write_text(json.dumps(record, indent=2))


def read_training_statistics(run_dir: str | Path) -> dict[str, ScoreStatistics] | None:
    """The training patches' score distributions saved by :func:`write_training_statistics`.

    Parameters
    ----------
    run_dir : str or path
        The run folder.

    Returns
    -------
    dict of str to ScoreStatistics or None
        ``recon_error`` and ``neg_elbo``; None when the run has no ``training_stats.json``.

    Raises
    ------
    InputError
        The file is unreadable.
    """
    path = Path(run_dir) / STATS_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        return {name: ScoreStatistics(**values) for name, values in record.items()}
    except (ValueError, TypeError) as error:
        raise InputError(f"{path}: unreadable training statistics ({error})") from error


ENSEMBLE_FILE = "ensemble.json"


def member_dir(run_dir: str | Path, index: int) -> Path:
    """The folder of an ensemble's member.

    Parameters
    ----------
    run_dir : str or path
        The ensemble's folder.
    index : int
        The member, from 0.

    Returns
    -------
    Path
        ``run_dir/member_<index>``.
    """
    return Path(run_dir) / f"member_{index}"

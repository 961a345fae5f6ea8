"""Training a :class:`~microvae.models.JTRVAE` in a run folder that can be resumed bit-exactly.

Run folder::

    config.json              model and training settings
    checkpoints/last.pt      written every ``checkpoint_every`` epochs (atomically)
    checkpoints/final.pt     written when training ends
    log.csv                  one row per epoch
    loss.png                 loss curves

A checkpoint holds only state_dicts and plain data (loadable with ``torch.load(path,
weights_only=True)``): model and optimiser state, completed epochs, the β schedule position, the
states of the shuffling and noise generators, of torch's / numpy's / Python's global generators and
of the AMP grad scaler, the per-epoch history, and both configs. Calling :func:`fit` again on the
same folder resumes from ``last.pt``; on CPU with a fixed seed an interrupted-then-resumed run ends
with bit-identical weights to an uninterrupted one (all randomness of training comes from two
dedicated generators whose states are checkpointed).

The data stay resident on the device as one tensor, and batches are slices through a permutation;
or, given a :class:`~microvae.streaming.PatchFile`, they are streamed from disk in shuffled chunk
order (:class:`~microvae.training_data.TrainingData`). Under ``torchrun`` (WORLD_SIZE > 1) :func:`fit` trains with
DistributedDataParallel: every process takes its share of each batch, rank 0 writes the run
folder (:class:`~microvae.distributed.World`). The library never prints: pass ``progress`` to observe training.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import CLASS_INITS, SETTING_ALIASES, JTRVAEConfig, TrainConfig, configs_from_settings, setting_names
from .devices import resolve_device
from .distributed import World, distributed_world
from .errors import MicrovaeError, OutputError, ParameterError
from .models import JTRVAE, beta_schedule
from .run_folder import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, RunPaths, load_checkpoint
from .streaming import PatchFile
from .templates import fit_class_templates
from .training_data import TrainingData, check_images, check_labels, patch_mean, split_rows

__all__ = [
    "CLASS_INITS",
    "RESUMABLE_CHANGES",
    "SETTING_ALIASES",
    "TERMS",
    "FitResult",
    "JTRVAEConfig",
    "ProgressCallback",
    "TrainConfig",
    "TrainingData",
    "World",
    "build_model",
    "check_images",
    "check_labels",
    "configs_from_settings",
    "distributed_world",
    "fit",
    "measure_throughput",
    "plot_losses",
    "setting_names",
    "split_rows",
    "write_log",
]

# settings that may change when a run is resumed (everything else must match the checkpoint)
RESUMABLE_CHANGES = ("epochs", "checkpoint_every", "device", "compile")


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the trained model (on its training device) and the per-epoch history.

    Attributes
    ----------
    model : JTRVAE
        The trained model, on its training device, in eval mode.
    run_dir : Path
        The run folder.
    history : list of dict
        One row per epoch (``epoch``, ``loss``, ``recon``, ``kl_z``, ``kl_tau``, ``kl_y`` in nats
        per image, the β schedule's values, ``samples_per_s``, ``seconds``, ``val_loss``,
        ``val_recon``, ``n_class_<k>``), including the epochs of earlier sessions.
    epochs_completed : int
        The number of epochs in ``history``.
    resumed_from_epoch : int or None
        The epoch the run resumed from, None for a fresh run.
    checkpoint : Path or None
        The final checkpoint (``checkpoints/final.pt``).
    """

    model: JTRVAE
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    epochs_completed: int = 0
    resumed_from_epoch: int | None = None
    checkpoint: Path | None = None


ProgressCallback = Callable[[dict], None]


def fit(
    images: np.ndarray,
    model_config: JTRVAEConfig,
    train_config: TrainConfig,
    run_dir: Path | str,
    progress: ProgressCallback | None = None,
    labels: np.ndarray | None = None,
    init_labels: np.ndarray | None = None,
) -> FitResult:
    """Train (or resume training) a j-trVAE on images in ``run_dir``.

    A checkpoint (``checkpoints/last.pt``), ``log.csv`` and ``loss.png`` are written every
    ``train_config.checkpoint_every`` epochs and at the end, then copied to
    ``checkpoints/final.pt``; ``config.json`` holds the settings. A run folder whose last
    checkpoint was made with other settings (besides :data:`RESUMABLE_CHANGES`) is refused. Under
    ``torchrun`` every process calls this (DistributedDataParallel); rank 0 alone writes.

    Parameters
    ----------
    images : (N, C, H, W) float32 ndarray or PatchFile
        An array (kept on the device) or a :class:`~microvae.streaming.PatchFile` (streamed).
    model_config : JTRVAEConfig
        The model's settings (validated).
    train_config : TrainConfig
        The training settings (validated).
    run_dir : path or str
        The run folder.
    progress : callable, optional
        Receives a dict after every batch (``event='batch'``: epoch, step, steps, loss, recon,
        kl_z, kl_tau, kl_y, samples_per_s) and after every epoch (``event='epoch'``: the log row).
        An exception raised by the callback stops training; the last checkpoint stays valid.
    labels : (N,) int ndarray, optional
        Makes training semi-supervised: the known class of each image, −1 where unknown (see
        :meth:`JTRVAE.loss_terms`); the validation loss ignores them.
    init_labels : (N,) int ndarray, optional
        Initial classes (from :mod:`microvae.discovery`): during the first
        ``train_config.init_fraction`` of the epochs they act as observed classes where ``labels``
        has none; after that only ``labels`` (if any) are observed and the rest are inferred.
        With ``model_config.template_pose`` a fresh run also learns the angle's pose templates
        from them (from ``labels`` without them; from all images as one class without either),
        and every image's turns against them are searched once before the first epoch.

    Returns
    -------
    FitResult
        The trained model (eval mode), the history and where the run resumed from.

    Raises
    ------
    InputError
        Images or labels that do not fit the model.
    ParameterError
        Invalid settings, or settings other than the run folder's checkpoint was made with.
    MicrovaeError
        The device ran out of memory (with a batch size that should fit), or the loss diverged.
    """
    model_config.validate()
    train_config.validate()
    run_dir = Path(run_dir)
    images = check_images(images, model_config)
    known = check_labels(labels, len(images), model_config.n_classes) if labels is not None else None
    initial = check_labels(init_labels, len(images), model_config.n_classes) if init_labels is not None else None
    world = distributed_world()
    device = world.device if world.size > 1 else resolve_device(train_config.device)
    if world.rank != 0:
        progress = None
    paths = RunPaths(run_dir)
    if world.rank == 0:
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
    checkpoint = _load_resumable_checkpoint(paths.last, model_config, train_config)
    world.barrier()  # every rank has read last.pt before rank 0 rewrites it
    if world.rank == 0:
        _write_config(paths.config, model_config, train_config)

    model = build_model(model_config, train_config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    use_amp = train_config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    shuffle_gen = torch.Generator(device="cpu").manual_seed(train_config.seed)
    noise_gen = torch.Generator(device=device).manual_seed(train_config.seed + 1 + 1000 * world.rank)
    history: list[dict] = []
    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        scaler.load_state_dict(checkpoint["scaler_state"])
        shuffle_gen.set_state(checkpoint["shuffle_generator"])
        if world.size == 1:  # each rank draws its own noise; a resumed DDP run reseeds it
            noise_gen.set_state(checkpoint["noise_generator"])
        _set_global_rng_states(checkpoint["rng"])
        history = list(checkpoint["history"])
        start_epoch = int(checkpoint["epoch"])
    elif model.mean_offset is not None:  # a fresh run: the decoder's offset starts at the mean patch
        model.start_mean_offset(patch_mean(images))
    if checkpoint is None and model_config.template_pose:  # a fresh run: the angle's templates, from the initial classes
        model.start_template_pose(_pose_templates(images, model_config, known if initial is None else initial))
    turns = _template_turns(model, images, device) if model_config.template_pose else None

    if train_config.compile:
        model.compile()  # in place: the forward (the loss terms) compiles; weights and their names stay
    data = TrainingData(images, known, train_config.val_fraction, train_config.seed, device, world, initial, turns)
    state = _TrainingState(model, world.wrap(model), optimizer, scaler, shuffle_gen, noise_gen, model_config, train_config, history, world)

    for epoch in range(start_epoch, train_config.epochs):
        try:
            row = _train_one_epoch(state, data, epoch, use_amp, progress)
        except torch.OutOfMemoryError as error:
            raise _out_of_memory(error, device, train_config.batch_size, paths.last) from None
        if world.rank == 0:
            row.update(_evaluate(model, data, epoch, state))
        history.append(row)
        completed = epoch + 1
        if world.rank == 0 and (completed % train_config.checkpoint_every == 0 or completed == train_config.epochs):
            _save_checkpoint(paths.last, state, completed)
            write_log(paths.log, history)
            plot_losses(paths.plot, history)
        if progress is not None:
            progress({"event": "epoch", **row})

    if world.rank == 0:
        _atomic_copy(paths.last, paths.final)
        write_log(paths.log, history)
        plot_losses(paths.plot, history)
    world.barrier()  # final.pt exists for every rank on return
    model.eval()
    return FitResult(model, run_dir, history, len(history), start_epoch if checkpoint is not None else None, paths.final)


def _pose_templates(images, model_config: JTRVAEConfig, classes: np.ndarray | None) -> np.ndarray:
    """(K', C, W, W) templates of the angle's search (``JTRVAEConfig.template_pose``): of the
    given classes (−1 = unknown, left out), else of all images as one class."""
    count = max(model_config.n_classes, 1)
    if classes is None or model_config.n_classes == 0:
        classes = np.zeros(len(images), np.int64)
    known = np.asarray(classes) >= 0
    if not known.any():
        classes, known = np.zeros(len(images), np.int64), np.ones(len(images), bool)
    if not known.all():  # semi-supervised without initial classes: the labelled images
        rows = np.flatnonzero(known)
        images = images[rows] if not isinstance(images, PatchFile) else images.take(rows)
        classes = np.asarray(classes)[rows]
    return fit_class_templates(
        images,
        np.asarray(classes),
        count,
        True,
        model_config.translation,
        edge_sigmas_px=model_config.pose_edge_sigmas_px,
        refine_steps=model_config.pose_refine_steps,
        pose_candidates=model_config.pose_candidates,
    ).templates


def _template_turns(model: JTRVAE, images, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """(N, K') float32 every image's turn against every class's template (:meth:`JTRVAE.template_turns`), in rad."""
    turns = np.zeros((len(images), model.n_enumerated), np.float32)
    for start in range(0, len(images), batch_size):
        part = np.asarray(images[start : start + batch_size], dtype=np.float32)
        turns[start : start + len(part)] = model.template_turns(torch.from_numpy(part).to(device)).cpu().numpy()
    return turns


def _out_of_memory(error: Exception, device: torch.device, batch_size: int, last: Path) -> MicrovaeError:
    """The user-facing error for a device out of memory during training: what was tried, and a
    batch size that should fit (half, or what the free memory suggests on CUDA)."""
    suggestion = max(1, batch_size // 2)
    detail = ""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
        detail = f" ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free after clearing the cache)"
    kept = f"; the checkpoint {last} is kept" if last.exists() else ""
    return MicrovaeError(
        f"out of memory on {device} training batches of {batch_size}{detail}: "
        f"train with --batch-size {suggestion} (or a smaller --pixel-fraction) in a new run folder "
        f"or with --force{kept}"
    )


# --- building blocks of fit ---------------------------------------------------------------


@dataclass
class _TrainingState:
    model: JTRVAE
    trained: torch.nn.Module  # the model, or its DistributedDataParallel wrapper (one call = loss terms)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    shuffle_gen: torch.Generator
    noise_gen: torch.Generator
    model_config: JTRVAEConfig
    train_config: TrainConfig
    history: list[dict]
    world: World


TERMS = ("recon", "kl_z", "kl_tau", "kl_y")


def _train_one_epoch(state: _TrainingState, data: TrainingData, epoch: int, use_amp: bool, progress: ProgressCallback | None) -> dict:
    """One pass over this rank's share of the training images (and their labels, −1 = unknown)
    in shuffled batches; returns the epoch's mean terms over all ranks."""
    model, cfg = state.model, state.train_config
    model.train()
    betas = beta_schedule(epoch, cfg.epochs, state.model_config)
    steps = data.steps(cfg.batch_size)
    sums = torch.zeros(len(TERMS) + 2, device=data.device, dtype=torch.float64)
    started = time.perf_counter()
    guided = data.initial is not None and epoch < cfg.init_fraction * cfg.epochs
    if guided:
        betas["class_balance"] = 0.0  # the initial classes say how the classes are used
    for step, (x, y, turns) in enumerate(data.epoch_batches(cfg.batch_size, state.shuffle_gen, guided)):
        with torch.autocast(device_type=data.device.type, dtype=torch.bfloat16, enabled=use_amp):
            terms = state.trained(
                x, state.noise_gen, pixel_fraction=cfg.scored_fraction(x[0, 0].numel()), labels=y, use_z=betas["z_active"] > 0, class_turns=turns
            )
        loss = model.weighted_loss(terms, betas)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        batch_sums = torch.stack([loss.detach()] + [terms[k].detach().mean() for k in TERMS]) * len(x)
        sums[:-1] += batch_sums.double()
        sums[-1] += len(x)
        if progress is not None:
            values = batch_sums.cpu().tolist()
            progress(
                {
                    "event": "batch",
                    "epoch": epoch + 1,
                    "step": step + 1,
                    "steps": steps,
                    **{k: v / len(x) for k, v in zip(("loss",) + TERMS, values)},
                    "samples_per_s": state.world.size * (step * cfg.batch_size + len(x)) / (time.perf_counter() - started),
                }
            )
    sums = state.world.all_reduce_sum(sums)
    seconds = time.perf_counter() - started
    means = (sums[:-1] / sums[-1]).cpu().tolist()
    if not all(math.isfinite(v) for v in means):
        raise MicrovaeError(f"training diverged at epoch {epoch + 1} (loss is not finite); try a lower learning rate than {cfg.lr}")
    row = {"epoch": epoch + 1, **dict(zip(("loss",) + TERMS, means)), **betas}
    row["samples_per_s"] = float(sums[-1]) / seconds
    row["seconds"] = seconds
    return row


@torch.no_grad()
def _evaluate(model: JTRVAE, data: TrainingData, epoch: int, state: _TrainingState) -> dict:
    """Validation loss (no optimiser step, own generator) and images per argmax class (all images
    when resident; the validation images, or a sample of 20 000, when streamed)."""
    model.eval()
    betas = beta_schedule(epoch, state.train_config.epochs, state.model_config)
    out: dict = {"val_loss": float("nan"), "val_recon": float("nan")}
    batch = max(state.train_config.batch_size, 256)
    if len(data.val_rows) > 0:
        gen = torch.Generator(device=data.device).manual_seed(state.train_config.seed * 100_003 + epoch)
        loss_sum = recon_sum = 0.0
        for x, turns in data.blocks(data.val_rows, batch):
            terms = model.loss_terms(x, gen, use_z=betas["z_active"] > 0, class_turns=turns)
            loss_sum += float(model.weighted_loss(terms, betas)) * x.shape[0]
            recon_sum += float(terms["recon"].sum())
        out = {"val_loss": loss_sum / len(data.val_rows), "val_recon": recon_sum / len(data.val_rows)}
    counts = torch.zeros(model.n_enumerated, dtype=torch.long, device=data.device)
    for x, turns in data.blocks(data.count_rows(), batch):
        counts += torch.bincount(model.posterior(x, turns)["class_logits"].argmax(1), minlength=model.n_enumerated)
    out.update({f"n_class_{k}": int(c) for k, c in enumerate(counts.cpu().tolist())})
    return out


def build_model(config: JTRVAEConfig, seed: int) -> JTRVAE:
    """A freshly initialised model, its weights drawn from ``seed`` without touching global RNG state.

    Parameters
    ----------
    config : JTRVAEConfig
        The model's settings.
    seed : int
        Seed of the weights' initialisation.

    Returns
    -------
    JTRVAE
        The model, on the CPU.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return JTRVAE(config)


def measure_throughput(images, model_config: JTRVAEConfig, train_config: TrainConfig, warmup: int = 3, seconds: float = 0.5, max_steps: int = 50) -> float:
    """Training samples per second on this device.

    Optimiser steps of a fresh model with the run's settings on the first ``batch_size`` patches
    of ``images``. Touches no weights or random state of the run.

    Parameters
    ----------
    images : (N, C, W, W) float32 ndarray or PatchFile
        The patches (an array or a :class:`~microvae.streaming.PatchFile`).
    model_config : JTRVAEConfig
        The model's settings.
    train_config : TrainConfig
        The training settings (``batch_size``, ``lr``, ``device``, ``seed``, pixel fraction).
    warmup : int, default 3
        Untimed steps first.
    seconds : float, default 0.5
        Steps are timed until this many seconds have passed (at least 3 steps).
    max_steps : int, default 50
        At most this many timed steps.

    Returns
    -------
    float
        Training samples (patches) per second.
    """
    device = resolve_device(train_config.device)
    count = min(train_config.batch_size, len(images))
    batch = images.take(np.arange(count)) if isinstance(images, PatchFile) else images[:count]
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build_model(model_config, train_config.seed).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
        fraction = train_config.scored_fraction(x[0, 0].numel())
        betas = beta_schedule(0, max(train_config.epochs, 1), model_config)
        turns = model.template_turns(x) if model_config.template_pose else None  # searched once per run, not per step

        def step() -> None:
            loss = model.weighted_loss(model(x, pixel_fraction=fraction, class_turns=turns), betas)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        timed, started = 0, time.perf_counter()
        while timed < 3 or (time.perf_counter() - started < seconds and timed < max_steps):
            step()
            timed += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    return timed * count / max(time.perf_counter() - started, 1e-9)


# --- checkpoints ---------------------------------------------------------------------------


def _save_checkpoint(path: Path, state: _TrainingState, completed_epochs: int) -> None:
    schedule = beta_schedule(max(completed_epochs - 1, 0), state.train_config.epochs, state.model_config)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": completed_epochs,
        "schedule": {"epoch": completed_epochs, "n_epochs": state.train_config.epochs, **schedule},
        "model_state": state.model.state_dict(),
        "optimizer_state": state.optimizer.state_dict(),
        "scaler_state": state.scaler.state_dict(),
        "shuffle_generator": state.shuffle_gen.get_state(),
        "noise_generator": state.noise_gen.get_state(),
        "rng": _global_rng_states(),
        "history": state.history,
        "model_config": state.model_config.to_dict(),
        "train_config": state.train_config.to_dict(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    _atomic_write_bytes(path, buffer.getvalue())


def _load_resumable_checkpoint(path: Path, model_config: JTRVAEConfig, train_config: TrainConfig) -> dict | None:
    if not path.exists():
        return None
    checkpoint = load_checkpoint(path)
    if checkpoint["model_config"] != model_config.to_dict():
        raise ParameterError(f"{path.parent.parent}: the run was started with different model settings; use a new run folder to change them")
    saved = {k: v for k, v in checkpoint["train_config"].items() if k not in RESUMABLE_CHANGES}
    given = {k: v for k, v in train_config.to_dict().items() if k not in RESUMABLE_CHANGES}
    if saved != given:
        changed = sorted(k for k in given if saved.get(k) != given[k])
        raise ParameterError(
            f"{path.parent.parent}: cannot resume with changed training settings ({', '.join(changed)}); only {', '.join(RESUMABLE_CHANGES)} may change"
        )
    return checkpoint


def _global_rng_states() -> dict:
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_global_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = states["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    Raises
    ------
    OutputError
        The write failed (no space left, read-only location); ``path`` is unchanged and the
        temporary file removed.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    from .artifacts import remove_stale_temps

    remove_stale_temps(path.parent, f".{path.name}.", ".tmp")  # left by a killed writer
    try:
        with open(temp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        from .artifacts import describe_os_error

        raise OutputError(f"{path}: cannot write ({describe_os_error(error)}); the previous file, if any, is unchanged") from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _atomic_copy(source: Path, target: Path) -> None:
    _atomic_write_bytes(target, source.read_bytes())


def _write_config(path: Path, model_config: JTRVAEConfig, train_config: TrainConfig) -> None:
    from .artifacts import SCHEMA_VERSION

    text = json.dumps({"schema_version": SCHEMA_VERSION, "model": model_config.to_dict(), "train": train_config.to_dict()}, indent=2)
    _atomic_write_bytes(path, (text + "\n").encode())


# --- log and plot --------------------------------------------------------------------------


def write_log(path: Path, history: list[dict]) -> None:
    """Write the per-epoch history as CSV (columns: union of the rows' keys, in first-seen order).

    Parameters
    ----------
    path : Path
        The CSV file (written atomically; floats with 6 significant digits).
    history : list of dict
        One row per epoch.
    """
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    _atomic_write_bytes(path, buffer.getvalue().encode())


def plot_losses(path: Path, history: list[dict]) -> None:
    """Loss curves (total, reconstruction, KL terms, validation) against epoch, as PNG (Agg).

    Parameters
    ----------
    path : Path
        The PNG file (written atomically; nothing is written for an empty history).
    history : list of dict
        One row per epoch, with ``epoch``, ``loss``, ``recon``, ``val_loss``, ``kl_z``,
        ``kl_tau`` and ``kl_y`` (nats per image).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not history:
        return
    figure = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for key, style in (("loss", "-"), ("recon", "-"), ("val_loss", "--")):
        left.plot(epochs, [row[key] for row in history], style, label=key)
    left.set_xlabel("epoch")
    left.set_ylabel("nats per image")
    left.legend()
    for key in ("kl_z", "kl_tau", "kl_y"):
        right.plot(epochs, [row[key] for row in history], label=key)
    right.set_xlabel("epoch")
    right.set_ylabel("KL (nats per image)")
    right.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    _atomic_write_bytes(path, buffer.getvalue())

"""``microvae train``: a j-trVAE (or an ensemble of them) trained in a run folder that resumes."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import artifacts
from ..artifacts import Provenance
from ..baselines import fast_baseline, object_polarity, object_scale
from ..devices import describe_device, resolve_device
from ..discovery import (
    OBJECT_CANDIDATES,
    choose_initial_classes,
    choose_n_classes,
    class_count_spaces,
    learn_pose,
    restart_epochs,
)
from ..encoding import encode_array, neighbour_product
from ..ensemble import build_record, read_record
from ..errors import InputError, OutputError, ParameterError
from ..images import file_sha256
from ..run_folder import RUN_PROVENANCE, load_checkpoint, load_run, member_dir, prepare_run_dir, write_training_statistics
from ..streaming import RESIDENT_LIMIT_BYTES, PatchFile, evenly_spaced, evenly_spaced_rows
from ..templates import NEAR_SYMMETRY_CORRELATION, TEMPLATE_SAMPLE, TEMPLATES_FILE, fit_class_templates, pose_to_templates, symmetry_orders
from ..training import RESUMABLE_CHANGES, check_labels, distributed_world, fit, measure_throughput
from ..verdict import Verdict, assess
from .inputs import load_patch_input
from .result import StageResult

__all__ = ["STATISTICS_SAMPLE", "choose_likelihood", "read_labels", "run_train", "train_ensemble", "uses_class_init"]


def choose_likelihood(value_range: tuple[float, float], requested: str) -> str:
    """The likelihood a run uses: ``auto`` gives Bernoulli when every value lies in [0, 1]
    (normalised patches), else Gaussian.

    Parameters
    ----------
    value_range : tuple of (float, float)
        The lowest and highest value of the patches.
    requested : str
        ``"auto"``, ``"bernoulli"`` or ``"gaussian"``.

    Returns
    -------
    str
        ``"bernoulli"`` or ``"gaussian"`` for ``auto``, else ``requested`` itself.

    Raises
    ------
    ParameterError
        ``bernoulli`` was requested for patches with values outside [0, 1].
    """
    low, high = value_range
    inside_unit = low >= 0.0 and high <= 1.0
    if requested == "auto":
        return "bernoulli" if inside_unit else "gaussian"
    if requested == "bernoulli" and not inside_unit:
        raise ParameterError(
            f"--likelihood bernoulli needs values in [0, 1], the patches span [{low:.3g}, {high:.3g}]; "
            "use --likelihood gaussian or extract with --normalize image"
        )
    return requested


def run_train(
    patches: str | Path,
    run_dir: str | Path,
    model_config,
    train_config,
    force: bool = False,
    progress: Callable[[dict], None] | None = None,
    labels: str | Path | None = None,
    memory_limit: int = RESIDENT_LIMIT_BYTES,
    members: int | None = None,
    on_member: Callable[[int, StageResult], None] | None = None,
) -> StageResult:
    """Train a j-trVAE on a patches artifact or image stack, in a run folder that resumes.

    Under ``torchrun`` every process calls this; rank 0 alone writes the run folder.

    The configs passed in are not changed: the run works on copies, whose ``image_size``,
    ``channels`` and ``likelihood`` come from the data (and ``n_classes`` from ``--classes auto``);
    the run's own are in its ``config.json``. The run folder holds
    ``provenance.json`` (inputs, upstream chain, extraction recipe), ``config.json``,
    ``checkpoints/last.pt`` and ``final.pt``, ``log.csv`` and ``loss.png``. Running the same command
    again continues from the last checkpoint (or says the run is complete); other inputs or settings
    are refused unless ``force``.

    Parameters
    ----------
    patches : str or path
        A patches artifact or image stack (:func:`microvae.stages.inputs.load_patch_input`).
    run_dir : str or path
        The run folder (created; resumed when it holds this run).
    model_config : JTRVAEConfig
        The model's settings (copied; ``image_size``, ``channels`` and ``likelihood`` are taken
        from the data).
    train_config : TrainConfig
        The training settings (copied).
    force : bool, default False
        Clear the run's own files first and train again, whatever the folder holds.
    progress : callable, optional
        Called with each event dict: an ``event='estimate'`` dict before training (patches, epochs
        left, the pose run's epochs, patch passes, samples/s, seconds, device), ``candidate``
        events of the class initialisation, then :func:`microvae.training.fit`'s events.
    labels : str or path, optional
        A file of known classes for some patches (semi-supervised training, see
        :func:`read_labels`); its hash joins the run's provenance.
    memory_limit : int, default RESIDENT_LIMIT_BYTES
        Patches above this many bytes are streamed from their file (:mod:`microvae.streaming`).
    members : int, optional
        2 or more trains an ensemble instead (:func:`train_ensemble`).
    on_member : callable, optional
        With ``members``: ``on_member(index, result)`` after each member.

    Returns
    -------
    StageResult
        ``written`` or ``up-to-date`` (the run was complete with these inputs and settings); the
        summary holds ``epochs``, the last ``loss`` and ``val_loss``, ``run_dir`` and the
        ``verdict`` dict (:mod:`microvae.verdict`); the notes describe the data, resumption, the
        chosen K and initial classes, and the verdict's paragraph.

    Raises
    ------
    InputError
        The patches or labels cannot be read or do not fit (``--classes auto`` with streamed
        patches).
    ParameterError
        Settings that do not fit the data (e.g. ``bernoulli`` for values outside [0, 1]).
    OutputError
        The run folder holds another run (unless ``force``) or cannot be written.
    """

    if members is not None:
        return train_ensemble(patches, run_dir, model_config, train_config, members, force, progress, on_member, labels, memory_limit)
    run_dir = Path(run_dir)
    model_config, train_config = copy.deepcopy(model_config), copy.deepcopy(train_config)
    source = load_patch_input(patches, stream_above=memory_limit)
    model_config.image_size = int(source.images.shape[-1])
    model_config.channels = int(source.images.shape[1])
    model_config.likelihood = choose_likelihood(source.value_range, model_config.likelihood)
    model_config.validate()
    train_config.validate()

    parameters = {"model": model_config.to_dict(), "train": {k: v for k, v in train_config.to_dict().items() if k not in RESUMABLE_CHANGES}}
    inputs = [{"path": str(source.path), "sha256": source.sha256, "role": "patches"}]
    known = None
    if labels is not None:
        known = read_labels(labels, len(source.images), model_config.n_classes)
        inputs.append({"path": str(labels), "sha256": file_sha256(Path(labels)), "role": "labels"})
        parameters["labelled_patches"] = int((known >= 0).sum())
    provenance = Provenance(stage="train", parameters=parameters, inputs=inputs, upstream=[source.header.provenance_record()] if source.header else [])
    record = {
        **provenance.to_dict(),
        "recipe": source.recipe,
        "input_kind": source.kind,
        "patch_shape": list(source.images.shape[1:]),
        "training_images": [asdict(r) for r in source.records] if source.records else [],
    }
    world = distributed_world(train_config.device)
    if world.rank == 0:
        artifacts.check_writable_location(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    # rank 0 owns the folder: a second `train` into it is refused while this one runs
    with artifacts.output_lock(run_dir) if world.rank == 0 else contextlib.nullcontext():
        if world.rank == 0:
            status = prepare_run_dir(run_dir, provenance.fingerprint, train_config.epochs, force)
            if status != "complete":
                artifacts.check_writable_location(run_dir / RUN_PROVENANCE)
                run_dir.mkdir(parents=True, exist_ok=True)
                with artifacts.atomic_file(run_dir / RUN_PROVENANCE) as temp:
                    temp.write_text(json.dumps(record, indent=2, default=artifacts.json_default))
        world.barrier()
        if world.rank != 0:
            status = prepare_run_dir(run_dir, provenance.fingerprint, train_config.epochs, force=False)
        if status == "complete":
            notes = [f"run complete ({train_config.epochs} epochs) with these inputs and settings"]
            verdict = json.loads((run_dir / "summary.json").read_text())
            notes.append(verdict.get("paragraph", ""))
            return StageResult("up-to-date", run_dir, {"verdict": verdict}, notes)
        if progress is not None and world.rank == 0:
            progress(_training_estimate(source.images, model_config, train_config, run_dir, known))
        class_count = None
        if train_config.max_classes:
            class_count = _choose_class_count(source.images, model_config, train_config, run_dir / "init")
            model_config.n_classes = class_count.n_classes
        initial = None
        if uses_class_init(model_config, train_config, known, source.images):

            def on_candidate(candidate) -> None:
                if progress is not None:
                    progress({"event": "candidate", **asdict(candidate)})

            initial = choose_initial_classes(source.images, model_config, train_config, run_dir / "init", on_candidate)
            if initial.chosen == "fourier_kmeans" and model_config.rotation and model_config.encoder == "mlp":
                model_config.invariant_class_head = True  # the class posterior reads what the classes were found in
            if initial.chosen in ("tapered_pca_kmeans", "tapered_pca_tied") and model_config.encoder == "mlp":
                model_config.tapered_class_head = True  # likewise: the mean-removed, tapered patch
            if initial.chosen in OBJECT_CANDIDATES and model_config.encoder == "mlp":
                model_config.object_class_head = True  # likewise: the object's descriptor, read with the set's polarity (and size unit)
                model_config.object_polarity = object_polarity(np.asarray(source.images))
                model_config.object_centred = not model_config.translation  # as the candidate read it
                if initial.chosen == OBJECT_CANDIDATES[1]:
                    model_config.object_scale_px = object_scale(np.asarray(source.images), model_config.object_polarity)
        result = fit(
            source.images, model_config, train_config, run_dir, progress=progress, labels=known, init_labels=None if initial is None else initial.labels
        )
        verdict = None
        if world.rank == 0:
            verdict = _summarise_training(result.model, source.images, run_dir, train_config, initial)
    last = result.history[-1] if result.history else {}
    notes = [
        f"{len(source.images)} patches {tuple(source.images.shape[1:])}, likelihood {model_config.likelihood}, {model_config.n_classes} classes"
        + (" (streamed from disk)" if isinstance(source.images, PatchFile) else "")
    ]
    if world.size > 1:
        notes.append(f"DistributedDataParallel over {world.size} processes ({world.device.type}); batch {train_config.batch_size} per process")
    if known is not None:
        notes.append(f"semi-supervised: {int((known >= 0).sum())} labelled patches ({100 * (known >= 0).mean():.1f}%)")
    if result.resumed_from_epoch is not None:
        notes.append(f"resumed from epoch {result.resumed_from_epoch}")
    if class_count is not None:
        notes.append(
            f"--classes auto chose K = {class_count.n_classes} (lowest BIC of Gaussian mixtures; RUN_DIR/init/classes_auto.json):\n" + class_count.table()
        )
        if class_count.one_class_best:
            notes.append("warning: one Gaussian explains these patches better than any K tried: they may hold no classes")
        elif class_count.at_largest:
            notes.append(
                f"warning: the BIC is lowest at the largest K tried ({class_count.n_classes}): the patches may hold more groups, or groups"
                " that are not Gaussian there (sub-kinds, a continuum); raise --max-classes or give K, and compare --ensemble runs"
            )
    if initial is not None:
        how = "best separated, a space with no more than K groups preferred" if initial.criterion == "separation" else "lowest held-out −ELBO of a short run"
        notes.append(f"initial classes: {initial.chosen} ({how}; RUN_DIR/init/selection.json)\n" + initial.table())
    summary = {"epochs": result.epochs_completed, "loss": last.get("loss"), "val_loss": last.get("val_loss"), "run_dir": str(run_dir)}
    if verdict is not None:
        notes.append(verdict.paragraph())
        summary["verdict"] = verdict.to_dict()
    return StageResult("written", run_dir, summary, notes)


def _training_estimate(images, model_config, train_config, run_dir: Path, known) -> dict:
    """The work a run has left and how long it should take here: an ``event='estimate'`` dict with
    patches, epochs left, the pose run's epochs, patch passes, samples/s (measured on a few steps
    of this run's model, :func:`microvae.training.measure_throughput`) and seconds."""

    last = run_dir / "checkpoints" / "last.pt"
    done = int(load_checkpoint(last)["epoch"]) if last.exists() else 0
    epochs = max(train_config.epochs - done, 0)
    pose = 0
    if done == 0 and uses_class_init(model_config, train_config, known, images):
        short = restart_epochs(train_config)
        pose = short * ((model_config.rotation or model_config.translation) + 4 * (train_config.class_init == "restarts"))
    if train_config.max_classes:  # --classes auto: time the largest K it tries
        model_config = dataclasses.replace(model_config, n_classes=train_config.max_classes)
    train_rows = len(images) - int(round(train_config.val_fraction * len(images)))
    passes = train_rows * (epochs + pose)
    rate = measure_throughput(images, model_config, train_config) if passes else float("inf")
    return {
        "event": "estimate",
        "patches": int(len(images)),
        "epochs": epochs,
        "done": done,
        "pose_epochs": pose,
        "passes": int(passes),
        "samples_per_s": rate,
        "seconds": passes / rate,
        "device": describe_device(resolve_device(train_config.device)),
    }


def train_ensemble(
    patches: str | Path,
    run_dir: str | Path,
    model_config,
    train_config,
    members: int,
    force: bool = False,
    progress: Callable[[dict], None] | None = None,
    on_member: Callable[[int, StageResult], None] | None = None,
    labels: str | Path | None = None,
    memory_limit: int = RESIDENT_LIMIT_BYTES,
) -> StageResult:
    """Train an ensemble of runs, then align their classes.

    ``members`` runs with seeds seed, seed + 1, … are trained in ``run_dir/member_i`` (each resumes
    like :func:`run_train`), then their classes are aligned to member 0's and ``ensemble.json`` is
    written (:mod:`microvae.ensemble`). Rerunning finishes what an interruption left.

    Parameters
    ----------
    patches : str or path
        A patches artifact or image stack.
    run_dir : str or path
        The ensemble's folder (not an ordinary single run's).
    model_config : JTRVAEConfig
        The model's settings (copied for each member); ``n_classes`` must be 2 or more.
    train_config : TrainConfig
        The training settings; member i trains with ``seed + i``.
    members : int
        How many members (2 or more).
    force : bool, default False
        Passed to each member's :func:`run_train`.
    progress : callable, optional
        Called with each member's events, which carry ``member`` and count ``epoch`` over all
        members (member i's epoch e is i × epochs + e).
    on_member : callable, optional
        ``on_member(index, result)`` after each member, with its :class:`StageResult`.
    labels : str or path, optional
        Known classes of some patches; every member is semi-supervised by the same labels.
    memory_limit : int, default RESIDENT_LIMIT_BYTES
        Patches above this many bytes are streamed, for training and for the alignment's encoding
        alike.

    Returns
    -------
    StageResult
        ``written`` or ``up-to-date`` (every member was complete and the alignment recorded); the
        summary holds ``members``, ``mean_pairwise_ari``, ``pairwise_ari``, ``classes_used`` and
        ``run_dir``.

    Raises
    ------
    ParameterError
        Fewer than 2 members, or fewer than 2 classes.
    OutputError
        ``run_dir`` is a file, or holds an ordinary (single) run.
    """
    if members < 2:
        raise ParameterError(f"an ensemble needs at least 2 members, got {members}")
    if model_config.n_classes < 2:
        raise ParameterError("an ensemble aligns classes: give --classes 2 or more")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder; the ensemble needs a folder")
    if run_dir.is_dir() and (run_dir / RUN_PROVENANCE).exists():
        raise OutputError(f"{run_dir}: holds an ordinary (single) run; choose another folder for the ensemble")
    seeds = [train_config.seed + index for index in range(members)]
    statuses = []
    for index, seed in enumerate(seeds):

        def member_progress(event: dict, offset: int = index * train_config.epochs, member: int = index) -> None:
            if progress is not None:
                progress({**event, "member": member, **({"epoch": offset + event["epoch"]} if "epoch" in event else {})})

        result = run_train(
            patches,
            member_dir(run_dir, index),
            copy.deepcopy(model_config),
            dataclasses.replace(train_config, seed=seed),
            force=force,
            progress=member_progress,
            labels=labels,
            memory_limit=memory_limit,
        )
        statuses.append(result.status)
        if on_member is not None:
            on_member(index, result)
    names = [member_dir(run_dir, i).name for i in range(members)]
    status = "up-to-date" if all(s == "up-to-date" for s in statuses) else "written"
    record = read_record(run_dir) if status == "up-to-date" else None
    if record is None or record.members != names or record.seeds != seeds:  # align the (new) members
        source = load_patch_input(patches, stream_above=memory_limit)
        labels = []
        for index in range(members):
            model, _ = load_run(member_dir(run_dir, index), device="cpu")
            labels.append(encode_array(model, source.images, device=train_config.device, recon_error=False)["class"])
        record = build_record(labels, model_config.n_classes, names, seeds)
        record.write(run_dir)
        status = "written"
        counts = [np.bincount(label, minlength=model_config.n_classes).tolist() for label in labels]
    notes = [
        f"{members} members (seeds {seeds[0]}–{seeds[-1]}); mean pairwise ARI of their classes {record.mean_pairwise_ari:.3f} "
        "(near 1: stable classes; compare across --classes to choose K)"
    ]
    if status == "written":
        notes.append(f"patches per class, by member: {counts}")
    if min(record.classes_used) < model_config.n_classes:
        notes.append(f"some members fill fewer than {model_config.n_classes} classes (classes used: {record.classes_used}): their agreement says little")
    summary = {
        "members": members,
        "mean_pairwise_ari": record.mean_pairwise_ari,
        "pairwise_ari": record.pairwise_ari,
        "classes_used": record.classes_used,
        "run_dir": str(run_dir),
    }
    return StageResult(status, run_dir, summary, notes)


def read_labels(path: str | Path, count: int, n_classes: int) -> np.ndarray:
    """Known classes of some patches, as (count,) int64 with −1 for unknown.

    Parameters
    ----------
    path : str or path
        A CSV of ``patch_index,class`` rows (a header line is allowed; indices are rows of the
        patches artifact, 0-based; each patch at most once) or a .npy array of ``count`` integers
        with −1 for unknown.
    count : int
        The number of patches.
    n_classes : int
        The model's number of classes K; labels must lie in 0…K − 1
        (:func:`microvae.training.check_labels`).

    Returns
    -------
    (count,) int64 ndarray
        Each patch's class, −1 where unknown.

    Raises
    ------
    InputError
        No such file, an unreadable .npy, a malformed or repeated CSV row, an index outside
        0…count − 1, or labels that do not fit ``count`` and ``n_classes``.
    """

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file (expected a CSV of patch_index,class rows or a .npy array)")
    if path.suffix.lower() == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise InputError(f"{path}: not a readable .npy array ({error})") from error
    else:
        labels = np.full(count, -1, dtype=np.int64)
        first_line = {}  # patch index -> the line that labelled it
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = [f.strip() for f in line.replace(";", ",").split(",")]
            if not line.strip() or (number == 1 and not fields[0].lstrip("-").isdigit()):
                continue
            try:
                index, label = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise InputError(f"{path}:{number}: expected 'patch_index,class', got {line.strip()!r}") from None
            if not 0 <= index < count:
                raise InputError(f"{path}:{number}: patch index {index} is outside 0…{count - 1}")
            if index in first_line:
                raise InputError(f"{path}:{number}: patch {index} is labelled again (first on line {first_line[index]}); give each patch one row")
            first_line[index] = number
            labels[index] = label
    try:
        return check_labels(labels, count, n_classes)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


#: Training statistics are taken over at most this many patches, evenly spaced.
STATISTICS_SAMPLE = 20_000


def uses_class_init(model_config, train_config, labels, images) -> bool:
    """Whether training starts its classes from :mod:`microvae.discovery`.

    It does with classes (K ≥ 2), a ``class_init`` other than 'none', no user labels (they already
    say what the classes are) and patches in memory.

    Parameters
    ----------
    model_config : JTRVAEConfig
        The model's settings (``n_classes``).
    train_config : TrainConfig
        The training settings (``class_init``).
    labels : (N,) int ndarray or None
        The user's known classes, if any.
    images : (N, C, W, W) float32 ndarray or PatchFile
        The patches (a :class:`~microvae.streaming.PatchFile` when streamed).

    Returns
    -------
    bool
        True when the classes start from :func:`microvae.discovery.choose_initial_classes`.
    """
    return model_config.n_classes >= 2 and train_config.class_init != "none" and labels is None and not isinstance(images, PatchFile)


def _choose_class_count(images, model_config, train_config, folder: Path):
    """K for ``--classes auto`` (:func:`microvae.discovery.choose_n_classes`), written to
    ``folder/classes_auto.json``."""

    if isinstance(images, PatchFile):
        raise InputError(f"{images.path}: --classes auto needs the patches in memory; raise --memory-limit-gb or give K")
    pose = learn_pose(images, model_config, train_config, folder)
    spaces = class_count_spaces(images, train_config.seed, pose, model_config.rotation)
    choice = choose_n_classes(spaces, range(2, train_config.max_classes + 1), train_config.seed)

    if distributed_world(train_config.device).rank == 0:
        with artifacts.atomic_file(folder / "classes_auto.json") as temp:
            temp.write_text(
                json.dumps(
                    {
                        "n_classes": choice.n_classes,
                        "space": choice.space,
                        "one_class_best": choice.one_class_best,
                        "at_largest": choice.at_largest,
                        "rows": choice.rows,
                    },
                    indent=2,
                )
            )
    return choice


def _summarise_training(model, images, run_dir: Path, train_config, initial) -> Verdict:
    """One encoding pass over at most :data:`STATISTICS_SAMPLE` evenly spaced training patches
    gives the training statistics (reconstruction error and −ELBO, for the out-of-distribution
    checks of ``encode``: ``training_stats.json``), with rotation the class templates of the
    model's classes (``class_templates.npz``, :func:`microvae.templates.fit_class_templates`) and
    the run's :class:`~microvae.verdict.Verdict` (``summary.json``, written last)."""

    rows = evenly_spaced_rows(len(images), STATISTICS_SAMPLE)
    sample = evenly_spaced(images, STATISTICS_SAMPLE)  # those rows, in memory
    encoded = encode_array(model, sample, batch_size=1024, device=train_config.device, neg_elbo=True, residual_neighbours=True)
    write_training_statistics(run_dir, encoded["recon_error"], encoded["neg_elbo"])
    k = model.config.n_classes
    angles = None
    if model.config.rotation:  # templates of the model's classes; their angle beside the latent's on the templates' sample
        templates = fit_class_templates(sample, encoded["class"], max(k, 1), True, model.config.translation, TEMPLATE_SAMPLE)
        templates.save(run_dir / TEMPLATES_FILE)
        template_rows = evenly_spaced_rows(len(sample), TEMPLATE_SAMPLE)  # rows of `sample` (not of `images`, as `rows`)
        poses = pose_to_templates(
            evenly_spaced(sample, TEMPLATE_SAMPLE), encoded["class"][template_rows], templates, device=resolve_device(train_config.device)
        )
        near_orders = symmetry_orders(templates.templates, threshold=NEAR_SYMMETRY_CORRELATION)  # a search may read a nearly symmetric shape a turn apart
        orders = tuple(order if present else 1 for order, present in zip(near_orders, templates.has_members))
        angles = (encoded["angle_rad"][template_rows], poses.angle_rad, encoded["class"][template_rows], orders)  # compared modulo each shape's (near) symmetry
    values = np.asarray(sample, dtype=np.float64)
    pixel_variance = float(values.var(axis=0).mean())
    neighbours = None
    if "recon_neighbour_product" in encoded:  # the same covariance of the patches about the mean patch: what the residual's is measured against
        neighbours = (encoded["recon_neighbour_product"], float(neighbour_product(torch.from_numpy(values - values.mean(axis=0))).mean()))
    baseline = None
    if k >= 2:
        name = "fourier_kmeans" if model.config.rotation else "pca_kmeans"
        baseline = (name, fast_baseline(sample, k, model.config.rotation, seed=train_config.seed))
    verdict = assess(
        encoded["class_probs"] if k >= 2 else None,
        encoded["recon_error"],
        pixel_variance,
        baseline,
        {name: labels[rows] for name, labels in initial.candidate_labels.items()} if initial else None,
        initial.chosen if initial else None,
        initial.chosen_strength if initial else None,
        angles,
        neighbours,
    )
    with artifacts.atomic_file(run_dir / "summary.json") as temp:
        temp.write_text(json.dumps(verdict.to_dict(), indent=2))
    return verdict

"""``microvae encode``: every patch (or every patch of new scans) through a trained run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts
from ..artifacts import Provenance, write_dataset
from ..config import EncodeConfig, ExtractConfig, FindAtomsConfig
from ..devices import describe_device, resolve_device
from ..encoding import encode_array, measure_encode_rate, scan_summaries
from ..ensemble import consensus, permute_probs, read_record
from ..errors import InputError, ParameterError
from ..images import LENGTH_UNITS_M, file_sha256, read_scans
from ..run_folder import load_run, member_dir, read_run_provenance, read_training_statistics, run_patch_side
from ..templates import TEMPLATES_FILE, pose_to_templates, read_class_templates
from .extract import run_extract
from .find_atoms import run_find_atoms
from .inputs import input_kind, load_patch_input, stored_shape
from .result import ProgressCallback, StageResult, no_progress
from .train import read_labels

__all__ = ["ESTIMATE_MIN_PATCHES", "OVERRIDE_FLAGS", "encode_estimate", "run_encode", "run_encode_inputs", "run_encode_scans"]


def run_encode(
    run_dir: str | Path,
    patches: str | Path,
    output: str | Path,
    config: EncodeConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    labels: str | Path | None = None,
    ignore_calibration: bool = False,
    estimate: Callable[[dict], None] | None = None,
) -> StageResult:
    """Encode a patches artifact (or stack) with a trained run and write an ``encoded`` artifact.

    Patches above ``config.memory_limit_bytes`` are read block by block (:mod:`microvae.streaming`).
    An ensemble's folder encodes with every member: latents, angles and provenance come from member
    0, the classes are the members' consensus (``class_agreement``, ``class_prob_sd``).

    Parameters
    ----------
    run_dir : str or path
        The output folder of ``microvae train`` (a single run or an ensemble).
    patches : str or path
        A patches artifact or stack of the run's patch shape (C, W, W).
    output : str or path
        The ``encoded`` artifact to write (HDF5, written atomically).
    config : EncodeConfig, optional
        Device, batch size, scores, bf16, memory limit, refinement
        (:class:`~microvae.config.EncodeConfig`; defaults when omitted).
    force : bool, default False
        Rewrite an artifact that is up to date.
    progress : callable, optional
        ``progress(description, completed, total)``.
    labels : str or path, optional
        A file of known classes (as for ``train --labels``): those patches keep their class
        (one-hot ``class_probs``, reconstruction and −ELBO with it; a conditional model's
        inference) and ``class_observed`` marks them. A single run only, without refinement.
    ignore_calibration : bool, default False
        Accept patches cut from scans whose pixel size differs from the training scans' by more
        than 2 % (refused otherwise; a bare stack records no pixel size and is not checked).
    estimate : callable, optional
        When there are at least :data:`ESTIMATE_MIN_PATCHES` patches, called once before the work
        starts with the expected time (:func:`encode_estimate`).

    Returns
    -------
    StageResult
        ``written`` or ``up-to-date``; the summary holds ``patches``, ``class_counts``, the
        per-scan out-of-distribution summaries ``scans``, ``mean_recon_error`` (with scores) and
        ``refine`` (with refinement: mean −ELBO before and after, in nats, and the fraction
        improved).

    Raises
    ------
    InputError
        No such run folder; patches of another shape, extraction recipe or pixel size than the
        training patches; unreadable labels.
    ParameterError
        ``labels`` with an ensemble or with refinement.

    Notes
    -----
    Datasets: ``class_probs`` (N, K), ``class`` (N,), ``z_mean``/``z_sd`` (N, D), ``angle_rad`` (N,)
    (rad), ``angle_concentration`` (N,), with a run trained with rotation (and
    ``config.uses_template_angle``: by default with scores) ``template_angle_rad`` (N,) (rad) and
    ``template_match`` (N,) (:mod:`microvae.templates`), ``shift_px``/``shift_sd_px`` (N, 2) (row, col) px,
    ``recon_error`` (N,), ``neg_elbo`` (N,) (nats), and for patches artifacts ``coords`` (N, 2)
    (row, col) px, ``image_index`` (N,) and ``/images``. With ``config.refine.steps`` > 0 each patch's posterior is optimised against the fixed decoder
    first (:mod:`microvae.refine`); ``neg_elbo_encoder`` (N,) then keeps the encoder's value beside
    the refined ``neg_elbo``. ``config.scores=False`` leaves out ``recon_error`` and ``neg_elbo`` (and
    the comparison with the training data): the encoder alone runs, with no decoder pass, which is
    what mapping a large stack at full speed needs. ``config.amp`` runs the networks in bfloat16 on CUDA.
    """
    config = config or EncodeConfig()
    config.validate()
    refine, device, batch_size, scores, amp = config.refine, config.device, config.batch_size, config.scores, config.amp
    memory_limit = config.memory_limit_bytes

    progress = progress or no_progress
    run_dir = Path(run_dir)
    output = Path(output)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder (expected the output folder of 'microvae train')")
    ensemble = read_record(run_dir)
    ensemble_dir = run_dir if ensemble else None
    if ensemble:
        run_dir = member_dir(run_dir, 0)  # latents, angles and provenance come from member 0
    model, configs = load_run(run_dir, device="cpu")
    run_record = read_run_provenance(run_dir)
    source = load_patch_input(patches, stream_above=memory_limit)
    model_config = configs["model"]
    expected = (model_config.channels, model_config.image_size, model_config.image_size)
    if tuple(source.images.shape[1:]) != expected:
        raise InputError(
            f"{patches}: patches are {'×'.join(map(str, source.images.shape[1:]))} (C×W×W) but the model in {run_dir} was trained on {'×'.join(map(str, expected))}"
        )
    _check_recipe_matches(run_record.get("recipe"), source.recipe, patches, run_dir)
    if not ignore_calibration:
        for record in source.records or []:
            _check_pixel_size(f"{patches}: patches from {record.name}", record.pixel_size, record.unit, run_record.get("training_images") or [])
    checkpoint = run_dir / "checkpoints" / ("final.pt" if (run_dir / "checkpoints" / "final.pt").exists() else "last.pt")

    inputs = [
        {"path": str(source.path), "sha256": source.sha256, "role": "patches"},
        {"path": str(checkpoint), "sha256": file_sha256(checkpoint), "role": "model"},
    ]
    known = None
    if labels is not None:
        if ensemble or refine.steps:
            raise ParameterError("encode --labels works with a single run and without --refine")
        known = read_labels(labels, len(source.images), model_config.n_classes)
        inputs.append({"path": str(labels), "sha256": file_sha256(Path(labels)), "role": "labels"})
    templates = read_class_templates(run_dir) if config.uses_template_angle and model_config.rotation else None
    if templates is not None:
        inputs.append({"path": str(run_dir / TEMPLATES_FILE), "sha256": file_sha256(run_dir / TEMPLATES_FILE), "role": "class templates"})
    upstream = ([source.header.provenance_record()] if source.header else []) + ([{k: v for k, v in run_record.items() if k != "recipe"}] if run_record else [])
    parameters = {"run_epoch": configs["epoch"], "batch_size": batch_size, "scores": scores, "amp": amp, "template_angle": templates is not None}
    if ensemble:
        parameters["ensemble"] = {"members": ensemble.members, "permutations": ensemble.permutations}
        inputs += [
            {
                "path": str(member_dir(ensemble_dir, i) / "checkpoints" / "final.pt"),
                "sha256": file_sha256(member_dir(ensemble_dir, i) / "checkpoints" / "final.pt"),
                "role": "model",
            }
            for i in range(1, len(ensemble.members))
        ]
    if refine.steps:
        parameters["refine"] = asdict(refine)
    provenance = Provenance(stage="encode", parameters=parameters, inputs=inputs, upstream=upstream)
    plan = artifacts.plan_output(output, provenance.fingerprint, force)
    if plan.action == "skip":
        return StageResult("up-to-date", output, notes=[plan.reason])

    if estimate is not None and len(source.images) >= ESTIMATE_MIN_PATCHES:
        estimate(encode_estimate(model, source.images, config, members=len(ensemble.members) if ensemble else 1, templates=templates))
    task = "encoding" if not refine.steps else f"encoding, refining {refine.steps} steps"
    encoded = encode_array(
        model,
        source.images,
        batch_size=batch_size,
        device=device,
        refine=refine,
        labels=known,
        recon_error=scores,
        neg_elbo=scores,
        amp=amp,
        progress=lambda done, total: progress(task, done, total),
    )
    if refine.steps:
        encoded["neg_elbo"] = encoded["neg_elbo_refined"].astype(np.float64)
    if ensemble:
        encoded.update(_ensemble_classes(ensemble_dir, ensemble, source.images, encoded["class_probs"], batch_size, device, progress))
    if templates is not None:  # after the classes are final (an ensemble's consensus)
        poses = pose_to_templates(
            source.images, encoded["class"], templates, device=resolve_device(device), progress=lambda done, total: progress("template angle", done, total)
        )
        encoded["template_angle_rad"], encoded["template_match"] = poses.angle_rad, poses.match
    count = len(source.images)
    training_stats = read_training_statistics(run_dir)
    image_index = source.image_index if source.image_index is not None else np.zeros(count, np.int32)
    names = [record.name for record in source.records] if source.records else [source.path.name]
    summaries = scan_summaries(image_index, encoded.get("recon_error"), encoded.get("neg_elbo"), names, training_stats)
    with artifacts.atomic_h5(output, provenance, "encoded") as handle:
        if source.coords is not None:
            write_dataset(handle, "coords", source.coords, "px", "patch centre (row, col) in source pixels (from the patches artifact)", axes="row,col")
            write_dataset(handle, "image_index", source.image_index, "", "row of /images the patch was cut from")
            artifacts.write_image_table(handle, source.records)
            for name, (values, units, description) in source.atom_values.items():
                write_dataset(handle, name, values, units, description + " (from the patches artifact)")
        else:
            write_dataset(handle, "image_index", np.zeros(count, np.int32), "", "all patches come from one stack (no source images)")
        descriptions = {
            "class_probs": ("", "q(y|x): probability of each class (columns sum to 1)"),
            "class": ("", "argmax of class_probs"),
            "z_mean": ("latent units", "mean of q(z|x), continuous latents (prior N(0, 1))"),
            "z_sd": ("latent units", "sd of q(z|x)"),
            "angle_rad": (
                "rad",
                "posterior angle of the patch's rotation relative to the learned canonical frame, in (−π, π], counter-clockwise in (row, col) display coordinates as documented in microvae.nets",
            ),
            "template_angle_rad": (
                "rad",
                "turn that takes the patch's class template onto the patch, found by search over 72 turns and the shifts (refined by a parabola), in (−π, π], "
                "counter-clockwise as displayed, from the template's own orientation (arbitrary per class; NaN: the class has no template)",
            ),
            "template_match": ("", "normalised correlation of the patch with its posed class template (1 = identical up to contrast and offset)"),
            "angle_concentration": ("", "sharpness of q(angle|x): |mean|/sd of the projected-normal's 2D vector (large = certain)"),
            "shift_px": ("px", "posterior mean shift (row, col) of the object relative to the patch centre"),
            "shift_sd_px": ("px", "posterior sd of the shift"),
            "recon_error": ("normalised intensity²", "mean squared error between the patch and its reconstruction from the posterior means (argmax class)"),
            "neg_elbo": ("nats", "negative ELBO of the patch under the model (β = 1, one fixed-seed draw): high means poorly explained"),
        }
        if ensemble:
            descriptions["class_probs"] = (
                "",
                f"q(y|x) averaged over the {len(ensemble.members)} ensemble members after aligning their classes to member 0's (columns sum to 1)",
            )
            descriptions["class"] = ("", "argmax of the ensemble's class_probs")
            descriptions["class_agreement"] = ("", "fraction of ensemble members whose own argmax class equals `class` (1/M to 1; low = uncertain)")
            descriptions["class_prob_sd"] = ("", "sd over ensemble members of the aligned q(y|x), mean over classes")
        if refine.steps:
            descriptions["neg_elbo"] = (
                "nats",
                f"negative ELBO of the patch after {refine.steps} steps of per-sample refinement of its posterior (β = 1, mean of {refine.eval_draws} fixed-seed draws)",
            )
            descriptions["neg_elbo_encoder"] = ("nats", "negative ELBO with the encoder's posterior, before refinement (the same draws)")
        if known is not None:
            encoded["class_observed"] = known >= 0
            descriptions["class_observed"] = ("", "True where the class was given (encode --labels) rather than inferred")
        for name, (units, description) in descriptions.items():
            if name in encoded:
                write_dataset(handle, name, encoded[name], units, description)
        handle.attrs["n_classes"] = int(model_config.n_classes)
        handle.attrs["latent_dim"] = int(model_config.latent_dim)
        handle.attrs["rotation"] = bool(model_config.rotation)
        handle.attrs["translation"] = bool(model_config.translation)
        handle.attrs["run_dir"] = str(ensemble_dir or run_dir)
        if ensemble:
            handle.attrs["ensemble_members"] = len(ensemble.members)
            handle.attrs["ensemble_mean_pairwise_ari"] = ensemble.mean_pairwise_ari
        handle.attrs["window"] = int(source.images.shape[-1])
        handle.attrs["scan_summaries"] = artifacts.to_json(summaries)
        handle.attrs["scores"] = bool(scores)
        if training_stats and scores:
            handle.attrs["training_statistics"] = artifacts.to_json({k: asdict(v) for k, v in training_stats.items()})
    counts = np.bincount(encoded["class"], minlength=max(model_config.n_classes, 1))
    notes = [f"{count} patches encoded; patches per class: {counts.tolist()}"]
    if templates is not None:
        notes.append(
            f"template angle (template_angle_rad) read against each class's template; median match {np.nanmedian(encoded['template_match']):.2f} (1 = identical)"
        )
    elif config.uses_template_angle and model_config.rotation:
        notes.append(f"no template angle: {run_dir} has no {TEMPLATES_FILE} (trained by an older microvae); train again to get one")
    if ensemble:
        notes.append(
            f"ensemble of {len(ensemble.members)}: all members agree on {100 * (encoded['class_agreement'] == 1).mean():.1f}% of patches "
            f"(mean agreement {encoded['class_agreement'].mean():.3f}; training-set pairwise ARI {ensemble.mean_pairwise_ari:.3f})"
        )
    for entry in summaries:
        if "neg_elbo_ratio" in entry:
            notes.append(
                f"{entry['scan']}: recon error {entry['recon_error_ratio']:.2f}× and −ELBO {entry['neg_elbo_ratio']:.2f}× the training data's; "
                f"{100 * entry['beyond_training_p99']:.1f}% of patches beyond the training 99th percentile"
            )
    summary = {"patches": count, "class_counts": counts.tolist(), "scans": summaries}
    if scores:
        summary["mean_recon_error"] = float(encoded["recon_error"].mean())
    if refine.steps:
        before, after = encoded["neg_elbo_encoder"], encoded["neg_elbo_refined"]
        summary["refine"] = {
            "steps": refine.steps,
            "mean_neg_elbo_encoder": float(before.mean()),
            "mean_neg_elbo_refined": float(after.mean()),
            "improved_fraction": float((after < before).mean()),
        }
        notes.append(
            f"refinement ({refine.steps} steps): mean −ELBO {before.mean():.2f} → {after.mean():.2f} nats; "
            f"{100 * (after < before).mean():.1f}% of patches improved"
        )
    return StageResult("written", output, summary, notes)


#: Fewer patches than this are encoded without a timed estimate first (they take seconds).
ESTIMATE_MIN_PATCHES = 256


def encode_estimate(model, images, config: EncodeConfig, members: int = 1, templates=None) -> dict:
    """How long encoding ``images`` should take here.

    The rate is timed on 1/16 of the patches (16 to 256 of them,
    :func:`microvae.encoding.measure_encode_rate`); an ensemble's other members add one
    encoder-only pass each, class templates one timed template search.

    Parameters
    ----------
    model : JTRVAE
        The trained model (member 0's for an ensemble).
    images : (N, C, W, W) float32 ndarray or PatchFile
        The patches to encode.
    config : EncodeConfig
        Batch size, device, bf16, scores and refinement, as the encoding will use them.
    members : int, default 1
        The ensemble's number of members.
    templates : ClassTemplates, optional
        The run's class templates, when the template angle is computed.

    Returns
    -------
    dict
        ``event='estimate'`` with ``patches``, ``decoder_passes`` per patch (0 without scores or
        with refinement; 1 + K with scores), ``refine_steps``, ``members``, ``samples_per_s``
        (the networks' rate), ``template_seconds`` (s: the template search, 0 without),
        ``seconds`` (s, all of it) and ``device`` (its description).
    """
    count = len(images)
    sample = max(16, min(256, count // 16))
    settings = {"batch_size": config.batch_size, "device": config.device, "amp": config.amp}
    rate = measure_encode_rate(model, images, sample, refine=config.refine, recon_error=config.scores, neg_elbo=config.scores, **settings)
    seconds = count / rate
    if members > 1:
        seconds += (members - 1) * count / measure_encode_rate(model, images, sample, recon_error=False, **settings)
    template_seconds = 0.0
    if templates is not None:
        started = time.perf_counter()
        pose_to_templates(images[:sample], np.zeros(sample, np.int64), templates, device=resolve_device(config.device))
        template_seconds = count * (time.perf_counter() - started) / sample
    return {
        "event": "estimate",
        "patches": int(count),
        "decoder_passes": (1 + model.n_enumerated) if config.scores and not config.refine.steps else 0,
        "refine_steps": int(config.refine.steps),
        "members": int(members),
        "samples_per_s": rate,
        "template_seconds": template_seconds,
        "seconds": seconds + template_seconds,
        "device": describe_device(resolve_device(config.device)),
    }


def _ensemble_classes(
    ensemble_dir: Path, ensemble, images: np.ndarray, first_probs: np.ndarray, batch_size: int, device: str, progress
) -> dict[str, np.ndarray]:
    """Consensus class, class_probs, class_agreement and class_prob_sd of an ensemble's members."""

    aligned = [permute_probs(first_probs, np.asarray(ensemble.permutations[0]))]
    for index in range(1, len(ensemble.members)):
        progress("encoding ensemble members", index, len(ensemble.members))
        model, configs = load_run(member_dir(ensemble_dir, index), device="cpu")
        probs = encode_array(model, images, batch_size=batch_size, device=device, recon_error=False)["class_probs"]
        aligned.append(permute_probs(probs, np.asarray(ensemble.permutations[index])))
    progress("encoding ensemble members", len(ensemble.members), len(ensemble.members))
    combined = consensus(np.stack(aligned))
    return {
        "class_probs": combined.class_probs.astype(np.float32),
        "class": combined.labels,
        "class_agreement": combined.agreement.astype(np.float32),
        "class_prob_sd": combined.prob_sd.astype(np.float32),
    }


def _check_recipe_matches(run_recipe: dict | None, patch_recipe: dict | None, patches, run_dir) -> None:
    """Refuse patches extracted differently from the training patches (FFT vs real space, normalisation, window)."""
    if not run_recipe or not patch_recipe:
        return
    trained = run_recipe.get("extract") or {}
    given = patch_recipe.get("extract") or {}
    for key in ("fft", "normalize", "window"):
        if key in trained and key in given and trained[key] != given[key]:
            raise InputError(
                f"{patches}: extracted with {key}={given[key]!r} but the model in {run_dir} was trained on {key}={trained[key]!r}; re-extract with the run's settings"
            )


def run_encode_scans(
    run_dir: str | Path,
    scans: list[str],
    output: str | Path,
    find_atoms_overrides: dict[str, Any] | None = None,
    ignore_calibration: bool = False,
    config: EncodeConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    estimate: Callable[[dict], None] | None = None,
) -> list[StageResult]:
    """Apply a trained run to raw scans: replay its find-atoms and extract recipe, then encode.

    Intermediate artifacts go to ``<output stem>_work/`` beside the output (reused when up to date).
    A scan whose channel count, or calibrated pixel size (beyond 2 %), differs from the training
    scans' is refused with a message that says what differs.

    Parameters
    ----------
    run_dir : str or path
        The output folder of ``microvae train`` (a single run or an ensemble), trained on patches
        extracted from scans (a run trained on a bare stack has no recipe to replay).
    scans : list of str
        Raw scan paths, read as the run's recipe reads stacks.
    output : str or path
        The ``encoded`` artifact to write.
    find_atoms_overrides : dict of str to Any, optional
        Detection settings that replace the recipe's (:data:`OVERRIDE_FLAGS`; None values ignored).
    ignore_calibration : bool, default False
        Accept scans whose calibrated pixel size differs from the training scans' by more than 2 %.
    config : EncodeConfig, optional
        As for :func:`run_encode`.
    force : bool, default False
        Rewrite an encoded artifact that is up to date.
    progress : callable, optional
        ``progress(description, completed, total)``, passed to every stage.
    estimate : callable, optional
        As for :func:`run_encode`.

    Returns
    -------
    list of StageResult
        The results of the stages run (find-atoms when the recipe is atom-centred, extract, encode).

    Raises
    ------
    InputError
        The run folder or a scan is unusable, or a scan does not match the training scans; the work
        folder, when this call created it, is removed again.
    """
    run_dir = Path(run_dir)
    output = Path(output)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder (expected the output folder of 'microvae train')")

    record = read_run_provenance(member_dir(run_dir, 0) if read_record(run_dir) else run_dir)
    recipe = record.get("recipe") or {}
    extract_settings = dict(recipe.get("extract") or {})
    if not extract_settings:
        raise InputError(
            f"{run_dir}: the run was trained on a bare stack, so it has no extraction recipe to replay; extract patches with 'microvae extract' and pass the patches artifact"
        )
    channels = int(record.get("patch_shape", [1])[0])
    scan_list = [scan for spec in scans for scan in read_scans(spec, stack_as=extract_settings.get("stack_as", "frames"))]
    training_images = record.get("training_images") or []
    for scan in scan_list:
        if scan.n_channels != channels:
            raise InputError(f"{scan.name}: has {scan.n_channels} channel(s) but the model in {run_dir} was trained on {channels}")
        if not ignore_calibration:
            _check_pixel_size(scan.name, scan.pixel_size, scan.unit, training_images)
    work = output.parent / f"{output.stem}_work"
    made_work = not work.exists()
    try:
        encode_options = {"config": config, "force": force, "progress": progress, "ignore_calibration": ignore_calibration, "estimate": estimate}
        return _replay_and_encode(run_dir, scans, output, work, recipe, extract_settings, find_atoms_overrides, encode_options)
    except BaseException:
        if made_work:  # a failed replay leaves no partial output (a work folder kept from earlier runs stays)
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        raise


def _check_pixel_size(name: str, pixel_size: float, unit: str, training_images: list[dict]) -> None:
    """Refuse data whose calibrated pixel size differs from the training scans' by more than 2 %
    (the model's patches would show objects at another scale). Uncalibrated data pass."""

    if not training_images:
        return
    reference = training_images[0]
    ref_size, ref_unit = float(reference["pixel_size"]), reference["unit"]
    if ref_unit in LENGTH_UNITS_M and unit in LENGTH_UNITS_M:
        ratio = (pixel_size * LENGTH_UNITS_M[unit]) / (ref_size * LENGTH_UNITS_M[ref_unit])
        if abs(ratio - 1.0) > 0.02:
            raise InputError(
                f"{name}: pixel size {pixel_size:g} {unit} differs from the training scans' {ref_size:g} {ref_unit} "
                f"({ratio:.2f}×): the model's patches would show objects at another scale; resample the scan, or pass --ignore-calibration"
            )


def _replay_and_encode(run_dir, scans, output, work, recipe, extract_settings, find_atoms_overrides, encode_options) -> list[StageResult]:
    progress = encode_options["progress"]
    results = []
    atoms_path = None
    grid_step = extract_settings.get("grid_step")
    mode = extract_settings.get("mode", "grid" if grid_step else "atoms")
    if mode == "atoms":  # keys a newer or older version recorded that this one lacks are left out
        settings = {k: v for k, v in (recipe.get("find_atoms") or {}).items() if k in FindAtomsConfig.setting_names()}
        settings.update({k: v for k, v in (find_atoms_overrides or {}).items() if v is not None})
        atoms_path = work / "atoms.h5"
        results.append(run_find_atoms(scans, atoms_path, FindAtomsConfig.from_settings(settings), force=True, progress=progress))
    extract = ExtractConfig.from_settings({k: v for k, v in extract_settings.items() if k in ExtractConfig.setting_names()})
    if mode == "atoms":
        extract = replace(extract, patches=replace(extract.patches, grid_step=None))
    patches_path = work / "patches.h5"
    results.append(run_extract(scans, patches_path, extract, atoms=atoms_path, force=True, progress=progress))
    results.append(run_encode(run_dir, patches_path, output, **encode_options))
    return results


#: The detection overrides of ``encode --pretrained`` and the option that sets each.
OVERRIDE_FLAGS = {"spacing_px": "--spacing", "sigma_px": "--sigma", "threshold_rel": "--threshold-rel", "invert": "--invert/--no-invert"}


def run_encode_inputs(
    run_dir: str | Path,
    inputs: list[str],
    output: str | Path,
    config: EncodeConfig | None = None,
    *,
    kind: str = "auto",
    find_atoms_overrides: dict[str, Any] | None = None,
    ignore_calibration: bool = False,
    labels: str | Path | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
    estimate: Callable[[dict], None] | None = None,
) -> list[StageResult]:
    """What ``microvae encode`` does with its inputs.

    One patches artifact (or stored stack of the run's patch shape) is encoded as it is
    (:func:`run_encode`); raw scans get the run's recipe replayed first (:func:`run_encode_scans`).

    Parameters
    ----------
    run_dir : str or path
        The output folder of ``microvae train``.
    inputs : list of str
        One patches artifact (or stored stack), or raw scans.
    output : str or path
        The ``encoded`` artifact to write.
    config : EncodeConfig, optional
        As for :func:`run_encode`.
    kind : str, default "auto"
        'auto', 'patches' or 'scans': how a stored array is read
        (:func:`~microvae.stages.inputs.input_kind`).
    find_atoms_overrides : dict of str to Any, optional
        Detection settings for scans (:data:`OVERRIDE_FLAGS`; None values ignored).
    ignore_calibration : bool, default False
        Accept data whose pixel size differs from the training scans' by more than 2 %.
    labels : str or path, optional
        Known classes of some patches (patches artifacts only).
    force : bool, default False
        Rewrite an encoded artifact that is up to date.
    progress : callable, optional
        ``progress(description, completed, total)``.
    estimate : callable, optional
        As for :func:`run_encode`.

    Returns
    -------
    list of StageResult
        The results of the stages run, the encoding last; when a bare array was read as patches,
        the last result's notes say so (and how to read it as scans).

    Raises
    ------
    ParameterError
        Detection overrides or labels with inputs that cannot use them, several patches artifacts,
        or patches mixed with scans.
    """
    overrides = {key: value for key, value in (find_atoms_overrides or {}).items() if value is not None}
    side = run_patch_side(run_dir)
    patch_inputs = [input_kind(spec, side, kind) == "patches" for spec in inputs]
    if all(patch_inputs):
        if overrides:
            given = ", ".join(OVERRIDE_FLAGS.get(key, key) for key in overrides)
            raise ParameterError(f"{given} change how atoms are found in scans, but {inputs[0]} holds patches already cut; drop them, or give the scans")
        if len(inputs) != 1:
            raise ParameterError("encode takes one patches artifact at a time (or several raw scans)")
        result = run_encode(
            run_dir, inputs[0], output, config, force=force, progress=progress, labels=labels, ignore_calibration=ignore_calibration, estimate=estimate
        )
        if kind == "auto" and side is not None and stored_shape(inputs[0]) is not None:  # a bare array, not an artifact
            result.notes.append(
                f"{inputs[0]}: read as a stack of patches (frames of the run's {side}×{side} patch shape); --input-kind scans reads it as scans"
            )
        return [result]
    if labels is not None:
        raise ParameterError("--labels names patches by their index: give a patches artifact, not raw scans")
    if any(patch_inputs):
        raise ParameterError("mix of patches artifacts and raw scans; give either one patches artifact or scans")
    return run_encode_scans(run_dir, inputs, output, overrides, ignore_calibration, config, force=force, progress=progress, estimate=estimate)

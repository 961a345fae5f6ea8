"""Invariance diagnostics: does the model's class and latent code stay put when a patch turns or moves?

The j-trVAE is meant to explain rotation and translation by its angle and shift latents, so that the
class and the continuous latents describe only *what* an object is. The cryo-EM amortisation study
shows how this fails silently: an encoder that has not learned the invariance codes pose into the
"content" latents. :func:`invariance_report` measures it directly: every patch is encoded as it is
and as moved copies, and the changes are reported relative to the spread of the latents over the
data. The copies (all turns counter-clockwise as displayed, about the patch's middle ``(W − 1)/2``):

* ``rotate 90°/180°/270°``: quarter turns, exact pixel permutations (``numpy.rot90`` in the (row,
  col) plane);
* ``shift ±1 px row/col``: ``numpy.roll`` by one pixel (the pixels that leave one edge enter at the
  other). Quarter turns and circular shifts are exactly the symmetries that
  :class:`~microvae.nets.EquivariantEncoder` builds in, so these rows flatter it;
* ``turn 30°``, ``turn 45°``: turns that are not pixel permutations. Given a :data:`PatchSource`
  (the scans the patches were cut from, :func:`artifact_source`) the turned window is cut again from
  the scan, every pixel real; without one the patch itself is turned by cubic-spline interpolation
  and what its corners would need from outside the frame is filled by mirror reflection (15 % of
  the pixels at 30°, 17 % at 45°: the square less its overlap with its turned copy), which the
  report's ``how`` and ``notes`` say;
* ``re-cut ±1 px row/col`` (only with a :data:`PatchSource`): the patch cut again from the scan at
  its centre moved by one pixel, so that new scan pixels enter at one edge and the content moves by
  −1 px in the patch. A bare stack has no scans: these rows are left out and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = [
    "EXPECTED_SHIFT_PX",
    "EXPECTED_TURN_RAD",
    "HOW",
    "NO_SOURCE_NOTE",
    "RECUTS",
    "TRANSFORMS",
    "InvarianceRow",
    "PatchSource",
    "artifact_source",
    "invariance_report",
    "report_dict",
    "turn_patches",
]

#: ``source(turn_rad, centre_shift_px)`` → (N, C, W, W) float32: the same N patches cut again from
#: their scans with the content turned by ``turn_rad`` (counter-clockwise as displayed, about the
#: window's middle) and the window's centre moved by ``centre_shift_px`` (row, col) px, normalised
#: as the originals were; ``source(0.0, (0.0, 0.0))`` gives the patches themselves.
PatchSource = Callable[[float, tuple[float, float]], np.ndarray]

TRANSFORMS = {
    "rotate 90°": lambda x: np.rot90(x, 1, axes=(2, 3)),
    "rotate 180°": lambda x: np.rot90(x, 2, axes=(2, 3)),
    "rotate 270°": lambda x: np.rot90(x, 3, axes=(2, 3)),
    "shift +1 px row": lambda x: np.roll(x, 1, axis=2),
    "shift −1 px row": lambda x: np.roll(x, -1, axis=2),
    "shift +1 px col": lambda x: np.roll(x, 1, axis=3),
    "shift −1 px col": lambda x: np.roll(x, -1, axis=3),
    "turn 30°": lambda x: turn_patches(x, math.radians(30.0)),
    "turn 45°": lambda x: turn_patches(x, math.radians(45.0)),
}
#: re-cut shifts: the window's centre moves by these (row, col) px (the content by the opposite)
RECUTS = {"re-cut +1 px row": (1.0, 0.0), "re-cut −1 px row": (-1.0, 0.0), "re-cut +1 px col": (0.0, 1.0), "re-cut −1 px col": (0.0, -1.0)}
EXPECTED_TURN_RAD = {
    "rotate 90°": math.pi / 2,
    "rotate 180°": math.pi,
    "rotate 270°": -math.pi / 2,
    "turn 30°": math.radians(30.0),
    "turn 45°": math.radians(45.0),
}
#: how far the content moves in the patch (row, col) px, which a shift latent should follow
EXPECTED_SHIFT_PX = {
    "shift +1 px row": (1.0, 0.0),
    "shift −1 px row": (-1.0, 0.0),
    "shift +1 px col": (0.0, 1.0),
    "shift −1 px col": (0.0, -1.0),
    **{name: (-d_row, -d_col) for name, (d_row, d_col) in RECUTS.items()},
}
HOW = {
    "rotate": "pixel permutation (numpy.rot90)",
    "shift": "circular (numpy.roll)",
    "turn": "interpolated in the patch (cubic spline; corners filled by reflection)",
    "re-cut": "re-cut from the scan",
}


def turn_patches(images: np.ndarray, turn_rad: float) -> np.ndarray:
    """(N, C, W, W) patches turned by ``turn_rad`` counter-clockwise as displayed about their middle
    ``(W − 1)/2`` (as :func:`microvae.patches.cut_patches` turns a window), by cubic-spline
    interpolation within each patch, clipped to the patch's own range (a spline overshoots at
    steps, and a Bernoulli model takes values in [0, 1] only); what the corners would need from
    outside the patch is filled by mirror reflection about the edge pixels. float32.

    Parameters
    ----------
    images : ndarray
        (N, C, W, W) patches.
    turn_rad : float
        The turn in rad, counter-clockwise as displayed.

    Returns
    -------
    ndarray
        (N, C, W, W) float32 turned patches, each plane clipped to its own [min, max].
    """
    from scipy import ndimage

    from .patches import turned_offsets

    images = np.asarray(images, dtype=np.float32)
    size = images.shape[-1]
    middle = (size - 1) / 2
    rows, cols = turned_offsets(size, turn_rad)
    where = [middle + rows, middle + cols]
    out = np.empty_like(images)
    for index, patch in enumerate(images):
        for channel, plane in enumerate(patch):
            turned = ndimage.map_coordinates(plane.astype(np.float64), where, order=3, mode="mirror")
            out[index, channel] = np.clip(turned, plane.min(), plane.max())  # no spline overshoot
    return out


@dataclass
class InvarianceRow:
    """How one transform moves the code of the patches (means over patches).

    Attributes
    ----------
    transform : str
        Name of the transform (a key of :data:`TRANSFORMS` or :data:`RECUTS`).
    z_drift : float
        Mean |Δz| over patches and latent dimensions, in units of each dimension's sd over the
        untransformed data (0 = invariant; about 1.13 = as if the code were redrawn).
    class_changed : float
        Fraction of patches whose argmax class changes (nan without classes).
    class_prob_shift : float
        Mean total-variation distance between the class posteriors (0 to 1).
    angle_error_deg : float
        Mean |Δangle − turn| (degrees, wrapped) for turns with a rotation latent; nan otherwise. 0
        = the angle latent absorbs the turn exactly.
    shift_error_px : float
        Mean |Δshift − move| (px, the length of the (row, col) difference) for shifts and re-cuts
        with a translation latent, where ``move`` is how far the content moves in the patch (+1 row
        for ``shift +1 px row``, −1 row for ``re-cut +1 px row``); nan otherwise. 0 = the shift
        latent follows the move exactly.
    how : str
        How the moved copies were made (a pixel permutation, a circular shift, interpolated in the
        patch, or re-cut from the scan).
    """

    transform: str
    z_drift: float
    class_changed: float
    class_prob_shift: float
    angle_error_deg: float
    shift_error_px: float = math.nan
    how: str = ""


def invariance_report(model, images: np.ndarray, device: str = "cpu", batch_size: int = 1024, source: PatchSource | None = None) -> list[InvarianceRow]:
    """One :class:`InvarianceRow` per transform for (N, C, W, W) ``images`` under a trained model.

    With ``source`` (the same patches' scans, :func:`artifact_source`) the 30° and 45° turns are
    cut again from the scans and the four re-cut shifts are added; without it the turns are
    interpolated in the patches and there are no re-cut rows.

    Parameters
    ----------
    model : JTRVAE
        The trained model.
    images : ndarray
        (N, C, W, W) patches (encoded as float32).
    device : str, default "cpu"
        Device to encode on.
    batch_size : int, default 1024
        Patches per forward pass.
    source : PatchSource or None, optional
        ``source(turn_rad, centre_shift_px)`` → the same patches re-cut from their scans, turned
        by ``turn_rad`` (rad) with the window centre moved by (row, col) px.

    Returns
    -------
    list of InvarianceRow
        One per transform of :data:`TRANSFORMS` (then :data:`RECUTS` with a source), in order.
    """
    from .encoding import encode_array

    images = np.asarray(images, dtype=np.float32)

    def encode(x: np.ndarray) -> dict[str, np.ndarray]:
        return encode_array(model, np.ascontiguousarray(x, dtype=np.float32), batch_size=batch_size, device=device, recon_error=False)

    base = encode(images)
    spread = base["z_mean"].std(0)
    spread = np.where(spread > 1e-12, spread, 1.0)
    classes = model.config.n_classes > 0
    moves: dict[str, tuple[Callable[[], np.ndarray], str]] = {}
    for name, transform in TRANSFORMS.items():
        kind = name.split()[0]
        if kind == "turn" and source is not None:
            moves[name] = ((lambda turn=EXPECTED_TURN_RAD[name]: source(turn, (0.0, 0.0))), HOW["re-cut"])
        else:
            moves[name] = ((lambda transform=transform: transform(images)), HOW[kind])
    if source is not None:
        for name, centre_shift in RECUTS.items():
            moves[name] = ((lambda centre_shift=centre_shift: source(0.0, centre_shift)), HOW["re-cut"])
    rows = []
    for name, (make, how) in moves.items():
        moved = encode(make())
        z_drift = float((np.abs(moved["z_mean"] - base["z_mean"]) / spread).mean()) if spread.size else 0.0
        changed = float((moved["class"] != base["class"]).mean()) if classes else math.nan
        prob_shift = float(0.5 * np.abs(moved["class_probs"] - base["class_probs"]).sum(1).mean()) if classes else math.nan
        angle_error = shift_error = math.nan
        if model.config.rotation and name in EXPECTED_TURN_RAD:
            residual = moved["angle_rad"] - base["angle_rad"] - EXPECTED_TURN_RAD[name]
            angle_error = float(np.degrees(np.abs(np.angle(np.exp(1j * residual)))).mean())
        if model.config.translation and name in EXPECTED_SHIFT_PX:
            residual = moved["shift_px"] - base["shift_px"] - np.asarray(EXPECTED_SHIFT_PX[name])
            shift_error = float(np.hypot(residual[:, 0], residual[:, 1]).mean())
        rows.append(InvarianceRow(name, z_drift, changed, prob_shift, angle_error, shift_error, how))
    return rows


def report_dict(rows: list[InvarianceRow], notes: list[str] | tuple[str, ...] = ()) -> dict:
    """Plain-data form of a report (for JSON; NaN becomes None): the rows, the worst z drift over
    each kind of move — ``max_z_drift_rotation`` (quarter turns) and ``max_z_drift_shift``
    (circular 1-px shifts), the exact symmetries; ``max_z_drift_turn`` (30° and 45°) and
    ``max_z_drift_recut`` (re-cut 1-px shifts; None when not measured) — and ``notes``.

    Parameters
    ----------
    rows : list of InvarianceRow
        The report (:func:`invariance_report`).
    notes : list or tuple of str, default ()
        Notes to carry (e.g. :data:`NO_SOURCE_NOTE`).

    Returns
    -------
    dict
        ``rows`` (a list of dicts), the four ``max_z_drift_*`` (float or None, in z sds) and
        ``notes`` (a list).
    """

    def worst(kind: str) -> float | None:
        return max((r.z_drift for r in rows if r.transform.split()[0] == kind), default=None)

    plain = [{key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in asdict(r).items()} for r in rows]
    return {
        "rows": plain,
        "max_z_drift_rotation": worst("rotate"),
        "max_z_drift_shift": worst("shift"),
        "max_z_drift_turn": worst("turn"),
        "max_z_drift_recut": worst("re-cut"),
        "notes": list(notes),
    }


NO_SOURCE_NOTE = (
    "no source scans (a bare stack): re-cut shifts not measured; the 30° and 45° turns are interpolated within each patch, its corners filled by reflection"
)


def artifact_source(spec: str | Path, limit: int = 0) -> tuple[PatchSource | None, str]:
    """A :data:`PatchSource` for the patches of a patches artifact that
    :func:`~microvae.streaming.evenly_spaced` picks with ``limit`` (0 = all), cutting from the
    scans the artifact records, and a note for the report; (None, why) for anything else.

    The scans are looked for where the artifact recorded them (as the user gave the path, relative
    to the current folder), then beside the artifact; each must still hold the recorded content
    (SHA-256) and frame. The re-cut patches are made as ``extract`` made them
    (:func:`microvae.patches.cut_patches` at the recorded centres, the FFT when it was used, the
    recorded per-scan normalisation for ``image``/``global``, the same per-patch normalisation for
    ``patch``/``zscore``), so ``source(0, (0, 0))`` equals the stored patches.

    Parameters
    ----------
    spec : str or path
        The patches input (an HDF5 patches artifact; anything else gives no source).
    limit : int, default 0
        Patches picked evenly (0 = all).

    Returns
    -------
    tuple of (PatchSource or None, str)
        ``source(turn_rad, centre_shift_px)`` → (N, C, W, W) float32 re-cut patches (turn in
        rad, centre shift (row, col) in px) and a note saying where they come from; or None and
        why there is none (a bare stack, a missing dataset, a scan not found or changed).
    """
    import h5py

    from . import artifacts
    from .streaming import evenly_spaced_rows

    path = Path(str(spec))
    if path.suffix.lower() not in (".h5", ".hdf5", ".hdf") or not path.is_file():
        return None, NO_SOURCE_NOTE
    try:
        artifacts.read_header(path, "patches")
    except InputError:
        return None, NO_SOURCE_NOTE
    with h5py.File(path, "r") as handle:
        needed = ("coords", "image_index", "norm_offset", "norm_scale", "images")
        if any(name not in handle for name in needed):
            return None, "the patches artifact lacks its centres or normalisation: re-cut shifts not measured"
        coords = handle["coords"][()].astype(np.float64)
        image_index = handle["image_index"][()].astype(np.int64)
        offset, scale = handle["norm_offset"][()], handle["norm_scale"][()]
        records = artifacts.read_image_table(handle)
        recipe = json.loads(artifacts.as_str(handle.attrs.get("recipe", "{}"))).get("extract") or {}
        window, fft, method = int(handle.attrs["window"]), bool(handle.attrs["fft"]), artifacts.as_str(handle.attrs["normalize"])
    rows = evenly_spaced_rows(len(coords), limit)
    subpixel = bool(recipe.get("subpixel", True)) and recipe.get("grid_step") is None
    percentiles = tuple(recipe.get("percentiles", (0.1, 99.9)))
    scans = {}
    for number in np.unique(image_index[rows]).tolist():
        data, why = _recorded_scan(records[number], path.parent, recipe.get("stack_as", "frames"))
        if data is None:
            return None, f"{why}: re-cut shifts not measured; the 30° and 45° turns are interpolated within each patch"
        scans[number] = data
    # the recorded per-scan (image) or common (global) range: every patch of a scan holds the same
    ranges = {int(image_index[first]): (float(offset[first]), float(scale[first])) for first in np.unique(image_index, return_index=True)[1]}
    if method == "global":
        ranges = {0: next(iter(ranges.values()))}

    def source(turn_rad: float, centre_shift_px: tuple[float, float]) -> np.ndarray:
        from .patches import cut_patches, fft_magnitude, normalise

        out = None
        for number, scan in scans.items():
            members = rows[image_index[rows] == number]
            raw = cut_patches(scan, coords[members] + np.asarray(centre_shift_px, dtype=np.float64), window, subpixel, turn_rad=turn_rad)
            if fft:
                raw = fft_magnitude(raw)
            normalised = normalise(raw, image_index[members], method, percentiles, ranges)[0]
            if out is None:
                out = np.empty((len(rows),) + normalised.shape[1:], dtype=np.float32)
            out[image_index[rows] == number] = normalised
        return out

    return source, f"re-cut from {len(scans)} source scan(s) at the recorded centres"


def _recorded_scan(record, folder: Path, stack_as: str) -> tuple[np.ndarray | None, str]:
    """The (C, H, W) pixels of an artifact's source scan when its file is found (as recorded, else
    beside the artifact) with the recorded content and frame; else (None, why)."""
    from .images import read_scans, split_dataset_path

    file_part, dataset = split_dataset_path(record.source)
    candidates = [record.source]
    beside = folder / Path(file_part).name
    if Path(file_part).resolve() != beside.resolve():
        candidates.append(str(beside) + (f":{dataset}" if dataset else ""))
    for candidate in candidates:
        if not Path(split_dataset_path(candidate)[0]).is_file():
            continue
        try:
            scans = read_scans(candidate, stack_as=stack_as)
        except InputError:
            continue
        for scan in scans:
            if scan.frame == record.frame and scan.sha256 == record.sha256:
                return scan.data, ""
        return None, f"source scan {record.name} has changed since extraction (another SHA-256)"
    return None, f"source scan {record.source} not found"

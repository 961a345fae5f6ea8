"""napari reader for microvae artifacts (the npe2 plugin ``microvae``, manifest ``napari.yaml``).

Opens an **atoms**, **patches**, **encoded** or **maps** artifact (or an ``export`` folder holding
``maps.h5``) as napari layer data, deciding by the artifact header (``microvae_artifact``), never
by the file's extension; any other file gives ``None`` so that napari tries its other readers.
Per scan of the artifact's ``/images`` table:

- the scan itself, one ``image`` layer per channel, read with :func:`microvae.images.read_scans`
  from the path the artifact recorded (as given, else beside the artifact) and used only when its
  SHA-256 matches the recorded one; when it cannot be found the layer is left out;
- atoms, patches and encoded artifacts: a ``points`` layer of the atom / patch centres, coloured
  by ``sublattice`` (atoms, patches) or ``class`` (encoded), with every per-point dataset as a
  ``features`` column (``class_prob_k``, ``z{d}``, ``z{d}_sd``, ``angle_rad``, ``recon_error``,
  ``sublattice``, ``intensity``, ``displacement_row_px`` ...), so the layer controls can recolour
  by any of them;
- patches artifacts also: the scan's patches as one hidden (M, W, W) ``image`` stack (first
  channel; a slider steps through them in the order of the points), when it holds at most
  :data:`PATCH_STACK_BYTES`;
- maps artifacts: one ``image`` layer per map (hidden except ``class``, shown half-transparent over
  the scan).

Coordinates are microvae's ``(row, col)`` in source pixels, which is napari's axis order; every
layer of a scan gets ``scale = (pixel_size, pixel_size)`` (in the scan's ``pixel_unit``, also given
as napari ``units`` when it is a length unit), so all of them align in calibrated units.
Multi-scan artifacts give one set of layers per scan, named ``"<scan>: <what>"``; all sit at the
origin, so only the first scan's layers start visible.

This module imports neither napari nor Qt: the reader returns plain ``(data, kwargs, layer_type)``
tuples, and ``microvae`` works (and ``microvae --help`` stays fast) without napari installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PATCH_STACK_BYTES",
    "READABLE_KINDS",
    "artifact_kind",
    "artifact_layers",
    "napari_get_reader",
    "point_features",
    "read_layers",
]

#: Artifact kinds this reader opens.
READABLE_KINDS = ("atoms", "patches", "encoded", "maps")
#: A patches artifact's stack of one scan is opened when it holds at most this many bytes (float32).
PATCH_STACK_BYTES = 1 << 28
#: Class colours, matplotlib's tab10 (as in the class map PNGs of ``export``).
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: Sublattice colours, as in the atoms overlay PNG (:data:`microvae.plots.SUBLATTICE_COLOURS`).
SUBLATTICE_COLOURS = ("#ff3b30", "#30b0ff", "#ffcc00", "#34c759", "#af52de", "#ff9500")
#: microvae length units as napari (pint) units; others ("px", unknown) give no ``units``.
PINT_UNITS = {
    "m": "meter",
    "mm": "millimeter",
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "nm": "nanometer",
    "Å": "angstrom",
    "A": "angstrom",
    "pm": "picometer",
}
#: Per-point datasets of shape (N, k) whose columns get names of their own.
COLUMN_NAMES = {"z_mean": "z{}", "z_sd": "z{}_sd", "class_probs": "class_prob_{}"}
#: Per-point datasets that are not features (positions, scan index, the patches themselves).
NOT_FEATURES = {"coords", "image_index", "patches"}
#: Integer maps with categories 0..K-1 and -1 for missing pixels.
CATEGORY_MAPS = {"class": CLASS_COLOURS, "sublattice": SUBLATTICE_COLOURS}

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | Path | Sequence[str | Path]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader contribution: :func:`read_layers` when every path is a readable microvae artifact.

    Parameters
    ----------
    path : str, Path or sequence of them
        What napari was asked to open.

    Returns
    -------
    callable or None
        :func:`read_layers`, or ``None`` (napari then tries other readers) when any path is not an
        atoms, encoded or maps artifact.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(artifact_kind(item) not in READABLE_KINDS for item in paths):
        return None
    return read_layers


def artifact_kind(path: str | Path) -> str | None:
    """The ``microvae_artifact`` kind of ``path`` (an export folder counts as its ``maps.h5``).

    Parameters
    ----------
    path : str or path
        A file or an export folder.

    Returns
    -------
    str or None
        ``"atoms"``, ``"patches"``, ``"encoded"``, ``"maps"``; ``None`` for anything else (missing,
        not HDF5, HDF5 without the microvae header). Never raises.
    """
    import h5py

    from .artifacts import as_str

    try:
        with h5py.File(_artifact_file(path), "r") as handle:
            kind = handle.attrs.get("microvae_artifact")
    except Exception:
        return None
    return None if kind is None else as_str(kind)


def read_layers(path: str | Path | Sequence[str | Path]) -> list[LayerData]:
    """Layer data of one artifact or several (concatenated, in order); see :func:`artifact_layers`.

    Parameters
    ----------
    path : str or path, or sequence of them
        The artifact(s) (or export folders holding ``maps.h5``).

    Returns
    -------
    list of (data, kwargs, layer_type)
        Every artifact's layers, in order.

    Raises
    ------
    microvae.errors.InputError
        A path is not a microvae artifact of a readable kind, or of another schema version.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [layer for item in paths for layer in artifact_layers(item)]


def artifact_layers(path: str | Path) -> list[LayerData]:
    """napari layer data of an atoms, patches, encoded or maps artifact, scan by scan.

    Parameters
    ----------
    path : str or Path
        The artifact (or an export folder holding ``maps.h5``).

    Returns
    -------
    list of (data, kwargs, layer_type)
        Per scan: its image layers (left out when the scan file is not found), then a ``points``
        layer of (N, 2) ``(row, col)`` pixel positions (atoms, patches, encoded) and for patches the
        (M, W, W) stack of its patches, or one ``image`` layer per (H, W) map (maps). Every layer has ``scale = (pixel_size, pixel_size)`` and ``metadata``
        ``{"microvae": {kind, artifact, image_index, source, pixel_size, unit, ...}}``.

    Raises
    ------
    microvae.errors.InputError
        ``path`` is not a microvae artifact of a readable kind, or of another schema version.
    """
    import h5py

    from .artifacts import read_header, read_image_table
    from .errors import InputError

    file = _artifact_file(path)
    header = read_header(file)
    if header.kind not in READABLE_KINDS:
        raise InputError(f"{file}: a microvae '{header.kind}' artifact; the napari reader opens {', '.join(READABLE_KINDS)}")
    layers: list[LayerData] = []
    with h5py.File(file, "r") as handle:
        records = read_image_table(handle)
        image_index = handle["image_index"][()] if "image_index" in handle else None
        for index, record in enumerate(records):
            common = _common_kwargs(record, header.kind, file, index, visible=index == 0)
            layers += scan_layers(_find_scan(record, file), common)
            if header.kind in ("atoms", "patches", "encoded") and "coords" in handle:
                rows = np.flatnonzero(image_index == index) if image_index is not None else np.arange(len(handle["coords"]))
                layers.append(_points_layer(handle, header.kind, rows, common))
                if header.kind == "patches" and "patches" in handle:
                    layers += _patch_stack_layers(handle["patches"], rows, common)
            elif header.kind == "maps" and f"image_{index:02d}" in handle:
                layers += _map_layers(handle[f"image_{index:02d}"], common)
    return layers


def scan_layers(scan, common: dict[str, Any]) -> list[LayerData]:
    """One grey ``image`` layer per channel of ``scan`` (a :class:`microvae.images.Scan`, or None).

    Contrast limits are the 0.5 and 99.5 percentiles, as in microvae's PNGs.
    """
    if scan is None:
        return []
    layers = []
    for channel, plane in enumerate(scan.data):
        name = "scan" if scan.n_channels == 1 else f"scan {scan.channel_names[channel]}"
        low, high = np.percentile(plane, [0.5, 99.5])
        kwargs = _with_name(common, name, {"colormap": "gray", "contrast_limits": (float(low), float(high if high > low else low + 1))})
        layers.append((plane, kwargs, "image"))
    return layers


def point_features(handle, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per-point feature columns of an atoms or encoded artifact, for the points ``rows``.

    Every root dataset with one entry per point, except positions, scan index and patches, becomes
    one column per component: 1-D datasets keep their name; ``z_mean``, ``z_sd`` and
    ``class_probs`` give ``z{d}``, ``z{d}_sd`` and ``class_prob_{k}``; (N, 2) ``*_px`` datasets give
    ``*_row_px`` and ``*_col_px`` (pixels, rows down); others ``name_{j}``. The ``atom_`` prefix of
    ``atom_sublattice`` and ``atom_displacement_px`` (encoded artifacts) is dropped.

    Parameters
    ----------
    handle : h5py.File
        The open artifact.
    rows : ndarray of int, shape (M,)
        Indices of the points to take.

    Returns
    -------
    dict of str to ndarray of shape (M,)
    """
    import h5py

    count = len(handle["coords"])
    columns: dict[str, np.ndarray] = {}
    for name, node in handle.items():
        if not isinstance(node, h5py.Dataset) or name in NOT_FEATURES or node.ndim not in (1, 2) or len(node) != count:
            continue
        values = node[()][rows]
        name = name.removeprefix("atom_") if name in ("atom_sublattice", "atom_displacement_px") else name
        if values.ndim == 1:
            columns[name] = values
        elif name in COLUMN_NAMES:
            columns.update({COLUMN_NAMES[name].format(j): values[:, j] for j in range(values.shape[1])})
        elif name.endswith("_px") and values.shape[1] == 2:
            columns.update({f"{name[:-3]}_row_px": values[:, 0], f"{name[:-3]}_col_px": values[:, 1]})
        else:
            columns.update({f"{name}_{j}": values[:, j] for j in range(values.shape[1])})
    return columns


def _points_layer(handle, kind: str, rows: np.ndarray, common: dict[str, Any]) -> LayerData:
    coords = handle["coords"][()][rows]
    features = point_features(handle, rows)
    colour_by = "class" if kind == "encoded" else "sublattice"
    extra: dict[str, Any] = {"features": features, "size": _marker_size(coords), "border_width": 0.0, "opacity": 0.8}
    if colour_by in features and len(coords):
        palette = CATEGORY_MAPS[colour_by]
        categories = np.unique(features[colour_by])
        extra["face_color"] = {
            "color_mode": "cycle",
            "color_properties": colour_by,
            "categorical_colormap": {"colormap": {value: palette[int(value) % len(palette)] for value in categories}, "fallback_color": list(palette)},
        }
    else:
        extra["face_color"] = SUBLATTICE_COLOURS[0]
    name = "atoms" if kind == "atoms" else "patch centres"  # patches and encoded artifacts
    return coords, _with_name(common, name, extra), "points"


def _patch_stack_layers(dataset, rows: np.ndarray, common: dict[str, Any]) -> list[LayerData]:
    """The patches ``rows`` of a (N, C, W, W) dataset as one hidden (M, W, W) image stack (channel
    0), scaled like the scan; none when the stack would exceed :data:`PATCH_STACK_BYTES`."""
    count, _, height, width = dataset.shape
    if len(rows) == 0 or len(rows) * height * width * 4 > PATCH_STACK_BYTES:
        return []
    stack = np.asarray(dataset[rows, 0], dtype=np.float32)  # rows increase: one h5py selection
    low, high = np.percentile(stack, [0.5, 99.5])
    extra = {"colormap": "gray", "contrast_limits": (float(low), float(high if high > low else low + 1)), "visible": False}
    kwargs = _with_name(common, "patches", extra)
    kwargs["scale"] = (1.0, *common["scale"])
    kwargs.pop("units", None)  # the stack's first axis counts patches, not a length
    return [(stack, kwargs, "image")]


def _map_layers(group, common: dict[str, Any]) -> list[LayerData]:
    layers = []
    for name in sorted(group, key=lambda key: (key != "class", key)):
        values = group[name][()]
        if name in CATEGORY_MAPS:
            extra = _category_display(values, CATEGORY_MAPS[name])
            extra["opacity"] = 0.5
        else:
            finite = values[np.isfinite(values)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            extra = {"colormap": "twilight" if "angle" in name else "viridis", "contrast_limits": (low, high if high > low else low + 1)}
        extra["visible"] = common["visible"] and name == "class"
        kwargs = _with_name(common, name, extra)
        kwargs["metadata"]["microvae"]["dataset"] = f"{group.name}/{name}"
        layers.append((values, kwargs, "image"))
    return layers


def _category_display(values: np.ndarray, palette: Sequence[str]) -> dict[str, Any]:
    """A stepwise colormap for an integer map: −1 (missing) transparent, category k ``palette[k]``."""
    count = max(int(values.max()) + 1, 1)
    colours = ["#00000000"] + [palette[k % len(palette)] for k in range(count)]
    colormap = {"colors": colours, "controls": np.linspace(0.0, 1.0, count + 2), "interpolation": "zero", "name": f"microvae categories {count}"}
    return {"colormap": colormap, "contrast_limits": (-1.5, count - 0.5)}


def _marker_size(coords: np.ndarray) -> float:
    """Marker diameter in pixels: half the median nearest-neighbour distance (5 px for < 2 points)."""
    if len(coords) < 2:
        return 5.0
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(coords).query(coords, k=2)
    return max(1.0, 0.5 * float(np.median(distances[:, 1])))


def _common_kwargs(record, kind: str, file: Path, index: int, visible: bool) -> dict[str, Any]:
    """Keyword arguments that every layer of one scan shares: scale, units, prefix, metadata."""
    kwargs: dict[str, Any] = {
        "scale": (record.pixel_size, record.pixel_size),
        "visible": visible,
        "name": record.name,
        "metadata": {
            "microvae": {
                "kind": kind,
                "artifact": str(file),
                "image_index": index,
                "source": record.source,
                "pixel_size": record.pixel_size,
                "unit": record.unit,
            }
        },
    }
    if record.unit in PINT_UNITS:
        kwargs["units"] = (PINT_UNITS[record.unit],) * 2
    return kwargs


def _with_name(common: dict[str, Any], what: str, extra: dict[str, Any]) -> dict[str, Any]:
    kwargs = {**common, **extra, "name": f"{common['name']}: {what}"}
    kwargs["metadata"] = {"microvae": dict(common["metadata"]["microvae"])}
    return kwargs


def _find_scan(record, artifact: Path):
    """The recorded scan (a :class:`microvae.images.Scan`), or None when no file with its hash is found.

    Tries the recorded source as given, then relative to the artifact's folder, then its file name
    beside the artifact; a candidate is used only when its SHA-256 equals the recorded one.
    """
    from .images import read_scans, split_dataset_path

    file, dataset = split_dataset_path(record.source)
    suffix = f":{dataset}" if dataset else ""
    candidates = [Path(file), artifact.parent / file, artifact.parent / Path(file).name]
    for candidate in dict.fromkeys(candidates):
        if not candidate.is_file():
            continue
        try:
            scans = read_scans(f"{candidate}{suffix}", stack_as="channels" if record.n_channels > 1 else "frames")
        except Exception:
            continue
        if record.frame < len(scans) and scans[record.frame].sha256 == record.sha256 and scans[record.frame].shape == (record.height, record.width):
            return scans[record.frame]
    return None


def _artifact_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "maps.h5" if path.is_dir() else path

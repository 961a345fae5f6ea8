"""Maps and atoms as the files HyperSpy and Fiji open: ``.hspy`` signals and ImageJ hyperstacks.

Written by ``microvae export --format hspy,tiff-stack`` and ``microvae find-atoms --hspy``. The
``.hspy`` files are written with RosettaSciIO's HyperSpy writer from plain signal dictionaries, so
HyperSpy itself need not be installed to write them; ``hyperspy.api.load`` reads them back as
``Signal2D`` objects with calibrated axes.

Layout of the ``.hspy`` maps (one file per map family per scan, ``NN_<scan>_<family>.hspy``):

=====================  ==============================  =============================================
family (file suffix)   shape, navigation | signal      maps (names as in ``maps.h5``)
=====================  ==============================  =============================================
``class_probs``        (K, H, W): ``class`` | y, x     ``class_prob_{k}``, k = 0..K−1
``latents``            (D, H, W): ``latent`` | y, x    ``z{d}``, d = 0..D−1
``latents_by_class``   (K, D, H, W): ``class``,        ``z{d}_class{k}`` (latent d where the class
                       ``latent`` | y, x               is k, NaN elsewhere)
every other map        (H, W): | y, x                  ``class``, ``angle_rad``, ``shift_row_px``,
                                                       ``recon_error``, ``neg_elbo``, ``sublattice`` …
=====================  ==============================  =============================================

The scalar maps are separate 2-D signals rather than one stack over a ``map`` axis because each has
its own unit and meaning (radians, pixels, nats): as its own signal each keeps its
``metadata.Signal.quantity`` and plots with its own colour scale. Array axis order is microvae's
``(row, col)``: the signal axes are ``y`` (rows, array axis −2) and ``x`` (columns, array axis −1),
scaled by the scan's pixel size in its unit, offset 0 (pixel ``(r, c)`` is centred at
``(r · size, c · size)``); uncalibrated scans get scale 1 and units ``px``. Missing pixels are NaN
(``class`` and ``sublattice``: int16, −1), as in ``maps.h5``. Metadata: ``General.title``,
``Signal.quantity`` and a ``microvae`` node (version, run, encoded artifact, the scan's name,
source, frame and SHA-256, each map's name, units and description).

The atoms ``.hspy`` (``find-atoms --hspy``) is the detection channel of the scan as a ``Signal2D``
with the same calibrated axes, the atoms as permanent ``hs.plot.markers.Points`` (one marker set
per sublattice, at ``(x, y) = (col, row) · size``) and the per-atom table in
``metadata.microvae.atoms`` (1-D arrays over atoms: ``x``, ``y`` in calibrated units, ``row_px``,
``col_px``, ``intensity``, ``sigma_px``, ``score``, ``fit_ok``, ``sublattice``,
``displacement_row_px``, ``displacement_col_px``).

The ImageJ hyperstack (``NN_<scan>_maps.tif``) holds every map of a scan as one float32 slice
(``class`` and ``sublattice`` keep −1 for missing), the map's name as the slice label, the
calibration as ImageJ writes it (XResolution/YResolution = 1 / pixel size, ``unit=`` in the
description) and the maps' units and descriptions in the ``Info`` property (Image > Show Info).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HSPY_FAMILIES",
    "atoms_signal",
    "axis_calibration",
    "imagej_calibration",
    "map_families",
    "map_signals",
    "signal_dict",
    "write_hspy",
    "write_tiff_stack",
]

#: Map families written as one stacked signal each: file suffix → (name pattern, navigation axes).
HSPY_FAMILIES = {
    "class_probs": (re.compile(r"class_prob_(\d+)"), ("class",)),
    "latents": (re.compile(r"z(\d+)"), ("latent",)),
    "latents_by_class": (re.compile(r"z(\d+)_class(\d+)"), ("class", "latent")),
}
_FAMILY_TITLES = {"class_probs": "class probabilities q(y|x)", "latents": "latents z", "latents_by_class": "latents z by class"}
_FAMILY_QUANTITIES = {"class_probs": "Probability", "latents": "Latent (latent units)", "latents_by_class": "Latent (latent units)"}
#: Units that mean "not calibrated" (scale 1, units px).
_UNCALIBRATED = ("px", "", "unknown", "pixel", "pixels")
#: Sublattice colours, as in the atoms preview PNG and the napari reader.
_SUBLATTICE_COLOURS = ("#ff3b30", "#30b0ff", "#ffcc00", "#34c759", "#af52de", "#ff9500")


def axis_calibration(pixel_size: float, unit: str) -> tuple[float, str]:
    """The ``(scale, units)`` of a HyperSpy spatial axis for a scan.

    Parameters
    ----------
    pixel_size : float
        Size of one pixel in ``unit`` (square pixels).
    unit : str
        Length unit as microvae records it (``"nm"``, ``"Å"``, ``"µm"``…); ``"px"``, ``""`` or
        ``"unknown"`` when the scan had no calibration.

    Returns
    -------
    (float, str)
        ``(pixel_size, unit)``, or ``(1.0, "px")`` for an uncalibrated scan.
    """
    if unit in _UNCALIBRATED or not pixel_size > 0:
        return 1.0, "px"
    return float(pixel_size), unit


def imagej_calibration(pixel_size: float, unit: str) -> tuple[float, str] | None:
    """The ``(pixel size, unit)`` to write into an ImageJ TIFF, or None when uncalibrated.

    ImageJ's TIFF description is ASCII, read with Java's ``Properties.load``. ``µm`` is written as
    ``um`` (ImageJ shows µm); ``Å`` as nm with the size divided by 10 (ImageJ would decode an
    escaped ``\\u00C5``, but other TIFF readers, tifffile included, would see the escape itself);
    any other non-ASCII unit as ``\\uXXXX`` escapes, which ImageJ decodes.

    Parameters
    ----------
    pixel_size : float
        Size of one pixel in ``unit``.
    unit : str
        Length unit as microvae records it.

    Returns
    -------
    tuple of (float, str) or None
        The pixel size and the ASCII unit (Å converted to nm), or None for an uncalibrated unit
        or a pixel size that is not > 0.
    """
    if unit in _UNCALIBRATED or not pixel_size > 0:
        return None
    if unit in ("Å", "\u212b", "A", "angstrom"):
        return float(pixel_size) / 10.0, "nm"
    unit = {"µm": "um", "μm": "um", "micron": "um"}.get(unit, unit)
    escaped = "".join(ch if ord(ch) < 128 else f"\\u{ord(ch):04X}" for ch in unit)
    return float(pixel_size), escaped


def _image_axes(shape: tuple[int, int], pixel_size: float, unit: str) -> list[dict[str, Any]]:
    """The two signal axes ``y`` (rows) and ``x`` (columns) of an (H, W) image."""
    scale, units = axis_calibration(pixel_size, unit)
    return [
        {"_type": "UniformDataAxis", "name": name, "size": int(size), "scale": scale, "offset": 0.0, "units": units, "navigate": False, "is_binned": False}
        for name, size in zip(("y", "x"), shape)
    ]


def _index_axis(name: str, size: int) -> dict[str, Any]:
    """A navigation axis over class or latent indices 0..size−1 (no unit)."""
    return {"_type": "UniformDataAxis", "name": name, "size": int(size), "scale": 1.0, "offset": 0.0, "units": "", "navigate": True, "is_binned": False}


def signal_dict(data: np.ndarray, axes: list[dict[str, Any]], title: str, quantity: str, microvae: dict[str, Any]) -> dict[str, Any]:
    """A HyperSpy signal as the plain dictionary RosettaSciIO's writers take.

    Parameters
    ----------
    data : ndarray
        The signal's array; ``axes`` lists its axes in array order (navigation axes first).
    axes : list of dict
        One dict per array axis: ``name``, ``size``, ``scale``, ``offset``, ``units``, ``navigate``.
    title, quantity : str
        ``metadata.General.title`` and ``metadata.Signal.quantity`` (HyperSpy's ``"Name (unit)"``).
    microvae : dict
        The ``metadata.microvae`` node (values: str, numbers, bools, arrays, nested dicts).

    Returns
    -------
    dict of str to Any
        ``data``, ``axes``, ``metadata`` (General, Signal, _HyperSpy, microvae) and HyperSpy's
        empty ``original_metadata``, ``attributes``, ``learning_results``, ``models``,
        ``tmp_parameters`` and ``package_info``.

    Raises
    ------
    ValueError
        When ``axes`` does not match the data's shape.
    """
    if len(axes) != data.ndim or any(axis["size"] != size for axis, size in zip(axes, data.shape)):
        raise ValueError(f"axes {[a['size'] for a in axes]} do not match the data's shape {data.shape}")
    metadata = {
        "General": {"title": title},
        "Signal": {"signal_type": "", "quantity": quantity},
        "_HyperSpy": {"Folding": {"original_axes_manager": None, "original_shape": None, "signal_unfolded": False, "unfolded": False}},
        "microvae": microvae,
    }
    return {
        "data": data,
        "axes": axes,
        "metadata": metadata,
        "original_metadata": {},
        "attributes": {"_lazy": False, "ragged": False},
        "learning_results": {},
        "models": {},
        "tmp_parameters": {},
        "package_info": {"package": "", "package_version": ""},
    }


def write_hspy(path: str | Path, signal: dict[str, Any]) -> None:
    """Write one signal dictionary as a ``.hspy`` file (RosettaSciIO; HyperSpy not needed).

    Parameters
    ----------
    path : str or path
        The ``.hspy`` file to write.
    signal : dict of str to Any
        A signal dictionary (:func:`signal_dict`).
    """
    from rsciio.hspy import file_writer

    file_writer(str(path), signal, show_progressbar=False)


def map_families(names: list[str]) -> tuple[dict[str, list[tuple[tuple[int, ...], str]]], list[str]]:
    """Split map names into the stacked families of :data:`HSPY_FAMILIES` and the scalar maps.

    Parameters
    ----------
    names : list of str
        Map names (e.g. the keys of :attr:`ScanMaps.maps`).

    Returns
    -------
    (dict, list)
        ``families[suffix]`` lists ``(index, name)`` with ``index`` the map's place on the family's
        navigation axes (``(k,)``, ``(d,)`` or ``(k, d)``); the list holds the other names in order.
    """
    families: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    scalars = []
    for name in names:
        for suffix, (pattern, _) in HSPY_FAMILIES.items():
            match = pattern.fullmatch(name)
            if match:
                index = tuple(int(g) for g in match.groups())
                families.setdefault(suffix, []).append((index[::-1] if suffix == "latents_by_class" else index, name))
                break
        else:
            scalars.append(name)
    return families, scalars


def map_signals(scan_maps, record, microvae: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One scan's maps as HyperSpy signal dictionaries, one per map family and one per scalar map.

    Parameters
    ----------
    scan_maps : microvae.export.ScanMaps
        The scan's (H, W) maps (``(row, col)`` order) with their units and descriptions.
    record : microvae.artifacts.ImageRecord
        The scan (name, source, frame, SHA-256, pixel size and unit).
    microvae : dict
        Entries common to every signal's ``metadata.microvae`` (version, run, encoded artifact).

    Returns
    -------
    list of (str, dict)
        ``(suffix, signal)``: the file is ``NN_<scan>_<suffix>.hspy``; see the module docstring for
        the layout of each family.
    """
    height, width = record.height, record.width
    image_axes = _image_axes((height, width), record.pixel_size, record.unit)
    scan = {
        "name": record.name,
        "source": record.source,
        "frame": int(record.frame),
        "sha256": record.sha256,
        "pixel_size": float(record.pixel_size),
        "pixel_unit": record.unit,
        "shape": [int(height), int(width)],
    }
    families, scalars = map_families(list(scan_maps.maps))
    signals = []

    def describe(names: list[str]) -> dict[str, Any]:
        return {name: {"units": scan_maps.units[name], "description": scan_maps.descriptions[name]} for name in names}

    for suffix, members in families.items():
        _, nav_names = HSPY_FAMILIES[suffix]
        nav_shape = tuple(max(index[i] for index, _ in members) + 1 for i in range(len(nav_names)))
        data = np.full((*nav_shape, height, width), np.nan, np.float32)
        layout = np.full(nav_shape, "", dtype=object)
        for index, name in members:
            data[index] = scan_maps.maps[name]
            layout[index] = name
        axes = [_index_axis(axis, size) for axis, size in zip(nav_names, nav_shape)] + [dict(a) for a in image_axes]
        node = {
            **microvae,
            "scan": scan,
            "family": suffix,
            "maps": describe([name for _, name in members]),
            "layout": [str(name) for name in layout.ravel()],
            "layout_description": "maps.h5 dataset name of each navigation index, in C order over " + ", ".join(nav_names),
        }
        signals.append((suffix, signal_dict(data, axes, f"{record.name}: {_FAMILY_TITLES[suffix]}", _FAMILY_QUANTITIES[suffix], node)))
    for name in scalars:
        values = np.asarray(scan_maps.maps[name])
        units = scan_maps.units[name]
        quantity = f"{name} ({units})" if units else name
        node = {**microvae, "scan": scan, "family": name, "maps": describe([name])}
        signals.append((name, signal_dict(values, [dict(a) for a in image_axes], f"{record.name}: {name}", quantity, node)))
    return signals


def atoms_signal(image: np.ndarray, record, atoms: dict[str, np.ndarray], microvae: dict[str, Any]) -> dict[str, Any]:
    """One scan with its atoms as a HyperSpy ``Signal2D`` dictionary with ``Points`` markers.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The channel the atoms were found on, ``(row, col)`` order.
    record : microvae.artifacts.ImageRecord
        The scan (name, SHA-256, pixel size and unit).
    atoms : dict of ndarray
        This scan's atoms from the atoms artifact: ``coords`` (N, 2) ``(row, col)`` in pixels, and
        any of ``intensity``, ``sigma_px``, ``score``, ``fit_ok``, ``sublattice`` (N,),
        ``displacement_px`` (N, 2) ``(row, col)`` in pixels.
    microvae : dict
        Entries common to the ``metadata.microvae`` node (version, atoms artifact, channel).

    Returns
    -------
    dict
        The signal: axes ``y``, ``x`` calibrated as :func:`axis_calibration`; ``metadata.Markers``
        holds one permanent ``Points`` set per sublattice with offsets ``(x, y)`` in calibrated
        units; ``metadata.microvae.atoms`` the per-atom table (1-D arrays over atoms).
    """
    image = np.asarray(image)
    axes = _image_axes(image.shape, record.pixel_size, record.unit)
    scale, units = axis_calibration(record.pixel_size, record.unit)
    coords = np.asarray(atoms["coords"], dtype=np.float64).reshape(-1, 2)
    table: dict[str, Any] = {"x": coords[:, 1] * scale, "y": coords[:, 0] * scale, "row_px": coords[:, 0], "col_px": coords[:, 1]}
    for name in ("intensity", "sigma_px", "score", "fit_ok", "sublattice"):
        if name in atoms:
            table[name] = np.asarray(atoms[name])
    if "displacement_px" in atoms:
        displacement = np.asarray(atoms["displacement_px"], dtype=np.float64).reshape(-1, 2)
        table["displacement_row_px"] = displacement[:, 0]
        table["displacement_col_px"] = displacement[:, 1]
    sublattice = np.asarray(atoms.get("sublattice", np.zeros(len(coords), np.int16)))
    markers = {}
    for label in np.unique(sublattice):
        members = sublattice == label
        name = f"sublattice {int(label)}"
        markers[name] = {
            "class": "Points",
            "name": name,
            "plot_on_signal": True,
            "offset_transform": "data",
            "transform": "display",
            "ScalarMappable_array": None,
            "kwargs": {
                "offsets": np.stack([table["x"][members], table["y"][members]], axis=1),
                "sizes": (8,),
                "facecolors": ("none",),
                "edgecolors": (_SUBLATTICE_COLOURS[int(label) % len(_SUBLATTICE_COLOURS)],),
                "units": "points",
            },
        }
    node = {
        **microvae,
        "scan": {"name": record.name, "source": record.source, "frame": int(record.frame), "sha256": record.sha256, "pixel_size": float(record.pixel_size)},
        "atoms": table,
        "atoms_units": {"x": units, "y": units, "row_px": "px", "col_px": "px", "sigma_px": "px", "displacement_row_px": "px", "displacement_col_px": "px"},
        "atoms_description": (
            "one entry per atom: x, y = (col, row) × pixel size (the signal axes' units); intensity: fitted peak height "
            "(normalised intensity); sigma_px: Gaussian width; sublattice: 0 the brightest; displacement from the centroid "
            "of the neighbours in the reference sublattice (NaN: not computed)"
        ),
    }
    signal = signal_dict(image.astype(np.float32, copy=False), axes, f"{record.name}: {len(coords)} atoms", "Intensity", node)
    signal["metadata"]["Markers"] = markers
    return signal


def write_tiff_stack(path: str | Path, scan_maps, record, info: str = "") -> list[str]:
    """Write every map of one scan as one ImageJ hyperstack: a float32 slice per map, labelled.

    Parameters
    ----------
    path : path
        The ``.tif`` to write.
    scan_maps : microvae.export.ScanMaps
        The scan's (H, W) maps, ``(row, col)`` order; slices follow ``scan_maps.maps``' order.
    record : microvae.artifacts.ImageRecord
        The scan: its pixel size and unit become ImageJ's calibration (see
        :func:`imagej_calibration`).
    info : str
        Lines prepended to the ImageJ ``Info`` property (the maps' units and descriptions follow).

    Returns
    -------
    list of str
        The slice labels (the map names, as in ``maps.h5``), in slice order.
    """
    import tifffile

    names = list(scan_maps.maps)
    stack = np.stack([np.asarray(scan_maps.maps[name], dtype=np.float32) for name in names])
    lines = [info] if info else []
    lines += [f"{name} [{scan_maps.units[name] or 'no unit'}]: {scan_maps.descriptions[name]}" for name in names]
    # labels and info go into ImageJ's IJMetadata tag (UTF-16), not the ASCII description
    metadata: dict[str, Any] = {"axes": "ZYX", "Labels": names, "Info": "\n".join(lines)}
    kwargs: dict[str, Any] = {}
    calibration = imagej_calibration(record.pixel_size, record.unit)
    if calibration is not None:
        size, unit = calibration
        metadata["unit"] = unit
        kwargs["resolution"] = (1.0 / size, 1.0 / size)
    tifffile.imwrite(path, stack, imagej=True, metadata=metadata, **kwargs)
    return names

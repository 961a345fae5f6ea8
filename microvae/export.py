"""Maps of classes, latents, angles, shifts and reconstruction error on each source scan's pixel grid.

:func:`build_maps` turns an encoded artifact's per-patch values into named (H, W) maps for one
scan (see :mod:`microvae.maps` for the rendering rule); :func:`write_tiff` writes one map with
ImageJ calibration so that Fiji and tifffile read the pixel size.

Map names and contents (float32, NaN where no patch covers the pixel, unless stated):

==========================  ==================================================================
``class``                   argmax class, int16, −1 where missing
``class_prob_{k}``          q(y = k | x)
``z{d}``                    posterior mean of continuous latent d
``z{d}_class{k}``           the same, only where the class is k (the paper's Fig. 5d–e)
``angle_rad``               posterior angle, radians in (−π, π]
``template_angle_rad``      angle found by matching the class template, radians in (−π, π] (runs with rotation)
``template_match``          correlation of the patch with its posed class template (runs with rotation)
``shift_row_px``            posterior shift along rows, pixels
``shift_col_px``            posterior shift along columns, pixels
``recon_error``             mean squared reconstruction error of the patch (when the encoded artifact has it)
``neg_elbo``                negative ELBO of the patch, nats (when the encoded artifact has it)
``class_agreement``         ensembles: fraction of members agreeing with the consensus class
``class_prob_sd``           ensembles: sd of the aligned class posteriors over members
==========================  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .interop import imagej_calibration
from .maps import nearest_centre

MAP_UNITS = {
    "class": "",
    "angle_rad": "rad",
    "template_angle_rad": "rad",
    "shift_row_px": "px",
    "shift_col_px": "px",
    "recon_error": "normalised intensity²",
    "neg_elbo": "nats",
    "displacement_row_px": "px",
    "displacement_col_px": "px",
    "displacement_px": "px",
    "displacement_angle_rad": "rad",
}
OPTIONAL_MAPS = {
    "template_angle_rad": "turn that takes the class template onto the nearest patch, found by search, radians in (−π, π] (from the template's own orientation)",
    "template_match": "normalised correlation of the nearest patch with its posed class template (1 = identical up to contrast)",
    "recon_error": "mean squared reconstruction error of the nearest patch",
    "neg_elbo": "negative ELBO of the nearest patch (high: poorly explained by the model)",
    "class_agreement": "fraction of ensemble members whose class equals the consensus class (low: uncertain)",
    "class_prob_sd": "sd over ensemble members of the aligned class posterior (high: uncertain)",
}

ATOM_MAPS = ("atom_sublattice", "atom_displacement_px")  # per-atom values carried from find-atoms


@dataclass
class ScanMaps:
    """All maps of one scan: ``maps[name]`` is (H, W); ``units[name]`` and ``descriptions[name]`` describe it.

    Attributes
    ----------
    maps : dict of str to ndarray
        Name → (H, W) map (float32; int16 for ``class`` and ``sublattice``, −1 where missing;
        NaN where no patch is within reach).
    units : dict of str to str
        Name → unit ("rad", "px", "latent units", "" …).
    descriptions : dict of str to str
        Name → what the map shows.
    coverage : float
        Fraction of the scan's pixels within reach of a patch (0 to 1).
    """

    maps: dict[str, np.ndarray]
    units: dict[str, str]
    descriptions: dict[str, str]
    coverage: float


def build_maps(shape: tuple[int, int], coords: np.ndarray, encoded: dict[str, np.ndarray], radius: float) -> ScanMaps:
    """Render every per-patch quantity of one scan onto its (H, W) grid.

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the scan, in px.
    coords : ndarray
        (N, 2) patch centres (row, col) in this scan, in px.
    encoded : dict of str to ndarray
        Per-patch arrays of this scan's patches: ``class`` (N,), ``class_probs`` (N, K),
        ``z_mean`` (N, D), ``angle_rad`` (N,), ``shift_px`` (N, 2); and any of
        :data:`OPTIONAL_MAPS` (N,) that the artifact has (``recon_error`` and ``neg_elbo``
        unless it was encoded with ``--no-scores``); ``atom_sublattice`` (N,) and
        ``atom_displacement_px`` (N, 2) when find-atoms gave them.
    radius : float
        Pixels farther than this (px) from every centre are missing.

    Returns
    -------
    ScanMaps
        ``class``, ``class_prob_k`` (K > 1), ``zd`` and ``zd_classk`` (K > 1), ``angle_rad``,
        ``shift_row_px``, ``shift_col_px``, the optional maps present, ``sublattice`` and the
        ``displacement_*`` maps when given; with units, descriptions and coverage.
    """
    lookup = nearest_centre(shape, coords, radius)
    maps: dict[str, np.ndarray] = {}
    descriptions: dict[str, str] = {}
    classes = encoded["class"].astype(np.int16)
    maps["class"] = lookup.render(classes, fill=-1).astype(np.int16)
    descriptions["class"] = "argmax of q(y|x) of the nearest patch; −1 where no patch is within reach"
    class_probs = encoded["class_probs"]
    if class_probs.shape[1] > 1:
        for k in range(class_probs.shape[1]):
            maps[f"class_prob_{k}"] = lookup.render(class_probs[:, k].astype(np.float32))
            descriptions[f"class_prob_{k}"] = f"q(y = {k} | x)"
    z_mean = encoded["z_mean"]
    for d in range(z_mean.shape[1]):
        maps[f"z{d}"] = lookup.render(z_mean[:, d].astype(np.float32))
        descriptions[f"z{d}"] = f"posterior mean of continuous latent {d}"
        if class_probs.shape[1] > 1:
            for k in range(class_probs.shape[1]):
                masked = np.where(classes == k, z_mean[:, d], np.nan).astype(np.float32)
                maps[f"z{d}_class{k}"] = lookup.render(masked)
                descriptions[f"z{d}_class{k}"] = f"latent {d} where the class is {k}, NaN elsewhere"
    maps["angle_rad"] = lookup.render(encoded["angle_rad"].astype(np.float32))
    descriptions["angle_rad"] = "posterior rotation angle, radians in (−π, π]"
    maps["shift_row_px"] = lookup.render(encoded["shift_px"][:, 0].astype(np.float32))
    maps["shift_col_px"] = lookup.render(encoded["shift_px"][:, 1].astype(np.float32))
    descriptions["shift_row_px"] = "posterior shift of the object along rows, pixels"
    descriptions["shift_col_px"] = "posterior shift of the object along columns, pixels"
    for name, description in OPTIONAL_MAPS.items():
        if name in encoded:
            maps[name] = lookup.render(encoded[name].astype(np.float32))
            descriptions[name] = description
    if "atom_sublattice" in encoded:
        maps["sublattice"] = lookup.render(encoded["atom_sublattice"].astype(np.int16), fill=-1).astype(np.int16)
        descriptions["sublattice"] = "sublattice of the nearest patch's atom (find-atoms); −1 where none"
    if "atom_displacement_px" in encoded and np.isfinite(encoded["atom_displacement_px"]).any():
        vector = encoded["atom_displacement_px"].astype(np.float32)
        maps["displacement_row_px"] = lookup.render(vector[:, 0])
        maps["displacement_col_px"] = lookup.render(vector[:, 1])
        maps["displacement_px"] = lookup.render(np.hypot(vector[:, 0], vector[:, 1]))
        maps["displacement_angle_rad"] = lookup.render(np.arctan2(-vector[:, 0], vector[:, 1]))
        descriptions["displacement_row_px"] = "row component of the nearest atom's displacement from its neighbours' centroid, pixels"
        descriptions["displacement_col_px"] = "column component of the nearest atom's displacement from its neighbours' centroid, pixels"
        descriptions["displacement_px"] = "length of the nearest atom's displacement from its neighbours' centroid, pixels (NaN: not computed)"
        descriptions["displacement_angle_rad"] = "direction of that displacement, counter-clockwise from +col as displayed, radians"
    units = {name: MAP_UNITS.get(name, "latent units" if name.startswith("z") else "") for name in maps}
    return ScanMaps(maps, units, descriptions, float(lookup.covered.mean()))


def write_tiff(path, array: np.ndarray, pixel_size: float, unit: str) -> None:
    """Write a 2D map as an ImageJ TIFF (float32 or int16) with its calibration when the scan had one.

    The unit is written as ImageJ reads it (:func:`microvae.interop.imagej_calibration`): µm as
    ``um``, Å as nm (size / 10).

    Parameters
    ----------
    path : str or path
        The TIFF to write.
    array : ndarray
        (H, W) map; float maps are written as float32, others in their dtype.
    pixel_size : float
        Size of one pixel in ``unit`` (uncalibrated when not > 0).
    unit : str
        Length unit as microvae records it.
    """
    import tifffile

    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    kwargs = {}
    calibration = imagej_calibration(pixel_size, unit)  # ASCII for ImageJ: µm as um, Å as nm
    if calibration is not None:
        size, imagej_unit = calibration
        kwargs = {"resolution": (1.0 / size, 1.0 / size), "metadata": {"unit": imagej_unit}}
    tifffile.imwrite(path, array, imagej=True, **kwargs)

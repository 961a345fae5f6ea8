"""Invariance diagnostics: does the model's class and latent code stay put when a patch turns or moves?

The j-trVAE is meant to explain rotation and translation by its angle and shift latents, so that the
class and the continuous latents describe only *what* an object is. The cryo-EM amortisation study
shows how this fails silently: an encoder that has not learned the invariance codes pose into the
"content" latents. :func:`invariance_report` measures it directly: every patch is encoded as it is
and as copies turned by 90°, 180° and 270° (exact pixel permutations, ``numpy.rot90`` in the (row,
col) plane: counter-clockwise as displayed) and moved by ±1 px along rows and columns (``numpy.roll``:
the pixels that leave one edge enter at the other), and the changes are reported relative to the
spread of the latents over the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

TRANSFORMS = {
    "rotate 90°": lambda x: np.rot90(x, 1, axes=(2, 3)),
    "rotate 180°": lambda x: np.rot90(x, 2, axes=(2, 3)),
    "rotate 270°": lambda x: np.rot90(x, 3, axes=(2, 3)),
    "shift +1 px row": lambda x: np.roll(x, 1, axis=2),
    "shift −1 px row": lambda x: np.roll(x, -1, axis=2),
    "shift +1 px col": lambda x: np.roll(x, 1, axis=3),
    "shift −1 px col": lambda x: np.roll(x, -1, axis=3),
}
EXPECTED_TURN_RAD = {"rotate 90°": math.pi / 2, "rotate 180°": math.pi, "rotate 270°": -math.pi / 2}


@dataclass
class InvarianceRow:
    """How one transform moves the code of the patches (means over patches).

    Attributes:
        transform: name of the transform (a key of :data:`TRANSFORMS`).
        z_drift: mean |Δz| over patches and latent dimensions, in units of each dimension's sd over
            the untransformed data (0 = invariant; about 1.13 = as if the code were redrawn).
        class_changed: fraction of patches whose argmax class changes (nan without classes).
        class_prob_shift: mean total-variation distance between the class posteriors (0 to 1).
        angle_error_deg: mean |Δangle − turn| (degrees, wrapped) for rotations with a rotation
            latent; nan otherwise. 0 = the angle latent absorbs the turn exactly.
    """

    transform: str
    z_drift: float
    class_changed: float
    class_prob_shift: float
    angle_error_deg: float


def invariance_report(model, images: np.ndarray, device: str = "cpu", batch_size: int = 1024) -> list[InvarianceRow]:
    """One :class:`InvarianceRow` per transform for (N, C, W, W) ``images`` under a trained model."""
    from .training import encode_array

    images = np.asarray(images, dtype=np.float32)
    base = encode_array(model, images, batch_size=batch_size, device=device, recon_error=False)
    spread = base["z_mean"].std(0)
    spread = np.where(spread > 1e-12, spread, 1.0)
    classes = model.config.n_classes > 0
    rows = []
    for name, transform in TRANSFORMS.items():
        moved = encode_array(model, np.ascontiguousarray(transform(images)), batch_size=batch_size, device=device, recon_error=False)
        z_drift = float((np.abs(moved["z_mean"] - base["z_mean"]) / spread).mean()) if spread.size else 0.0
        changed = float((moved["class"] != base["class"]).mean()) if classes else math.nan
        prob_shift = float(0.5 * np.abs(moved["class_probs"] - base["class_probs"]).sum(1).mean()) if classes else math.nan
        angle_error = math.nan
        if model.config.rotation and name in EXPECTED_TURN_RAD:
            residual = moved["angle_rad"] - base["angle_rad"] - EXPECTED_TURN_RAD[name]
            angle_error = float(np.degrees(np.abs(np.angle(np.exp(1j * residual)))).mean())
        rows.append(InvarianceRow(name, z_drift, changed, prob_shift, angle_error))
    return rows


def report_dict(rows: list[InvarianceRow]) -> dict:
    """Plain-data form of a report (for JSON; NaN becomes None): the rows and the worst z drift over
    rotations and over shifts."""
    rotations = [r.z_drift for r in rows if r.transform.startswith("rotate")]
    shifts = [r.z_drift for r in rows if r.transform.startswith("shift")]
    plain = [{key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in asdict(r).items()} for r in rows]
    return {"rows": plain, "max_z_drift_rotation": max(rotations, default=None), "max_z_drift_shift": max(shifts, default=None)}

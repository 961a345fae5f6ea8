"""Images from a trained model: latent traversals (the paper's Fig. 2 and S1–S3) and conditioned generation (Fig. 4).

Latent values are placed at quantiles of the N(0, 1) prior through its inverse CDF, so that equal
steps in the picture hold equal prior probability mass.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm

from .errors import ParameterError

__all__ = ["generate", "latent_grid", "prior_quantiles", "sweep_values", "traversal"]


def prior_quantiles(count: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """``count`` values of z at evenly spaced probabilities between ``low`` and ``high`` (Φ⁻¹).

    Parameters
    ----------
    count : int
        Number of values.
    low, high : float, default 0.05, 0.95
        The first and last probability.

    Returns
    -------
    ndarray
        (count,) float64 values of z, increasing.
    """
    return norm.ppf(np.linspace(low, high, count))


@torch.no_grad()
def generate(model, z: np.ndarray, classes: np.ndarray | None = None, angle_rad: np.ndarray | None = None, shift_px: np.ndarray | None = None) -> np.ndarray:
    """Decode latents to image means (B, C, W, W).

    Parameters
    ----------
    model : JTRVAE
        The trained model (moved to the CPU and put in eval mode).
    z : ndarray
        (B, D) continuous latents.
    classes : ndarray or None
        (B,) class indices (required when the model has classes).
    angle_rad : ndarray or None
        (B,) rotation (counter-clockwise in display coordinates); None for 0.
    shift_px : ndarray or None
        (B, 2) shift (row, col) in pixels; None for 0.

    Returns
    -------
    ndarray
        (B, C, W, W) float32 image means (the angle and shift are ignored when the model has no
        rotation or translation latent).

    Raises
    ------
    ParameterError
        When the model has classes and ``classes`` is None or out of 0…K−1.
    """
    config = model.config
    z_t = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(len(z), config.latent_dim))
    onehot = None
    if config.n_classes > 0:
        if classes is None:
            raise ParameterError("this model has classes: give --class")
        classes = np.asarray(classes, dtype=np.int64)
        if classes.min() < 0 or classes.max() >= config.n_classes:
            raise ParameterError(f"class must be between 0 and {config.n_classes - 1}")
        onehot = torch.nn.functional.one_hot(torch.as_tensor(classes), config.n_classes).float()
    angle = None if angle_rad is None or not config.rotation else torch.as_tensor(np.asarray(angle_rad, dtype=np.float32))
    shift = None if shift_px is None or not config.translation else torch.as_tensor(np.asarray(shift_px, dtype=np.float32))
    model = model.cpu().eval()
    return model.decode(z_t, onehot, angle, shift).cpu().numpy()


def sweep_values(config, steps: int) -> np.ndarray:
    """Values a latent is swept through: the prior's quantiles, or for circular latents ``steps``
    angles evenly around the circle (radians, from −π).

    Parameters
    ----------
    config : JTRVAEConfig
        The model's settings (its ``latent_geometry``).
    steps : int
        Number of values.

    Returns
    -------
    ndarray
        (steps,) values: :func:`prior_quantiles` (float64), or float32 angles in rad for circular
        latents.
    """
    if config.latent_geometry != "euclidean":
        return (-np.pi + 2 * np.pi * np.arange(steps) / steps).astype(np.float32)
    return prior_quantiles(steps)


def traversal(model, latent: int, steps: int = 9) -> np.ndarray:
    """Images (K', steps, C, W, W): rows are classes, columns sweep latent ``latent``, others at 0.

    Parameters
    ----------
    model : JTRVAE
        The trained model.
    latent : int
        The latent to sweep, 0…D−1.
    steps : int, default 9
        Values swept (:func:`sweep_values`).

    Returns
    -------
    ndarray
        (K', steps, C, W, W) float32 image means, K' = max(K, 1); angle and shift 0.

    Raises
    ------
    ParameterError
        When ``latent`` is not one of the model's.
    """
    config = model.config
    if not 0 <= latent < config.latent_dim:
        raise ParameterError(f"latent {latent} does not exist; the model has {config.latent_dim}")
    rows = max(config.n_classes, 1)
    values = sweep_values(config, steps)
    z = np.zeros((rows * steps, config.latent_dim), np.float32)
    z[:, latent] = np.tile(values, rows)
    classes = np.repeat(np.arange(rows), steps) if config.n_classes > 0 else None
    return generate(model, z, classes).reshape(rows, steps, config.channels, config.image_size, config.image_size)


def latent_grid(model, class_index: int | None, steps: int = 9) -> np.ndarray:
    """Images (steps, steps, C, W, W) over latents 0 (columns) and 1 (rows, increasing downwards).

    Parameters
    ----------
    model : JTRVAE
        The trained model.
    class_index : int or None
        The class to render (needed when the model has classes).
    steps : int, default 9
        Values per latent (:func:`sweep_values`); other latents at 0.

    Returns
    -------
    ndarray
        (steps, steps, C, W, W) float32 image means.

    Raises
    ------
    ParameterError
        When the model has fewer than 2 continuous latents, or a class is needed and missing or
        out of range.
    """
    config = model.config
    if config.latent_dim < 2:
        raise ParameterError("a 2D latent grid needs at least 2 continuous latents")
    values = sweep_values(config, steps)
    grid_rows, grid_cols = np.meshgrid(values, values, indexing="ij")
    z = np.zeros((steps * steps, config.latent_dim), np.float32)
    z[:, 0] = grid_cols.ravel()
    z[:, 1] = grid_rows.ravel()
    classes = np.full(steps * steps, class_index) if config.n_classes > 0 else None
    return generate(model, z, classes).reshape(steps, steps, config.channels, config.image_size, config.image_size)

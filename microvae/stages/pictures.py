"""``microvae manifold`` and ``microvae generate``: pictures of what a trained run has learned."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import artifacts
from ..errors import ParameterError
from ..generation import generate, latent_grid, sweep_values, traversal
from ..plots import save_image_grid
from ..run_folder import load_run

__all__ = ["run_generate", "run_manifold"]


def run_manifold(run_dir: str | Path, output: str | Path, steps: int = 9) -> list[Path]:
    """Latent traversals and, with two or more latents, one 2D grid over latents 0 and 1 per class.

    Parameters
    ----------
    run_dir : str or path
        The run folder (output folder of ``microvae train``).
    output : str or path
        The PNG name the files are named after: ``output`` with ``_z<d>`` (one per continuous
        latent: rows are classes, columns the latent swept through the prior's quantiles, the
        other latents 0, angle 0) or ``_class<k>`` (latents z0 as columns × z1 as rows) before the
        suffix (``.png`` when it has none).
    steps : int, default 9
        Values of each swept latent (prior quantiles).

    Returns
    -------
    list of Path
        The PNG files written.
    """
    output = Path(output)
    model, configs = load_run(run_dir)
    config = configs["model"]
    written = []
    quantiles = sweep_values(config, steps)
    row_labels = [f"class {k}" for k in range(config.n_classes)] if config.n_classes else ["all"]
    for d in range(config.latent_dim):
        images = traversal(model, d, steps)
        target = output.with_name(f"{output.stem}_z{d}{output.suffix or '.png'}")
        with artifacts.atomic_file(target) as temp:
            save_image_grid(temp, images, row_labels, [f"{v:+.2f}" for v in quantiles], title=f"latent z{d} swept (others 0), angle 0")
        written.append(target)
    if config.latent_dim >= 2:
        for k in range(max(config.n_classes, 1)):
            images = latent_grid(model, k if config.n_classes else None, steps)
            target = output.with_name(f"{output.stem}_class{k}{output.suffix or '.png'}")
            with artifacts.atomic_file(target) as temp:
                save_image_grid(
                    temp, images, [f"z1 {v:+.1f}" for v in quantiles], [f"z0 {v:+.1f}" for v in quantiles], title=f"class {k}: latents z0 (columns) × z1 (rows)"
                )
            written.append(target)
    return written


def run_generate(
    run_dir: str | Path,
    output: str | Path,
    class_index: int | None = None,
    angle_deg: float = 0.0,
    z: list[float] | tuple[float, ...] = (),
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """One image from the run's decoder for a class, an angle, continuous latents and a shift.

    Parameters
    ----------
    run_dir : str or path
        The run folder (output folder of ``microvae train``).
    output : str or path
        ``.png`` (a picture) or ``.npy`` (the (C, W, W) float32 array).
    class_index : int, optional
        The class (None for a model without classes).
    angle_deg : float, default 0.0
        The angle in degrees, counter-clockwise as displayed.
    z : sequence of float, default ()
        Continuous latents (missing ones are 0); at most the model's ``latent_dim``.
    shift_px : tuple of (float, float), default (0.0, 0.0)
        The shift (row, col) in px.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    ParameterError
        ``output`` ends in neither .png nor .npy, or ``z`` has more values than the model has
        latents.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise ParameterError(f"{output}: output must end in .png or .npy")
    model, configs = load_run(run_dir)
    config = configs["model"]
    if len(z) > config.latent_dim:
        raise ParameterError(f"--z has {len(z)} values but the model has {config.latent_dim} continuous latents")
    latents = np.zeros((1, config.latent_dim), np.float32)
    latents[0, : len(z)] = z
    classes = None if class_index is None else np.array([class_index])
    image = generate(model, latents, classes, np.array([np.deg2rad(angle_deg)]), np.array([shift_px]))[0]
    with artifacts.atomic_file(output) as temp:
        if suffix == ".npy":
            np.save(temp, image)
        else:
            save_image_grid(temp, image[None, None], [], [], title=f"class {class_index}, angle {angle_deg:g}°, z {latents[0].round(2).tolist()}")
    return output

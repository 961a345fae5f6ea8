"""PNG pictures: atom overlays and patch galleries (matplotlib, Agg backend, no screen needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _display_range(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1)


def add_scale_bar(axis, width_px: int, pixel_size: float, unit: str) -> None:
    """Draw a scale bar of a round length (about a fifth of the width) in the lower left corner."""
    if unit in ("px", "", "unknown") or pixel_size <= 0:
        return
    target = width_px * pixel_size / 5.0
    magnitude = 10 ** np.floor(np.log10(target))
    length = max(v * magnitude for v in (1, 2, 5) if v * magnitude <= target)
    bar_px = length / pixel_size
    x0, y0 = 0.04 * width_px, axis.get_ylim()[0] - 0.05 * abs(axis.get_ylim()[0] - axis.get_ylim()[1])
    axis.plot([x0, x0 + bar_px], [y0, y0], color="white", linewidth=4, solid_capstyle="butt")
    axis.text(x0 + bar_px / 2, y0 - 0.015 * width_px, f"{length:g} {unit}", color="white", ha="center", va="bottom", fontsize=9, fontweight="bold")


def save_atom_overlay(path: str | Path, image: np.ndarray, positions: np.ndarray, title: str = "", pixel_size: float = 1.0, unit: str = "px", values: np.ndarray | None = None) -> None:
    """Write a PNG of the (H, W) image with a marker on every (row, col) position.

    ``values`` (N,), if given, colours the markers (for example fitted intensity).
    """
    plt = _pyplot()
    height, width = image.shape
    scale = min(12.0, max(6.0, width / 100.0))
    figure, axis = plt.subplots(figsize=(scale, scale * height / width + 0.6), dpi=100)
    low, high = _display_range(image)
    axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    marker_size = max(2.0, min(30.0, 4e5 / max(len(positions), 1) / max(width / 512, 1) ** 2))
    if values is None:
        axis.scatter(positions[:, 1], positions[:, 0], s=marker_size, facecolors="none", edgecolors="#ff3b30", linewidths=0.8)
    else:
        points = axis.scatter(positions[:, 1], positions[:, 0], s=marker_size, c=values, cmap="plasma", linewidths=0)
        figure.colorbar(points, ax=axis, fraction=0.035, pad=0.01, label="fitted intensity")
    axis.set_xlim(-0.5, width - 0.5)
    axis.set_ylim(height - 0.5, -0.5)
    add_scale_bar(axis, width, pixel_size, unit)
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("col (px)")
    axis.set_ylabel("row (px)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_patch_gallery(path: str | Path, patches: np.ndarray, title: str = "", count: int = 64, seed: int = 0) -> None:
    """Write a PNG grid of up to ``count`` patches (N, C, W, W) chosen at random (channel 0 shown)."""
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(patches), size=min(count, len(patches)), replace=False))
    columns = int(np.ceil(np.sqrt(len(chosen))))
    rows = int(np.ceil(len(chosen) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.0, rows * 1.0 + 0.5), dpi=100, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), chosen):
        axis.imshow(patches[index, 0], cmap="gray", interpolation="nearest")
        axis.set_title(str(index), fontsize=6)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

"""PNG pictures: atom overlays and patch galleries (matplotlib, Agg backend, no screen needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SUBLATTICE_COLOURS", "add_scale_bar", "save_atom_overlay", "save_image_grid", "save_latent_scatter", "save_map_overlay", "save_patch_gallery"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _display_range(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1)


def add_scale_bar(axis, width_px: int, pixel_size: float, unit: str) -> None:
    """Draw a scale bar of a round length (about a fifth of the width) in the lower left corner.

    Parameters
    ----------
    axis : matplotlib.axes.Axes
        The axes showing the image (drawn in its pixel coordinates).
    width_px : int
        Width of the image in px.
    pixel_size : float
        Size of one pixel in ``unit``; nothing is drawn when ≤ 0.
    unit : str
        Length unit; nothing is drawn for "px", "" or "unknown".
    """
    if unit in ("px", "", "unknown") or pixel_size <= 0:
        return
    target = width_px * pixel_size / 5.0
    magnitude = 10 ** np.floor(np.log10(target))
    length = max(v * magnitude for v in (1, 2, 5) if v * magnitude <= target)
    bar_px = length / pixel_size
    x0, y0 = 0.04 * width_px, axis.get_ylim()[0] - 0.05 * abs(axis.get_ylim()[0] - axis.get_ylim()[1])
    axis.plot([x0, x0 + bar_px], [y0, y0], color="white", linewidth=4, solid_capstyle="butt")
    axis.text(x0 + bar_px / 2, y0 - 0.015 * width_px, f"{length:g} {unit}", color="white", ha="center", va="bottom", fontsize=9, fontweight="bold")


SUBLATTICE_COLOURS = ("#ff3b30", "#30b0ff", "#ffcc00", "#34c759", "#af52de", "#ff9500")


def save_atom_overlay(
    path: str | Path,
    image: np.ndarray,
    positions: np.ndarray,
    title: str = "",
    pixel_size: float = 1.0,
    unit: str = "px",
    values: np.ndarray | None = None,
    values_label: str = "fitted intensity",
    sublattice: np.ndarray | None = None,
) -> None:
    """Write a PNG of the (H, W) image with a marker on every (row, col) position.

    ``values`` (N,), if given, colours the markers (for example fitted intensity); otherwise
    ``sublattice`` (N,) ints, if given, colour them by sublattice (0 red, 1 blue, 2 yellow, …) with
    a legend of the counts.

    Parameters
    ----------
    path : str or path
        The PNG to write.
    image : ndarray
        (H, W) image, shown in grey between its 0.5 and 99.5 percentiles.
    positions : ndarray
        (N, 2) marker positions (row, col) in px.
    title : str, default ""
        Title of the picture.
    pixel_size : float, default 1.0
        Size of one pixel in ``unit`` (for the scale bar).
    unit : str, default "px"
        Length unit (no scale bar for "px").
    values : ndarray or None, optional
        (N,) marker colours (plasma, with a colour bar).
    values_label : str, default "fitted intensity"
        The colour bar's label.
    sublattice : ndarray or None, optional
        (N,) int sublattice of each marker (used without ``values`` when any is > 0).
    """
    plt = _pyplot()
    height, width = image.shape
    scale = min(12.0, max(6.0, width / 100.0))
    figure, axis = plt.subplots(figsize=(scale, scale * height / width + 0.6), dpi=100)
    low, high = _display_range(image)
    axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    marker_size = max(2.0, min(30.0, 4e5 / max(len(positions), 1) / max(width / 512, 1) ** 2))
    if values is None and sublattice is not None and len(sublattice) and sublattice.max() > 0:
        for label in range(int(sublattice.max()) + 1):
            members = sublattice == label
            axis.scatter(
                positions[members, 1],
                positions[members, 0],
                s=marker_size,
                facecolors="none",
                edgecolors=SUBLATTICE_COLOURS[label % len(SUBLATTICE_COLOURS)],
                linewidths=0.9,
                label=f"sublattice {label}: {int(members.sum())}",
            )
        axis.legend(loc="upper right", fontsize=8, framealpha=0.7)
    elif values is None:
        axis.scatter(positions[:, 1], positions[:, 0], s=marker_size, facecolors="none", edgecolors="#ff3b30", linewidths=0.8)
    else:
        points = axis.scatter(positions[:, 1], positions[:, 0], s=marker_size, c=values, cmap="plasma", linewidths=0)
        figure.colorbar(points, ax=axis, fraction=0.035, pad=0.01, label=values_label)
    axis.set_xlim(-0.5, width - 0.5)
    axis.set_ylim(height - 0.5, -0.5)
    add_scale_bar(axis, width, pixel_size, unit)
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("col (px)")
    axis.set_ylabel("row (px)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_patch_gallery(path: str | Path, patches: np.ndarray, title: str = "", count: int = 64, seed: int = 0, row_labels: np.ndarray | None = None) -> None:
    """Write a PNG grid of up to ``count`` patches (N, C, W, W) chosen at random (channel 0 shown),
    each titled by its index (or by ``row_labels[index]``, e.g. its row in the file).

    Parameters
    ----------
    path : str or path
        The PNG to write.
    patches : ndarray
        (N, C, W, W) patches.
    title : str, default ""
        Title of the picture.
    count : int, default 64
        Most patches shown (drawn without replacement, shown in index order).
    seed : int, default 0
        Seed of the draw.
    row_labels : ndarray or None, optional
        (N,) labels to title the patches with.
    """
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
        axis.set_title(str(index if row_labels is None else row_labels[index]), fontsize=6)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_map_overlay(
    path: str | Path, name: str, values: np.ndarray, scan: np.ndarray | None, pixel_size: float = 1.0, unit: str = "px", title: str = "", values_unit: str = ""
) -> None:
    """Write a PNG of one (H, W) map over the scan in grey, with a colour bar (labelled with the map's
    name and ``values_unit``) and a scale bar.

    Class maps (``name == "class"``) use discrete colours and a legend; angle maps a cyclic colour map
    in degrees; other maps viridis between their 1st and 99th percentiles. Missing pixels show the scan.

    Parameters
    ----------
    path : str or path
        The PNG to write.
    name : str
        The map's name ("class" and "sublattice" are discrete, names starting "angle" or "template_angle" are in rad).
    values : ndarray
        (H, W) map; NaN (or −1 for discrete maps) where missing.
    scan : ndarray or None
        (H, W) scan underneath, or None (the map alone, opaque).
    pixel_size : float, default 1.0
        Size of one pixel in ``unit`` (for the scale bar).
    unit : str, default "px"
        Length unit (no scale bar for "px").
    title : str, default ""
        Title; ``name`` when empty.
    values_unit : str, default ""
        Unit of the values, in the colour bar's label.
    """
    plt = _pyplot()
    from matplotlib import colors as mcolors

    height, width = values.shape
    size = min(10.0, max(5.0, width / 100.0))
    figure, axis = plt.subplots(figsize=(size + 1.6, size * height / width + 0.6), dpi=100)
    if scan is not None:
        low, high = _display_range(scan)
        axis.imshow(scan, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    if name in ("class", "sublattice"):
        n_classes = int(values.max()) + 1 if (values >= 0).any() else 1
        palette = plt.get_cmap("tab10")
        shown = np.ma.masked_less(values, 0)
        cmap = mcolors.ListedColormap([palette(k % 10) for k in range(max(n_classes, 1))])
        axis.imshow(shown, cmap=cmap, vmin=-0.5, vmax=max(n_classes, 1) - 0.5, alpha=0.45 if scan is not None else 1.0, interpolation="nearest")
        from matplotlib.patches import Patch

        counts = [int((values == k).sum()) for k in range(n_classes)]
        handles = [Patch(color=palette(k % 10), label=f"{name} {k} ({100 * counts[k] / max(values.size, 1):.0f}% of pixels)") for k in range(n_classes)]
        axis.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    else:
        finite = values[np.isfinite(values)]
        shown = np.ma.masked_invalid(values)
        if name.startswith(("angle", "template_angle")):
            image = axis.imshow(np.degrees(shown), cmap="twilight", vmin=-180, vmax=180, alpha=0.6 if scan is not None else 1.0, interpolation="nearest")
            label = "angle (degrees)"
        else:
            low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
            if high <= low:
                high = low + 1e-6
            image = axis.imshow(shown, cmap="viridis", vmin=low, vmax=high, alpha=0.6 if scan is not None else 1.0, interpolation="nearest")
            label = f"{name} ({values_unit})" if values_unit else name
        figure.colorbar(image, ax=axis, fraction=0.04, pad=0.01, label=label)
    axis.set_xlim(-0.5, width - 0.5)
    axis.set_ylim(height - 0.5, -0.5)
    add_scale_bar(axis, width, pixel_size, unit)
    axis.set_title(title or name, fontsize=10)
    axis.set_xlabel("col (px)")
    axis.set_ylabel("row (px)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_latent_scatter(path: str | Path, z_mean: np.ndarray, classes: np.ndarray, title: str = "") -> None:
    """Scatter of the first two continuous latents (or latent 0 against patch index), coloured by class.

    Parameters
    ----------
    path : str or path
        The PNG to write.
    z_mean : ndarray
        (N, D) posterior means: z0 against z1; with D = 1 z0 against 0, with D = 0 the patch
        index against 0.
    classes : ndarray
        (N,) int class of each patch.
    title : str, default ""
        Title; "continuous latents by class" when empty.
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 5.5), dpi=100)
    palette = plt.get_cmap("tab10")
    x = z_mean[:, 0] if z_mean.shape[1] >= 1 else np.arange(len(classes))
    y = z_mean[:, 1] if z_mean.shape[1] >= 2 else np.zeros(len(classes))
    for k in np.unique(classes):
        members = classes == k
        axis.scatter(x[members], y[members], s=4, color=palette(int(k) % 10), alpha=0.6, label=f"class {k} ({int(members.sum())})", linewidths=0)
    axis.set_xlabel("z0")
    axis.set_ylabel("z1" if z_mean.shape[1] >= 2 else "")
    axis.legend(fontsize=8, markerscale=3)
    axis.set_title(title or "continuous latents by class", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def save_image_grid(path: str | Path, images: np.ndarray, row_labels: list[str], col_labels: list[str], title: str = "") -> None:
    """Write a PNG of a (rows, cols, C, W, W) image grid (channel 0), with row and column labels.

    Parameters
    ----------
    path : str or path
        The PNG to write.
    images : ndarray
        (rows, cols, C, W, W) images.
    row_labels : list of str
        One label per row (left of the first column; none when empty).
    col_labels : list of str
        One label per column (below the last row; none when empty).
    title : str, default ""
        Title of the picture.
    """
    plt = _pyplot()
    rows, cols = images.shape[:2]
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 1.1 + 0.8, rows * 1.1 + 0.6), dpi=100, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            axis = axes[r, c]
            axis.imshow(images[r, c, 0], cmap="gray", interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0 and row_labels:
                axis.set_ylabel(row_labels[r], fontsize=8)
            if r == rows - 1 and col_labels:
                axis.set_xlabel(col_labels[c], fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

"""The README's napari screenshot: the sample study's encoded artifact opened with the microvae plugin.

Run after ``sample_data/run.sh`` (which writes ``sample_output/``), with the napari extra installed
(``pip install -e ".[napari]"``), on a machine without a screen through a virtual X display::

    QT_QPA_PLATFORM=offscreen xvfb-run -a python3 docs/napari_screenshot.py [sample_output]

Writes ``docs/img/napari_sample.png``: the scan in grey with one point per patch centre, coloured
by class (what ``napari sample_output/encoded.h5`` shows).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import napari  # noqa: E402
import numpy as np  # noqa: E402

WIDTH_PX = 400  # the scan's size on the picture, pixels


def render(viewer: napari.Viewer) -> np.ndarray:
    """RGBA (H, W, 4) uint8 of the canvas, cropped to the data; vispy's offscreen render where
    Qt's grab is blank."""
    shot = viewer.screenshot(canvas_only=True, flash=False)
    if shot[..., :3].std() == 0:
        # Qt's grabFramebuffer of a hidden canvas is black under Xvfb with Mesa's llvmpipe
        shot = viewer.window._qt_viewer.canvas._scene_canvas.render()
    lit = shot[..., :3].max(-1) > 0
    rows, cols = np.flatnonzero(lit.any(1)), np.flatnonzero(lit.any(0))
    return shot[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def main(study: Path, output: Path) -> None:
    viewer = napari.Viewer(show=False)
    viewer.open(str(study / "encoded.h5"), plugin="microvae")
    extent = viewer.layers.extent.world[:, -2:]  # (min, max) of (row, col), calibrated units
    viewer.camera.center = tuple((extent[0] + extent[1]) / 2)
    viewer.camera.zoom = WIDTH_PX / float(np.max(extent[1] - extent[0]))  # screen pixels per unit
    image = render(viewer)
    viewer.close()
    from PIL import Image

    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., :3]).quantize(colors=96).save(output, optimize=True)  # small PNG for the README


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "sample_output"), Path(__file__).parent / "img" / "napari_sample.png")

"""Maps on the pixel grid and their files, reopened as a user would (h5py, tifffile)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from microvae import artifacts
from microvae.artifacts import ImageRecord, Provenance
from microvae.maps import nearest_centre
from microvae.stages import run_export


def test_nearest_centre_rule():
    centres = np.array([[5.0, 5.0], [5.0, 15.0]])
    lookup = nearest_centre((12, 24), centres, radius=4.0)
    assert lookup.index[5, 5] == 0 and lookup.index[5, 15] == 1
    assert lookup.index[5, 9] == 0 and lookup.index[5, 11] == 1  # Voronoi boundary at col 10
    assert lookup.index[5, 20] == -1  # 5 px from the nearest centre: beyond the radius
    rendered = lookup.render(np.array([1.5, 2.5]))
    assert rendered[5, 6] == 1.5 and np.isnan(rendered[5, 21])


def make_encoded(path, scan_path, shape, coords, pixel_size=0.05, unit="nm"):
    count = len(coords)
    rng = np.random.default_rng(0)
    classes = (coords[:, 1] > shape[1] / 2).astype(np.int64)  # left half class 0, right half class 1
    probs = np.stack([1.0 - classes, classes.astype(float)], axis=1)
    provenance = Provenance(stage="encode", parameters={}, inputs=[{"path": "p.h5", "sha256": "0" * 64, "role": "patches"}])
    with artifacts.atomic_h5(path, provenance, "encoded") as handle:
        handle["coords"] = coords
        handle["image_index"] = np.zeros(count, np.int32)
        handle["class"] = classes
        handle["class_probs"] = probs
        handle["z_mean"] = rng.normal(size=(count, 2))
        handle["z_sd"] = np.ones((count, 2))
        handle["angle_rad"] = rng.uniform(-np.pi, np.pi, count)
        handle["shift_px"] = rng.normal(size=(count, 2))
        handle["recon_error"] = rng.random(count)
        handle.attrs["window"] = 8
        from microvae.images import file_sha256

        artifacts.write_image_table(handle, [ImageRecord(str(scan_path), 0, file_sha256(scan_path), shape[0], shape[1], 1, pixel_size, unit)])
    return classes


def test_export_files_reopen_with_calibration(tmp_path):
    shape = (40, 64)
    scan = tmp_path / "scan.tif"
    tifffile.imwrite(scan, np.random.default_rng(1).random(shape).astype(np.float32))
    rows, cols = np.meshgrid(np.arange(4, 40, 8), np.arange(4, 64, 8), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(float)
    encoded = tmp_path / "encoded.h5"
    classes = make_encoded(encoded, scan, shape, coords)
    result = run_export(encoded, tmp_path / "maps")
    assert result.status == "written"
    folder = tmp_path / "maps"
    with tifffile.TiffFile(folder / "00_scan_class.tif") as tif:
        class_map = tif.asarray()
        assert tif.imagej_metadata["unit"] == "nm"
        x_resolution = tif.pages[0].tags["XResolution"].value
        assert x_resolution[1] / x_resolution[0] == pytest.approx(0.05, rel=1e-4)
    assert class_map.shape == shape and class_map.dtype == np.int16
    for (row, col), k in zip(coords.astype(int), classes):
        assert class_map[row, col] == k
    angle = tifffile.imread(folder / "00_scan_angle_rad.tif")
    assert angle.dtype == np.float32 and np.nanmax(np.abs(angle)) <= np.pi
    with h5py.File(folder / "maps.h5") as handle:
        assert handle.attrs["microvae_artifact"] == "maps"
        z0 = handle["image_00/z0"]
        assert z0.shape == shape and z0.attrs["units"] == "latent units"
        masked = handle["image_00/z0_class1"][()]
        assert np.isnan(masked[:, :24]).all()
        at_centres = masked[coords[:, 0].astype(int), coords[:, 1].astype(int)]
        assert np.isfinite(at_centres[classes == 1]).all() and np.isnan(at_centres[classes == 0]).all()
        assert handle["images/pixel_size"][0] == pytest.approx(0.05)
    for name in ("00_scan_class.png", "00_scan_angle_rad.png", "00_scan_z0.png", "latents.png"):
        assert (folder / name).stat().st_size > 5000
    assert run_export(encoded, tmp_path / "maps").status == "up-to-date"


def test_export_without_coordinates_is_refused(tmp_path):
    from microvae.errors import InputError

    provenance = Provenance(stage="encode", parameters={}, inputs=[])
    path = tmp_path / "e.h5"
    with artifacts.atomic_h5(path, provenance, "encoded") as handle:
        handle["class"] = np.zeros(3, int)
    with pytest.raises(InputError, match="no patch coordinates"):
        run_export(path, tmp_path / "maps")
    assert not (tmp_path / "maps").exists()

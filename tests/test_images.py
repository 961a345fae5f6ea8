"""Readers: every supported format, its calibration, and the errors for bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from microvae.errors import InputError
from microvae.images import read_scans, split_dataset_path

from .conftest import write_sxm


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_tiff_any_dtype_reads_as_float32(tmp_path, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((20, 30)) * 100).astype(dtype)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, data)
    (scan,) = read_scans(path)
    assert scan.data.shape == (1, 20, 30) and scan.data.dtype == np.float32
    np.testing.assert_allclose(scan.data[0], data.astype(np.float32))
    assert scan.unit == "px" and scan.pixel_size == 1.0


def test_tiff_stack_as_frames_or_channels(tmp_path):
    stack = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    frames = read_scans(path)
    assert [s.frame for s in frames] == [0, 1, 2] and frames[2].data.shape == (1, 16, 16)
    np.testing.assert_array_equal(frames[1].data[0], stack[1])
    (multi,) = read_scans(path, stack_as="channels")
    assert multi.data.shape == (3, 16, 16)


def test_tiff_imagej_calibration(lattice_tif):
    path, _ = lattice_tif
    (scan,) = read_scans(path)
    assert scan.unit == "nm"
    assert scan.pixel_size == pytest.approx(0.02, rel=1e-6)


def test_png_and_npy(tmp_path):
    from skimage import io as skio

    data = (np.arange(24 * 24).reshape(24, 24) % 251).astype(np.uint8)
    skio.imsave(tmp_path / "a.png", data, check_contrast=False)
    (png,) = read_scans(tmp_path / "a.png")
    np.testing.assert_array_equal(png.data[0], data)
    np.save(tmp_path / "a.npy", data.astype(np.float64))
    (npy,) = read_scans(tmp_path / "a.npy")
    np.testing.assert_array_equal(npy.data[0], data)


def test_hdf5_dataset_path_and_calibration(tmp_path):
    path = tmp_path / "scans.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("group/haadf", data=np.random.default_rng(2).random((32, 40)))
        dataset.attrs["pixel_size"] = 0.015
        dataset.attrs["pixel_unit"] = "nm"
        handle.create_dataset("group/other", data=np.ones((8, 8)))
    (scan,) = read_scans(f"{path}:/group/haadf")
    assert scan.data.shape == (1, 32, 40) and scan.unit == "nm" and scan.pixel_size == pytest.approx(0.015)
    with pytest.raises(InputError, match="name the image dataset"):
        read_scans(path)
    with pytest.raises(InputError, match="no dataset"):
        read_scans(f"{path}:/group/missing")


def test_split_dataset_path():
    assert split_dataset_path("a/b.h5:/x/y") == ("a/b.h5", "/x/y")
    assert split_dataset_path("C:/data/b.tif") == ("C:/data/b.tif", None)


def test_sxm_reader_keeps_calibration_and_orientation(tmp_path):
    rng = np.random.default_rng(3)
    topo = rng.random((24, 32))
    current = rng.random((24, 32))
    for direction in ("down", "up"):
        path = write_sxm(tmp_path / f"scan_{direction}.sxm", {"Z": topo, "Current": current}, scan_range_m=(6.4e-9, 4.8e-9), scan_dir=direction)
        (scan,) = read_scans(path)
        assert scan.data.shape == (2, 24, 32)
        assert scan.channel_names[0] == "Z"
        np.testing.assert_allclose(scan.data[0], topo.astype(np.float32), rtol=1e-6)
        assert scan.unit == "nm" and scan.pixel_size == pytest.approx(0.2)


def test_real_dm3(realdata):
    (scan,) = read_scans(realdata / "scifireaders_SI-Survey_Image.dm3")
    assert scan.data.shape == (1, 512, 512)
    assert scan.data.std() > 0


def test_real_hyperspy_hdf5_calibration(realdata):
    (scan,) = read_scans(realdata / "atomap_SrTiO3_ADF_cropped.hdf5")
    assert scan.data.shape == (1, 400, 380)
    assert scan.pixel_size == pytest.approx(0.009326, rel=1e-3)


# --- bad files -------------------------------------------------------------------------------


def test_missing_empty_unsupported(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_scans(tmp_path / "absent.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_scans(tmp_path / "empty.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported format"):
        read_scans(tmp_path / "notes.txt")


@pytest.mark.parametrize("suffix", [".tif", ".h5", ".npy", ".dm3", ".sxm", ".png"])
def test_corrupt_files_name_the_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(InputError) as caught:
        read_scans(path)
    assert path.name in str(caught.value)


def test_truncated_tiff(tmp_path):
    path = tmp_path / "full.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    data = path.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="cut.tif"):
        read_scans(tmp_path / "cut.tif")


def test_nan_constant_wrong_dimensionality(tmp_path):
    image = np.random.default_rng(0).random((16, 16))
    image[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", image)
    with pytest.raises(InputError, match="NaN or Inf"):
        read_scans(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.full((16, 16), 7.0))
    with pytest.raises(InputError, match="constant"):
        read_scans(tmp_path / "flat.npy")
    np.save(tmp_path / "line.npy", np.arange(16.0))
    with pytest.raises(InputError, match="expected an image"):
        read_scans(tmp_path / "line.npy")
    np.save(tmp_path / "five.npy", np.zeros((2, 2, 2, 8, 8)) + np.arange(8))
    with pytest.raises(InputError, match="expected an image"):
        read_scans(tmp_path / "five.npy")


def test_emd_through_rosettasciio_keeps_calibration(tmp_path):
    from rsciio.emd import file_writer

    data = np.random.default_rng(4).random((32, 48)).astype(np.float32)
    axes = [
        {"name": "y", "size": 32, "scale": 0.05, "offset": 0.0, "units": "nm", "navigate": False},
        {"name": "x", "size": 48, "scale": 0.05, "offset": 0.0, "units": "nm", "navigate": False},
    ]
    signal = {"data": data, "axes": axes, "metadata": {"General": {"title": "haadf"}, "Signal": {"signal_type": ""}}, "original_metadata": {}}
    file_writer(str(tmp_path / "scan.emd"), signal)
    (scan,) = read_scans(tmp_path / "scan.emd")
    np.testing.assert_allclose(scan.data[0], data)
    assert scan.unit == "nm" and scan.pixel_size == pytest.approx(0.05)

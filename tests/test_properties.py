"""Property-based tests (hypothesis): readers round-trip any array and fail only with InputError;
extract's coordinate bookkeeping holds for any image size, window and centres.

tests/test_patches.py checks a single bright pixel at integer centres; here the images are random,
multichannel, the centres arbitrary floats on and off the image, and each patch is compared with an
independent cut of the image (copy, or bilinear sampling, with the documented mirror at the edges).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from microvae.errors import InputError
from microvae.images import read_scans, validate_scan
from microvae.patches import PatchParams

from .conftest import cut_all_patches

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.float64]


@st.composite
def images(draw, max_frames: int = 3):
    """(array, dtype): a 2D image or a 3D stack of any reader dtype, 1–40 pixels a side."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    frames = draw(st.integers(0, max_frames))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    shape = (height, width) if frames == 0 else (frames, height, width)
    if dtype.kind == "f":
        elements = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return draw(hnp.arrays(dtype, shape, elements=elements)), dtype


def write(fmt: str, folder: Path, array: np.ndarray) -> str:
    if fmt == "tif":
        path = folder / "image.tif"
        tifffile.imwrite(path, array, photometric="minisblack")
        return str(path)
    if fmt == "npy":
        path = folder / "image.npy"
        np.save(path, array)
        return str(path)
    path = folder / "image.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("group/scan", data=array)
    return f"{path}:/group/scan"


def expected_frames(array: np.ndarray) -> list[np.ndarray]:
    """What the readers promise: each frame (1, H, W) float32 (stack_as='frames')."""
    stack = array[None] if array.ndim == 2 else array
    return [frame[None].astype(np.float32) for frame in stack]


def refusal(frame: np.ndarray) -> str | None:
    """The documented reason a frame is refused, or None when it is usable."""
    if min(frame.shape[-2:]) < 4:
        return "at least 4×4"
    if frame.max() == frame.min():
        return "constant"
    return None


@FAST
@given(data=images(), fmt=st.sampled_from(["tif", "npy", "h5"]))
def test_readers_round_trip_any_array(data, fmt):
    """Values (as float32), frames and shape survive TIFF, npy and HDF5; unusable frames are refused
    with InputError saying why, never anything else."""
    array, dtype = data
    with tempfile.TemporaryDirectory() as folder:
        spec = write(fmt, Path(folder), array)
        frames = expected_frames(array)
        reasons = [refusal(frame) for frame in frames]
        if any(reasons):
            with pytest.raises(InputError) as caught:
                read_scans(spec)
            assert next(r for r in reasons if r) in str(caught.value)
            return
        scans = read_scans(spec)
    assert len(scans) == len(frames)
    for index, (scan, frame) in enumerate(zip(scans, frames)):
        assert scan.data.dtype == np.float32 and scan.data.shape == frame.shape
        np.testing.assert_array_equal(scan.data, frame)
        assert scan.frame == index and scan.unit == "px" and scan.pixel_size == 1.0


@FAST
@given(data=images(max_frames=4))
def test_a_stack_read_as_channels_is_one_scan(data):
    array, _ = data
    assume(array.ndim == 3 and min(array.shape[1:]) >= 4 and all(f.max() > f.min() for f in array))
    with tempfile.TemporaryDirectory() as folder:
        (scan,) = read_scans(write("npy", Path(folder), array), stack_as="channels")
    np.testing.assert_array_equal(scan.data, array.astype(np.float32))


@FAST
@given(data=images(max_frames=0), where=st.tuples(st.integers(0, 39), st.integers(0, 39)), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_pixels_are_refused(data, where, bad):
    array, _ = data
    array = array.astype(np.float32)
    array[where[0] % array.shape[0], where[1] % array.shape[1]] = bad
    with tempfile.TemporaryDirectory() as folder:
        with pytest.raises(InputError):
            read_scans(write("npy", Path(folder), array))


MAGIC = {
    ".tif": [b"", b"II*\x00", b"MM\x00*"],
    ".npy": [b"", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,), }"],
    ".h5": [b"", b"\x89HDF\r\n\x1a\n"],
    ".dm3": [b"", b"\x00\x00\x00\x03"],
    ".dm4": [b"", b"\x00\x00\x00\x04"],
    ".sxm": [b"", b":NANONIS_VERSION:\n2\n:SCAN_PIXELS:\n       8       8\n:SCANIT_END:\n\x1a\x04"],
    ".png": [b"", b"\x89PNG\r\n\x1a\n"],
    ".emd": [b"", b"\x89HDF\r\n\x1a\n"],
    ".ser": [b"", b"II\x97\x01"],
    ".hspy": [b"", b"\x89HDF\r\n\x1a\n"],
}


@settings(max_examples=60, deadline=None)
@given(suffix=st.sampled_from(sorted(MAGIC)), choice=st.integers(0, 2), garbage=st.binary(min_size=0, max_size=600))
def test_garbage_bytes_raise_only_input_error(suffix, choice, garbage):
    """Random bytes (after nothing, or after the format's magic number) in a file of any supported
    format: read_scans gives validated scans or raises InputError naming the file, nothing else."""
    magic = MAGIC[suffix][choice % len(MAGIC[suffix])]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"garbage{suffix}"
        path.write_bytes(magic + garbage)
        try:
            scans = read_scans(path)
        except InputError as error:
            assert path.name in str(error) and "\n" not in str(error)
            return
    for scan in scans:  # garbage that happens to decode is still a valid image
        validate_scan(scan)


@settings(max_examples=30, deadline=None)
@given(fmt=st.sampled_from(["tif", "npy", "h5"]), fraction=st.floats(0.0, 0.999))
def test_truncated_files_raise_only_input_error(fmt, fraction):
    array = np.random.default_rng(0).random((24, 20)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        spec = write(fmt, Path(folder), array)
        path = Path(spec.split(":/")[0])
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        try:
            (scan,) = read_scans(spec)
        except InputError as error:
            assert path.name in str(error)
            return
    np.testing.assert_array_equal(scan.data[0], array)  # a cut in trailing metadata may leave the pixels whole


# ----------------------------------------------------------------------------------------------
# extract: where every patch comes from


def mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Reflect coordinates about the edge pixels (…, 2, 1, 0, 1, 2, …, n−2, n−1, n−2, …): the documented
    edge fill."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index > size - 1, period - index, index)


def sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(C, …) bilinear samples of a (C, H, W) image at float (rows, cols), mirrored outside."""
    height, width = image.shape[1:]
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    out = 0.0
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            out = out + wr * wc * image[:, mirror(r0 + dr, height), mirror(c0 + dc, width)]
    return out


@st.composite
def extraction(draw):
    height, width = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    channels = draw(st.integers(1, 2))
    window = draw(st.integers(4, 24))
    count = draw(st.integers(1, 6))
    integer = draw(st.booleans())
    coordinate = st.integers(-4, 44).map(float) if integer else st.floats(-4.0, 44.0, allow_nan=False)
    centres = np.array([[draw(coordinate), draw(coordinate)] for _ in range(count)])
    seed = draw(st.integers(0, 2**16))
    image = np.random.default_rng(seed).random((channels, height, width)).astype(np.float32)
    return image, centres, window, draw(st.booleans()), draw(st.sampled_from(["skip", "reflect"]))


@settings(max_examples=80, deadline=None)
@given(case=extraction())
def test_every_patch_is_the_image_cut_at_its_recorded_centre(case):
    image, centres, window, subpixel, edge = case
    height, width = image.shape[1:]
    params = PatchParams(window=window, normalize="none", edge=edge, subpixel=subpixel)
    centres = np.clip(centres, [-4, -4], [height + 3, width + 3])
    if window > min(height, width):
        with pytest.raises(InputError, match="smaller than the"):
            cut_all_patches([image], [centres], params)
        return
    half = window // 2
    placed = centres if subpixel else np.round(centres)
    fits = (
        (placed[:, 0] - half >= 0)
        & (placed[:, 1] - half >= 0)
        & (placed[:, 0] + window - 1 - half <= height - 1)
        & (placed[:, 1] + window - 1 - half <= width - 1)
    )
    if edge == "skip" and not fits.any():
        with pytest.raises(InputError, match="no patch"):
            cut_all_patches([image], [centres], params)
        return
    patch_set = cut_all_patches([image], [centres], params)
    # bookkeeping: which centres became patches, in order, and what was recorded for each
    kept = np.arange(len(centres)) if edge == "reflect" else np.flatnonzero(fits)
    np.testing.assert_array_equal(patch_set.centre_index, kept)
    np.testing.assert_array_equal(patch_set.coords, placed[kept])
    np.testing.assert_array_equal(patch_set.edge_padded, ~fits[kept])
    assert patch_set.skipped == (0 if edge == "reflect" else int((~fits).sum()))
    assert (patch_set.image_index == 0).all() and patch_set.patches.shape == (len(kept), image.shape[0], window, window)
    offsets = np.arange(window) - half
    for patch, (row, col), padded in zip(patch_set.patches, patch_set.coords, patch_set.edge_padded):
        rows, cols = np.meshgrid(row + offsets, col + offsets, indexing="ij")
        if not subpixel and not padded:  # a plain copy of the pixels
            r, c = int(row) - half, int(col) - half
            np.testing.assert_array_equal(patch, image[:, r : r + window, c : c + window])
        np.testing.assert_allclose(patch, sample(image, rows, cols), atol=1e-5)
        # the recorded centre is patch pixel (W//2, W//2)
        np.testing.assert_allclose(patch[:, half, half], sample(image, np.array(row), np.array(col)), atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(height=st.integers(16, 48), width=st.integers(16, 48), window=st.integers(4, 16), step=st.integers(3, 12), seed=st.integers(0, 1000))
def test_extract_artifact_coordinates_map_back_to_the_scan(height, width, window, step, seed):
    """Through the extract stage and its HDF5 artifact: grid patches, un-normalised with the recorded
    (offset, scale), are the scan's pixels at the recorded centres."""
    from microvae.config import ExtractConfig
    from microvae.stages import run_extract

    image = np.random.default_rng(seed).random((height, width)).astype(np.float32) * 1000
    with tempfile.TemporaryDirectory() as folder:
        scan = Path(folder) / "scan.npy"
        np.save(scan, image)
        output = Path(folder) / "patches.h5"
        run_extract([str(scan)], output, ExtractConfig(PatchParams(window=window, normalize="patch", grid_step=step)))
        with h5py.File(output) as handle:
            patches, coords = handle["patches"][()], handle["coords"][()]
            offset, scale = handle["norm_offset"][()], handle["norm_scale"][()]
            assert (handle["image_index"][()] == 0).all() and not handle["edge_padded"][()].any()
            assert tuple(handle["images/shape"][0]) == (height, width)
    half = window // 2
    assert len(coords) == len(range(half, height - window + half + 1, step)) * len(range(half, width - window + half + 1, step))
    for patch, (row, col), low, span in zip(patches, coords, offset, scale):
        r, c = int(row) - half, int(col) - half
        np.testing.assert_allclose(patch[0] * span + low, image[r : r + window, c : c + window], rtol=1e-5, atol=1e-3)

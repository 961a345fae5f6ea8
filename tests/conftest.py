"""Shared fixtures: the real files in ../shared (skipped cleanly where absent) and small writers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from microvae.cli.main import main

from microvae.patches import PatchParams, patch_blocks, plan_patches

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"
SAMPLE_DATA = REPO / "sample_data"


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): one pytest-xdist worker per core the process may use, at
    most 4 (each loads torch, and the DDP and crash tests start processes of their own). On CI's
    2 cores the suite took 766 s with 2 workers against 1120 s in one process (2026-12-02)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def pytest_configure(config):
    """Under pytest-xdist each worker gets one intra-op torch thread: two workers on CI's 2 cores,
    each with torch's default of 2 threads, would oversubscribe them."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is not present (only developers' checkouts and CI have it)")
    return REALDATA


def run_cli(args, capsys):
    """Run ``microvae ARGS`` in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def write_sxm(path: Path, channels: dict[str, np.ndarray], scan_range_m=(5e-9, 5e-9), scan_dir: str = "down") -> Path:
    """Write a minimal Nanonis .sxm file: text header, \\x1a\\x04, big-endian float32 data.

    Each channel is stored forward then backward, rows as the instrument scanned them.
    """
    first = next(iter(channels.values()))
    rows, cols = first.shape
    info = "\tChannel\tName\tUnit\tDirection\tCalibration\tOffset\n"
    for index, name in enumerate(channels):
        info += f"\t{index}\t{name}\tm\tboth\t1.000E+0\t0.000E+0\n"
    header = (
        ":NANONIS_VERSION:\n2\n:SCANIT_TYPE:\n              FLOAT            MSBFIRST\n"
        ":REC_DATE:\n01.01.2026\n:REC_TIME:\n12:00:00\n:ACQ_TIME:\n10.0\n"
        f":SCAN_PIXELS:\n       {cols}       {rows}\n:SCAN_TIME:\n1.0 1.0\n"
        f":SCAN_RANGE:\n           {scan_range_m[0]:.6E}           {scan_range_m[1]:.6E}\n"
        ":SCAN_OFFSET:\n0.0 0.0\n:SCAN_ANGLE:\n            0.000E+0\n"
        f":SCAN_DIR:\n{scan_dir}\n:BIAS:\n1.0\n:DATA_INFO:\n{info}\n:SCANIT_END:\n\n\n"
    )
    stored = []
    for plane in channels.values():
        plane = np.asarray(plane, dtype=np.float64)
        if scan_dir == "up":
            plane = plane[::-1]
        stored.append(plane)
        stored.append(plane[:, ::-1])
    with open(path, "wb") as handle:
        handle.write(header.encode())
        handle.write(b"\x1a\x04")
        handle.write(np.stack(stored).astype(">f4").tobytes())
    return path


@pytest.fixture
def lattice_tif(tmp_path):
    """A 192×192 synthetic lattice saved as float32 TIFF with an ImageJ calibration of 0.02 nm/px."""
    import tifffile

    from microvae.synthetic import make_lattice

    lattice = make_lattice(shape=(192, 192), seed=5)
    path = tmp_path / "lattice.tif"
    tifffile.imwrite(path, lattice.image, imagej=True, resolution=(1 / 0.02, 1 / 0.02), metadata={"unit": "nm"})
    return path, lattice


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread: the same arithmetic (so the same trained model) on any machine, and
    no slowdown when other processes share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cut_all_patches(images: list[np.ndarray], centres: list[np.ndarray], params: PatchParams, labels: list[str] | None = None) -> SimpleNamespace:
    """What ``extract`` writes, in memory: the library's one extraction path (:func:`plan_patches`,
    then :func:`patch_blocks` in one block). Attributes: patches (N, C, W, W), coords (N, 2)
    (row, col), image_index, centre_index, edge_padded (N,), norm_offset, norm_scale (N,), skipped."""
    plan = plan_patches(images, centres, params, labels)
    blocks = list(patch_blocks(images, plan, params, block_rows=max(1, plan.count)))
    patches, offset, scale = (np.concatenate([block[k] for block in blocks]) for k in (1, 2, 3))
    return SimpleNamespace(
        patches=patches,
        coords=plan.coords,
        image_index=plan.image_index,
        centre_index=plan.centre_index,
        edge_padded=plan.edge_padded,
        norm_offset=offset,
        norm_scale=scale,
        skipped=plan.skipped,
    )

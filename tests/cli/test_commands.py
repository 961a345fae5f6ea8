"""The command line end to end: find-atoms and extract, their artifacts, and their errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tifffile

from ..conftest import run_cli


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_console_script_help_and_version():
    for args in (["--help"], ["find-atoms", "--help"], ["extract", "--help"]):
        done = subprocess.run([sys.executable, "-m", "microvae.cli", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "Usage" in done.stdout
    done = subprocess.run([sys.executable, "-m", "microvae.cli", "--version"], capture_output=True, text=True)
    assert done.stdout.startswith("microvae ")


def test_find_atoms_extract_roundtrip(tmp_path, lattice_tif, capsys):
    path, lattice = lattice_tif
    atoms = tmp_path / "atoms.h5"
    code, out, err = run_cli(["find-atoms", path, "-o", atoms, "--preview", tmp_path / "atoms.png", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "atoms.png").stat().st_size > 1000
    with h5py.File(atoms) as handle:
        coords = handle["coords"][()]
        assert handle["coords"].attrs["units"] == "px"
        assert handle.attrs["microvae_artifact"] == "atoms"
        assert handle["images/pixel_size"][0] == pytest.approx(0.02)
        assert handle["images/pixel_unit"][0].decode() == "nm"
        params = json.loads(handle.attrs["parameters"])
        assert params["method"] == "log"
        inputs = json.loads(handle.attrs["inputs"])
        assert inputs[0]["sha256"] == digest(path)
    assert len(coords) > 0.9 * lattice.inside(3).sum()

    # rerun: up to date; changed parameters: refused without --force
    code, out, _ = run_cli(["find-atoms", path, "-o", atoms], capsys)
    assert code == 0 and "up to date" in out
    code, _, err = run_cli(["find-atoms", path, "-o", atoms, "--refine", "com"], capsys)
    assert code == 2 and "--force" in err
    code, _, _ = run_cli(["find-atoms", path, "-o", atoms, "--refine", "com", "--force", "-q"], capsys)
    assert code == 0

    patches = tmp_path / "patches.h5"
    code, _, err = run_cli(["extract", path, "--atoms", atoms, "--window", 16, "-o", patches, "-q"], capsys)
    assert code == 0, err
    with h5py.File(patches) as handle:
        stack = handle["patches"][()]
        assert stack.shape[1:] == (1, 16, 16) and stack.dtype == np.float32
        assert 0 <= stack.min() and stack.max() <= 1
        atom_index = handle["atom_index"][()]
        np.testing.assert_allclose(handle["coords"][()], coords_after_force(atoms)[atom_index])
        upstream = json.loads(handle.attrs["upstream"])
        assert upstream[0]["kind"] == "atoms" and upstream[0]["parameters"]["refine"] == "com"
        recipe = json.loads(handle.attrs["recipe"])
        assert recipe["extract"]["window"] == 16
        assert handle["images/pixel_size"][0] == pytest.approx(0.02)

    fft_patches = tmp_path / "fft.h5"
    code, _, err = run_cli(["extract", path, "--grid", 32, "--window", 32, "--fft", "-o", fft_patches, "-q"], capsys)
    assert code == 0, err
    with h5py.File(fft_patches) as handle:
        assert handle.attrs["fft"] and handle["patches"].shape == (36, 1, 32, 32)
        assert (handle["atom_index"][()] == -1).all()


def coords_after_force(atoms):
    with h5py.File(atoms) as handle:
        return handle["coords"][()]


def test_extract_refuses_a_scan_not_in_the_atoms_artifact(tmp_path, lattice_tif, capsys):
    path, lattice = lattice_tif
    atoms = tmp_path / "atoms.h5"
    assert run_cli(["find-atoms", path, "-o", atoms, "-q"], capsys)[0] == 0
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, lattice.image[::-1].copy())
    code, _, err = run_cli(["extract", other, "--atoms", atoms, "-o", tmp_path / "p.h5"], capsys)
    assert code == 2 and "other.tif" in err and "not among the images" in err
    code, _, err = run_cli(["extract", path, "--atoms", path, "-o", tmp_path / "p.h5"], capsys)
    assert code == 2 and "lattice.tif" in err


def bad_inputs(tmp_path, lattice_tif):
    """(name, args, expected words in the message) for each kind of bad input."""
    path, lattice = lattice_tif
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage" * 10)
    unsupported = tmp_path / "scan.xyz"
    unsupported.write_text("1 2 3")
    nan_image = tmp_path / "nan.npy"
    image = lattice.image.copy()
    image[5, 5] = np.inf
    np.save(nan_image, image)
    constant = tmp_path / "constant.npy"
    np.save(constant, np.ones((64, 64)))
    small = tmp_path / "small.npy"
    np.save(small, lattice.image[:20, :20])
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).random((8, 8)))
    wrong_dim = tmp_path / "wrongdim.npy"
    np.save(wrong_dim, np.arange(100.0))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    return [
        ("missing", ["find-atoms", tmp_path / "absent.tif", "-o", tmp_path / "o.h5"], "no such file"),
        ("corrupt", ["find-atoms", corrupt, "-o", tmp_path / "o.h5"], "cannot read"),
        ("unsupported", ["find-atoms", unsupported, "-o", tmp_path / "o.h5"], "unsupported format"),
        ("nan", ["find-atoms", nan_image, "-o", tmp_path / "o.h5"], "NaN or Inf"),
        ("constant", ["find-atoms", constant, "-o", tmp_path / "o.h5"], "constant"),
        ("zero atoms", ["find-atoms", path, "-o", tmp_path / "o.h5", "--threshold", "1e9"], "no atoms found"),
        ("pure noise", ["find-atoms", noise, "-o", tmp_path / "o.h5"], "no atoms found"),
        ("wrong dimensionality", ["find-atoms", wrong_dim, "-o", tmp_path / "o.h5"], "expected an image"),
        ("smaller than window", ["extract", small, "--grid", 8, "--window", 32, "-o", tmp_path / "o.h5"], "smaller than the 32×32 window"),
        ("unwritable output", ["find-atoms", path, "-o", blocker / "o.h5"], "not a directory"),
        ("bad parameter", ["find-atoms", path, "-o", tmp_path / "o.h5", "--method", "magic"], "'magic' is not one of 'log', 'max'"),
        ("neither atoms nor grid", ["extract", path, "-o", tmp_path / "o.h5"], "exactly one of"),
    ]


def test_bad_inputs_give_one_line_exit_2_and_touch_nothing(tmp_path, lattice_tif, capsys):
    path, _ = lattice_tif
    for name, args, words in bad_inputs(tmp_path, lattice_tif):
        before = {p: digest(p) for p in tmp_path.iterdir() if p.is_file()}
        code, out, err = run_cli(args, capsys)
        assert code == 2, (name, code, err)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (name, err)
        assert "Traceback" not in err
        after = {p: digest(p) for p in tmp_path.iterdir() if p.is_file()}
        assert after == before, f"{name}: files changed or were added"


def test_internal_errors_exit_1_without_traceback(tmp_path, lattice_tif, capsys, monkeypatch):
    import microvae.stages.find_atoms as stage

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(stage, "find_atoms", broken)
    path, _ = lattice_tif
    code, _, err = run_cli(["find-atoms", path, "-o", tmp_path / "o.h5"], capsys)
    assert code == 1 and "internal error" in err and "Traceback" not in err
    assert not (tmp_path / "o.h5").exists()


def test_real_scan_end_to_end_in_a_subprocess(tmp_path, realdata):
    """The README's main job on the shipped real scan, through the installed console script."""
    scan = realdata / "scifireaders_SI-Survey_Image.dm3"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "microvae.cli", "find-atoms", str(scan), "-o", str(tmp_path / "a.h5"), "--json"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["atoms"] > 500 and 10 < summary["spacing_px"][0] < 25
    done = subprocess.run(
        [sys.executable, "-m", "microvae.cli", "extract", str(scan), "--atoms", str(tmp_path / "a.h5"), "-o", str(tmp_path / "p.h5"), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["patches"] > 500

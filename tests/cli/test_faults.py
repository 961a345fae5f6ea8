"""The fault matrix: every kind of bad input, resource failure and concurrent writer, across commands.

Each bad input must give exit code 2 and exactly one stderr line ``error: ...`` that names the file
and the problem, with no traceback, no output and no temporary or lock file left behind, and every
input byte-for-byte unchanged. A small world (a 96×96 lattice scan, its atoms, patches, a one-epoch
run and its encoding) is built once per module; each case damages a copy in its own folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from microvae import artifacts
from microvae.errors import InputError, OutputError

from ..conftest import SAMPLE_DATA, run_cli, write_sxm

DM3 = SAMPLE_DATA / "scifireaders_SI-Survey_Image.dm3"
TINY_TRAIN = ["--classes", "2", "--latent-dim", "2", "--hidden", "16", "--batch-size", "32", "--device", "cpu", "-q"]


# ----------------------------------------------------------------------------------------------
# The world: valid inputs of every kind, built once


@dataclass
class World:
    root: Path
    scan: Path  # 96×96 float32 TIFF, 0.02 nm/px
    npy: Path
    h5: Path  # the scan as dataset /data
    sxm: Path
    atoms: Path
    patches: Path  # atom-centred, window 12, normalize image
    run: Path  # one epoch, tiny net
    encoded: Path

    def valid(self, fmt: str) -> Path:
        return {"tif": self.scan, "npy": self.npy, "h5": self.h5, "sxm": self.sxm, "dm3": DM3}[fmt]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from microvae.synthetic import make_lattice

    root = tmp_path_factory.mktemp("world")
    lattice = make_lattice(shape=(96, 96), seed=5)
    image = lattice.image.astype(np.float32)
    scan = root / "scan.tif"
    tifffile.imwrite(scan, image, imagej=True, resolution=(1 / 0.02, 1 / 0.02), metadata={"unit": "nm"})
    np.save(root / "scan.npy", image)
    with h5py.File(root / "scan.h5", "w") as handle:
        handle["data"] = image
    write_sxm(root / "scan.sxm", {"Z": image}, scan_range_m=(96 * 0.02e-9, 96 * 0.02e-9))
    w = World(root, scan, root / "scan.npy", root / "scan.h5", root / "scan.sxm", root / "atoms.h5", root / "patches.h5", root / "run", root / "encoded.h5")
    _main_ok(["find-atoms", scan, "-o", w.atoms, "-q"])
    _main_ok(["extract", scan, "--atoms", w.atoms, "--window", 12, "-o", w.patches, "-q"])
    _main_ok(["train", w.patches, "-o", w.run, "--epochs", 1, *TINY_TRAIN])
    _main_ok(["encode", w.run, w.patches, "-o", w.encoded, "--device", "cpu", "-q"])
    return w


def _main_ok(args):
    from microvae.cli.main import main

    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code == 0, args


# ----------------------------------------------------------------------------------------------
# Damage


def truncated(source: Path, target: Path) -> Path:
    """The first half of a valid file's bytes."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


HEADER_BYTES = {"tif": 8, "h5": 8, "dm3": 24}


def corrupt(source: Path, target: Path, fmt: str | None = None) -> Path:
    """A valid header followed by random garbage, same length as the valid file."""
    data = source.read_bytes()
    if fmt == "npy":
        keep = 10 + int.from_bytes(data[8:10], "little")  # magic, version, header length, header
    elif fmt == "sxm":
        keep = data.index(b"\x1a\x04") + 2  # the text header
    else:
        keep = HEADER_BYTES.get(fmt or "", 64)
    garbage = np.random.default_rng(7).integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()
    target.write_bytes(data[:keep] + garbage)
    return target


def copy_run(w: World, tmp: Path, edit=None) -> Path:
    run = tmp / "run_copy"
    shutil.copytree(w.run, run)
    if edit is not None:
        edit(run)
    return run


def edit_json(path: Path, **changes):
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


def with_attrs(source: Path, target: Path, **attrs) -> Path:
    shutil.copy(source, target)
    with h5py.File(target, "a") as handle:
        for key, value in attrs.items():
            handle.attrs[key] = value
    return target


def save_npy(path: Path, array) -> Path:
    np.save(path, array)
    return path


# ----------------------------------------------------------------------------------------------
# The matrix: id -> builder(world, tmp) returning (argv, file named in the message, words, one of
# which must describe the problem)

FORMATS = ("tif", "h5", "npy", "dm3", "sxm")


def _find_atoms_on(path: Path, tmp: Path) -> list:
    return ["find-atoms", path, "-o", tmp / "out.h5"]


def _format_cases() -> dict:
    cases = {}
    for fmt in FORMATS:
        cases[f"find-atoms/empty-{fmt}"] = lambda w, tmp, fmt=fmt: (_find_atoms_on(_write(tmp / f"empty.{fmt}", b""), tmp), f"empty.{fmt}", ["empty"])
        cases[f"find-atoms/truncated-{fmt}"] = lambda w, tmp, fmt=fmt: (
            _find_atoms_on(truncated(w.valid(fmt), tmp / f"cut.{fmt}"), tmp),
            f"cut.{fmt}",
            ["cannot read", "truncated", "expected an image"],
        )
        cases[f"find-atoms/corrupt-{fmt}"] = lambda w, tmp, fmt=fmt: (
            _find_atoms_on(corrupt(w.valid(fmt), tmp / f"bad.{fmt}", fmt), tmp),
            f"bad.{fmt}",
            # garbage after a raw-binary header (npy, sxm) decodes as pixels: NaN/Inf give it away
            ["cannot read", "expected an image", "NaN or Inf", "truncated"],
        )
    return cases


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _image(w: World) -> np.ndarray:
    return np.load(w.npy)


CASES = {
    # --- find-atoms: files and pixels
    "find-atoms/missing": lambda w, tmp: (_find_atoms_on(tmp / "absent.tif", tmp), "absent.tif", ["no such file"]),
    **_format_cases(),
    "find-atoms/unsupported-format": lambda w, tmp: (_find_atoms_on(_write(tmp / "scan.xyz", b"1 2 3"), tmp), "scan.xyz", ["unsupported format"]),
    "find-atoms/directory": lambda w, tmp: (_find_atoms_on(_mkdir(tmp / "folder.tif"), tmp), "folder.tif", ["directory"]),
    "find-atoms/nan-pixels": lambda w, tmp: (_find_atoms_on(save_npy(tmp / "nan.npy", _poke(_image(w), np.nan)), tmp), "nan.npy", ["NaN or Inf"]),
    "find-atoms/inf-pixels": lambda w, tmp: (_find_atoms_on(_tif(tmp / "inf.tif", _poke(_image(w), np.inf)), tmp), "inf.tif", ["NaN or Inf"]),
    "find-atoms/constant-image": lambda w, tmp: (_find_atoms_on(_tif(tmp / "flat.tif", np.full((64, 64), 3.0, np.float32)), tmp), "flat.tif", ["constant"]),
    "find-atoms/tiny-image": lambda w, tmp: (_find_atoms_on(save_npy(tmp / "tiny.npy", np.eye(3)), tmp), "tiny.npy", ["at least 4×4"]),
    "find-atoms/zero-atoms": lambda w, tmp: (_find_atoms_on(w.scan, tmp) + ["--threshold", "1e9"], "scan.tif", ["no atoms found"]),
    "find-atoms/1d-array": lambda w, tmp: (_find_atoms_on(save_npy(tmp / "line.npy", np.arange(64.0)), tmp), "line.npy", ["expected an image"]),
    "find-atoms/5d-array": lambda w, tmp: (
        _find_atoms_on(save_npy(tmp / "five.npy", np.random.default_rng(0).random((2, 2, 2, 8, 8))), tmp),
        "five.npy",
        ["expected an image"],
    ),
    "find-atoms/text-pixels": lambda w, tmp: (_find_atoms_on(_h5(tmp / "text.h5", np.array([[b"ab"] * 8] * 8)), tmp), "text.h5", ["not numeric"]),
    "find-atoms/no-such-channel": lambda w, tmp: (_find_atoms_on(w.scan, tmp) + ["--channel", "2"], "scan.tif", ["channel"]),
    "find-atoms/ambiguous-h5": lambda w, tmp: (_find_atoms_on(_h5(tmp / "two.h5", _image(w), _image(w)), tmp), "two.h5", ["name the image dataset"]),
    "find-atoms/artifact-as-scan": lambda w, tmp: (_find_atoms_on(w.atoms, tmp), "atoms.h5", ["artifact, not an image"]),
    # --- extract
    "extract/smaller-than-window": lambda w, tmp: (
        ["extract", save_npy(tmp / "small.npy", _image(w)[:20, :20]), "--grid", 8, "--window", 32, "-o", tmp / "out.h5"],
        "small",
        ["smaller than the 32×32 window"],
    ),
    "extract/truncated-atoms": lambda w, tmp: (
        ["extract", w.scan, "--atoms", truncated(w.atoms, tmp / "atoms.h5"), "-o", tmp / "out.h5"],
        "atoms.h5",
        ["not a readable HDF5", "truncated"],
    ),
    "extract/patches-as-atoms": lambda w, tmp: (
        ["extract", w.scan, "--atoms", w.patches, "-o", tmp / "out.h5"],
        "patches.h5",
        ["'patches' artifact, expected a microvae 'atoms'"],
    ),
    "extract/scan-not-in-atoms": lambda w, tmp: (
        ["extract", _tif(tmp / "other.tif", _image(w)[::-1].copy()), "--atoms", w.atoms, "-o", tmp / "out.h5"],
        "other.tif",
        ["not among the images"],
    ),
    "extract/atoms-lacks-dataset": lambda w, tmp: (
        ["extract", w.scan, "--atoms", _drop(w.atoms, tmp / "atoms.h5", "coords"), "-o", tmp / "out.h5"],
        "atoms.h5",
        ["lacks dataset 'coords'"],
    ),
    # --- train: another stage's artifact, damaged patches, bad stacks
    "train/atoms-artifact": lambda w, tmp: (["train", w.atoms, "-o", tmp / "run"], "atoms.h5", ["'atoms' artifact, expected a microvae 'patches'"]),
    "train/encoded-artifact": lambda w, tmp: (["train", w.encoded, "-o", tmp / "run"], "encoded.h5", ["'encoded' artifact, expected a microvae 'patches'"]),
    "train/missing": lambda w, tmp: (["train", tmp / "absent.h5", "-o", tmp / "run"], "absent.h5", ["no such file"]),
    "train/empty-h5": lambda w, tmp: (["train", _write(tmp / "p.h5", b""), "-o", tmp / "run"], "p.h5", ["not a readable HDF5", "empty"]),
    "train/truncated-patches": lambda w, tmp: (["train", truncated(w.patches, tmp / "p.h5"), "-o", tmp / "run"], "p.h5", ["truncated"]),
    "train/corrupt-patches": lambda w, tmp: (["train", corrupt(w.patches, tmp / "p.h5", "h5"), "-o", tmp / "run"], "p.h5", ["not a readable HDF5"]),
    "train/patches-lack-dataset": lambda w, tmp: (["train", _drop(w.patches, tmp / "p.h5", "patches"), "-o", tmp / "run"], "p.h5", ["lacks dataset 'patches'"]),
    "train/nan-patches": lambda w, tmp: (
        ["train", save_npy(tmp / "nan.npy", np.full((4, 1, 8, 8), np.nan, np.float32)), "-o", tmp / "run"],
        "nan.npy",
        ["NaN or Inf"],
    ),
    "train/non-square-patches": lambda w, tmp: (
        ["train", save_npy(tmp / "rect.npy", np.random.default_rng(0).random((4, 1, 8, 6)).astype(np.float32)), "-o", tmp / "run"],
        "rect.npy",
        ["square"],
    ),
    "train/one-patch": lambda w, tmp: (
        ["train", save_npy(tmp / "one.npy", np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)), "-o", tmp / "run"],
        "one.npy",
        ["at least 2"],
    ),
    "train/corrupt-npy-stack": lambda w, tmp: (
        [
            "train",
            corrupt(save_npy(tmp / "ok.npy", np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)), tmp / "stack.npy", "npy"),
            "-o",
            tmp / "run",
        ],
        "stack.npy",
        ["NaN or Inf", "cannot read"],
    ),
    # --- encode: run folder damage, patches that do not fit the run
    "encode/run-not-a-folder": lambda w, tmp: (["encode", tmp / "nowhere", w.patches, "-o", tmp / "out.h5"], "nowhere", ["no such run folder"]),
    "encode/run-without-config": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: (r / "config.json").unlink()), w.patches, "-o", tmp / "out.h5"],
        "run_copy",
        ["no config.json"],
    ),
    "encode/corrupt-config": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: (r / "config.json").write_text("{not json")), w.patches, "-o", tmp / "out.h5"],
        "config.json",
        ["unreadable run configuration"],
    ),
    "encode/missing-checkpoint": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: shutil.rmtree(r / "checkpoints")), w.patches, "-o", tmp / "out.h5"],
        "last.pt",
        ["no such checkpoint"],
    ),
    "encode/truncated-checkpoint": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: truncated(r / "checkpoints" / "final.pt", r / "checkpoints" / "final.pt")), w.patches, "-o", tmp / "out.h5"],
        "final.pt",
        ["truncated or corrupt"],
    ),
    "encode/corrupt-checkpoint": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: corrupt(r / "checkpoints" / "final.pt", r / "checkpoints" / "final.pt")), w.patches, "-o", tmp / "out.h5"],
        "final.pt",
        ["truncated or corrupt"],
    ),
    "encode/checkpoint-of-another-model": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: _other_model_config(r)), w.patches, "-o", tmp / "out.h5"],
        "final.pt",
        ["does not fit the model"],
    ),
    "encode/run-schema-newer": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: edit_json(r / "config.json", schema_version=artifacts.SCHEMA_VERSION + 1)), w.patches, "-o", tmp / "out.h5"],
        "config.json",
        ["version 2 is newer", "(version 1)"],
    ),
    "encode/run-schema-older": lambda w, tmp: (
        ["encode", copy_run(w, tmp, lambda r: edit_json(r / "provenance.json", schema_version=0)), w.patches, "-o", tmp / "out.h5"],
        "provenance.json",
        ["version 0 is older"],
    ),
    "encode/atoms-as-patches": lambda w, tmp: (["encode", w.run, w.atoms, "-o", tmp / "out.h5"], "atoms.h5", ["'atoms' artifact"]),
    "encode/window-mismatch": lambda w, tmp: (
        ["encode", w.run, _extract(w, tmp / "p16.h5", "--window", 16), "-o", tmp / "out.h5"],
        "p16.h5",
        ["1×16×16", "1×12×12"],
    ),
    "encode/normalisation-mismatch": lambda w, tmp: (
        ["encode", w.run, _extract(w, tmp / "pnorm.h5", "--window", 12, "--normalize", "zscore"), "-o", tmp / "out.h5"],
        "pnorm.h5",
        ["normalize='zscore'"],
    ),
    "encode/patches-pixel-size": lambda w, tmp: (
        ["encode", w.run, _coarse_patches(w, tmp), "-o", tmp / "out.h5"],
        "coarse.tif",
        ["pixel size 0.05 nm differs", "--ignore-calibration"],
    ),
    "encode/channel-mismatch": lambda w, tmp: (
        ["encode", w.run, save_npy(tmp / "two.npy", np.random.default_rng(0).random((4, 2, 12, 12)).astype(np.float32)), "-o", tmp / "out.h5"],
        "two.npy",
        ["2×12×12"],
    ),
    # --- encode --pretrained on raw scans
    "encode-pretrained/missing-scan": lambda w, tmp: (
        ["encode", "--pretrained", w.run, tmp / "absent.tif", "-o", tmp / "out.h5"],
        "absent.tif",
        ["no such file"],
    ),
    "encode-pretrained/corrupt-dm3": lambda w, tmp: (
        ["encode", "--pretrained", w.run, corrupt(DM3, tmp / "scan.dm3", "dm3"), "-o", tmp / "out.h5"],
        "scan.dm3",
        ["cannot read"],
    ),
    "encode-pretrained/channel-count": lambda w, tmp: (
        [
            "encode",
            "--pretrained",
            w.run,
            write_sxm(tmp / "two.sxm", {"Z": _image(w), "Current": _image(w)[::-1]}, scan_range_m=(96 * 0.02e-9,) * 2),
            "-o",
            tmp / "out.h5",
        ],
        "two.sxm",
        ["2 channel(s)", "trained on 1"],
    ),
    "encode-pretrained/pixel-size": lambda w, tmp: (
        ["encode", "--pretrained", w.run, _tif(tmp / "coarse.tif", _image(w), 0.05), "-o", tmp / "out.h5"],
        "coarse.tif",
        ["pixel size"],
    ),
    "encode-pretrained/smaller-than-window": lambda w, tmp: (
        ["encode", "--pretrained", w.run, _tif(tmp / "crop.tif", _image(w)[:10, :10], 0.02), "-o", tmp / "out.h5"],
        "crop.tif",
        ["window", "no atoms found"],
    ),
    "encode-pretrained/constant-scan": lambda w, tmp: (
        ["encode", "--pretrained", w.run, _tif(tmp / "flat.tif", np.ones((64, 64), np.float32), 0.02), "-o", tmp / "out.h5"],
        "flat.tif",
        ["constant"],
    ),
    # --- export
    "export/patches-artifact": lambda w, tmp: (["export", w.patches, "-o", tmp / "maps"], "patches.h5", ["expected a microvae 'encoded'"]),
    "export/truncated-encoded": lambda w, tmp: (["export", truncated(w.encoded, tmp / "enc.h5"), "-o", tmp / "maps"], "enc.h5", ["truncated"]),
    "export/encoded-schema-newer": lambda w, tmp: (
        ["export", with_attrs(w.encoded, tmp / "enc.h5", schema_version=2), "-o", tmp / "maps"],
        "enc.h5",
        ["version 2 is newer"],
    ),
    "export/encoded-lacks-dataset": lambda w, tmp: (
        ["export", _drop(w.encoded, tmp / "enc.h5", "class_probs"), "-o", tmp / "maps"],
        "enc.h5",
        ["lacks dataset 'class_probs'"],
    ),
    # --- manifold, generate, diagnose, compare
    "manifold/not-a-run": lambda w, tmp: (["manifold", _mkdir(tmp / "empty_run"), "-o", tmp / "m.png"], "empty_run", ["not a training run folder"]),
    "generate/corrupt-checkpoint": lambda w, tmp: (
        ["generate", copy_run(w, tmp, lambda r: corrupt(r / "checkpoints" / "final.pt", r / "checkpoints" / "final.pt")), "--class", 0, "-o", tmp / "g.png"],
        "final.pt",
        ["truncated or corrupt"],
    ),
    "diagnose/atoms-as-patches": lambda w, tmp: (["diagnose", w.run, w.atoms], "atoms.h5", ["expected a microvae 'patches'"]),
    "compare/run-schema-newer": lambda w, tmp: (
        ["compare", w.run, copy_run(w, tmp, lambda r: edit_json(r / "config.json", schema_version=2)), w.patches, "--steps", 1],
        "config.json",
        ["version 2 is newer"],
    ),
    # --- pipeline
    "pipeline/missing-config": lambda w, tmp: (["pipeline", tmp / "absent.toml", w.scan, "-o", tmp / "study"], "absent.toml", ["no such config file"]),
    "pipeline/invalid-toml": lambda w, tmp: (
        ["pipeline", _write(tmp / "bad.toml", b"[train\nepochs = 1"), w.scan, "-o", tmp / "study"],
        "bad.toml",
        ["not valid TOML"],
    ),
    "pipeline/truncated-scan": lambda w, tmp: (
        ["pipeline", SAMPLE_DATA / "pipeline.toml", truncated(w.scan, tmp / "cut.tif"), "-o", tmp / "study"],
        "cut.tif",
        ["cannot read"],
    ),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _poke(image: np.ndarray, value: float) -> np.ndarray:
    image = image.copy()
    image[5, 7] = value
    return image


def _tif(path: Path, image: np.ndarray, pixel_nm: float | None = None) -> Path:
    if pixel_nm is None:
        tifffile.imwrite(path, image)
    else:
        tifffile.imwrite(path, image, imagej=True, resolution=(1 / pixel_nm, 1 / pixel_nm), metadata={"unit": "nm"})
    return path


def _h5(path: Path, *arrays) -> Path:
    with h5py.File(path, "w") as handle:
        for index, array in enumerate(arrays):
            handle[f"data{index}"] = array
    return path


def _drop(source: Path, target: Path, name: str) -> Path:
    """A copy of an artifact without one of its datasets (an incomplete or damaged file)."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key in src:
            if key != name:
                src.copy(src[key], dst, key)
    return target


def _extract(w: World, target: Path, *options) -> Path:
    _main_ok(["extract", w.scan, "--atoms", w.atoms, *options, "-o", target, "-q"])
    return target


def _coarse_patches(w: World, tmp: Path) -> Path:
    """Patches cut as the run's were, from the scan recorded at 0.05 nm/px instead of 0.02."""
    coarse = _tif(tmp / "coarse.tif", _image(w), 0.05)
    _main_ok(["find-atoms", coarse, "-o", tmp / "coarse_atoms.h5", "-q"])
    _main_ok(["extract", coarse, "--atoms", tmp / "coarse_atoms.h5", "--window", 12, "-o", tmp / "coarse_patches.h5", "-q"])
    return tmp / "coarse_patches.h5"


def _other_model_config(run: Path) -> None:
    """config.json of another architecture beside this run's checkpoint."""
    settings = json.loads((run / "config.json").read_text())
    settings["model"]["latent_dim"] = 3
    (run / "config.json").write_text(json.dumps(settings))


def snapshot(*folders: Path) -> dict:
    """Every file (with its SHA-256) and folder under ``folders``."""
    state = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return state


def assert_one_error_line(code, err, context="") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (context, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, world, tmp_path, capsys):
    args, named_file, words = CASES[case](world, tmp_path)
    before = snapshot(tmp_path, world.root)
    code, out, err = run_cli(args, capsys)
    line = assert_one_error_line(code, err)
    assert named_file in line, f"the message does not name {named_file}: {line}"
    assert any(word.lower() in line.lower() for word in words), f"the message does not say {words}: {line}"
    assert snapshot(tmp_path, world.root) == before, "files were changed, added or left behind"


def test_patches_of_another_pixel_size_encode_when_asked(world, tmp_path, capsys):
    """Control for 'encode/patches-pixel-size': the same patches pass with --ignore-calibration, and
    patches cut from a scan at the training pixel size pass without it."""
    coarse = _coarse_patches(world, tmp_path)
    code, _, err = run_cli(["encode", world.run, coarse, "-o", tmp_path / "coarse_enc.h5", "--ignore-calibration", "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["encode", world.run, world.patches, "-o", tmp_path / "same_enc.h5", "-q"], capsys)
    assert code == 0, err


def test_memory_limit_reaches_the_ensemble_alignment_and_pretrained_encoding(world, tmp_path, capsys, monkeypatch):
    """--memory-limit-gb is honoured by every path that reads patches: the members of --ensemble
    and the encoding that aligns their classes (before, it loaded every patch), and encode
    --pretrained on scans (before, it used the default limit)."""
    from microvae.stages import encode, inputs, train

    seen = []
    real = inputs.load_patch_input
    for stage in (train, encode):
        monkeypatch.setattr(stage, "load_patch_input", lambda spec, stream_above=None: seen.append(stream_above) or real(spec, stream_above=stream_above))
    code, _, err = run_cli(
        ["train", world.patches, "-o", tmp_path / "ens", "--ensemble", 2, "--classes", 2, "--epochs", 1, *TINY_TRAIN, "--memory-limit-gb", "0"], capsys
    )
    assert code == 0, err
    assert len(seen) == 3 and set(seen) == {0}, seen  # two members and the alignment
    seen.clear()
    code, _, err = run_cli(["encode", "--pretrained", world.run, world.scan, "-o", tmp_path / "enc.h5", "--memory-limit-gb", "0.002", "-q"], capsys)
    assert code == 0, err
    assert seen == [2_000_000], seen


def test_the_matrix_covers_enough_kinds():
    kinds = {name.split("/")[1].split("-")[0] for name in CASES}
    commands = {name.split("/")[0] for name in CASES}
    assert len(CASES) >= 20 and len(kinds) >= 15
    assert {"find-atoms", "extract", "train", "encode", "encode-pretrained", "export", "pipeline", "manifold", "generate", "diagnose", "compare"} <= commands


# ----------------------------------------------------------------------------------------------
# Paths with spaces and non-ASCII characters work end to end


def test_non_ascii_and_space_paths_work_end_to_end(world, tmp_path, capsys):
    folder = tmp_path / "données été"
    folder.mkdir()
    scan = folder / "scan 1.tif"
    shutil.copy(world.scan, scan)
    atoms, patches, run, encoded, maps = (folder / "atomes é.h5", folder / "patchs 1.h5", folder / "exécution 1", folder / "encodé 1.h5", folder / "cartes été")
    cli_ok = lambda args: _assert_ok(run_cli(args, capsys))  # noqa: E731
    cli_ok(["find-atoms", scan, "-o", atoms, "--preview", folder / "aperçu 1.png", "-q"])
    cli_ok(["extract", scan, "--atoms", atoms, "--window", 12, "-o", patches, "-q"])
    cli_ok(["train", patches, "-o", run, "--epochs", 1, *TINY_TRAIN])
    cli_ok(["encode", run, patches, "-o", encoded, "--device", "cpu", "-q"])
    cli_ok(["export", encoded, "-o", maps, "--format", "h5,tiff,png", "-q"])
    with h5py.File(maps / "maps.h5") as handle:
        assert handle["images/source"][0].decode() == str(scan)
        assert handle["image_00/class"].shape == (96, 96)
    assert any(p.suffix == ".tif" for p in maps.iterdir()) and any(p.suffix == ".png" for p in maps.iterdir())
    # a trained run applied to a raw scan in such a folder, with such an output name
    cli_ok(["encode", "--pretrained", run, scan, "-o", folder / "nouveau scan.h5", "--device", "cpu", "-q"])
    assert artifacts.read_header(folder / "nouveau scan.h5", "encoded").kind == "encoded"
    assert not [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".lock")]


def _assert_ok(result):
    code, out, err = result
    assert code == 0, err
    return out


# ----------------------------------------------------------------------------------------------
# Resources: a read-only output location and a full disk


def _simulate_read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` behave read-only for a process that chmod does not stop (root): access()
    says no, and creating a file in it fails with EACCES, as the kernel does for other users."""
    real_access, real_open = os.access, os.open
    folder = folder.resolve()

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().parent == folder or Path(os.fsdecode(path)).resolve() == folder
        except (TypeError, ValueError):
            return False

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and inside(path):
            return False
        return real_access(path, mode, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "open", open_)


def test_read_only_output_folder(world, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir()
    target = folder / "atoms.h5"
    _assert_ok(run_cli(["find-atoms", world.scan, "-o", target, "-q"], capsys))
    before = snapshot(tmp_path)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # running as root: chmod does not stop writes, so simulate it
            _simulate_read_only(monkeypatch, folder)
        for args in (
            ["find-atoms", world.scan, "-o", target, "--refine", "com", "--force"],
            ["extract", world.scan, "--atoms", world.atoms, "--window", 12, "-o", folder / "patches.h5"],
            ["train", world.patches, "-o", folder / "run", "--epochs", 1, *TINY_TRAIN],
            ["encode", world.run, world.patches, "-o", folder / "encoded.h5", "--device", "cpu"],
            ["export", world.encoded, "-o", folder / "maps"],
            ["generate", world.run, "--class", 0, "-o", folder / "g.png"],
        ):
            code, _, err = run_cli(args, capsys)
            line = assert_one_error_line(code, err, args[0])
            assert str(folder) in line and "read-only" in line, line
    finally:
        folder.chmod(0o755)
    assert snapshot(tmp_path) == before


def test_write_fails_on_a_file_system_turned_read_only(world, tmp_path, capsys, monkeypatch):
    """access() said yes, the write itself fails (EROFS): the same one line, the old file intact."""
    target = tmp_path / "atoms.h5"
    _assert_ok(run_cli(["find-atoms", world.scan, "-o", target, "-q"], capsys))
    before = snapshot(tmp_path)
    import h5py as h5py_module

    real_file = h5py_module.File

    def read_only_file(name, mode="r", *args, **kwargs):
        if mode != "r":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(name))
        return real_file(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py_module, "File", read_only_file)
    code, _, err = run_cli(["find-atoms", world.scan, "-o", target, "--refine", "com", "--force"], capsys)
    line = assert_one_error_line(code, err)
    assert "atoms.h5" in line and "read-only" in line
    assert snapshot(tmp_path) == before


def _fail_fsync(monkeypatch, only_containing: str | None = None) -> None:
    """Simulate a full disk: fsync (where delayed allocation reports it) raises ENOSPC, for every
    file or only for files whose name contains ``only_containing``."""
    real_fsync = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if only_containing is None or only_containing in Path(name).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_keeps_previous_artifacts(world, tmp_path, capsys, monkeypatch):
    atoms = tmp_path / "atoms.h5"
    maps = tmp_path / "maps"
    _assert_ok(run_cli(["find-atoms", world.scan, "-o", atoms, "-q"], capsys))
    _assert_ok(run_cli(["export", world.encoded, "-o", maps, "--format", "h5,tiff", "-q"], capsys))
    before = snapshot(tmp_path)
    _fail_fsync(monkeypatch)
    for args, named in (
        (["find-atoms", world.scan, "-o", atoms, "--refine", "com", "--force"], "atoms.h5"),
        (["export", world.encoded, "-o", maps, "--format", "h5,tiff", "--radius", 3, "--force"], str(maps)),
        (["extract", world.scan, "--atoms", world.atoms, "--window", 12, "-o", tmp_path / "patches.h5"], "patches.h5"),
    ):
        code, _, err = run_cli(args, capsys)
        line = assert_one_error_line(code, err)
        assert named in line and "no space left" in line.lower(), line
        assert snapshot(tmp_path) == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to tell which file is synced")
@pytest.mark.parametrize("failing", ["every file", "checkpoints only"])
def test_full_disk_while_training_keeps_the_last_checkpoint(world, tmp_path, capsys, monkeypatch, failing):
    run = tmp_path / "run"
    shutil.copytree(world.run, run)
    checkpoints = {name: (run / "checkpoints" / name).read_bytes() for name in ("last.pt", "final.pt")}
    _fail_fsync(monkeypatch, None if failing == "every file" else ".pt.")  # .last.pt.<pid>.tmp
    code, _, err = run_cli(["train", world.patches, "-o", run, "--epochs", 2, "--checkpoint-every", 1, *TINY_TRAIN], capsys)
    line = assert_one_error_line(code, err)
    assert str(run) in line and "no space left" in line.lower(), line
    assert {name: (run / "checkpoints" / name).read_bytes() for name in checkpoints} == checkpoints
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or ".tmp" in p.name or p.name.endswith(".lock")]


# ----------------------------------------------------------------------------------------------
# Concurrency: two processes writing the same output


HOLDER = """
import sys, time
from microvae.artifacts import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(world, tmp_path, capsys):
    target = tmp_path / "atoms.h5"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(["find-atoms", world.scan, "-o", target], capsys)
        line = assert_one_error_line(code, err)
        assert f"pid {holder.pid}" in line and "atoms.h5" in line
        assert not target.exists() and Path(f"{target}.lock").read_text() == str(holder.pid)
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the lock file stays, stale
        holder.wait()
    assert Path(f"{target}.lock").exists()
    _assert_ok(run_cli(["find-atoms", world.scan, "-o", target, "-q"], capsys))
    assert artifacts.read_header(target, "atoms").kind == "atoms"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atoms.h5"]


def test_a_second_train_into_a_running_run_folder_is_refused(world, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(["train", world.patches, "-o", run, "--epochs", 1, *TINY_TRAIN], capsys)
        line = assert_one_error_line(code, err)
        assert f"pid {holder.pid}" in line and "run" in line
        assert not run.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _assert_ok(run_cli(["train", world.patches, "-o", run, "--epochs", 1, *TINY_TRAIN], capsys))
    assert (run / "checkpoints" / "final.pt").exists() and not Path(f"{run}.lock").exists()


RACER = """
import os, sys, time
import numpy as np
from microvae import artifacts
from microvae.errors import OutputError
target = sys.argv[1]
go = float(sys.argv[2])
time.sleep(max(0.0, go - time.time()))
provenance = artifacts.Provenance(stage="race", parameters={"pid": os.getpid()}, inputs=[])
try:
    with artifacts.atomic_h5(target, provenance, "atoms") as handle:
        data = handle.create_dataset("coords", shape=(64, 4096), dtype="i8")
        for row in range(64):  # a slow writer: 64 chunks with pauses between them
            data[row] = os.getpid()
            time.sleep(0.005)
except OutputError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


def test_two_processes_racing_for_one_output_never_interleave(tmp_path):
    """Two processes write the same artifact at the same moment, slowly: each succeeds or is refused
    naming the other's pid, and what is left is one complete artifact from one writer, with no lock
    or temporary file. (The command line's refusal is checked against a lock holder above.)"""
    target = tmp_path / "atoms.h5"
    go = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(target), str(go)], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(proc.pid, proc.wait(timeout=60), proc.stderr.read()) for proc in procs]
    pids = {pid for pid, _, _ in results}
    for pid, code, err in results:
        assert code in (0, 2), err
        if code == 2:
            assert "another microvae process" in err and any(f"pid {other}" in err for other in pids - {pid}), err
    winners = [pid for pid, code, _ in results if code == 0]
    assert winners
    header = artifacts.read_header(target, "atoms")
    with h5py.File(target) as handle:
        values = np.unique(handle["coords"][()])
    assert len(values) == 1 and int(values[0]) == header.parameters["pid"] and int(values[0]) in winners
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atoms.h5"]


LOCK_STRESS = """
import os, sys
from pathlib import Path
from microvae.artifacts import output_lock
from microvae.errors import OutputError
target, rounds = Path(sys.argv[1]), int(sys.argv[2])
inside = Path(str(target) + ".inside")
held = overlaps = 0
for _ in range(rounds):
    try:
        with output_lock(target):
            held += 1
            try:
                os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                overlaps += 1
                continue
            os.unlink(inside)
    except OutputError:
        pass
print(held, overlaps)
"""


def test_lock_is_exclusive_under_contention(tmp_path):
    """Processes taking and releasing one lock in a tight loop are never inside it together (the
    pid-file-only lock let 1 in 4 acquisitions overlap: a lock found empty, or found stale by two
    processes at once, was deleted under its new owner)."""
    target = tmp_path / "out.h5"
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_STRESS, str(target), "400"], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    counts = [tuple(map(int, proc.communicate(timeout=120)[0].split())) for proc in procs]
    assert sum(held for held, _ in counts) > 0
    assert sum(overlaps for _, overlaps in counts) == 0, counts
    assert list(tmp_path.iterdir()) == []


def test_lock_refusal_names_a_live_owner_without_flock(tmp_path):
    """A lock file written by a live process that holds no flock (another tool, an older microvae)
    is respected; one naming a dead process is stale."""
    target = tmp_path / "a.h5"
    Path(f"{target}.lock").write_text(str(os.getppid()))
    with pytest.raises(OutputError, match=f"pid {os.getppid()}"):
        with artifacts.output_lock(target):
            pass
    Path(f"{target}.lock").write_text("999999999")
    with artifacts.output_lock(target):
        assert Path(f"{target}.lock").read_text() == str(os.getpid())
    assert not Path(f"{target}.lock").exists()


# ----------------------------------------------------------------------------------------------
# Schema versions: every artifact kind records one; another is read or refused naming the version


def _maps(world: World, folder: Path) -> Path:
    _main_ok(["export", world.encoded, "-o", folder, "--format", "h5", "-q"])
    return folder / "maps.h5"


def test_every_artifact_kind_records_its_schema_version(world, tmp_path):
    import torch

    for path, kind in ((world.atoms, "atoms"), (world.patches, "patches"), (world.encoded, "encoded"), (_maps(world, tmp_path / "maps"), "maps")):
        with h5py.File(path) as handle:
            assert handle.attrs["microvae_artifact"] == kind and int(handle.attrs["schema_version"]) == artifacts.SCHEMA_VERSION
    for name in ("config.json", "provenance.json"):
        assert json.loads((world.run / name).read_text())["schema_version"] == artifacts.SCHEMA_VERSION
    from microvae.run_folder import CHECKPOINT_VERSION

    assert torch.load(world.run / "checkpoints" / "final.pt", weights_only=True)["version"] == CHECKPOINT_VERSION


def _set_checkpoint_version(run: Path, version: int) -> None:
    import torch

    for name in ("last.pt", "final.pt"):
        payload = torch.load(run / "checkpoints" / name, weights_only=True)
        payload["version"] = version
        torch.save(payload, run / "checkpoints" / name)


def _schema_case(kind: str, version: int, world: World, tmp: Path):
    """(argv reading an artifact of ``kind`` stamped ``version``, the file the message must name)."""
    if kind in ("atoms", "patches", "encoded"):
        source = {"atoms": world.atoms, "patches": world.patches, "encoded": world.encoded}[kind]
        damaged = with_attrs(source, tmp / f"{kind}.h5", schema_version=version)
        args = {
            "atoms": ["extract", world.scan, "--atoms", damaged, "-o", tmp / "out.h5"],
            "patches": ["train", damaged, "-o", tmp / "run"],
            "encoded": ["export", damaged, "-o", tmp / "maps"],
        }[kind]
        return args, damaged.name
    if kind == "maps":  # export's own output, found in place: neither up to date nor overwritten silently
        maps = _maps(world, tmp / "maps")
        with h5py.File(maps, "a") as handle:
            handle.attrs["schema_version"] = version
        return ["export", world.encoded, "-o", tmp / "maps", "--format", "h5"], "maps.h5"
    run = copy_run(world, tmp)
    if kind == "run config.json":
        edit_json(run / "config.json", schema_version=version)
        return ["encode", run, world.patches, "-o", tmp / "out.h5"], "config.json"
    if kind == "run provenance.json":
        edit_json(run / "provenance.json", schema_version=version)
        return ["encode", run, world.patches, "-o", tmp / "out.h5"], "provenance.json"
    _set_checkpoint_version(run, version)
    return ["manifold", run, "-o", tmp / "m.png"], "final.pt"


SCHEMA_KINDS = ("atoms", "patches", "encoded", "maps", "run config.json", "run provenance.json", "checkpoint")


@pytest.mark.parametrize("version", [0, 2], ids=["older", "newer"])
@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_other_schema_versions_say_which_version_is_needed(kind, version, world, tmp_path, capsys):
    args, named = _schema_case(kind, version, world, tmp_path)
    before = snapshot(tmp_path, world.root)
    code, _, err = run_cli(args, capsys)
    line = assert_one_error_line(code, err)
    assert named in line and f"version {version}" in line and "version 1" in line, line
    assert ("newer" if version > 1 else "older") in line or kind == "maps", line
    assert snapshot(tmp_path, world.root) == before


def test_maps_of_another_schema_are_replaced_with_force(world, tmp_path, capsys):
    args, _ = _schema_case("maps", 2, world, tmp_path)
    _assert_ok(run_cli([*args, "--force", "-q"], capsys))
    assert artifacts.read_header(tmp_path / "maps" / "maps.h5", "maps").schema_version == artifacts.SCHEMA_VERSION


def test_run_folder_from_before_schema_versions_still_works(world, tmp_path, capsys):
    """config.json and provenance.json without a schema_version (written before it was recorded) are version 1."""

    def strip(run):
        for name in ("config.json", "provenance.json"):
            record = json.loads((run / name).read_text())
            record.pop("schema_version")
            (run / name).write_text(json.dumps(record))

    run = copy_run(world, tmp_path, strip)
    _assert_ok(run_cli(["encode", run, world.patches, "-o", tmp_path / "out.h5", "--device", "cpu", "-q"], capsys))


def test_library_readers_name_the_version(world, tmp_path):
    maps = _maps(world, tmp_path / "maps")
    with h5py.File(maps, "a") as handle:
        handle.attrs["schema_version"] = 3
    with pytest.raises(InputError, match=r"maps.h5: artifact schema version 3 is newer .*\(version 1\)"):
        artifacts.read_header(maps, "maps")
    with pytest.raises(OutputError, match="schema version 3"):
        artifacts.plan_output(maps, artifacts.read_header.__name__)


def test_a_bare_stack_of_the_runs_patch_shape_is_encoded_as_patches_and_says_so(world, tmp_path, capsys):
    """encode decides what an input is from its data and the run (stages.encode.run_encode_inputs):
    a .npy stack of the run's 12×12 patches is encoded as patches with a note naming the other
    reading; the patches artifact itself gets no note (nothing was guessed)."""
    with h5py.File(world.patches) as handle:
        np.save(tmp_path / "stack.npy", handle["patches"][()])
    code, _, err = run_cli(["encode", world.run, tmp_path / "stack.npy", "-o", tmp_path / "stack_enc.h5"], capsys)
    assert code == 0, err
    said = " ".join(err.split())  # the console wraps long notes
    assert "read as a stack of patches" in said and "--input-kind scans" in said
    code, _, err = run_cli(["encode", world.run, world.patches, "-o", tmp_path / "artifact_enc.h5"], capsys)
    assert code == 0 and "read as a stack of patches" not in " ".join(err.split()), err

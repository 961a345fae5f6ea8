"""Artifact rules shared by every stage: atomic writes, up-to-date checks, kinds, versions, locks."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from microvae import artifacts
from microvae.artifacts import Provenance
from microvae.errors import InputError, OutputError


def make_provenance(value=1):
    return Provenance(stage="find-atoms", parameters={"value": value}, inputs=[{"path": "x.tif", "sha256": "ab" * 32, "role": "image"}])


def write_small(path, provenance):
    with artifacts.atomic_h5(path, provenance, "atoms") as handle:
        artifacts.write_dataset(handle, "coords", np.zeros((3, 2)), "px", "test")


def test_header_roundtrip_and_plan(tmp_path):
    path = tmp_path / "a.h5"
    provenance = make_provenance()
    assert artifacts.plan_output(path, provenance.fingerprint).action == "write"
    write_small(path, provenance)
    header = artifacts.read_header(path, "atoms")
    assert header.parameters == {"value": 1} and header.fingerprint == provenance.fingerprint
    with h5py.File(path) as handle:
        assert handle["coords"].attrs["units"] == "px"
    assert artifacts.plan_output(path, provenance.fingerprint).action == "skip"
    other = make_provenance(2)
    with pytest.raises(OutputError, match="--force"):
        artifacts.plan_output(path, other.fingerprint)
    assert artifacts.plan_output(path, other.fingerprint, force=True).action == "write"


def test_failed_write_keeps_previous_artifact(tmp_path):
    path = tmp_path / "a.h5"
    write_small(path, make_provenance())
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with artifacts.atomic_h5(path, make_provenance(2), "atoms") as handle:
            handle.create_dataset("partial", data=np.ones(10))
            raise RuntimeError("crash in the middle")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]  # no temporary or lock left


def test_wrong_kind_and_schema_version(tmp_path):
    path = tmp_path / "a.h5"
    write_small(path, make_provenance())
    with pytest.raises(InputError, match="'atoms' artifact, expected a microvae 'patches'"):
        artifacts.read_header(path, "patches")
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = 99
    with pytest.raises(InputError, match="schema version 99 is newer"):
        artifacts.read_header(path, "atoms")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as handle:
        handle["x"] = 1
    with pytest.raises(InputError, match="without microvae provenance"):
        artifacts.read_header(plain, "atoms")


def test_refuses_to_overwrite_foreign_file(tmp_path):
    path = tmp_path / "important.h5"
    path.write_text("not an artifact")
    with pytest.raises(OutputError, match="not a microvae artifact"):
        artifacts.plan_output(path, "0" * 64)


def test_lock_refuses_a_live_owner_and_takes_a_stale_one(tmp_path):
    path = tmp_path / "a.h5"
    lock = tmp_path / "a.h5.lock"
    lock.write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(OutputError, match="another microvae process"):
        write_small(path, make_provenance())
    assert not path.exists()
    lock.write_text("999999999")  # no such process: stale
    write_small(path, make_provenance())
    assert path.exists() and not lock.exists()


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        artifacts.plan_output(blocker / "out.h5", "0" * 64)


def test_gzip_options_keep_the_byte_shuffle_only_where_it_shrinks_the_data():
    """Noisy float32 values compress better shuffled; overlapping windows of one image (exact
    repeats that gzip finds) compress better without; strings never get the shuffle."""
    from scipy import ndimage

    from microvae.artifacts import gzip_options

    rng = np.random.default_rng(0)
    noisy = (0.5 + 0.05 * rng.standard_normal((256, 32, 32))).astype(np.float32)
    image = (ndimage.gaussian_filter(rng.random((160, 160)), 2) + 0.02 * rng.standard_normal((160, 160))).astype(np.float32)
    overlapping = np.stack([image[r : r + 32, c : c + 32] for r in range(0, 128, 4) for c in range(0, 128, 4)])[:256]  # grid step 4
    assert gzip_options(noisy).get("shuffle") is True
    assert "shuffle" not in gzip_options(overlapping)
    assert "shuffle" not in gzip_options(np.array(["a", "b"] * 3000))
    assert gzip_options(noisy)["compression"] == "gzip"

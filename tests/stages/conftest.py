"""Shared by the stage tests: a small patches artifact and a tiny model's options."""

from __future__ import annotations

import pytest
from microvae.cli.main import main

TINY = ["--hidden", "32", "--batch-size", "32", "--device", "cpu", "-q"]


@pytest.fixture(scope="session")
def patches_file(tmp_path_factory):
    """A small grid-patches artifact from the synthetic lattice (16×16, about 200 patches)."""
    import tifffile

    from microvae.synthetic import make_lattice

    folder = tmp_path_factory.mktemp("train")
    lattice = make_lattice(shape=(128, 128), seed=9)
    scan = folder / "scan.tif"
    tifffile.imwrite(scan, lattice.image)
    patches = folder / "patches.h5"
    with pytest.raises(SystemExit) as done:
        main(["extract", str(scan), "--grid", "8", "--window", "16", "-o", str(patches), "-q"])
    assert done.value.code == 0
    return patches

"""The front door: the command starts without the heavy libraries, and reads well at 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COMMANDS = ["find-atoms", "extract", "train", "encode", "export", "pipeline", "compare", "diagnose", "manifold", "generate"]
# what a stage needs and the help never does: importing any of them costs 0.1–5 s at start-up
HEAVY = ("torch", "pyro", "scipy", "matplotlib", "h5py", "tifffile", "skimage", "sklearn", "numba", "hyperspy", "rsciio", "PIL")

_PROBE = """
import json, sys
from microvae.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({name.split('.')[0] for name in sys.modules} & set(json.loads(%r)))
print(json.dumps({"heavy": heavy, "modules": len(sys.modules)}), file=sys.stderr)
"""


def _imports_for(args: list[str]) -> dict:
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-c", _PROBE % json.dumps(HEAVY), *args], capture_output=True, text=True, env=env, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_heavy_library(command):
    """``microvae --help`` and ``microvae CMD --help`` import none of torch, pyro, scipy, matplotlib,
    the file readers (the start-up cost of a shell loop over 300 scans); counted, not timed. The
    control: running a stage does import them (the probe sees imports)."""
    args = ["--help"] if command is None else [command, "--help"]
    found, text = _imports_for(args)
    assert found["heavy"] == [], found
    assert "Usage" in text


def test_the_probe_sees_a_stage_import_torch(tmp_path):
    """Control for the test above: a command that needs torch imports it (here find-atoms asked for
    CUDA, which it looks for with torch)."""
    import numpy as np

    from microvae.synthetic import make_lattice

    scan = tmp_path / "scan.npy"
    np.save(scan, make_lattice(shape=(96, 96)).image)
    found, _ = _imports_for(["find-atoms", str(scan), "-o", str(tmp_path / "atoms.h5"), "--device", "cuda"])
    assert "torch" in found["heavy"], found


def test_find_atoms_on_the_cpu_does_not_import_torch(tmp_path):
    """find-atoms on a 512² scan finishes in under 2 s end to end (0.9 s measured on 2 cores): it
    needs numpy, scipy and h5py, not torch (about 1 s to import), unless a GPU may be present."""
    import glob

    from microvae.synthetic import make_lattice

    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("a GPU may be present: --device auto imports torch to look for it")
    scan = tmp_path / "scan.npy"
    import numpy as np

    np.save(scan, make_lattice(shape=(512, 512)).image)
    found, _ = _imports_for(["find-atoms", str(scan), "-o", str(tmp_path / "atoms.h5"), "-q"])
    assert (tmp_path / "atoms.h5").exists()
    assert not {"torch", "pyro", "matplotlib", "sklearn"} & set(found["heavy"]), found


# --- help that reads at 80 columns ------------------------------------------------------------


def _help(command, capsys, monkeypatch, columns=80):
    from ..conftest import run_cli

    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = run_cli(["--help"] if command is None else [command, "--help"], capsys)
    assert code == 0, err
    return out


def _params(command):
    import typer.main
    from microvae.cli.main import app

    return [p for p in typer.main.get_command(app).commands[command].params if p.name != "help"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_fits_80_columns_with_every_option_name_whole(command, capsys, monkeypatch):
    """No line is wider than the terminal; each option's names appear in full (the rich tables cut
    '--latent-geome…'); examples come before the options."""
    text = _help(command, capsys, monkeypatch)
    assert max(len(line) for line in text.splitlines()) <= 80
    if command is None:
        assert all(name in text for name in COMMANDS)
        return
    for param in _params(command):
        if param.param_type_name == "argument":
            continue
        for name in [*param.opts, *param.secondary_opts]:
            assert any(word.strip(",") == name for word in text.split()), (command, name)
    assert "Examples:" in text or "Example:" in text
    example = text.index("Example")
    assert all(example < text.index(f"\n{panel}:") for panel in ("Arguments", "Output") if f"\n{panel}:" in text)


def test_train_help_groups_its_options_in_panels(capsys, monkeypatch):
    """Options are grouped (model, classes, schedule, data, output, device), every option of every
    command sits in a named panel, and each help text is short (the details are in the README)."""
    text = _help("train", capsys, monkeypatch)
    headings = [line[:-1] for line in text.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert headings == ["Arguments", "Model", "Classes", "Schedule", "Data", "Output", "Device"], headings
    assert len(text.splitlines()) < 160  # the rich layout took 475 lines at 80 columns
    for command in COMMANDS:
        for param in _params(command):
            if param.param_type_name == "option":
                assert param.rich_help_panel, (command, param.name)
                assert len(param.help) <= 100, (command, param.name, len(param.help))


def test_the_help_check_sees_a_cut_name(capsys, monkeypatch):
    """Control for the width test: in a 40-column terminal a long option takes its own line but is
    never cut, and lines of prose still fit (the check would see a cut or overlong line)."""
    text = _help("train", capsys, monkeypatch, columns=40)
    assert "--canonical-class-head / --shared-class-head" in text
    assert "--latent-geome…" not in text


# --- every option checked when it is parsed: one line, exit 2 ---------------------------------


def _run(args, capsys):
    from ..conftest import run_cli

    return run_cli(args, capsys)


@pytest.mark.parametrize(
    "args, says",
    [
        (["encode", "--batch-size", "0", "run", "scan.npy", "-o", "out.h5"], "--batch-size"),
        (["train", "patches.h5", "-o", "run", "--batch-size", "0"], "--batch-size"),
        (["manifold", "run", "-o", "m.png", "--steps", "0"], "--steps"),
        (["generate", "run", "-o", "g.png", "--z", "a"], "--z"),
        (["generate", "run", "-o", "g.png", "--shift", "1"], "--shift"),
        (["export", "encoded.h5", "-o", "maps", "--radius", "-1"], "--radius"),
        (["export", "encoded.h5", "-o", "maps", "--radius", "0"], "--radius"),
        (["encode", "run", "scan.npy", "-o", "out.h5", "--input-kind", "pictures"], "--input-kind"),
        (["find-atoms", "scan.npy", "-o", "a.h5", "--displacements", "B:A"], "--displacements"),
        (["find-atoms", "scan.npy", "-o", "a.h5", "--method", "blob"], "--method"),
        (["find-atoms", "scan.npy", "-o", "a.h5", "--device", "gpu"], "--device"),
        (["train", "patches.h5", "-o", "run", "--classes", "three"], "--classes"),
        (["train", "patches.h5", "-o", "run", "--pixel-fraction", "0"], "--pixel-fraction"),
        (["train", "patches.h5", "-o", "run", "--encoder", "cnn"], "--encoder"),
        (["extract", "scan.npy", "-o", "p.h5", "--grid", "8", "--normalize", "max"], "--normalize"),
        (["export", "encoded.h5", "-o", "maps", "--format", "tiff,jpg"], "--format"),
    ],
)
def test_bad_options_are_one_line_exit_2(args, says, tmp_path, capsys, monkeypatch):
    """Each is refused before any file is read (none of the files exists): exit 2, one line
    naming the option. Before, these ended as 'internal error' (exit 1) or wrote empty maps."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0] and lines[0].startswith("error:"), err


def test_duplicate_label_rows_are_refused(tmp_path):
    """Two rows for one patch: the second would silently overwrite the first."""
    from microvae.errors import InputError
    from microvae.stages import read_labels

    path = tmp_path / "labels.csv"
    path.write_text("patch_index,class\n3,0\n5,1\n3,1\n")
    with pytest.raises(InputError, match="patch 3 is labelled again .first on line 2"):
        read_labels(path, 10, 2)
    path.write_text("patch_index,class\n3,0\n5,1\n")
    assert read_labels(path, 10, 2).tolist() == [-1, -1, -1, 0, -1, 1, -1, -1, -1, -1]


# --- input kinds from the data and the run --------------------------------------------------


def test_input_kind_from_the_data(tmp_path):
    """A 2-D array is a scan whatever its extension; frames of the run's patch shape are patches,
    larger frames scans; a 2-D array of one patch's shape is refused naming both readings."""
    import numpy as np
    import tifffile

    from microvae.errors import InputError, ParameterError
    from microvae.stages import input_kind

    np.save(tmp_path / "scan.npy", np.zeros((128, 128), np.float32))
    np.save(tmp_path / "stack.npy", np.zeros((50, 16, 16), np.float32))
    np.save(tmp_path / "frames.npy", np.zeros((3, 128, 128), np.float32))
    np.save(tmp_path / "one.npy", np.zeros((16, 16), np.float32))
    np.save(tmp_path / "tiny.npy", np.zeros((3, 8, 8), np.float32))
    np.save(tmp_path / "other.npy", np.zeros((10, 20, 20), np.float32))
    np.save(tmp_path / "four.npy", np.zeros((10, 1, 20, 20), np.float32))
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((50, 16, 16), np.float32))
    tifffile.imwrite(tmp_path / "scan.tif", np.zeros((128, 128), np.float32))
    import h5py

    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["stack"] = np.zeros((50, 16, 16), np.float32)
        handle["scan"] = np.zeros((128, 128), np.float32)
    assert input_kind(tmp_path / "scan.npy", 16) == "scans"
    assert input_kind(tmp_path / "stack.npy", 16) == "patches"
    assert input_kind(tmp_path / "frames.npy", 16) == "scans"
    assert input_kind(tmp_path / "stack.tif", 16) == "patches"
    assert input_kind(tmp_path / "scan.tif", 16) == "scans"
    assert input_kind(f"{tmp_path / 'data.h5'}:/stack", 16) == "patches"
    assert input_kind(f"{tmp_path / 'data.h5'}:/scan", 16) == "scans"
    with pytest.raises(ParameterError, match="--input-kind patches or --input-kind scans"):
        input_kind(tmp_path / "one.npy", 16)
    assert input_kind(tmp_path / "one.npy", 16, "scans") == "scans"
    with pytest.raises(ParameterError, match="patches of another shape .* or as scans barely larger"):
        input_kind(tmp_path / "other.npy", 16)
    assert input_kind(tmp_path / "four.npy", 16) == "patches"  # (N, C, H, W): its shape is checked by encode
    for name, side in (("tiny.npy", 16), ("stack.npy", 24)):  # frames smaller than this run's patches
        with pytest.raises(InputError, match="neither patches"):
            input_kind(tmp_path / name, side)


def test_encode_pretrained_reads_a_2d_npy_as_a_scan(tmp_path, capsys):
    """The README's use: ``encode --pretrained run/ scan.npy`` on a 2-D .npy scan encodes it (it was
    taken as a stack of one patch and refused); detection overrides with a patch stack are refused."""
    import numpy as np

    from microvae.synthetic import make_lattice

    image = make_lattice(shape=(96, 96), seed=4).image.astype(np.float32)
    tif = tmp_path / "scan.tif"
    import tifffile

    tifffile.imwrite(tif, image)
    patches = tmp_path / "patches.h5"
    assert _run(["extract", tif, "--grid", "8", "--window", "12", "-o", patches, "-q"], capsys)[0] == 0
    run = tmp_path / "run"
    code, _, err = _run(
        ["train", patches, "-o", run, "--classes", "2", "--hidden", "16", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "-q"], capsys
    )
    assert code == 0, err
    scan = tmp_path / "scan.npy"
    np.save(scan, image)
    code, _, err = _run(["encode", "--pretrained", run, scan, "-o", tmp_path / "encoded.h5", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    code, _, err = _run(["encode", run, patches, "-o", tmp_path / "again.h5", "--spacing", "8", "-q"], capsys)
    assert code == 2 and "--spacing" in err and "patches already cut" in err, err

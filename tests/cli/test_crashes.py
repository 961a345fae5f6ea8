"""Crashes (issue 7, the fault matrix, item 1): SIGKILL ``microvae train`` and ``microvae pipeline``
at random moments and inside their writes, rerun the same command each time, and check that the work
finishes, every artifact opens, nothing is left behind (temporary files, lock files) and, on the CPU
with a fixed seed, the weights and results equal those of an uninterrupted run.

Importing the CLI costs about 5 s (torch, scipy) and the first optimiser another 2 s, more than the
tiny runs themselves; so the killed commands run in processes forked from one *fork server*
(:data:`DRIVER`) that imported microvae once. Each child runs ``microvae.cli.main.main(ARGS)``, the
console script's entry point, in a fresh copy of that imported state, with its own pid; the server
kills it with SIGKILL at a chosen time, or a crash plan makes it SIGKILL itself at a chosen point
(a stage's entry, half-way through writing a file, right after a rename). The run that finishes the
work after the kills is the real command, ``python -m microvae.cli ...``, in a new interpreter.
All processes use one torch thread (the same arithmetic everywhere, and polite on a shared machine).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch

from microvae.config import ExtractConfig
from microvae.errors import InputError
from microvae.patches import PatchParams
from microvae.run_folder import load_checkpoint
from microvae.stages import run_extract
from microvae.synthetic import make_lattice

REPO = Path(__file__).resolve().parents[2]
KILLED = -signal.SIGKILL
ENV = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MICROVAE_DEBUG")}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")

DRIVER = r'''
"""Fork server of tests/cli/test_crashes.py. Reads one JSON request per line on stdin:
{"argv": [...], "log": PATH, "events": PATH, "crash": PLAN or null, "kill_after": SECONDS or null},
forks a child that runs ``microvae ARGV`` (stdout and stderr into ``log``), SIGKILLs it after
``kill_after`` seconds if it is still running, and answers one JSON line: {"code": exit status
(-9: killed by SIGKILL), "killed_by_server", "started" (epoch seconds at the fork), "seconds"}.

Crash plans, the child SIGKILLs itself:
  {"at": "entry", "stage": STAGE}               when pipeline stage STAGE (find-atoms, ...) starts;
  {"at": "mid-write", "file": NAME, "nth": N}   at the N-th atomic write of a file named NAME: its
                                                 temporary file is written, then cut to half its
                                                 bytes, and the process dies before the rename;
  {"at": "after-rename", "file": NAME, "nth": N} right after that rename (an artifact's lock is
                                                 still held: a stale lock stays behind).
Each child appends JSON events to ``events``: stage entries, the epoch a training run resumed from
(event "fit"), each checkpoint written, and where it killed itself.
"""
import io
import json
import os
import signal
import sys
import time
import traceback

import torch
import torch._dynamo  # noqa: F401  (imported by the first optimiser: 2 s, paid once here)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import microvae.stages as stages
import microvae.training as training

PLAN = {}
EVENTS = [None]
STAGE = [None]
WRITES = {}


def event(**record):
    record["t"] = time.time()
    with open(EVENTS[0], "a") as handle:
        handle.write(json.dumps(record) + "\n")


def die(where):
    event(event="killed", where=where, stage=STAGE[0])
    os.kill(os.getpid(), signal.SIGKILL)


_replace = os.replace


def replace(source, target, *args, **kwargs):
    """os.replace, the commit step of every atomic write (artifacts.atomic_file, training's
    _atomic_write_bytes): the place to die half-way through a write or just after it."""
    name = os.path.basename(os.fspath(target))
    if PLAN.get("file") == name:
        WRITES[name] = WRITES.get(name, 0) + 1
        if WRITES[name] == PLAN.get("nth", 1):
            if PLAN["at"] == "mid-write":
                os.truncate(source, os.path.getsize(source) // 2)
                die(f"mid-write {name}")
            _replace(source, target, *args, **kwargs)
            die(f"after-rename {name}")
    return _replace(source, target, *args, **kwargs)


os.replace = replace


def track(function_name, stage):
    original = getattr(stages, function_name)

    def run_stage(*args, **kwargs):
        STAGE[0] = stage
        event(event="stage", stage=stage)
        if PLAN.get("at") == "entry" and PLAN.get("stage") == stage:
            die(f"entry {stage}")
        return original(*args, **kwargs)

    setattr(stages, function_name, run_stage)


for function_name, stage in (("run_find_atoms", "find-atoms"), ("run_extract", "extract"), ("run_train", "train"),
                             ("run_encode", "encode"), ("run_export", "export")):
    track(function_name, stage)

_load_resumable = training._load_resumable_checkpoint


def load_resumable(*args, **kwargs):
    checkpoint = _load_resumable(*args, **kwargs)
    event(event="fit", resumed_from=None if checkpoint is None else int(checkpoint["epoch"]))
    return checkpoint


training._load_resumable_checkpoint = load_resumable
_save_checkpoint = training._save_checkpoint


def save_checkpoint(path, state, completed_epochs):
    _save_checkpoint(path, state, completed_epochs)
    event(event="checkpoint", epoch=completed_epochs)


training._save_checkpoint = save_checkpoint

from microvae.cli.main import main  # noqa: E402  (after the patches: the CLI binds run_train by name)

figure = Figure(figsize=(2, 2))       # load matplotlib's fonts once (no torch work before forking)
FigureCanvasAgg(figure)
figure.subplots().plot([0, 1])
figure.savefig(io.BytesIO(), format="png")


def child(request):
    code = 98
    try:
        PLAN.update(request.get("crash") or {})
        EVENTS[0] = request["events"]
        descriptor = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)
        torch.set_num_threads(1)
        try:
            main(request["argv"])
            code = 97
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    started = time.time()
    pid = os.fork()
    if pid == 0:
        child(request)
    deadline = None if request.get("kill_after") is None else time.monotonic() + request["kill_after"]
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)       # our child, not yet reaped: its pid cannot be reused
            killed = True
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.003)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "killed_by_server": killed, "started": started,
                      "seconds": time.time() - started}), flush=True)
'''


@dataclass
class Outcome:
    code: int
    killed_by_server: bool
    started: float
    seconds: float
    events: list
    log: str


class ForkServer:
    """Runs ``microvae ARGS`` in children of one process that imported microvae (see DRIVER)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0
        driver = folder / "fork_server.py"
        driver.write_text(DRIVER)
        self.stderr = open(folder / "fork_server.err", "w")
        self.process = subprocess.Popen(
            [sys.executable, str(driver)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=ENV, cwd=folder
        )
        self._expect("ready")

    def _expect(self, what: str) -> str:
        line = self.process.stdout.readline()
        if not line:
            self.stderr.flush()
            raise RuntimeError(f"fork server died (expected {what}): {(self.folder / 'fork_server.err').read_text()[-3000:]}")
        return line

    def run(self, argv: list, crash: dict | None = None, kill_after: float | None = None) -> Outcome:
        self.count += 1
        log, events = self.folder / f"run_{self.count}.log", self.folder / f"run_{self.count}.events"
        request = {"argv": [str(a) for a in argv], "log": str(log), "events": str(events), "crash": crash, "kill_after": kill_after}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self._expect("an exit status"))
        recorded = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
        return Outcome(answer["code"], answer["killed_by_server"], answer["started"], answer["seconds"], recorded, log.read_text() if log.exists() else "")

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fork_server = ForkServer(tmp_path_factory.mktemp("fork_server"))
    yield fork_server
    fork_server.close()


def real_command(argv: list) -> subprocess.CompletedProcess:
    """``python -m microvae.cli ARGV`` in a new interpreter."""
    return subprocess.run([sys.executable, "-m", "microvae.cli", *[str(a) for a in argv]], env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)


# --- what every finished folder must satisfy ------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    """Temporary files (hidden ``.NAME.PID.tmp…``) and lock files (``*.lock``) under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".lock") or ".tmp" in p.name)


def files_of(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def check_everything_opens(folder: Path) -> None:
    """Every file the stages write opens with its reader."""
    from PIL import Image

    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        suffix = path.suffix
        if suffix == ".h5":
            with h5py.File(path, "r") as handle:
                assert "microvae_artifact" in handle.attrs, path
                handle.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
        elif suffix == ".pt":
            load_checkpoint(path)
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".csv":
            assert list(csv.DictReader(path.open())), path
        elif suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        elif suffix == ".tif":
            tifffile.imread(path)
        elif suffix == ".npz":
            with np.load(path) as arrays:
                assert arrays.files and all(arrays[name].size for name in arrays.files), path
        else:
            raise AssertionError(f"unexpected file {path}")


def log_rows(run: Path) -> list[dict]:
    """log.csv without its timing columns (which differ between any two runs)."""
    with (run / "log.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in csv.DictReader(handle)]


def assert_same_weights(run: Path, reference: Path) -> None:
    ours = load_checkpoint(run / "checkpoints" / "final.pt")["model_state"]
    theirs = load_checkpoint(reference / "checkpoints" / "final.pt")["model_state"]
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), f"{name} differs from the uninterrupted run"


def checkpoint_epoch(run: Path) -> int:
    last = run / "checkpoints" / "last.pt"
    try:
        return int(load_checkpoint(last)["epoch"])
    except InputError:
        return 0


# --- microvae train ---------------------------------------------------------------------------------

EPOCHS = 8


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    """About 900 grid patches of 12×12 from a synthetic lattice, as a patches artifact (the extract stage)."""
    folder = tmp_path_factory.mktemp("crash_patches")
    scan = folder / "scan.tif"
    tifffile.imwrite(scan, make_lattice(shape=(128, 128), seed=9).image)
    run_extract([str(scan)], folder / "patches.h5", ExtractConfig(PatchParams(window=12, grid_step=4)))
    return folder / "patches.h5"


def train_argv(patches: Path, run: Path) -> list:
    return [
        "train",
        patches,
        "-o",
        run,
        "--classes",
        "2",
        "--hidden",
        "16",
        "--batch-size",
        "32",
        "--epochs",
        EPOCHS,
        "--checkpoint-every",
        "1",
        "--seed",
        "3",
        "--device",
        "cpu",
        "-q",
        "--class-init",
        "none",
    ]
    # --class-init none: the kills are timed on the main training loop; an interrupted class
    # initialisation resumes through the same fit (tests/test_discovery.py)


def test_train_killed_eleven_times_ends_with_the_uninterrupted_weights(server, patches, tmp_path):
    reference = tmp_path / "reference"
    straight = server.run(train_argv(patches, reference))
    assert straight.code == 0, straight.log
    startup = next(e["t"] for e in straight.events if e["event"] == "fit") - straight.started
    duration = straight.seconds

    run = tmp_path / "run"
    argv = train_argv(patches, run)
    # killed while writing the second checkpoint: the first one survives, whole
    outcome = server.run(argv, crash={"at": "mid-write", "file": "last.pt", "nth": 2})
    assert outcome.code == KILLED and outcome.events[-1]["where"] == "mid-write last.pt", outcome.log
    checkpoints = run / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == 1
    partial = [p for p in checkpoints.iterdir() if p.name != "last.pt"]
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    with pytest.raises(InputError):
        load_checkpoint(partial[0])

    # ten kills at moments drawn at random over the uninterrupted run's time, from the start of
    # training to its end: moment t falls in the work after the checkpoint of epoch k that the
    # reference wrote at c_k, so an attempt that resumes from epoch k is killed t - c_k seconds
    # after its own training starts (each attempt resumes from where the kills left the folder)
    written = {0: startup} | {e["epoch"]: e["t"] - straight.started for e in straight.events if e["event"] == "checkpoint"}
    moments = np.sort(np.random.default_rng(7).uniform(startup, duration, 10))
    attempts = []
    for moment in moments:
        done = checkpoint_epoch(run)
        kill_after = startup + max(moment - written[done], 0.0)
        outcome = server.run(argv, kill_after=kill_after)
        assert outcome.code in (0, KILLED), outcome.log
        attempts.append(
            {
                "moment_s": round(float(moment), 2),
                "from_epoch": done,
                "kill_after_s": round(float(kill_after), 2),
                "code": outcome.code,
                "resumed_from": [e["resumed_from"] for e in outcome.events if e["event"] == "fit"],
                "epoch_after": checkpoint_epoch(run),
                "leftovers": leftovers(run),
            }
        )
    print(
        f"\nuninterrupted run {duration:.2f} s, training from {startup:.2f} s, checkpoints at "
        + ", ".join(f"{t:.2f}" for t in written.values())
        + " s; attempts:\n"
        + "\n".join(map(str, attempts))
    )
    first_resume = next(a["resumed_from"][0] for a in attempts if a["resumed_from"])
    assert first_resume == 1, attempts  # resumed from the checkpoint that survived
    assert sum(a["code"] == KILLED for a in attempts) >= 7, attempts

    finish = real_command(argv)
    assert finish.returncode == 0, finish.stderr
    assert load_checkpoint(checkpoints / "final.pt")["epoch"] == EPOCHS
    assert_same_weights(run, reference)
    assert log_rows(run) == log_rows(reference)
    assert files_of(run) == files_of(reference)
    check_everything_opens(run)
    check_everything_opens(patches.parent)
    assert leftovers(run) == []


# --- microvae pipeline -----------------------------------------------------------------------------

PIPELINE_CONFIG = """
[find_atoms]
refine = "com"

[extract]
window = 12

[train]
classes = 2
latent_dim = 2
translation = false
epochs = 3
checkpoint_every = 1
hidden = 16
batch_size = 32
seed = 4
device = "cpu"

[export]
formats = ["h5", "tiff"]
"""

#: (the stage it must die in, the crash plan), run one after the other on the same output folder
PIPELINE_CRASHES = [
    ("find-atoms", {"at": "entry", "stage": "find-atoms"}),
    ("find-atoms", {"at": "mid-write", "file": "atoms.h5"}),
    ("find-atoms", {"at": "after-rename", "file": "atoms.h5"}),
    ("extract", {"at": "entry", "stage": "extract"}),
    ("extract", {"at": "mid-write", "file": "patches.h5"}),
    ("extract", {"at": "after-rename", "file": "patches.h5"}),
    ("train", {"at": "entry", "stage": "train"}),
    ("train", {"at": "mid-write", "file": "selection.json"}),  # the class initialisation (run/init/)
    ("train", {"at": "mid-write", "file": "last.pt", "nth": 2}),  # the pose run (run/init/pose) was finished before
    ("train", {"at": "after-rename", "file": "final.pt"}),
    ("encode", {"at": "entry", "stage": "encode"}),
    ("encode", {"at": "mid-write", "file": "encoded.h5"}),
    ("encode", {"at": "after-rename", "file": "encoded.h5"}),
    ("export", {"at": "entry", "stage": "export"}),
    ("export", {"at": "mid-write", "file": "00_scan_class.tif"}),
    ("export", {"at": "after-rename", "file": "maps.h5"}),
]


def h5_contents(path: Path) -> dict:
    contents = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: contents.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
        for key in ("fingerprint", "scan_summaries", "training_statistics"):
            contents[f"@{key}"] = handle.attrs.get(key)
    return contents


def assert_same_h5(path: Path, reference: Path, fingerprint: bool) -> None:
    ours, theirs = h5_contents(path), h5_contents(reference)
    if not fingerprint:  # encoded.h5 and maps.h5 hash final.pt's bytes, which hold the epochs' timings
        ours.pop("@fingerprint"), theirs.pop("@fingerprint")
    assert ours.keys() == theirs.keys(), path
    for key, value in theirs.items():
        other = ours[key]
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.array_equal(other, value, equal_nan=True), f"{path}: {key}"
        elif isinstance(value, np.ndarray):
            assert np.array_equal(other, value), f"{path}: {key}"
        else:
            assert other == value, f"{path}: {key}"


def test_pipeline_killed_in_every_stage_ends_with_the_uninterrupted_results(server, tmp_path):
    config = tmp_path / "study.toml"
    config.write_text(PIPELINE_CONFIG)
    scan = tmp_path / "scan.tif"
    tifffile.imwrite(scan, make_lattice(shape=(112, 112), seed=21).image, imagej=True, resolution=(50, 50), metadata={"unit": "nm"})
    reference, out = tmp_path / "reference", tmp_path / "out"
    straight = server.run(["pipeline", config, scan, "-o", reference, "-q"])
    assert straight.code == 0, straight.log

    argv = ["pipeline", config, scan, "-o", out, "-q"]
    for stage, plan in PIPELINE_CRASHES:
        outcome = server.run(argv, crash=plan)
        assert outcome.code == KILLED, f"{plan}: {outcome.log}"
        assert outcome.events[-1]["event"] == "killed" and outcome.events[-1]["stage"] == stage, (plan, outcome.events)
        if plan == {"at": "mid-write", "file": "last.pt", "nth": 2}:
            assert load_checkpoint(out / "run" / "checkpoints" / "last.pt")["epoch"] == 1
    finish = real_command(argv)
    assert finish.returncode == 0, finish.stderr

    assert files_of(out) == files_of(reference)
    check_everything_opens(out)
    assert leftovers(out) == []
    for name in ("atoms.h5", "patches.h5"):
        assert_same_h5(out / name, reference / name, fingerprint=True)
    for name in ("encoded.h5", "maps/maps.h5"):
        assert_same_h5(out / name, reference / name, fingerprint=False)
    for path in sorted((reference / "maps").glob("*.tif")):
        assert np.array_equal(tifffile.imread(out / "maps" / path.name), tifffile.imread(path), equal_nan=True), path.name
    assert_same_weights(out / "run", reference / "run")
    assert log_rows(out / "run") == log_rows(reference / "run")
    assert json.loads((out / "run" / "training_stats.json").read_text()) == json.loads((reference / "run" / "training_stats.json").read_text())


# --- the clean-up the reruns rely on, in isolation ----------------------------------------------------


def test_files_left_by_dead_writers_are_cleared_and_live_ones_kept(tmp_path):
    from microvae import artifacts
    from microvae.artifacts import Provenance

    finished = subprocess.Popen(["true"])
    finished.wait()
    dead, alive = finished.pid, os.getppid()
    target = tmp_path / "a.h5"
    for pid in (dead, alive):
        (tmp_path / f".a.{pid}.tmp.h5").write_bytes(b"half")
    (tmp_path / f".last.pt.{dead}.tmp").write_bytes(b"half")
    provenance = Provenance(stage="find-atoms", parameters={}, inputs=[{"path": "x.tif", "sha256": "ab" * 32, "role": "image"}])
    with artifacts.atomic_h5(target, provenance, "atoms") as handle:
        artifacts.write_dataset(handle, "coords", np.zeros((3, 2)), "px", "test")
    from microvae.training import _atomic_write_bytes

    _atomic_write_bytes(tmp_path / "last.pt", b"weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.h5", f".a.{alive}.tmp.h5", "last.pt"])

    # a writer killed between the rename and the lock's removal: an up-to-date check clears its lock
    lock = tmp_path / "a.h5.lock"
    lock.write_text(str(alive))
    assert artifacts.plan_output(target, provenance.fingerprint).action == "skip"
    assert lock.exists()  # a live holder's lock stays
    lock.write_text(str(dead))
    assert artifacts.plan_output(target, provenance.fingerprint).action == "skip"
    assert not lock.exists()

"""microvae train (stages/train.py): run folders, resume, provenance, the estimate before the work."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from ..conftest import run_cli
from .conftest import TINY


def test_train_resume_encode(tmp_path, patches_file, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", patches_file, "-o", run, "--classes", "2", "--epochs", "2", "--checkpoint-every", "1", *TINY], capsys)
    assert code == 0, err
    for name in ("config.json", "provenance.json", "log.csv", "loss.png", "checkpoints/last.pt", "checkpoints/final.pt"):
        assert (run / name).exists(), name
    checkpoint = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    record = json.loads((run / "provenance.json").read_text())
    assert record["recipe"]["extract"]["window"] == 16 and record["upstream"][0]["kind"] == "patches"

    code, out, _ = run_cli(["train", patches_file, "-o", run, "--classes", "2", "--epochs", "2", *TINY[:-1]], capsys)
    assert code == 0 and "up to date" in out
    code, _, err = run_cli(["train", patches_file, "-o", run, "--classes", "3", "--epochs", "2", *TINY], capsys)
    assert code == 2 and "--force" in err
    # more epochs with the same settings continue the run
    code, _, err = run_cli(["train", patches_file, "-o", run, "--classes", "2", "--epochs", "3", "--checkpoint-every", "1", *TINY], capsys)
    assert code == 0, err
    assert torch.load(run / "checkpoints" / "final.pt", weights_only=True)["epoch"] == 3
    assert len((run / "log.csv").read_text().strip().splitlines()) == 1 + 3

    encoded = tmp_path / "encoded.h5"
    code, _, err = run_cli(["encode", run, patches_file, "-o", encoded, "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    with h5py.File(encoded) as handle, h5py.File(patches_file) as source:
        count = len(source["patches"])
        assert handle.attrs["microvae_artifact"] == "encoded"
        assert handle["class_probs"].shape == (count, 2)
        np.testing.assert_allclose(handle["class_probs"][()].sum(1), 1.0, atol=1e-5)
        assert handle["z_mean"].shape == (count, 2) and handle["angle_rad"].shape == (count,)
        assert handle["shift_px"].attrs["units"] == "px"
        np.testing.assert_array_equal(handle["coords"][()], source["coords"][()])
        assert np.all(np.abs(handle["angle_rad"][()]) <= np.pi + 1e-6)


def test_train_on_a_bare_npy_stack(tmp_path, capsys):
    stack = np.random.default_rng(1).random((64, 12, 12)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    code, _, err = run_cli(["train", tmp_path / "stack.npy", "-o", tmp_path / "run", "--classes", "0", "--epochs", "1", *TINY], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert record["input_kind"] == "stack" and record["parameters"]["model"]["image_size"] == 12


def test_train_turns_the_mean_offset_on_without_pose_latents(tmp_path, capsys):
    """--no-rotation --no-translation puts the decoder's mean offset on (config.json); a pose
    latent, or --no-mean-offset, leaves it off; --mean-offset forces it with a pose."""
    stack = np.random.default_rng(2).random((64, 10, 10)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    cases = {
        "centred": (["--no-rotation", "--no-translation"], True),
        "off": (["--no-rotation", "--no-translation", "--no-mean-offset"], False),
        "turning": (["--no-translation"], False),
        "forced": (["--mean-offset"], True),
    }
    for name, (flags, expected) in cases.items():
        run = tmp_path / name
        code, _, err = run_cli(["train", tmp_path / "stack.npy", "-o", run, "--classes", "0", "--epochs", "1", *flags, *TINY], capsys)
        assert code == 0, err
        assert json.loads((run / "config.json").read_text())["model"]["mean_offset"] is expected, name


def test_train_states_its_work_and_expected_time_before_it_starts(tmp_path, patches_file):
    """Before training, run_train reports the work (patches × epochs left, plus the pose run's
    epochs) and a time measured on a few steps of the run's own model; a resumed run counts only
    the epochs it has left, and the CLI prints the line before the first epoch's."""
    from microvae.stages import run_train
    from microvae.training import configs_from_settings

    settings = dict(classes=2, latent_dim=1, hidden=16, batch_size=32, device="cpu", checkpoint_every=1, val_fraction=0.1)
    events = []
    model, train = configs_from_settings({**settings, "epochs": 2})
    run_train(patches_file, tmp_path / "run", model, train, progress=events.append)
    estimate = next(e for e in events if e["event"] == "estimate")
    assert events.index(estimate) < next(i for i, e in enumerate(events) if e["event"] == "batch")
    with h5py.File(patches_file) as handle:
        count = len(handle["patches"])
    pose = 1  # restart_fraction 0.2 of 2 epochs, at least 1
    assert estimate["patches"] == count and estimate["epochs"] == 2 and estimate["pose_epochs"] == pose
    assert estimate["passes"] == (count - round(0.1 * count)) * (2 + pose)
    assert estimate["samples_per_s"] > 0 and estimate["seconds"] == pytest.approx(estimate["passes"] / estimate["samples_per_s"])
    events.clear()
    model, train = configs_from_settings({**settings, "epochs": 3})
    run_train(patches_file, tmp_path / "run", model, train, progress=events.append)
    resumed = next(e for e in events if e["event"] == "estimate")
    assert resumed["epochs"] == 1 and resumed["done"] == 2 and resumed["pose_epochs"] == 0


def test_the_estimate_line_reads_as_minutes():
    from microvae.cli.train import estimate_line

    line = estimate_line({"patches": 12000, "epochs": 40, "done": 10, "pose_epochs": 0, "seconds": 252.0, "samples_per_s": 1904.8, "device": "cpu (2 threads)"})
    assert line.startswith("12,000 patches × 40 epochs left of 50 ≈ 4.2 min on cpu (2 threads) at 1,905 patches/s")


def test_run_train_leaves_the_callers_configs_as_they_were(tmp_path, patches_file):
    """Stages return results, they do not change their arguments: the data's patch size and
    likelihood go into the run's own config.json, not into the caller's dataclasses."""
    import dataclasses

    from microvae.run_folder import load_run
    from microvae.stages.train import run_train
    from microvae.training import configs_from_settings

    model, train = configs_from_settings(dict(classes=2, latent_dim=1, hidden=16, batch_size=32, device="cpu", epochs=1))
    before = (dataclasses.asdict(model), dataclasses.asdict(train))
    run_train(patches_file, tmp_path / "run", model, train)
    assert (dataclasses.asdict(model), dataclasses.asdict(train)) == before
    _, configs = load_run(tmp_path / "run")
    assert configs["model"].image_size == 16 and configs["model"].likelihood in ("bernoulli", "gaussian")
    assert model.likelihood == "auto"  # the control: the run resolved it, the caller's did not

"""microvae encode (stages/encode.py): trained runs over patches, mismatches refused, scores, the estimate."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ..conftest import run_cli
from .conftest import TINY


def test_encode_refuses_mismatched_patches(tmp_path, patches_file, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", patches_file, "-o", run, "--classes", "2", "--epochs", "1", *TINY], capsys)[0] == 0
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.random.default_rng(0).random((10, 1, 20, 20)).astype(np.float32))
    code, _, err = run_cli(["encode", run, wrong, "-o", tmp_path / "e.h5"], capsys)
    assert code == 2 and "1×20×20" in err and "1×16×16" in err
    code, _, err = run_cli(["encode", tmp_path / "nowhere", patches_file, "-o", tmp_path / "e.h5"], capsys)
    assert code == 2 and "no such run folder" in err
    code, _, err = run_cli(["train", tmp_path / "e.h5", "-o", tmp_path / "run2"], capsys)
    assert code == 2 and "no such file" in err
    assert not (tmp_path / "e.h5").exists()


def test_encode_without_scores_runs_the_encoder_alone_and_exports(tmp_path, patches_file, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", patches_file, "-o", run, "--classes", "2", "--epochs", "1", *TINY], capsys)[0] == 0
    full, fast = tmp_path / "full.h5", tmp_path / "fast.h5"
    assert run_cli(["encode", run, patches_file, "-o", full, "--device", "cpu", "-q"], capsys)[0] == 0
    code, _, err = run_cli(["encode", run, patches_file, "-o", fast, "--device", "cpu", "--no-scores", "-q"], capsys)
    assert code == 0, err
    with h5py.File(full) as with_scores, h5py.File(fast) as without:
        assert "recon_error" in with_scores and "neg_elbo" in with_scores and bool(with_scores.attrs["scores"])
        assert "recon_error" not in without and "neg_elbo" not in without and not bool(without.attrs["scores"])
        for name in ("class", "class_probs", "z_mean", "z_sd", "angle_rad", "shift_px", "coords"):
            np.testing.assert_allclose(without[name][()], with_scores[name][()], rtol=1e-5, atol=1e-5, err_msg=name)
    code, _, err = run_cli(["export", fast, "-o", tmp_path / "maps", "--format", "h5", "-q"], capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "maps" / "maps.h5") as maps:
        assert "class" in maps["image_00"] and "recon_error" not in maps["image_00"]
    code, _, err = run_cli(["encode", run, patches_file, "-o", tmp_path / "refined.h5", "--no-scores", "--refine", "3"], capsys)
    assert code == 2 and "--no-scores" in err and len(err.strip().splitlines()) == 1


def test_encode_states_its_work_and_expected_time_before_it_starts(tmp_path, patches_file, capsys):
    """Encoding many patches first reports the work (patches, decoder passes) and a time measured
    on a few of them with the same settings, before the first batch; a few patches get none."""
    from microvae.config import EncodeConfig
    from microvae.stages.encode import ESTIMATE_MIN_PATCHES, run_encode

    run = tmp_path / "run"
    assert run_cli(["train", patches_file, "-o", run, "--classes", "2", "--epochs", "1", *TINY], capsys)[0] == 0
    with h5py.File(patches_file) as handle:
        patches = handle["patches"][()]
    stack = tmp_path / "stack.npy"
    np.save(stack, np.concatenate([patches] * (ESTIMATE_MIN_PATCHES // len(patches) + 1)))
    order = []
    config = EncodeConfig(device="cpu", batch_size=64)
    run_encode(run, stack, tmp_path / "encoded.h5", config, progress=lambda *step: order.append("batch"), estimate=order.append)
    estimate = order[0]
    assert isinstance(estimate, dict) and all(step == "batch" for step in order[1:]) and len(order) > 1
    assert estimate["patches"] == len(np.load(stack)) and estimate["decoder_passes"] == 3 and estimate["members"] == 1
    assert estimate["samples_per_s"] > 0 and estimate["template_seconds"] > 0  # trained with rotation: the template search is timed too
    assert estimate["seconds"] == pytest.approx(estimate["patches"] / estimate["samples_per_s"] + estimate["template_seconds"])
    bare = []
    run_encode(run, stack, tmp_path / "bare.h5", EncodeConfig(device="cpu", batch_size=64, template_angle=False), estimate=bare.append)
    assert bare[0]["template_seconds"] == 0 and bare[0]["seconds"] == pytest.approx(bare[0]["patches"] / bare[0]["samples_per_s"])
    fast = []
    run_encode(run, stack, tmp_path / "fast.h5", EncodeConfig(device="cpu", scores=False), estimate=fast.append)
    assert fast[0]["decoder_passes"] == 0
    few = []
    run_encode(run, patches_file, tmp_path / "few.h5", config, estimate=few.append)
    assert len(patches) < ESTIMATE_MIN_PATCHES and few == []
    code, _, err = run_cli(["encode", run, stack, "-o", tmp_path / "cli.h5", "--device", "cpu", "--force"], capsys)
    assert code == 0 and "patches (encoder + 3 decoder passes each): " in err, err


def test_the_encode_estimate_line_names_the_work():
    from microvae.cli.encode import estimate_line

    event = {"patches": 20000, "decoder_passes": 3, "refine_steps": 0, "members": 1, "seconds": 72.0, "samples_per_s": 277.8, "device": "cpu (2 threads)"}
    assert estimate_line(event).startswith("20,000 patches (encoder + 3 decoder passes each): ≈ 1.2 min on cpu (2 threads) at 278 patches/s (timed")
    assert "at 278 patches/s; template search ≈ 30 s of it (timed" in estimate_line({**event, "template_seconds": 30.0})
    assert "(encoder + 50 refinement steps each, 3 ensemble members): ≈ 9 s" in estimate_line({**event, "refine_steps": 50, "members": 3, "seconds": 9.0})


def test_encode_writes_the_template_angle_and_export_maps_it(tmp_path, patches_file, capsys):
    """A run trained with rotation keeps its class templates; encode (with scores, or when asked)
    poses every patch against its class's template (``template_angle_rad`` in rad,
    ``template_match``) and export maps both; ``--no-scores`` alone (the encoder at full speed),
    ``--no-template-angle`` and a run without rotation leave them out; a corrupt templates file is
    named (exit 2)."""
    from microvae.templates import TEMPLATES_FILE

    run, flat = tmp_path / "run", tmp_path / "flat"
    assert run_cli(["train", patches_file, "-o", run, "--classes", "2", "--epochs", "1", *TINY], capsys)[0] == 0
    assert (run / TEMPLATES_FILE).exists()
    code, _, err = run_cli(["encode", run, patches_file, "-o", tmp_path / "e.h5", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "e.h5") as handle:
        angle, match = handle["template_angle_rad"][()], handle["template_match"][()]
        assert handle["template_angle_rad"].attrs["units"] == "rad" and len(angle) == len(handle["class"])
        assert np.all(np.abs(angle) <= np.pi) and np.all((match > -1.0001) & (match < 1.0001)) and np.isfinite(angle).all()
    code, _, err = run_cli(["export", tmp_path / "e.h5", "-o", tmp_path / "maps", "--format", "h5", "-q"], capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "maps" / "maps.h5") as maps:
        assert {"template_angle_rad", "template_match"} <= set(maps["image_00"])
    for flags, written in ((["--no-scores"], False), (["--no-scores", "--template-angle"], True), (["--no-template-angle"], False)):
        target = tmp_path / f"{'_'.join(flags)}.h5"
        code, _, err = run_cli(["encode", run, patches_file, "-o", target, "--device", "cpu", "-q", *flags], capsys)
        assert code == 0, err
        with h5py.File(target) as handle:
            assert ("template_angle_rad" in handle) == written and "angle_rad" in handle, flags
            if written:
                np.testing.assert_allclose(handle["template_angle_rad"][()], angle, atol=1e-6)
    assert run_cli(["train", patches_file, "-o", flat, "--classes", "2", "--epochs", "1", "--no-rotation", *TINY], capsys)[0] == 0
    assert not (flat / TEMPLATES_FILE).exists()
    (run / TEMPLATES_FILE).unlink()  # a run from before the templates: encoded without one, and told so
    code, _, err = run_cli(["encode", run, patches_file, "-o", tmp_path / "old.h5", "--device", "cpu"], capsys)
    words = " ".join(err.split())
    assert code == 0 and "no template angle:" in words and "(trained by an older microvae); train again" in words, err
    (run / TEMPLATES_FILE).write_bytes(b"PK garbage")
    code, _, err = run_cli(["encode", run, patches_file, "-o", tmp_path / "bad.h5", "--force"], capsys)
    assert code == 2 and TEMPLATES_FILE in err and len(err.strip().splitlines()) == 1, err

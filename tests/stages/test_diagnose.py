"""Invariance diagnostics (microvae diagnose): exact bookkeeping; the moved copies are the renderer's
and the extractor's (turns by any angle, re-cut shifts); a plain VAE is caught drifting, and the
non-quarter turns catch what the quarter turns cannot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microvae.cards import CardsDataset, make_cards, render_moved
from microvae.diagnose import NO_SOURCE_NOTE, RECUTS, TRANSFORMS, artifact_source, invariance_report, report_dict, turn_patches
from microvae.encoding import encode_array
from microvae.metrics import circular_correlation
from microvae.models import JTRVAEConfig
from microvae.training import TrainConfig, build_model, fit

from ..conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def round_blobs(count: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """(count, 1, size, size) centred Gaussian blobs of random width: unchanged by quarter turns."""
    widths = np.random.default_rng(seed).uniform(1.0, 4.0, count)
    centre = (size - 1) / 2
    rows, cols = np.mgrid[:size, :size] - centre
    return np.exp(-(rows**2 + cols**2)[None] / (2 * widths[:, None, None] ** 2))[:, None].astype(np.float32)


def test_quarter_turns_of_symmetric_patches_do_not_move_any_model():
    model = build_model(JTRVAEConfig(image_size=16, n_classes=3, encoder_hidden=(32,), decoder_hidden=(16,)), seed=0)
    rows = {row.transform: row for row in invariance_report(model, round_blobs(50))}
    assert set(rows) == set(TRANSFORMS)
    for name in ("rotate 90°", "rotate 180°", "rotate 270°"):
        assert rows[name].z_drift < 1e-5 and rows[name].class_changed == 0.0 and rows[name].class_prob_shift < 1e-6
        # the patch did not change, so the encoded angle does not change either: the error is the turn
        assert rows[name].angle_error_deg == pytest.approx({"rotate 90°": 90, "rotate 180°": 180, "rotate 270°": 90}[name], abs=1e-3)
    assert rows["shift +1 px col"].z_drift > 1e-3  # an untrained encoder is not shift invariant


def first(cards: CardsDataset, count: int) -> CardsDataset:
    return CardsDataset(*(value[:count] for value in (cards.images, cards.labels, cards.angle_rad, cards.shear_rad, cards.scale, cards.shift_px)))


def test_turned_patches_are_the_renderers_turned_cards():
    """Turning a patch in place (a bare stack's 30°/45° rows) against rendering the card turned
    (ground truth): inside the inscribed disc they differ by the interpolation of the cards' sharp
    edges only (measured RMS 0.064 at 30°, 0.066 at 45°; bilinear: 0.076, 0.077), while a turn the
    other way (the control) is far off (0.31, 0.35; the pixel sd is 0.38); a quarter turn is
    numpy.rot90 exactly, in place and rendered."""
    cards = make_cards(200, size=16, max_angle_deg=180.0, seed=3)
    rows, cols = np.mgrid[:16, :16] - 7.5
    disc = np.hypot(rows, cols) <= 7.5

    def rms_in_disc(a, b):
        return float(np.sqrt(((a - b)[..., disc] ** 2).mean()))

    np.testing.assert_allclose(turn_patches(cards.images, np.pi / 2), np.rot90(cards.images, 1, axes=(2, 3)), atol=1e-5)
    np.testing.assert_allclose(render_moved(cards, np.pi / 2), np.rot90(cards.images, 1, axes=(2, 3)), atol=1e-4)
    for degrees in (30, 45):
        truth = render_moved(cards, np.radians(degrees))
        assert rms_in_disc(turn_patches(cards.images, np.radians(degrees)), truth) < 0.1
        assert rms_in_disc(turn_patches(cards.images, np.radians(-degrees)), truth) > 0.25
    turned = turn_patches(cards.images, np.radians(30))
    assert turned.min() >= cards.images.min() and turned.max() <= cards.images.max()  # no spline overshoot
    # a window moved by +1 row over the card sees the card 1 px higher: rolled by −1 row, but for
    # the last row, which the roll wraps round and the re-cut renders anew
    np.testing.assert_allclose(render_moved(cards, 0.0, (1.0, 0.0))[:, :, :-1], np.roll(cards.images, -1, axis=2)[:, :, :-1], atol=1e-4)


def test_recut_patches_come_from_the_scan_as_extract_cut_them(tmp_path, lattice_tif, capsys):
    """A patches artifact's source cuts its patches again from the recorded scan: unmoved they are
    the stored patches bit for bit; a window moved by one grid step is the neighbouring stored patch;
    a quarter turn is numpy.rot90 of the stored patch. `diagnose` on the artifact reports the re-cut
    rows; on a bare stack, or when the scan changed (the controls), it leaves them out and says why."""
    import shutil

    import h5py

    from microvae.config import ExtractConfig
    from microvae.patches import PatchParams
    from microvae.stages import run_extract

    scan, _ = lattice_tif
    patches = tmp_path / "p.h5"
    run_extract([str(scan)], patches, ExtractConfig(PatchParams(window=12, grid_step=6)))
    with h5py.File(patches) as handle:
        stored, coords = handle["patches"][()], handle["coords"][()]
    source, note = artifact_source(patches)
    assert source is not None and "re-cut" in note
    np.testing.assert_array_equal(source(0.0, (0.0, 0.0)), stored)
    below = {tuple(c): i for i, c in enumerate(coords)}
    pairs = [(i, below[(r + 6, c)]) for i, (r, c) in enumerate(coords) if (r + 6, c) in below]
    moved = source(0.0, (6.0, 0.0))
    np.testing.assert_array_equal(moved[[i for i, _ in pairs]], stored[[j for _, j in pairs]])
    np.testing.assert_allclose(source(np.pi / 2, (0.0, 0.0)), np.rot90(stored, 1, axes=(2, 3)), atol=1e-5)
    assert np.abs(source(np.radians(30), (0.0, 0.0)) - stored).mean() > 0.05  # a turn moves the lattice

    model_config = JTRVAEConfig(image_size=12, n_classes=2, encoder_hidden=(16,), decoder_hidden=(16,))
    fit(stored, model_config, TrainConfig(epochs=1, device="cpu", val_fraction=0.0, checkpoint_every=1), tmp_path / "run")
    code, out, err = run_cli(["diagnose", tmp_path / "run", patches, "--device", "cpu", "--json", "--limit", "100"], capsys)
    assert code == 0, err
    report = json.loads(out)["model"]
    names = [row["transform"] for row in report["rows"]]
    assert names == list(TRANSFORMS) + list(RECUTS) and report["max_z_drift_recut"] is not None
    assert {row["how"] for row in report["rows"] if row["transform"].startswith(("turn", "re-cut"))} == {"re-cut from the scan"}
    assert all(row["shift_error_px"] is not None for row in report["rows"] if row["transform"].startswith(("shift", "re-cut")))

    np.save(tmp_path / "stack.npy", stored)
    code, out, err = run_cli(["diagnose", tmp_path / "run", tmp_path / "stack.npy", "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)["model"]
    assert [row["transform"] for row in report["rows"]] == list(TRANSFORMS) and report["max_z_drift_recut"] is None
    assert report["notes"] == [NO_SOURCE_NOTE] and artifact_source(tmp_path / "stack.npy") == (None, NO_SOURCE_NOTE)

    elsewhere = tmp_path / "moved"  # the scan is also found beside the artifact
    elsewhere.mkdir()
    shutil.copy(patches, elsewhere / "p.h5")
    shutil.move(scan, elsewhere / scan.name)
    assert artifact_source(elsewhere / "p.h5")[0] is not None
    import tifffile

    tifffile.imwrite(elsewhere / scan.name, np.zeros((192, 192), np.float32) + np.eye(192, dtype=np.float32))
    source, note = artifact_source(elsewhere / "p.h5")
    assert source is None and "changed" in note


@pytest.mark.parametrize("seed", [0, 1])
def test_the_equivariant_jtrvae_is_invariant_where_a_plain_vae_and_the_mlp_encoder_are_not(tmp_path, capsys, seed):
    """Issue 5's benchmark in small: on cards turned by any angle, the j-trVAE with the equivariant
    encoder moves z by ≤ 0.1 sd under quarter turns and 1-px shifts (measured 0.000–0.001) and its
    angle takes the turn, while a plain VAE (measured 0.6–0.9) and the j-trVAE with the paper's MLP
    encoder (measured 0.3–0.5) drift. The invariant model must also have learned: it reconstructs
    (measured 0.19 of the pixel variance) and its angle follows the true angle of an asymmetric suit
    (measured 0.87–0.95); the untrained model (control) reconstructs worse than the variance.

    The moves the encoder does not build in, measured on the cards rendered turned and moved
    (seeds 0, 1): re-cut 1-px shifts leave the equivariant z put (0.000; on cards, whose edges are
    empty, a re-cut is a roll) and its shift follows the move (error 0.000 px); the MLP encoder's
    shift follows it to 0.20–0.34 px (untrained: 0.88–1.36). Turns by 30° and 45° move the
    equivariant z by 0.21–0.34 sd, less than the plain VAE's 0.36–0.59 and the untrained
    equivariant encoder's 0.93–0.96 (which is exact under quarter turns: only these rows catch it),
    but its angle does not follow them (mean error 58–66°; untrained 71–92°): its angle posterior
    is nearly flat (median concentration |m_v|/sd_v below 0.05) and its mode jumps. (At the benchmark's
    size, 28² and 30 epochs, z drifts 0.06 sd under these turns and the angle error is 86–99°.)"""
    cards = make_cards(800, size=16, max_angle_deg=180.0, seed=0)
    shown = first(cards, 300)
    stack = tmp_path / "cards.npy"
    np.save(stack, shown.images)
    small = dict(image_size=16, n_classes=0, encoder_hidden=(64,), decoder_hidden=(64, 64), angle_prior_concentration=0.0)
    runs = {
        "plain": JTRVAEConfig(**small, rotation=False, translation=False),
        "mlp": JTRVAEConfig(**small),
        "equivariant": JTRVAEConfig(**small, encoder="equivariant"),
    }
    models = {}
    for name, config in runs.items():
        train = TrainConfig(epochs=8, seed=seed, device="cpu", val_fraction=0.0, checkpoint_every=8)
        models[name] = fit(cards.images, config, train, tmp_path / name).model

    code, stdout, err = run_cli(
        ["diagnose", tmp_path / "equivariant", stack, "--reference", tmp_path / "plain", "--device", "cpu", "--json", "-o", tmp_path / "report.json"], capsys
    )
    assert code == 0, err
    reports = json.loads(stdout)
    assert reports == json.loads((tmp_path / "report.json").read_text())
    invariant, plain = reports["model"], reports["reference"]
    assert invariant["encoder"] == "equivariant"
    assert invariant["max_z_drift_rotation"] <= 0.1 and invariant["max_z_drift_shift"] <= 0.1
    assert all(row["angle_error_deg"] < 1.0 for row in invariant["rows"] if row["transform"].startswith("rotate"))
    assert plain["max_z_drift_rotation"] > 0.3
    assert all(row["class_changed"] is None and row["angle_error_deg"] is None for row in plain["rows"])
    mlp = report_dict(invariance_report(models["mlp"], shown.images))
    assert mlp["max_z_drift_rotation"] > 0.2

    encoded = encode_array(models["equivariant"], cards.images, device="cpu")
    assert encoded["recon_error"].mean() < 0.3 * cards.images.var()
    per_suit = [circular_correlation(cards.angle_rad[cards.labels == s], encoded["angle_rad"][cards.labels == s]) for s in range(4)]
    assert max(per_suit) > 0.8
    untrained = {name: build_model(config, seed) for name, config in runs.items()}
    assert encode_array(untrained["equivariant"], cards.images, device="cpu")["recon_error"].mean() > cards.images.var()

    # the moves not built in: the cards rendered turned by 30° and 45° and moved by one pixel
    def rows(model):
        return {row.transform: row for row in invariance_report(model, shown.images, source=lambda turn, shift: render_moved(shown, turn, shift))}

    trained_rows = {name: rows(model) for name, model in models.items()}
    untrained_rows = {name: rows(untrained[name]) for name in ("mlp", "equivariant")}
    turns, recuts = ("turn 30°", "turn 45°"), tuple(RECUTS)
    equivariant, blank = trained_rows["equivariant"], untrained_rows["equivariant"]
    assert max(equivariant[name].z_drift for name in recuts) <= 0.1
    assert max(equivariant[name].shift_error_px for name in recuts) <= 0.1
    assert max(trained_rows["mlp"][name].shift_error_px for name in recuts) < 0.5 < min(untrained_rows["mlp"][name].shift_error_px for name in recuts)
    # the untrained equivariant encoder passes every quarter turn exactly, and only the 30°/45° rows fail it
    assert max(blank[name].z_drift for name in TRANSFORMS if name.startswith("rotate")) < 1e-3
    assert min(blank[name].z_drift for name in turns) > 0.5 and min(blank[name].angle_error_deg for name in turns) > 30
    worst_turn = max(equivariant[name].z_drift for name in turns)
    assert worst_turn < 0.75 * max(trained_rows["plain"][name].z_drift for name in turns) and worst_turn < 0.5 * min(blank[name].z_drift for name in turns)

    code, _, err = run_cli(["diagnose", tmp_path / "plain", tmp_path / "missing.npy", "-q"], capsys)
    assert code == 2 and "missing.npy" in err

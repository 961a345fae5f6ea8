"""Invariance diagnostics (microvae diagnose): exact bookkeeping, and a plain VAE is caught drifting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microvae.cards import make_cards
from microvae.diagnose import TRANSFORMS, invariance_report, report_dict
from microvae.metrics import circular_correlation
from microvae.models import JTRVAEConfig
from microvae.training import TrainConfig, build_model, encode_array, fit

from .test_cli import run_cli

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
    assert rows["shift +1 px col"].z_drift > 1e-3      # an untrained encoder is not shift invariant


def test_the_equivariant_jtrvae_is_invariant_where_a_plain_vae_and_the_mlp_encoder_are_not(tmp_path, capsys):
    """Issue 5's benchmark in small: on cards turned by any angle, the j-trVAE with the equivariant
    encoder moves z by ≤ 0.1 sd under quarter turns and 1-px shifts (measured 0.000–0.001) and its
    angle takes the turn, while a plain VAE (measured 0.6–0.9) and the j-trVAE with the paper's MLP
    encoder (measured 0.3–0.5) drift. The invariant model must also have learned: it reconstructs
    (measured 0.19 of the pixel variance) and its angle follows the true angle of an asymmetric suit
    (measured 0.96)."""
    cards = make_cards(800, size=16, max_angle_deg=180.0, seed=0)
    stack = tmp_path / "cards.npy"
    np.save(stack, cards.images[:300])
    small = dict(image_size=16, n_classes=0, encoder_hidden=(64,), decoder_hidden=(64, 64), angle_prior_concentration=0.0)
    runs = {"plain": JTRVAEConfig(**small, rotation=False, translation=False),
            "mlp": JTRVAEConfig(**small), "equivariant": JTRVAEConfig(**small, encoder="equivariant")}
    models = {}
    for name, config in runs.items():
        models[name] = fit(cards.images, config, TrainConfig(epochs=8, seed=0, device="cpu", val_fraction=0.0, checkpoint_every=8), tmp_path / name).model

    code, stdout, err = run_cli(["diagnose", tmp_path / "equivariant", stack, "--reference", tmp_path / "plain", "--device", "cpu",
                                 "--json", "-o", tmp_path / "report.json"], capsys)
    assert code == 0, err
    reports = json.loads(stdout)
    assert reports == json.loads((tmp_path / "report.json").read_text())
    invariant, plain = reports["model"], reports["reference"]
    assert invariant["encoder"] == "equivariant"
    assert invariant["max_z_drift_rotation"] <= 0.1 and invariant["max_z_drift_shift"] <= 0.1
    assert all(row["angle_error_deg"] < 1.0 for row in invariant["rows"] if row["transform"].startswith("rotate"))
    assert plain["max_z_drift_rotation"] > 0.3
    assert all(row["class_changed"] is None and row["angle_error_deg"] is None for row in plain["rows"])
    mlp = report_dict(invariance_report(models["mlp"], cards.images[:300]))
    assert mlp["max_z_drift_rotation"] > 0.2

    encoded = encode_array(models["equivariant"], cards.images, device="cpu")
    assert encoded["recon_error"].mean() < 0.3 * cards.images.var()
    per_suit = [circular_correlation(cards.angle_rad[cards.labels == s], encoded["angle_rad"][cards.labels == s]) for s in range(4)]
    assert max(per_suit) > 0.8

    code, _, err = run_cli(["diagnose", tmp_path / "plain", tmp_path / "missing.npy", "-q"], capsys)
    assert code == 2 and "missing.npy" in err

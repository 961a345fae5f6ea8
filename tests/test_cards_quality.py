"""The j-trVAE learns the card suits under ±60° rotation; a model that learns nothing fails the same metric.

CI-sized: 2000 cards of 28×28, 50 epochs with the resampling decoder and the rotation-pooled class
posterior (about two minutes on 2 CPU cores). The issue's goal is a matched accuracy ≥ 0.95; this
configuration reaches about 0.77–0.82 (measured), so the bar here is 0.6 against a chance level
near 0.3, and an untrained model must stay below 0.45.
"""

from __future__ import annotations

import numpy as np
import pytest

from microvae.cards import make_cards
from microvae.metrics import adjusted_rand_index, matched_accuracy
from microvae.models import JTRVAEConfig
from microvae.training import TrainConfig, build_model, encode_array, fit

MODEL = dict(decoder="resample", class_rotations=8, beta_tau_start=10.0, beta_y_start=3.0, beta_z_start=10.0, anneal_fraction=0.3, decoder_hidden=(256, 256))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the same arithmetic (so the same result) on any machine, and no slowdown
    when other processes share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cards():
    return make_cards(2000, 28, 60.0, seed=1)


def test_untrained_model_scores_near_chance(cards):
    model = build_model(JTRVAEConfig(**MODEL), seed=0)
    predicted = encode_array(model, cards.images, device="cpu")["class"]
    assert matched_accuracy(cards.labels, predicted) < 0.45


@pytest.mark.slow
def test_jtrvae_separates_card_suits_at_60_degrees(cards, tmp_path):
    result = fit(cards.images, JTRVAEConfig(**MODEL), TrainConfig(epochs=50, batch_size=64, lr=1e-3, seed=0, checkpoint_every=50, device="cpu", val_fraction=0.0), tmp_path / "run")
    predicted = encode_array(result.model, cards.images, device="cpu")["class"]
    accuracy = matched_accuracy(cards.labels, predicted)
    assert accuracy >= 0.6, f"matched accuracy {accuracy:.3f}"
    assert adjusted_rand_index(cards.labels, predicted) > 0.3
    assert np.bincount(predicted, minlength=4).min() > 100  # no collapsed class

"""The equivariant encoder (--encoder equivariant): its pose turns and moves with the patch, so that
z and the class are invariant by construction, before and after training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from microvae.cards import make_cards
from microvae.diagnose import invariance_report
from microvae.models import JTRVAEConfig
from microvae.nets import coordinate_grid, periodic_centroid, sample_at
from microvae.training import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blob_weights(row: float, col: float, size: int = 12) -> torch.Tensor:
    rows, cols = np.mgrid[:size, :size]
    weights = np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 2.0)
    return torch.from_numpy(weights / weights.sum())[None]


def test_periodic_centroid_moves_exactly_with_a_circular_shift_and_turns_with_a_quarter_turn():
    weights = blob_weights(4.3, 7.6)
    centre = periodic_centroid(weights)[0]
    assert centre.tolist() == pytest.approx([4.3 - 5.5, 7.6 - 5.5], abs=1e-3)  # a blob well inside: its centre
    for shift in (1, 3, -2):
        moved = periodic_centroid(torch.roll(weights, shift, dims=1))[0]
        assert moved.tolist() == pytest.approx([centre[0].item() + shift, centre[1].item()], abs=1e-9)
    edge = blob_weights(11.5, 0.0)  # mass that wraps around both edges
    assert periodic_centroid(torch.roll(edge, 1, dims=2))[0, 1].item() == pytest.approx(periodic_centroid(edge)[0, 1].item() + 1, abs=1e-9)
    turned = periodic_centroid(torch.rot90(weights, 1, dims=(1, 2)))[0]  # counter-clockwise: (row, col) → (−col, row)
    assert turned.tolist() == pytest.approx([-centre[1].item(), centre[0].item()], abs=1e-9)


def test_sample_at_quarter_turn_is_the_pixel_permutation():
    x = torch.rand(2, 1, 9, 9)
    turned = sample_at(x, coordinate_grid(9), torch.full((2,), -math.pi / 2), None)
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("rotation,translation", [(True, True), (True, False), (False, True)])
def test_an_untrained_equivariant_encoder_is_already_invariant_where_an_mlp_encoder_is_not(rotation, translation):
    """Invariance by construction: random weights, no training. The MLP encoder with the same widths
    moves z by a large fraction of its sd under the same transforms (the control)."""
    cards = make_cards(120, size=16, max_angle_deg=180.0, seed=2)
    rows = {}
    for encoder in ("equivariant", "mlp"):
        config = JTRVAEConfig(
            image_size=16,
            n_classes=3,
            encoder=encoder,
            rotation=rotation,
            translation=translation,
            encoder_hidden=(32,),
            decoder_hidden=(16,),
            angle_prior_concentration=0.0,
        )
        rows[encoder] = {row.transform: row for row in invariance_report(build_model(config, seed=0), cards.images)}
    checked = [name for name in rows["mlp"] if (rotation and name.startswith("rotate")) or (translation and name.startswith("shift"))]
    for name in checked:
        row = rows["equivariant"][name]
        assert row.z_drift < 1e-3 and row.class_prob_shift < 1e-4, name
        if rotation and name.startswith("rotate"):
            assert row.angle_error_deg < 0.05, name  # the angle takes the turn
    assert max(rows["mlp"][name].z_drift for name in checked) > 0.05

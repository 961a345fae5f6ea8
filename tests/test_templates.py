"""Class templates and the template angle (microvae/templates.py) against the cards' true turns."""

from __future__ import annotations

import numpy as np
import pytest

from microvae.cards import make_cards
from microvae.config import EDGE_SIGMAS_PX, POSE_CANDIDATES, POSE_REFINE_STEPS
from microvae.metrics import circular_correlation
from microvae.templates import ClassTemplates, fit_class_templates, pose_to_templates, read_class_templates

CLUBS, DIAMONDS = 0, 2  # clubs have no rotational symmetry; a diamond's angle is defined modulo 180°


def _folded_correlation(cards, angle_rad: np.ndarray, suit: int, order: int) -> float:
    members = cards.labels == suit
    return circular_correlation(order * cards.angle_rad[members], order * angle_rad[members])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_template_angle_reads_the_turn_of_cards(seed):
    """Cards turned by up to ±120° (no shear, one scale), the true suits: clubs' template angle
    follows the true turn (measured 1.000 at seeds 0–2), the diamonds' modulo 180° (0.994), in the
    same sense (counter-clockwise as displayed: the offset to the truth is one constant per suit).
    Random templates (an untrained model) must fail the same bars (measured ≤ 0.47 and ≤ 0.76)."""
    cards = make_cards(400, 28, 120, seed=seed, max_shear_deg=0, scale_range=(1.0, 1.0))
    templates = fit_class_templates(cards.images, cards.labels, 4, rotation=True, translation=True)
    poses = pose_to_templates(cards.images, cards.labels, templates)
    assert poses.angle_rad.shape == (400,) and np.all(np.abs(poses.angle_rad) <= np.pi)
    assert _folded_correlation(cards, poses.angle_rad, CLUBS, 1) > 0.98
    assert _folded_correlation(cards, poses.angle_rad, DIAMONDS, 2) > 0.95
    clubs = cards.labels == CLUBS
    offset = np.angle(np.exp(1j * (poses.angle_rad - cards.angle_rad))[clubs])
    spread = np.abs(np.angle(np.exp(1j * (offset - np.angle(np.exp(1j * offset).mean())))))
    assert np.degrees(np.median(spread)) < 3.0  # measured 1.0–1.3° on 600 such cards
    assert np.median(poses.match) > 0.85  # measured 0.92

    noise = np.random.default_rng(seed).normal(size=templates.templates.shape).astype(np.float32)
    untrained = pose_to_templates(cards.images, cards.labels, ClassTemplates(noise, templates.has_members, True, True, edge_sigmas_px=templates.edge_sigmas_px))
    assert _folded_correlation(cards, untrained.angle_rad, CLUBS, 1) < 0.9 or _folded_correlation(cards, untrained.angle_rad, DIAMONDS, 2) < 0.9
    assert np.all(np.abs(untrained.match) <= 1.0 + 1e-5) and np.median(untrained.match) < 0.5


def test_poses_are_the_same_in_any_batch_and_from_a_patch_file(tmp_path):
    """The pose of a patch does not depend on the batch it is read in, nor on reading the patches
    from an HDF5 file in slices (large sets are streamed); a class without a template gives NaN."""
    import h5py

    from microvae.streaming import PatchFile

    cards = make_cards(60, 24, 60, seed=3)
    classes = np.minimum(cards.labels, 2)  # class 3 has no members: no template
    templates = fit_class_templates(cards.images, classes, 4, rotation=True, translation=True)
    assert templates.has_members.tolist() == [True, True, True, False]
    in_memory = pose_to_templates(cards.images, classes, templates, batch_size=128)
    with h5py.File(tmp_path / "patches.h5", "w") as handle:
        handle.create_dataset("patches", data=cards.images, chunks=(8, 1, 24, 24))
    stream = PatchFile(tmp_path / "patches.h5")
    try:
        streamed = pose_to_templates(stream, classes, templates, batch_size=7)
    finally:
        stream.close()
    np.testing.assert_allclose(streamed.angle_rad, in_memory.angle_rad, atol=1e-5)
    np.testing.assert_allclose(streamed.match, in_memory.match, atol=1e-5)
    np.testing.assert_array_equal(streamed.shift_px, in_memory.shift_px)
    missing = pose_to_templates(cards.images[:5], np.full(5, 3), templates)
    assert np.isnan(missing.angle_rad).all() and np.isnan(missing.match).all()


def test_templates_round_trip_and_a_corrupt_file_is_named(tmp_path):
    from microvae.errors import InputError
    from microvae.templates import TEMPLATES_FILE

    cards = make_cards(40, 20, 60, seed=1)
    templates = fit_class_templates(cards.images, cards.labels, 4, rotation=True, translation=False)
    templates.save(tmp_path / TEMPLATES_FILE)
    again = read_class_templates(tmp_path)
    np.testing.assert_array_equal(again.templates, templates.templates)
    assert (again.rotation, again.translation, again.turns, again.sample) == (True, False, templates.turns, 40)
    assert again.edge_sigmas_px == templates.edge_sigmas_px == EDGE_SIGMAS_PX and again.templates.shape[1] == len(EDGE_SIGMAS_PX)
    assert again.refine_steps == templates.refine_steps == POSE_REFINE_STEPS > 0
    assert again.pose_candidates == templates.pose_candidates == POSE_CANDIDATES > 1
    assert read_class_templates(tmp_path / "elsewhere") is None

    # a file from before the edges and the refinement (no edge_sigmas_px, no refine_steps):
    # templates of the patches, posed by the patches on the grid
    plain = fit_class_templates(cards.images, cards.labels, 4, rotation=True, translation=False, edge_sigmas_px=(), refine_steps=0)
    with open(tmp_path / "old.npz", "wb") as handle:
        np.savez(
            handle,
            templates=plain.templates,
            has_members=plain.has_members,
            rotation=True,
            translation=False,
            turns=plain.turns,
            max_shift_fraction=plain.max_shift_fraction,
            sample=40,
        )
    (tmp_path / "old").mkdir()
    (tmp_path / "old.npz").rename(tmp_path / "old" / TEMPLATES_FILE)
    old = read_class_templates(tmp_path / "old")
    assert old.edge_sigmas_px == () and old.refine_steps == 0 and old.pose_candidates == 1 and old.templates.shape[1] == 1
    np.testing.assert_array_equal(pose_to_templates(cards.images, cards.labels, old).angle_rad, pose_to_templates(cards.images, cards.labels, plain).angle_rad)
    with pytest.raises(InputError, match="class templates are for 1×20×20"):
        pose_to_templates(np.concatenate([cards.images] * 2, 1), cards.labels, templates)
    (tmp_path / TEMPLATES_FILE).write_bytes(b"not an npz")
    with pytest.raises(InputError, match=TEMPLATES_FILE):
        read_class_templates(tmp_path)


def test_turns_to_every_template_need_no_class():
    """Posed against all four suits' templates at once, each card's turn against its own suit's
    template is the one :func:`pose_to_templates` finds with the class given (95 % within 1°), so the
    clubs' follows their true turn (bar 0.98); noise templates (a wrong model) fail the bar."""
    import torch

    from microvae.templates import prepare_templates, turns_to_templates

    cards = make_cards(200, 28, 120, seed=4, max_shear_deg=0, scale_range=(1.0, 1.0))
    templates = fit_class_templates(cards.images, cards.labels, 4, rotation=True, translation=True)
    own = pose_to_templates(cards.images, cards.labels, templates)
    every = turns_to_templates(torch.from_numpy(cards.images), prepare_templates(templates.templates), translation=True).numpy()
    assert every.shape == (200, 4) and np.all(np.abs(every) <= np.pi + 1e-6)
    mine = every[np.arange(200), cards.labels]
    differ = np.degrees(np.abs(np.angle(np.exp(1j * (mine - own.angle_rad)))))
    assert np.quantile(differ, 0.95) < 1.0  # measured: 199 of 200 within 0.1° (one near-tie of two turns, 5°)
    assert _folded_correlation(cards, mine, CLUBS, 1) > 0.98
    noise = np.random.default_rng(0).normal(size=templates.templates.shape).astype(np.float32)
    wrong = turns_to_templates(torch.from_numpy(cards.images), prepare_templates(noise), translation=True).numpy()
    assert _folded_correlation(cards, wrong[:, CLUBS], CLUBS, 1) < 0.9

"""manifold and generate (microvae.stages.pictures): the files a user gets, and the angle convention
of a generated image (counter-clockwise as displayed), through the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from microvae.cards import make_cards
from microvae.config import JTRVAEConfig
from microvae.stages.pictures import run_generate, run_manifold
from microvae.training import TrainConfig, fit

from ..conftest import run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small two-class j-trVAE with two continuous latents, trained for 2 epochs on 16² cards."""
    folder = tmp_path_factory.mktemp("pictures") / "run"
    cards = make_cards(n=256, size=16, max_angle_deg=30.0, seed=0)
    model = JTRVAEConfig(image_size=16, n_classes=2, latent_dim=2, encoder_hidden=(32,), decoder_hidden=(32, 32))
    fit(cards.images, model, TrainConfig(epochs=2, batch_size=64, device="cpu", val_fraction=0.0), folder)
    return folder


def test_manifold_writes_one_traversal_per_latent_and_one_grid_per_class(run, tmp_path):
    written = run_manifold(run, tmp_path / "m.png", steps=5)
    assert sorted(p.name for p in written) == ["m_class0.png", "m_class1.png", "m_z0.png", "m_z1.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_generated_image_turns_counter_clockwise_as_displayed(run, tmp_path):
    """+90° is np.rot90(k=1) of 0° (rows down, as displayed) for the spatial MLP decoder, to
    interpolation-free precision; the control, a clockwise quarter turn, is far from it."""
    upright = np.load(run_generate(run, tmp_path / "a0.npy", class_index=1, angle_deg=0.0, z=[0.5, -0.5]))
    turned = np.load(run_generate(run, tmp_path / "a90.npy", class_index=1, angle_deg=90.0, z=[0.5, -0.5]))
    assert upright.shape == turned.shape == (1, 16, 16)
    np.testing.assert_allclose(turned[0], np.rot90(upright[0], 1), atol=1e-4)
    assert np.abs(turned[0] - np.rot90(upright[0], -1)).max() > 1e-2


def test_generate_through_the_cli_checks_its_options_first(run, tmp_path, capsys):
    code, _, err = run_cli(["generate", run, "--class", 0, "--z", "1,2,3", "-o", tmp_path / "g.npy"], capsys)
    assert code == 2 and "--z has 3 values but the model has 2" in err
    code, _, err = run_cli(["generate", run, "--class", 0, "-o", tmp_path / "g.jpg"], capsys)
    assert code == 2 and "must end in .png or .npy" in err
    code, out, err = run_cli(["manifold", run, "-o", tmp_path / "m.png", "--steps", 3], capsys)
    assert code == 0 and (tmp_path / "m_z1.png").exists(), err

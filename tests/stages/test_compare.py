"""microvae compare: the map between two runs' codes is recovered when it is known, and a run that
learned nothing is told apart."""

from __future__ import annotations

import copy
import json
import math
import tempfile

import numpy as np
import pytest
import torch

from microvae.cards import make_cards
from microvae.compare import compare_runs
from microvae.models import JTRVAEConfig
from microvae.nets import LatentInput
from microvae.training import TrainConfig, build_model, fit

from ..conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A j-trVAE (K = 3, D = 2) trained briefly on 16×16 cards, and its run folder."""
    cards = make_cards(600, size=16, max_angle_deg=30.0, seed=0)
    config = JTRVAEConfig(image_size=16, n_classes=3, encoder_hidden=(48, 48), decoder_hidden=(48, 48))
    run = tmp_path_factory.mktemp("compare") / "a"
    model = fit(cards.images, config, TrainConfig(epochs=6, seed=0, device="cpu", val_fraction=0.0, checkpoint_every=6), run).model
    return model, cards.images[:300], run


def transformed_copy(model, rotation: np.ndarray, permutation: list[int]):
    """B = A with its latent space turned (z_B = R z_A) and its classes renamed (A's k is B's permutation[k])."""
    other = copy.deepcopy(model)
    rotation_t = torch.tensor(rotation, dtype=torch.float32)
    order = torch.tensor(np.argsort(permutation))  # B's class j is A's class order[j]
    with torch.no_grad():
        for module in other.decoder.modules():
            if isinstance(module, LatentInput):
                module.from_z.copy_(module.from_z @ rotation_t.T)  # W_B R = W_A (R orthogonal)
                module.class_bias.copy_(module.class_bias[order])
        head = other.encoder.head
        rows = other.encoder.head_slice("z_mean")
        head.weight[rows] = rotation_t @ head.weight[rows]
        head.bias[rows] = rotation_t @ head.bias[rows]
        last = other.class_encoder[-1]
        last.weight.copy_(last.weight[order])
        last.bias.copy_(last.bias[order])
    return other


def test_a_known_rotation_and_class_renaming_are_recovered(trained):
    model, images, _ = trained
    angle = math.radians(70)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    other = transformed_copy(model, rotation, [2, 0, 1])
    result = compare_runs(model, other, images, steps=50)
    assert result.class_map == [2, 0, 1] and result.class_agreement == 1.0
    np.testing.assert_allclose(result.latent_map, rotation, atol=0.02)
    assert result.delta_relative < 0.01 and result.delta_identity > 10 * result.delta  # the map matters


def test_an_untrained_run_is_not_the_same(trained):
    model, images, _ = trained
    untrained = build_model(model.config, seed=5)
    assert compare_runs(model, untrained, images, steps=100).delta_relative > 0.3
    assert compare_runs(model, model, images, steps=10).delta_relative < 1e-3


def test_compare_through_the_cli(tmp_path, trained, capsys):
    _, images, run = trained
    stack = tmp_path / "patches.npy"
    np.save(stack, images)
    code, out, err = run_cli(["compare", run, run, stack, "--json", "--steps", "5", "-o", tmp_path / "c.json"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["delta_relative"] < 1e-3 and record["class_map"] == [0, 1, 2]
    assert json.loads((tmp_path / "c.json").read_text())["delta"] == record["delta"]
    np.save(tmp_path / "small.npy", images[:, :, :8, :8])
    code, _, err = run_cli(["compare", run, run, tmp_path / "small.npy", "-q"], capsys)
    assert code == 2 and "small.npy" in err


def test_a_reflected_and_turned_circle_latent_is_recovered():
    """Circle latents: B = A with θ_B = −θ_A + 1.0 rad; compare finds the reflection and the turn."""
    from ..test_circular import cyclic_stripes

    images, _ = cyclic_stripes(400)
    config = JTRVAEConfig(
        image_size=16,
        n_classes=0,
        latent_dim=1,
        latent_geometry="circle",
        rotation=False,
        translation=False,
        encoder_hidden=(32,),
        decoder_hidden=(32, 32),
        beta_z_start=0.0,
    )
    with tempfile.TemporaryDirectory() as run:
        model = fit(images, config, TrainConfig(epochs=4, seed=0, device="cpu", val_fraction=0.0, checkpoint_every=4), run).model
    sign, turn = -1.0, 1.0
    other = copy.deepcopy(model)
    mix = torch.tensor([[math.cos(turn), math.sin(turn)], [-sign * math.sin(turn), sign * math.cos(turn)]])  # f(θ) = M f(θ_B)
    direction = torch.tensor([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]]) @ torch.diag(torch.tensor([1.0, sign]))
    with torch.no_grad():
        for module in other.decoder.modules():
            if isinstance(module, LatentInput):
                module.from_z.copy_(module.from_z @ mix)
        rows = other.encoder.head_slice("z_mean")
        other.encoder.head.weight[rows] = direction @ other.encoder.head.weight[rows]
        other.encoder.head.bias[rows] = direction @ other.encoder.head.bias[rows]
    result = compare_runs(model, other, images[:200], steps=30)
    assert result.latent_map.tolist() == [[-1.0]]
    assert abs(math.remainder(result.latent_offset[0] - turn, 2 * math.pi)) < 0.02
    assert result.delta_relative < 0.01

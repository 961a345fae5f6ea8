"""An interrupted and resumed training run ends with exactly the weights of an uninterrupted one (CPU, fixed seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microvae.models import JTRVAEConfig
from microvae.training import TrainConfig, fit


class Interrupt(Exception):
    pass


def small_problem():
    rng = np.random.default_rng(0)
    images = rng.random((96, 1, 10, 10)).astype(np.float32)
    model = JTRVAEConfig(image_size=10, n_classes=2, latent_dim=2, encoder_hidden=(16,), decoder_hidden=(16, 16), decoder="mlp")
    return images, model


@pytest.mark.parametrize("decoder", ["mlp", "resample"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, decoder):
    images, model_config = small_problem()
    model_config.decoder = decoder
    train = TrainConfig(epochs=4, batch_size=16, seed=3, checkpoint_every=1, device="cpu", val_fraction=0.25)
    straight = fit(images, model_config, train, tmp_path / "straight")

    def stop_in_epoch_three(event):
        if event.get("event") == "batch" and event["epoch"] == 3 and event["step"] == 2:
            raise Interrupt()

    with pytest.raises(Interrupt):
        fit(images, model_config, train, tmp_path / "resumed", progress=stop_in_epoch_three)
    # some unrelated use of the global RNGs between the crash and the restart must not matter
    torch.rand(5)
    np.random.rand(3)
    resumed = fit(images, model_config, train, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 2
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]


def test_checkpoints_load_with_weights_only(tmp_path):
    images, model_config = small_problem()
    fit(images, model_config, TrainConfig(epochs=1, batch_size=32, device="cpu"), tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)
    assert {"model_state", "optimizer_state", "epoch"} <= set(checkpoint)

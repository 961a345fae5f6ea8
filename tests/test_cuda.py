"""The CUDA path: the same model, objective, training loop and CLI on a GPU.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from microvae.cards import make_cards
from microvae.encoding import encode_array
from microvae.metrics import matched_accuracy
from microvae.models import JTRVAEConfig
from microvae.run_folder import load_run
from microvae.training import TrainConfig, build_model, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def small_config(**changes) -> JTRVAEConfig:
    return JTRVAEConfig(**(dict(image_size=12, n_classes=3, latent_dim=2, encoder_hidden=(32,), decoder_hidden=(32, 32)) | changes))


@pytest.mark.parametrize("decoder", ["mlp", "conv"])
def test_loss_terms_on_cuda_equal_the_cpu_ones(decoder):
    """Same weights, same images, same standard-normal draws: the same ELBO terms on both devices."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_model(small_config(decoder=decoder), seed=0)
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    noise = {name: torch.randn(16, dim, generator=torch.Generator().manual_seed(2)) for name, dim in (("z", 2), ("angle_vec", 2), ("shift", 2))}
    on_cpu = model.loss_terms(x, noise=noise)
    gpu_model = build_model(small_config(decoder=decoder), seed=0).cuda()
    on_gpu = gpu_model.loss_terms(x.cuda(), noise={k: v.cuda() for k, v in noise.items()})
    for name in ("recon", "kl_z", "kl_tau", "kl_y", "class_probs"):
        torch.testing.assert_close(on_gpu[name].cpu(), on_cpu[name], rtol=1e-4, atol=1e-3, msg=name)


@pytest.mark.parametrize("encoder", ["mlp", "equivariant"])
def test_encoding_on_cuda_equals_the_cpu_one_and_bf16_stays_close(encoder):
    """Both encoders, one pass with both scores: CUDA (fp32) matches the CPU; bf16 autocast
    (encode --amp) stays close to fp32. −ELBO draws come from each device's own generator, so
    only its magnitude is compared."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    images = make_cards(96, size=16, seed=0).images
    config = small_config(image_size=16, encoder=encoder)
    on_cpu = encode_array(build_model(config, seed=0), images, batch_size=40, device="cpu", neg_elbo=True)
    on_gpu = encode_array(build_model(config, seed=0), images, batch_size=40, device="cuda", neg_elbo=True)
    in_bf16 = encode_array(build_model(config, seed=0), images, batch_size=40, device="cuda", neg_elbo=True, amp=True)
    for name in ("class_probs", "z_mean", "z_sd", "shift_px", "recon_error"):
        np.testing.assert_allclose(on_gpu[name], on_cpu[name], rtol=1e-3, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(in_bf16[name], on_cpu[name], rtol=0.05, atol=0.03, err_msg=f"bf16 {name}")
    turn = np.angle(np.exp(1j * (on_gpu["angle_rad"] - on_cpu["angle_rad"])))
    assert np.abs(turn).max() < 1e-2
    assert np.all(np.isfinite(on_gpu["neg_elbo"]))
    np.testing.assert_allclose(on_gpu["neg_elbo"].mean(), on_cpu["neg_elbo"].mean(), rtol=0.05)


def test_fit_on_cuda_checkpoints_load_on_cpu_and_encode_the_same(tmp_path):
    images = make_cards(256, size=12, seed=0).images
    result = fit(images, small_config(), TrainConfig(epochs=2, batch_size=32, device="cuda", checkpoint_every=1), tmp_path / "run")
    assert next(result.model.parameters()).is_cuda
    assert all(np.isfinite(row["loss"]) for row in result.history)
    on_cpu, _ = load_run(tmp_path / "run", device="cpu")
    a = encode_array(result.model, images, device="cuda")
    b = encode_array(on_cpu, images, device="cpu")
    np.testing.assert_allclose(a["class_probs"], b["class_probs"], atol=2e-3)
    np.testing.assert_allclose(a["z_mean"], b["z_mean"], atol=2e-3)


def test_resume_on_cuda_continues_the_same_run(tmp_path):
    """Interrupted in epoch 3 (1-based) and resumed: the same epochs, the same data order and close weights
    (CUDA kernels are not bit-reproducible, so closeness, not identity, is asserted)."""
    images = make_cards(256, size=12, seed=0).images
    train = TrainConfig(epochs=3, batch_size=32, device="cuda", checkpoint_every=1, seed=3)
    straight = fit(images, small_config(), train, tmp_path / "straight")

    class Interrupt(Exception):
        pass

    def crash(event):
        if event["event"] == "batch" and event["epoch"] == 3 and event["step"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(images, small_config(), train, tmp_path / "resumed", progress=crash)
    resumed = fit(images, small_config(), train, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_completed == 3
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-3, atol=1e-4, msg=name)


def test_bf16_autocast_trains(tmp_path):
    """Under bf16 autocast the model learns as in float32: on the validation cards, which no step
    saw, it reconstructs about as well as the float32 run and far better than the untrained model
    (the control). (Not a falling loss: the β schedule alone makes the loss fall.) On the CPU in
    float32 this recipe measured 0.074 / 0.058 (seeds 0, 1) against 0.20 / 0.25 untrained."""
    from microvae.training import split_rows

    images = make_cards(512, size=16, seed=0).images
    config = small_config(image_size=16)
    train = TrainConfig(epochs=8, batch_size=64, lr=5e-3, device="cuda", checkpoint_every=8)
    runs = {amp: fit(images, config, TrainConfig(**(train.to_dict() | {"amp": amp})), tmp_path / f"amp_{amp}") for amp in (True, False)}
    assert all(np.isfinite(row["loss"]) for row in runs[True].history)
    train_rows, val_rows = split_rows(len(images), train.val_fraction, train.seed)

    def held_out_mse(model):
        return float(encode_array(model, images[val_rows], device="cuda")["recon_error"].mean())

    bf16, fp32, untrained = held_out_mse(runs[True].model), held_out_mse(runs[False].model), held_out_mse(build_model(config, train.seed))
    assert bf16 < 0.6 * untrained and fp32 < 0.6 * untrained, (bf16, fp32, untrained)
    assert abs(bf16 - fp32) < 0.25 * (untrained - fp32), (bf16, fp32, untrained)


@pytest.mark.slow
def test_default_recipe_separates_the_card_suits_on_cuda(tmp_path):
    """The CPU quality test's recipe on the GPU (TF32 allowed): matched accuracy ≥ 0.95."""
    cards = make_cards(3000, size=28, max_angle_deg=60.0, seed=1)
    result = fit(cards.images, JTRVAEConfig(), TrainConfig(epochs=45, seed=0, device="cuda", val_fraction=0.0, checkpoint_every=45), tmp_path / "run")
    predicted = encode_array(result.model, cards.images, device="cuda")["class"]
    assert matched_accuracy(cards.labels, predicted) >= 0.95


def test_cli_train_and_encode_on_cuda(tmp_path, capsys):
    from .conftest import run_cli

    stack = tmp_path / "stack.npy"
    np.save(stack, make_cards(128, size=12, seed=0).images)
    code, _, err = run_cli(["train", stack, "-o", tmp_path / "run", "--classes", "2", "--epochs", "1", "--hidden", "32", "--device", "cuda", "-q"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["device"] == "cuda"
    code, _, err = run_cli(["encode", tmp_path / "run", stack, "-o", tmp_path / "enc.h5", "--device", "cuda", "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "enc.h5").exists()
    code, _, err = run_cli(["encode", tmp_path / "run", stack, "-o", tmp_path / "fast.h5", "--device", "cuda", "--no-scores", "--amp", "-q"], capsys)
    assert code == 0, err


def test_template_poses_on_cuda_equal_the_cpu_ones():
    """The template search (encode's template_angle_rad) on the GPU: the same turns, shifts and
    matches as on the CPU (angles within 0.01 rad where the parabola's inputs round differently)."""
    from microvae.templates import fit_class_templates, pose_to_templates

    torch.backends.cuda.matmul.allow_tf32 = False
    cards = make_cards(120, 24, 120, seed=2)
    templates = fit_class_templates(cards.images, cards.labels, 4, rotation=True, translation=True)
    on_cpu = pose_to_templates(cards.images, cards.labels, templates, device="cpu")
    on_gpu = pose_to_templates(cards.images, cards.labels, templates, device="cuda")
    turn = np.angle(np.exp(1j * (on_gpu.angle_rad - on_cpu.angle_rad)))
    assert np.mean(np.abs(turn) < 0.01) > 0.97, np.sort(np.abs(turn))[-5:]
    np.testing.assert_allclose(on_gpu.match, on_cpu.match, atol=1e-4)

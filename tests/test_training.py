"""fit(): run folder, weights-only checkpoints, bit-exact resume, side-effect-free validation, encoding."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from microvae.encoding import encode_array
from microvae.errors import InputError, ParameterError
from microvae.models import JTRVAEConfig
from microvae.run_folder import load_run
from microvae.training import TrainConfig, build_model, fit


class Interrupt(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_problem(n=80, size=10):
    images = np.random.default_rng(0).random((n, 1, size, size)).astype(np.float32)
    model = JTRVAEConfig(image_size=size, n_classes=3, encoder_hidden=(16,), decoder_hidden=(16, 16))
    return images, model


def train_config(**changes):
    return TrainConfig(**(dict(epochs=4, batch_size=16, seed=5, checkpoint_every=1, device="cpu", val_fraction=0.25, pixel_fraction=0.5) | changes))


@pytest.mark.parametrize("decoder", ["mlp", "conv"])
def test_interrupted_then_resumed_run_is_bit_identical(tmp_path, decoder):
    images, model = tiny_problem()
    model.decoder = decoder
    straight = fit(images, model, train_config(), tmp_path / "straight")

    def crash_in_epoch_three(event):
        if event["event"] == "batch" and event["epoch"] == 3 and event["step"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(images, model, train_config(), tmp_path / "resumed", progress=crash_in_epoch_three)
    torch.rand(3), np.random.rand(2)  # unrelated use of the global generators
    resumed = fit(images, model, train_config(), tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_completed == 4
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]


def test_template_pose_starts_from_the_initial_classes_and_resumes_bit_identically(tmp_path):
    """``template_pose``: a fresh run learns one pose template per initial class (as
    fit_class_templates does) and keeps them in the weights; a run interrupted and resumed
    reads them back (not learned again) and ends bit-identical to an uninterrupted one. Without
    initial classes, all patches make one template; with labels for some patches only, the
    labelled ones make their classes' templates."""
    from microvae.cards import make_cards
    from microvae.templates import fit_class_templates, prepare_templates

    cards = make_cards(64, 12, 120, seed=0)
    edges, steps, candidates = (1.0, 2.0), 6, 3
    model = JTRVAEConfig(
        image_size=12,
        n_classes=4,
        encoder_hidden=(16,),
        decoder_hidden=(16, 16),
        template_pose=True,
        pose_edge_sigmas_px=edges,
        pose_refine_steps=steps,
        pose_candidates=candidates,
    )
    straight = fit(cards.images, model, train_config(), tmp_path / "straight", init_labels=cards.labels)
    expected = prepare_templates(
        fit_class_templates(cards.images, cards.labels, 4, True, True, edge_sigmas_px=edges, refine_steps=steps, pose_candidates=candidates).templates
    )
    assert straight.model.pose_templates.shape == (4, 2, 12, 12)  # one block of channels per edge scale
    torch.testing.assert_close(straight.model.pose_templates, expected)

    def crash_in_epoch_three(event):
        if event["event"] == "batch" and event["epoch"] == 3 and event["step"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(cards.images, model, train_config(), tmp_path / "resumed", progress=crash_in_epoch_three, init_labels=cards.labels)
    resumed = fit(cards.images, model, train_config(), tmp_path / "resumed", init_labels=cards.labels)
    assert resumed.resumed_from_epoch == 2
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]

    alone = fit(cards.images, model, train_config(epochs=1), tmp_path / "alone").model
    assert float(alone.pose_templates[0].abs().sum()) > 0 and float(alone.pose_templates[1:].abs().sum()) == 0

    some = np.where(np.arange(64) % 2 == 0, cards.labels, -1)  # semi-supervised: half the patches labelled
    partly = fit(cards.images, model, train_config(epochs=1), tmp_path / "partly", labels=some).model
    rows = np.flatnonzero(some >= 0)
    expected = prepare_templates(
        fit_class_templates(
            cards.images[rows], cards.labels[rows], 4, True, True, edge_sigmas_px=edges, refine_steps=steps, pose_candidates=candidates
        ).templates
    )
    torch.testing.assert_close(partly.pose_templates, expected)


def test_run_folder_contents_and_weights_only_checkpoint(tmp_path):
    images, model = tiny_problem()
    events = []
    fit(images, model, train_config(epochs=2), tmp_path / "run", progress=events.append)
    run = tmp_path / "run"
    settings = json.loads((run / "config.json").read_text())
    assert settings["model"]["n_classes"] == 3 and settings["train"]["epochs"] == 2
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert torch.load(run / "checkpoints" / "final.pt", weights_only=True)["epoch"] == 2
    assert {"model_state", "optimizer_state", "scaler_state", "shuffle_generator", "noise_generator", "rng", "schedule", "epoch", "history"} <= set(checkpoint)
    assert {"torch", "numpy", "python"} <= set(checkpoint["rng"])
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {
        "loss",
        "recon",
        "kl_z",
        "kl_tau",
        "kl_y",
        "beta_z",
        "beta_tau",
        "beta_y",
        "val_loss",
        "n_class_0",
        "n_class_1",
        "n_class_2",
        "samples_per_s",
    } <= set(rows[0])
    assert sum(int(rows[-1][f"n_class_{k}"]) for k in range(3)) == len(images)
    assert (run / "loss.png").stat().st_size > 1000
    assert {e["event"] for e in events} == {"batch", "epoch"}
    assert not list(run.glob("**/*.tmp"))  # no temporary files left behind


def test_validation_has_no_effect_on_training(tmp_path):
    """Changing only the held-out images changes the validation loss but not a single weight."""
    images, model = tiny_problem()
    n_val = round(0.25 * len(images))
    held_out = np.random.default_rng(5).permutation(len(images))[:n_val]  # fit's split for seed 5
    other = images.copy()
    other[held_out] = 1.0 - other[held_out]
    a = fit(images, model, train_config(epochs=2), tmp_path / "a")
    b = fit(other, model, train_config(epochs=2), tmp_path / "b")
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert a.history[-1]["val_loss"] != b.history[-1]["val_loss"]


def test_encode_array_and_load_run(tmp_path):
    images, model = tiny_problem()
    result = fit(images, model, train_config(epochs=1), tmp_path / "run")
    loaded, configs = load_run(tmp_path / "run")
    assert configs["model"] == model and configs["epoch"] == 1
    for name, value in result.model.state_dict().items():
        assert torch.equal(value.cpu(), loaded.state_dict()[name]), name
    encoded = encode_array(loaded, images[:7], batch_size=3, device="cpu")
    assert encoded["class_probs"].shape == (7, 3) and encoded["class"].shape == (7,)
    np.testing.assert_allclose(encoded["class_probs"].sum(1), 1.0, rtol=1e-5)
    assert encoded["z_mean"].shape == encoded["z_sd"].shape == (7, 2)
    assert encoded["angle_rad"].shape == (7,) and encoded["shift_px"].shape == (7, 2)
    assert (encoded["recon_error"] >= 0).all() and encoded["recon_error"].shape == (7,)


def test_encode_array_scores_in_one_pass_match_the_model_and_stream_alike(tmp_path, monkeypatch):
    """neg_elbo is the model's −ELBO at the seeded draw, recon_error the MSE of the decoded means;
    a chunked HDF5 source read block by block gives the same values; the encoder alone gives the
    same summaries without either score."""
    import h5py

    from microvae import streaming
    from microvae.streaming import PatchFile

    images, model_config = tiny_problem()
    model = build_model(model_config, seed=3).eval()
    calls = []
    encoded = encode_array(model, images, batch_size=len(images), device="cpu", neg_elbo=True, seed=5, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(images), len(images))
    x = torch.from_numpy(images)
    with torch.no_grad():
        terms = model.loss_terms(x, torch.Generator().manual_seed(5))
        expected_elbo = model.negative_elbo(terms).double().numpy()
        onehot = torch.nn.functional.one_hot(torch.from_numpy(encoded["class"]), 3).float()
        recon = model.decode(torch.from_numpy(encoded["z_mean"]), onehot, torch.from_numpy(encoded["angle_rad"]), torch.from_numpy(encoded["shift_px"]))
    np.testing.assert_allclose(encoded["neg_elbo"], expected_elbo, rtol=1e-5)
    np.testing.assert_allclose(encoded["recon_error"], ((recon - x) ** 2).flatten(1).mean(1).numpy(), rtol=1e-5)

    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=images, chunks=(5,) + images.shape[1:], compression="gzip")
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 10 * images[0].nbytes)  # 8 blocks of 2 chunks
    in_batches = encode_array(model, images, batch_size=5, device="cpu", neg_elbo=True)
    streamed = encode_array(model, PatchFile(path), batch_size=5, device="cpu", neg_elbo=True)
    latents_only = encode_array(model, images, batch_size=5, device="cpu", recon_error=False)
    assert set(latents_only) == set(in_batches) - {"recon_error", "neg_elbo"}
    for name, value in in_batches.items():
        np.testing.assert_allclose(streamed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        if name in latents_only:
            np.testing.assert_allclose(latents_only[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_encoded_arrays_are_stored_in_float32_under_bf16():
    """encode --amp yields bfloat16 network outputs; numpy has no bfloat16, so they are widened."""
    from microvae.encoding import store_batch

    out = {}
    store_batch(out, 0, {"z_mean": torch.full((2, 3), 0.5, dtype=torch.bfloat16), "class": torch.tensor([1, 0])}, 4)
    store_batch(out, 2, {"z_mean": torch.ones(2, 3, dtype=torch.bfloat16), "class": torch.tensor([0, 1])}, 4)
    assert out["z_mean"].dtype == np.float32 and out["class"].dtype == np.int64
    np.testing.assert_array_equal(out["z_mean"][:, 0], [0.5, 0.5, 1.0, 1.0])


def test_compiled_training_step_learns_the_same_and_resumes_either_way(tmp_path):
    """--compile changes the kernels, not the run: the same losses within rounding, checkpoints an
    eager model loads, and a compiled run resumed without compiling (and back)."""
    images, model = tiny_problem()
    config = train_config(epochs=2, val_fraction=0.0)
    eager = fit(images, model, config, tmp_path / "eager")
    compiled = fit(images, model, TrainConfig(**(config.to_dict() | {"compile": True})), tmp_path / "compiled")
    for a, b in zip(eager.history, compiled.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    resumed = fit(images, model, TrainConfig(**(config.to_dict() | {"epochs": 3})), tmp_path / "compiled")
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_completed == 3
    loaded, _ = load_run(tmp_path / "compiled")
    assert set(loaded.state_dict()) == set(eager.model.state_dict())


def test_resuming_with_other_model_settings_is_refused(tmp_path):
    images, model = tiny_problem()
    fit(images, model, train_config(epochs=1), tmp_path / "run")
    with pytest.raises(ParameterError):
        fit(images, JTRVAEConfig(image_size=10, n_classes=2, encoder_hidden=(16,), decoder_hidden=(16, 16)), train_config(epochs=2), tmp_path / "run")
    with pytest.raises(ParameterError):
        fit(images, model, train_config(epochs=2, lr=1e-2), tmp_path / "run")


def test_bad_inputs_raise_user_errors(tmp_path):
    images, model = tiny_problem()
    with pytest.raises(InputError):
        fit(images * 3.0, model, train_config(), tmp_path / "a")  # not in [0, 1] for Bernoulli
    with pytest.raises(ParameterError):
        fit(images[:, :, :8, :8], model, train_config(), tmp_path / "b")  # wrong patch size
    with pytest.raises(InputError):
        load_run(tmp_path / "missing")


def test_out_of_memory_says_which_batch_size_to_use(tmp_path, monkeypatch):
    """A device out of memory mid-training (simulated: no GPU in CI) gives a user error naming the
    batch size that failed and one to use, and the last checkpoint stays."""
    import microvae.training as training
    from microvae.errors import MicrovaeError

    images, model = tiny_problem()
    original = training._train_one_epoch

    def runs_out_in_epoch_three(state, data, epoch, *args):
        if epoch == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(state, data, epoch, *args)

    monkeypatch.setattr(training, "_train_one_epoch", runs_out_in_epoch_three)
    with pytest.raises(MicrovaeError, match=r"out of memory on cpu training batches of 16.*--batch-size 8.*last\.pt is kept"):
        fit(images, model, train_config(), tmp_path / "run")
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2

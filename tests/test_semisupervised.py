"""Semi-supervised joint VAE (train --labels): a few known classes anchor the classes of the rest."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch

from microvae.cards import make_cards
from microvae.encoding import encode_array
from microvae.errors import InputError
from microvae.metrics import matched_accuracy
from microvae.models import JTRVAE, JTRVAEConfig
from microvae.stages import read_labels
from microvae.training import TrainConfig, build_model, fit

from .conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_labelled_images_use_their_class_only():
    torch.manual_seed(0)
    model = JTRVAE(JTRVAEConfig(image_size=12, n_classes=3, encoder_hidden=(16,), decoder_hidden=(16,)))
    x = torch.rand(4, 1, 12, 12)
    labels = torch.tensor([2, -1, 0, -1])
    draws = model.standard_normal_draws(x, torch.Generator().manual_seed(1))
    free = model.loss_terms(x, noise=draws)
    known = model.loss_terms(x, noise=draws, labels=labels)
    torch.testing.assert_close(known["recon"][[1, 3]], free["recon"][[1, 3]])
    torch.testing.assert_close(known["kl_y"][[0, 2]], torch.zeros(2))
    log_q = torch.log(free["class_probs"])
    torch.testing.assert_close(known["class_nll"], torch.stack([-log_q[0, 2], torch.tensor(0.0), -log_q[2, 0], torch.tensor(0.0)]))


@pytest.mark.parametrize("seed", [0])
def test_five_percent_labels_beat_unsupervised_at_120_degrees(seed):
    """±120° cards (16×16, 1200, 25 epochs): the unsupervised recipe does not learn the angle at this
    range and its classes are poor; labels for 5 % of the cards (60) name the classes (no matching)
    and get more of the other 95 % right than the unsupervised run's best matching does. The
    untrained model (the control) gets a quarter right. Measured (seeds 0, 1, 2): unsupervised
    0.457 / 0.584 / 0.463 (matched), 5 % labels 0.618 / 0.649 / 0.641 (no matching); untrained 0.25.
    One seed since 2026-12-02 (seed 1 took 24 s of the suite's budget)."""
    cards = make_cards(1200, size=16, max_angle_deg=120.0, seed=1)
    labelled = np.random.default_rng(0).random(len(cards.labels)) < 0.05
    labels = np.where(labelled, cards.labels, -1)
    config = dict(image_size=16, n_classes=4, encoder_hidden=(64, 64), decoder_hidden=(64, 64), angle_prior_concentration=0.0)
    train = TrainConfig(epochs=25, seed=seed, device="cpu", val_fraction=0.0, checkpoint_every=25)

    def unlabelled_correct(model):
        predicted = encode_array(model, cards.images, device="cpu")["class"]
        return float((predicted[~labelled] == cards.labels[~labelled]).mean())

    accuracy = {"untrained": unlabelled_correct(build_model(JTRVAEConfig(**config), seed))}
    for name, known in (("unsupervised", None), ("5% labels", labels)):
        with tempfile.TemporaryDirectory() as run:
            model = fit(cards.images, JTRVAEConfig(**config), train, run, labels=known).model
        if known is None:  # its classes have arbitrary names: its best matching
            predicted = encode_array(model, cards.images, device="cpu")["class"]
            accuracy[name] = matched_accuracy(cards.labels[~labelled], predicted[~labelled])
        else:  # the labelled classes keep their names: no matching needed
            accuracy[name] = unlabelled_correct(model)
    assert accuracy["5% labels"] >= 0.6 and accuracy["5% labels"] > accuracy["unsupervised"], accuracy
    assert accuracy["untrained"] < 0.4, accuracy


def test_label_files(tmp_path):
    csv = tmp_path / "known.csv"
    csv.write_text("patch_index,class\n0,2\n5,1\n")
    labels = read_labels(csv, 8, 3)
    np.testing.assert_array_equal(labels, [2, -1, -1, -1, -1, 1, -1, -1])
    npy = tmp_path / "known.npy"
    np.save(npy, labels)
    np.testing.assert_array_equal(read_labels(npy, 8, 3), labels)
    for text, message in (("0,5\n", "0…2"), ("9,1\n", "outside"), ("a,b,c\n1;x\n", "expected")):
        csv.write_text(text)
        with pytest.raises(InputError, match=message):
            read_labels(csv, 8, 3)
    with pytest.raises(InputError, match="12 integers"):
        read_labels(npy, 12, 3)


def test_train_with_labels_through_the_cli(tmp_path, capsys):
    cards = make_cards(96, size=12, max_angle_deg=30.0, seed=2)
    stack = tmp_path / "cards.npy"
    np.save(stack, cards.images)
    known = tmp_path / "known.csv"
    known.write_text("".join(f"{i},{cards.labels[i]}\n" for i in range(0, 96, 10)))
    run = tmp_path / "run"
    code, _, err = run_cli(["train", stack, "-o", run, "--classes", "4", "--labels", known, "--epochs", "1", "--hidden", "16", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    record = json.loads((run / "provenance.json").read_text())
    assert record["parameters"]["labelled_patches"] == 10 and any(i["role"] == "labels" for i in record["inputs"])
    known.write_text("3,7\n")
    code, _, err = run_cli(["train", stack, "-o", tmp_path / "bad", "--classes", "4", "--labels", known, "-q"], capsys)
    assert code == 2 and "known.csv" in err


def test_a_conditional_model_encodes_with_the_given_classes(tmp_path, capsys):
    """Every patch labelled at training (a conditional model: the decoder is given the class) and
    at encoding: the encoded classes are the labels, marked observed, and the reconstruction with
    the right class is better than with the wrong one (the decoder uses the class)."""
    import h5py

    cards = make_cards(400, size=16, max_angle_deg=0.0, seed=3, max_shear_deg=0.0, max_shift_fraction=0.0)
    np.save(tmp_path / "cards.npy", cards.images)
    np.save(tmp_path / "labels.npy", cards.labels.astype(np.int64))
    wrong = (cards.labels + 1) % 4
    np.save(tmp_path / "wrong.npy", wrong.astype(np.int64))
    tiny = [
        "--hidden",
        "32",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--epochs",
        "8",
        "--no-rotation",
        "--no-translation",
        "--latent-dim",
        "2",
        "--classes",
        "4",
        "--z-delay",
        "0.5",
        "-q",
    ]
    assert run_cli(["train", tmp_path / "cards.npy", "-o", tmp_path / "run", "--labels", tmp_path / "labels.npy", *tiny], capsys)[0] == 0
    errors = {}
    for name in ("labels", "wrong"):
        out = tmp_path / f"{name}.h5"
        code, _, err = run_cli(
            ["encode", tmp_path / "run", tmp_path / "cards.npy", "-o", out, "--labels", tmp_path / f"{name}.npy", "--device", "cpu", "-q"], capsys
        )
        assert code == 0, err
        with h5py.File(out) as handle:
            assert handle["class_observed"][()].all()
            np.testing.assert_array_equal(handle["class"][()], cards.labels if name == "labels" else wrong)
            errors[name] = float(handle["neg_elbo"][()].mean())
    assert errors["labels"] < errors["wrong"] - 1, errors  # measured 90.2 vs 93.4 nats

"""Ensembles (train --ensemble M): label alignment, consensus, and stability that helps choose K."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile
import torch

from microvae.cards import make_cards
from microvae.ensemble import align_labels, build_record, consensus, permute_probs

from .conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_alignment_recovers_a_permutation_despite_noise():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 4, 500)
    permutation = np.array([2, 0, 3, 1])  # member class k is reference class permutation[k]
    member = np.argsort(permutation)[reference]  # the member's name for each reference class
    flip = rng.random(500) < 0.15
    member[flip] = rng.integers(0, 4, flip.sum())
    np.testing.assert_array_equal(align_labels(reference, member, 4), permutation)
    probs = np.eye(4)[member]
    np.testing.assert_array_equal(permute_probs(probs, permutation).argmax(1), permutation[member])


def test_consensus_agreement_and_spread():
    aligned = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.8, 0.2], [0.3, 0.7]], [[1.0, 0.0], [0.4, 0.6]]])  # (M=3, N=2, K=2)
    result = consensus(aligned)
    np.testing.assert_allclose(result.class_probs, [[0.9, 0.1], [13 / 30, 17 / 30]])
    np.testing.assert_array_equal(result.labels, [0, 1])
    np.testing.assert_allclose(result.agreement, [1.0, 2 / 3])
    assert result.prob_sd[0] < result.prob_sd[1]
    record = build_record([np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), np.array([0, 1, 0, 1])], 2, ["a", "b", "c"], [0, 1, 2])
    assert record.permutations[1] == [1, 0]
    assert record.pairwise_ari[0][1] == pytest.approx(1.0) and record.mean_pairwise_ari < 1.0


def two_suit_cards(path, count=600):
    cards = make_cards(count * 2, size=16, max_angle_deg=0.0, seed=3, max_shear_deg=0.0, max_shift_fraction=0.0)
    keep = np.isin(cards.labels, [0, 2])
    np.save(path, cards.images[keep])
    return cards.labels[keep]


# No continuous latent and every pixel scored: the settings under which a joint VAE's classes form on
# two suits within a few epochs (with a continuous latent, z takes the suit and q(y|x) stays ≈ 0.5).
TINY = [
    "--hidden",
    "48",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--epochs",
    "8",
    "--no-rotation",
    "--no-translation",
    "--latent-dim",
    "0",
    "--pixel-fraction",
    "1",
    "-q",
]


def test_ensemble_summary_points_to_the_true_number_of_classes(tmp_path, capsys):
    """Two suits. With K = 2 every member fills both classes and they agree; with K = 4 and classes
    from random weights the members fill only two classes each (measured [2, 2, 2]) — the sign
    that K is too large. Encode gives the consensus, agreement and spread; the agreement falls when
    one member is replaced by an untrained network (the control)."""
    stack = tmp_path / "cards.npy"
    labels = two_suit_cards(stack)
    summaries = {}
    for classes in (2, 4):
        run = tmp_path / f"k{classes}"
        # K = 4 from random weights (--class-init none): the default starts every member from a
        # classical partition of K classes, which fills all K (tests/test_discovery.py tests
        # --classes auto, the default's way to judge K)
        start = ["--class-init", "none"] if classes == 4 else []
        code, out, err = run_cli(["train", stack, "-o", run, "--classes", str(classes), "--ensemble", "3", *TINY[:-1], *start, "--json"], capsys)
        assert code == 0, err
        summaries[classes] = json.loads(out)
        assert sorted(p.name for p in run.iterdir()) == ["ensemble.json", "member_0", "member_1", "member_2"]
    assert summaries[2]["classes_used"] == [2, 2, 2] and summaries[2]["mean_pairwise_ari"] > 0.7, summaries[2]
    assert max(summaries[4]["classes_used"]) < 4, summaries[4]

    encoded = tmp_path / "encoded.h5"
    code, _, err = run_cli(["encode", tmp_path / "k2", stack, "-o", encoded, "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    with h5py.File(encoded) as handle:
        agreement, classes = handle["class_agreement"][()], handle["class"][()]
        assert handle["class_prob_sd"].shape == agreement.shape == (len(labels),)
        np.testing.assert_allclose(agreement * 3, np.round(agreement * 3), atol=1e-5)  # 1/3, 2/3 or 1
        assert agreement.min() >= 1 / 3 - 1e-6 and agreement.max() <= 1 + 1e-6
        assert handle.attrs["ensemble_members"] == 3
    from microvae.metrics import matched_accuracy

    assert matched_accuracy(labels, classes) > 0.95  # the consensus recovers the suits
    # the control: member 2 replaced by an untrained network, which knows nothing of the suits
    from microvae.run_folder import load_checkpoint, load_run
    from microvae.training import build_model

    final = tmp_path / "k2" / "member_2" / "checkpoints" / "final.pt"
    checkpoint = load_checkpoint(final)
    checkpoint["model_state"] = build_model(load_run(final.parent.parent)[1]["model"], seed=99).state_dict()
    torch.save(checkpoint, final)
    code, _, err = run_cli(["encode", tmp_path / "k2", stack, "-o", tmp_path / "control.h5", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "control.h5") as handle:
        control = handle["class_agreement"][()]
    # measured: all three agree on every card (mean agreement 1.0); with the untrained member on
    # half of them (mean 0.83)
    assert (agreement == 1).mean() > 0.9 and (control == 1).mean() < 0.7, ((agreement == 1).mean(), (control == 1).mean())
    assert agreement.mean() - control.mean() > 0.1
    # rerunning the same ensemble command is up to date
    code, out, _ = run_cli(["train", stack, "-o", tmp_path / "k2", "--classes", "2", "--ensemble", "3", *TINY[:-1]], capsys)
    assert code == 0 and "up to date" in out


def test_ensemble_encode_and_export_on_scans(tmp_path, capsys):
    """The agreement map reaches export as a calibrated TIFF beside the class map, each patch's
    agreement at its centre pixel. (Whether the agreement measures agreement is tested above, on
    members that split two suits; here, 2 epochs on one lattice, both members put every patch in one
    class and agree trivially.)"""
    from microvae.synthetic import make_lattice

    scan = tmp_path / "scan.tif"
    tifffile.imwrite(scan, make_lattice(shape=(96, 96), seed=4).image, imagej=True, resolution=(50, 50), metadata={"unit": "nm"})
    patches = tmp_path / "patches.h5"
    assert run_cli(["extract", scan, "--grid", "8", "--window", "12", "-o", patches, "-q"], capsys)[0] == 0
    run = tmp_path / "ens"
    code, _, err = run_cli(
        ["train", patches, "-o", run, "--classes", "2", "--ensemble", "2", "--hidden", "16", "--epochs", "2", "--batch-size", "32", "--device", "cpu", "-q"],
        capsys,
    )
    assert code == 0, err
    encoded = tmp_path / "encoded.h5"
    assert run_cli(["encode", "--pretrained", run, scan, "-o", encoded, "--device", "cpu", "-q"], capsys)[0] == 0
    maps = tmp_path / "maps"
    assert run_cli(["export", encoded, "-o", maps, "--format", "tiff", "-q"], capsys)[0] == 0
    agreement = next(maps.glob("*_class_agreement.tif"))
    with tifffile.TiffFile(agreement) as tif:
        values = tif.asarray()
        assert values.shape == (96, 96) and tif.imagej_metadata["unit"] == "nm"
    with h5py.File(encoded) as handle:
        centres = np.round(handle["coords"][()]).astype(int)
        np.testing.assert_allclose(values[centres[:, 0], centres[:, 1]], handle["class_agreement"][()], atol=1e-6)
    assert np.isin(values[np.isfinite(values)], [0.5, 1.0]).all()  # two members: both agree, or not
    code, _, err = run_cli(["train", patches, "-o", tmp_path / "one", "--classes", "2", "--ensemble", "1", "-q"], capsys)
    assert code == 2 and "at least 2" in err


def test_a_semi_supervised_ensemble_keeps_the_labelled_class_names(tmp_path, capsys):
    """--labels with --ensemble: every member trains on the same labels, so their classes carry the
    labels' names and the alignment is the identity; each member records its labelled patches."""
    stack = tmp_path / "cards.npy"
    truth = two_suit_cards(stack, count=300)
    suit = (truth == 2).astype(np.int64)  # class 0 = suit 0, class 1 = suit 2
    labelled = np.random.default_rng(1).random(len(suit)) < 0.1
    np.save(tmp_path / "labels.npy", np.where(labelled, suit, -1))
    run = tmp_path / "run"
    code, out, err = run_cli(
        ["train", stack, "-o", run, "--classes", "2", "--ensemble", "2", "--labels", tmp_path / "labels.npy", *TINY[:-1], "--json"], capsys
    )
    assert code == 0, err
    record = json.loads((run / "ensemble.json").read_text())
    assert record["permutations"] == [[0, 1], [0, 1]], record
    for member in ("member_0", "member_1"):
        provenance = json.loads((run / member / "provenance.json").read_text())
        assert provenance["parameters"]["labelled_patches"] == int(labelled.sum())
    encoded = tmp_path / "encoded.h5"
    assert run_cli(["encode", run, stack, "-o", encoded, "--device", "cpu", "-q"], capsys)[0] == 0
    with h5py.File(encoded) as handle:
        assert (handle["class"][()][~labelled] == suit[~labelled]).mean() > 0.9  # no matching needed

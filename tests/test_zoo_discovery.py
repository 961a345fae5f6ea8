"""Class discovery with the CLI's defaults on CI-sized zoo members (microvae.zoo): the lattices at
two seeds each, the turning cards and molecules at one.

The bars are issue 15's scaled to CI size (about 500 patches, 30 epochs on one CPU thread):
benchmarks/bench_discovery.py measures the full table. Each member has a control that must fail
its bar: an untrained model of the same shape, or the wrong number of classes.
"""

from __future__ import annotations

import numpy as np
import pytest

from microvae.encoding import encode_array
from microvae.metrics import adjusted_rand_index, circular_correlation, matched_accuracy
from microvae.run_folder import load_run
from microvae.stages import run_train
from microvae.training import build_model, configs_from_settings
from microvae.zoo import MEMBERS, make_case

EPOCHS = 30


def train_defaults(case, seed: int, folder, recon_error: bool = False, **settings) -> dict:
    """Train with the CLI's defaults (what a user knows: K, rotation, translation) and encode
    (with each patch's reconstruction error when ``recon_error``)."""
    np.save(folder / "patches.npy", case.patches)
    values = {
        "classes": case.n_classes,
        "rotation": case.rotation,
        "translation": case.translation,
        "epochs": EPOCHS,
        "seed": seed,
        "device": "cpu",
        **settings,
    }
    model_config, train_config = configs_from_settings(values)
    run_train(folder / "patches.npy", folder / "run", model_config, train_config)
    model, _ = load_run(folder / "run")
    return encode_array(model, case.patches, recon_error=recon_error)


def explained_variance(case, encoded: dict) -> float:
    """The verdict's share of the pixel variance the model explains: 1 − the mean reconstruction
    error over the patches' per-pixel variance (0: no better than the mean patch)."""
    return 1.0 - float(encoded["recon_error"].mean()) / float(case.patches.astype(np.float64).var(axis=0).mean())


def untrained_encoding(case, seed: int) -> dict:
    """An untrained model of the defaults' shape (no templates learned), encoded: the control."""
    model_config, _ = configs_from_settings({"classes": case.n_classes, "rotation": case.rotation, "translation": case.translation})
    model_config.image_size, model_config.channels = case.patches.shape[-1], case.patches.shape[1]
    model_config.likelihood = "bernoulli"
    return encode_array(build_model(model_config, seed), case.patches, recon_error=False)


def untrained_classes(case, seed: int) -> np.ndarray:
    return untrained_encoding(case, seed)["class"]


def angle_correlation(case, angle_rad: np.ndarray) -> float:
    """Circular correlation of ``angle_rad`` with the true turn within each true class, modulo the
    class's rotational symmetry (n·angle for an n-fold shape), averaged over the classes (the
    benchmark's ``angle corr mod symmetry``)."""
    orders = case.extra.get("symmetry_order", (1,) * case.n_classes)
    folded = [
        circular_correlation(orders[c] * case.angle_rad[case.labels == c], orders[c] * angle_rad[case.labels == c])
        for c in range(case.n_classes)
        if (case.labels == c).sum() > 2
    ]
    return float(np.nanmean(folded))


def defects_outside_clean(case, classes: np.ndarray) -> float:
    defect = np.asarray(case.extra["is_defect"], bool)
    clean = np.bincount(classes[~defect]).argmax()
    return float((classes[defect] != clean).mean())


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("seed", [0])
def test_cards_turned_by_any_angle(tmp_path, seed):
    """±120° cards (4 suits, 24 px): matched accuracy ≥ 0.95 (measured 1.000 at seeds 0–2 in
    bench_discovery's CI table); the angle latent follows the true turn, modulo each suit's
    symmetry, at ≥ 0.9, issue 15's bar (the template pose searching edges, its poses read off the
    grid; measured 0.951 at seed 0 with one thread, 0.951 / 0.975 / 0.898 at seeds 0–2 in the CI
    table; on the grid 0.950 / 0.975 / 0.865; 0.79 / 0.79 / 0.82 with the search on the plain
    patches, −0.05 / 0.02 / 0.21 without the template pose). An
    untrained model of the same shape: accuracy < 0.6 and angle < 0.3 (measured 0.287, 0.038). One seed since the molecules (below) also turn end to end: the suite's
    ~15-minute budget (seed 1 ran until 2026-11-30, 43 s)."""
    case = make_case("cards_120", seed, "ci")
    encoded = train_defaults(case, seed, tmp_path)
    assert matched_accuracy(case.labels, encoded["class"]) >= 0.95
    assert angle_correlation(case, encoded["angle_rad"]) >= 0.9  # issue 15's bar
    control = untrained_encoding(case, seed)  # control: untrained
    assert matched_accuracy(case.labels, control["class"]) < 0.6
    assert angle_correlation(case, control["angle_rad"]) < 0.3


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_molecules_of_two_and_three_atoms(tmp_path):
    """Dimers, bent and linear trimers of the same Gaussian atoms (60 / 30 / 10 %, any angle,
    shifted, Poisson at 30 counts; 400 patches of 24 px, fewer than the CI size's 600 to keep the
    suite's budget), seed 0: matched accuracy ≥ 0.95 (the sized object descriptor's start, read
    again by the class posterior; measured 0.983 / 0.978 / 0.975 at seeds 0 / 1 / 2 with 400
    patches, one thread, 31–37 s; 0.988 at seeds 0–2 with 600 in bench_discovery); an untrained
    model of the same shape < 0.7 (0.57–0.60). The angle latent follows the true turn modulo
    each kind's symmetry at ≥ 0.9 (the template pose; measured 0.983 with its poses read off the
    grid, accuracy 0.983; 0.973 on the grid, 0.971 with the search on the plain patches; the
    untrained control 0.078, bar < 0.3). One seed: the candidate's choice is tested at seed 1 in
    tests/test_discovery.py."""
    case = MEMBERS["molecules"](0, n=400, size="ci")
    encoded = train_defaults(case, 0, tmp_path)
    assert matched_accuracy(case.labels, encoded["class"]) >= 0.95
    assert angle_correlation(case, encoded["angle_rad"]) >= 0.9  # issue 15's bar
    control = untrained_encoding(case, 0)  # control: untrained
    assert matched_accuracy(case.labels, control["class"]) < 0.7
    assert angle_correlation(case, control["angle_rad"]) < 0.3


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("seed", [0, 1])
def test_perovskite_film_on_its_substrate(tmp_path, seed):
    """Film against substrate (atom-centred patches, no pose; the film holds two polarization
    variants that PCA splits instead): region accuracy ≥ 0.95, issue 15's bar (measured 1.000 /
    1.000; 0.71–0.84 before the tapered descriptor was a candidate); an untrained model < 0.75
    (measured 0.583). The decoder learns the patches: the model explains ≥ 30 % of the pixel
    variance (measured 0.480 / 0.443); at seed 0 the same run without the decoder's mean offset
    (``mean_offset``, on by default without pose latents) is the control, < 10 %, the verdict's
    "learned nothing" (measured −1.02: the coordinate MLP had not yet drawn the mean patch)."""
    case = make_case("perovskite_film", seed, "ci")
    encoded = train_defaults(case, seed, tmp_path, recon_error=True)
    assert matched_accuracy(case.labels, encoded["class"]) >= 0.95
    assert explained_variance(case, encoded) >= 0.3
    assert matched_accuracy(case.labels, untrained_classes(case, seed)) < 0.75  # control: untrained
    if seed == 0:  # control: the decoder without its offset (one seed: it costs a training run)
        (tmp_path / "control").mkdir()
        control = train_defaults(case, seed, tmp_path / "control", recon_error=True, mean_offset=False)
        assert explained_variance(case, control) < 0.1


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("seed", [0, 1])
def test_two_phase_lattice(tmp_path, seed):
    """Two regions of a lattice (atom-centred patches, no pose): region accuracy ≥ 0.95, issue
    15's lattice bar (measured 1.000 / 1.000 from the object descriptor's partition; 0.957 / 0.966
    from the tapered Fourier one before the object descriptor was offered without rotation); the
    model explains ≥ 30 % of the pixel variance (measured 0.613 / 0.658, one thread; 0.135 / 0.138 without the
    decoder's mean offset, before the object descriptor)."""
    case = make_case("two_phase", seed, "ci")
    encoded = train_defaults(case, seed, tmp_path, recon_error=True)
    assert matched_accuracy(case.labels, encoded["class"]) >= 0.95
    assert explained_variance(case, encoded) >= 0.3
    assert matched_accuracy(case.labels, untrained_classes(case, seed)) < 0.75  # control: untrained


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("seed", [0, 1])
def test_stm_defects(tmp_path, seed):
    """STM lattice with point defects, grid FFT patches, K = 3: ARI ≥ 0.4 and ≥ 65 % of the
    defect and interference patches outside the clean class. Issue 15's bar (0.5 and 90 %) is not
    met at CI size: measured ARI 0.550 / 0.425, outside 0.94 / 0.87 (seeds 0 / 1, bench_discovery,
    2 threads; the classical PCA + k-means it starts from: 0.550 / 0.457). The untrained control
    fails. The model explains ≥ 10 % of the pixel variance, over the verdict's "learned nothing"
    line (measured 0.172 / 0.212; −1.32 / −1.25 without the decoder's mean offset)."""
    case = make_case("stm_defects", seed, "ci")
    encoded = train_defaults(case, seed, tmp_path, recon_error=True)
    assert defects_outside_clean(case, encoded["class"]) >= 0.65
    assert adjusted_rand_index(case.labels, encoded["class"]) >= 0.4
    assert explained_variance(case, encoded) >= 0.1
    control = untrained_classes(case, seed)
    assert defects_outside_clean(case, control) < 0.65 or adjusted_rand_index(case.labels, control) < 0.4


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("seed", [0, 1])
def test_honeycomb_with_five_percent_dopants(tmp_path, seed):
    """Honeycomb with 5 % dopants on the dim sublattice under a slow background, K = 3: matched
    accuracy ≥ 0.95, issue 15's lattice bar (CI size, 680 patches of 20², bench_discovery measured
    0.977 / 0.996 / 0.990 at seeds 0–2; 0.953 / 0.921 / 0.943 before the tied-covariance
    refinement). The classes start from the mean-removed, Hann-tapered PCA partition refined by a
    Gaussian mixture with one shared covariance, and the class posterior reads that view; PCA of
    the patches as they are splits the host by the background (0.55–0.77). The untrained control
    fails. The model explains ≥ 40 % of the pixel variance (measured 0.562 / 0.682; −0.09 / 0.42
    without the decoder's mean offset)."""
    case = make_case("honeycomb_dopants", seed, "ci")
    encoded = train_defaults(case, seed, tmp_path, recon_error=True)
    assert matched_accuracy(case.labels, encoded["class"]) >= 0.95
    assert explained_variance(case, encoded) >= 0.4
    assert matched_accuracy(case.labels, untrained_classes(case, seed)) < 0.75  # control: untrained

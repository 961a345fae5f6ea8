"""The verdict on a trained model's classes, from hand-made numbers (numpy only, no training).

Every check is paired with a control that must fail it: the good model never gets the warnings
the bad ones get, and the bad ones do.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from microvae.errors import MicrovaeError, ParameterError
from microvae.metrics import adjusted_rand_index
from microvae.verdict import DISAGREEMENT_ARI, EMPTY_FRACTION, LOW_CONFIDENCE, NOTHING_LEARNED, Verdict, assess

K = 3
N = 300
PIXEL_VARIANCE = 2.0

NOTHING = "learned (almost) nothing"
SOFT = "posteriors are soft"
DISAGREES = "The classes agree with no classical partition of the same patches"
# the two warnings the single disagreement warning replaced: they must never come back
OLD_WARNINGS = ("short restarts", "differ from the classical baseline")


def confident_probs(classes: np.ndarray, k: int = K, sure: float = 0.98) -> np.ndarray:
    """(N, k) posteriors with ``sure`` on each patch's class and the rest spread evenly."""
    probs = np.full((len(classes), k), (1.0 - sure) / (k - 1))
    probs[np.arange(len(classes)), classes] = sure
    return probs


def balanced_classes(n: int = N, k: int = K) -> np.ndarray:
    return np.arange(n) % k


def low_error(n: int = N) -> np.ndarray:
    """Reconstruction error at 1 % of the pixel variance, with a little spread."""
    rng = np.random.default_rng(1)
    return 0.01 * PIXEL_VARIANCE * (1 + 0.1 * rng.standard_normal(n))


def permuted(classes: np.ndarray, permutation=(2, 0, 1)) -> np.ndarray:
    return np.asarray(permutation)[classes]


def random_labels(seed: int, n: int = N, k: int = K) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, n)


def noisy(classes: np.ndarray, m: int) -> np.ndarray:
    """``classes`` with the first ``m`` patches moved to another class (ARI falls as m grows)."""
    labels = classes.copy()
    labels[:m] = (classes[:m] + np.arange(m) % 2 + 1) % K
    return labels


def has(verdict: Verdict, fragment: str) -> bool:
    return any(fragment in warning for warning in verdict.warnings)


def disagreement_warnings(verdict: Verdict) -> list[str]:
    return [warning for warning in verdict.warnings if warning.startswith(DISAGREES)]


@pytest.fixture
def good() -> Verdict:
    classes = balanced_classes()
    return assess(confident_probs(classes), low_error(), PIXEL_VARIANCE)


# ---------------------------------------------------------------------------------------------
# a good model


def test_good_model_gets_no_warnings(good):
    assert good.n_patches == N
    assert good.class_sizes == [100, 100, 100]
    assert good.mean_confidence == pytest.approx(0.98)
    assert good.mean_confidence > 0.95
    assert good.explained_variance == pytest.approx(0.99, abs=0.005)
    assert good.warnings == []
    paragraph = good.paragraph()
    assert "3 classes of 100/100/100 patches" in paragraph
    assert "(33/33/33 %)" in paragraph
    assert "mean class confidence 0.98" in paragraph
    assert "explains 99 % of the pixel variance" in paragraph
    assert paragraph.endswith("No warnings.")
    assert "Warnings:" not in paragraph


def test_good_model_control_a_bad_model_has_warnings_in_its_paragraph():
    # control: the "No warnings" sentence is not there when there are warnings
    verdict = assess(np.full((N, K), 1 / K), np.full(N, PIXEL_VARIANCE), PIXEL_VARIANCE)
    assert verdict.warnings
    paragraph = verdict.paragraph()
    assert "No warnings" not in paragraph
    assert " Warnings: " in paragraph
    for warning in verdict.warnings:
        assert warning in paragraph


# ---------------------------------------------------------------------------------------------
# explained variance


def test_mean_only_reconstruction_learned_nothing(good):
    classes = balanced_classes()
    verdict = assess(confident_probs(classes), np.full(N, PIXEL_VARIANCE), PIXEL_VARIANCE)
    assert verdict.explained_variance == pytest.approx(0.0, abs=1e-12)
    assert has(verdict, NOTHING)
    assert "explains only 0 %" in " ".join(verdict.warnings)
    # control: the good model explains almost everything and is not told it learned nothing
    assert good.explained_variance > 1 - NOTHING_LEARNED
    assert not has(good, NOTHING)


def test_learned_nothing_threshold_is_at_ten_percent():
    classes = balanced_classes()
    below = assess(confident_probs(classes), np.full(N, 0.95 * PIXEL_VARIANCE), PIXEL_VARIANCE)
    above = assess(confident_probs(classes), np.full(N, 0.5 * PIXEL_VARIANCE), PIXEL_VARIANCE)
    assert below.explained_variance == pytest.approx(0.05)
    assert above.explained_variance == pytest.approx(0.5)
    assert has(below, NOTHING)
    assert not has(above, NOTHING)  # control


def test_model_without_classes_still_judged_on_variance():
    verdict = assess(None, np.full(N, PIXEL_VARIANCE), PIXEL_VARIANCE)
    assert verdict.class_sizes == [] and verdict.mean_confidence is None
    assert has(verdict, NOTHING)
    assert "classes of" not in verdict.paragraph()
    control = assess(None, low_error(), PIXEL_VARIANCE)
    assert control.warnings == []
    assert control.paragraph().endswith("No warnings.")


# ---------------------------------------------------------------------------------------------
# empty and dominant classes


def test_empty_class_is_named(good):
    classes = np.arange(N) % 2  # all mass on classes 0 and 1
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE)
    assert verdict.class_sizes == [150, 150, 0]
    assert has(verdict, "Class 2 is empty")
    assert not has(verdict, "Class 0 is") and not has(verdict, "Class 1 is")
    # control: the balanced model has no empty class
    assert not any("empty" in warning for warning in good.warnings)


def test_nearly_empty_class_is_named():
    n = 1000
    classes = np.zeros(n, dtype=int)
    classes[:499] = 1
    classes[-1] = 2  # 1 patch of 1000 ≤ 0.5 %
    verdict = assess(confident_probs(classes), low_error(n), PIXEL_VARIANCE)
    assert 1 <= EMPTY_FRACTION * n
    assert has(verdict, "Class 2 is nearly empty (1 patches)")
    # control: 10 patches of 1000 (1 %) is small, but not nearly empty
    classes[-10:] = 2
    control = assess(confident_probs(classes), low_error(n), PIXEL_VARIANCE)
    assert control.class_sizes[2] == 10
    assert not any("empty" in warning for warning in control.warnings)


def test_dominant_class_is_named(good):
    n = 1000
    classes = np.zeros(n, dtype=int)
    classes[950:975] = 1
    classes[975:] = 2
    verdict = assess(confident_probs(classes), low_error(n), PIXEL_VARIANCE)
    assert verdict.class_sizes == [950, 25, 25]
    assert has(verdict, "Class 0 holds 95 %")
    assert "950/25/25 patches (95/" in verdict.paragraph()
    # controls: the balanced model, and a class with 85 % (below the 90 % line), are not dominant
    assert not has(good, "holds")
    classes = np.zeros(n, dtype=int)
    classes[850:925] = 1
    classes[925:] = 2
    control = assess(confident_probs(classes), low_error(n), PIXEL_VARIANCE)
    assert not has(control, "holds")


# ---------------------------------------------------------------------------------------------
# confidence


def test_uniform_posteriors_are_soft(good):
    verdict = assess(np.full((N, K), 1 / K), low_error(), PIXEL_VARIANCE)
    assert verdict.mean_confidence == pytest.approx(1 / K)
    assert has(verdict, f"mean confidence {1 / K:.2f}")
    assert has(verdict, SOFT)
    # control: the confident model is not soft
    assert good.mean_confidence >= LOW_CONFIDENCE
    assert not has(good, SOFT)


def test_soft_posteriors_threshold():
    classes = balanced_classes()
    soft = assess(confident_probs(classes, sure=0.7), low_error(), PIXEL_VARIANCE)
    sure = assess(confident_probs(classes, sure=0.9), low_error(), PIXEL_VARIANCE)
    assert has(soft, SOFT)
    assert not has(sure, SOFT)  # control
    assert soft.class_sizes == sure.class_sizes == [100, 100, 100]


# ---------------------------------------------------------------------------------------------
# agreement with the classical candidate partitions and the baseline: one disagreement warning


def test_baseline_equal_up_to_permutation_agrees():
    classes = balanced_classes()
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", permuted(classes)))
    assert verdict.baseline == "pca_kmeans"
    assert verdict.baseline_ari == pytest.approx(1.0)
    assert not has(verdict, DISAGREES)
    assert "agreement with the classical baseline (pca_kmeans) ARI 1.00" in verdict.paragraph()
    assert verdict.warnings == []
    # control: a random baseline (and nothing else to agree with) is a disagreement
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", random_labels(3)))
    assert has(control, DISAGREES)


def test_random_baseline_and_random_candidates_give_one_warning():
    classes = balanced_classes()
    candidates = {"r0": random_labels(10), "r1": random_labels(11), "r2": random_labels(12)}
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", random_labels(3)), candidate_classes=candidates)
    assert abs(verdict.baseline_ari) < 0.05
    assert max(abs(ari) for ari in verdict.candidate_ari.values()) < 0.05
    assert verdict.candidate_agreement is not None and verdict.candidate_agreement < DISAGREEMENT_ARI
    # one warning for both, not one per source, and none of the replaced sentences
    assert len(disagreement_warnings(verdict)) == 1
    assert len(verdict.warnings) == 1
    assert not any(has(verdict, old) for old in OLD_WARNINGS)
    best = max([verdict.baseline_ari, *verdict.candidate_ari.values()])
    assert f"(best ARI {best:.2f})" in verdict.warnings[0]
    # control: the same random baseline, but one candidate that agrees with the model settles it
    agreeing = {**candidates, "r3": permuted(classes, (1, 2, 0))}
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", random_labels(3)), candidate_classes=agreeing)
    assert control.candidate_ari["r3"] == pytest.approx(1.0)
    assert not has(control, DISAGREES)
    assert control.warnings == []


def test_agreeing_baseline_settles_random_candidates():
    classes = balanced_classes()
    candidates = {"r0": random_labels(10), "r1": random_labels(11)}
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", permuted(classes)), candidate_classes=candidates)
    assert max(abs(ari) for ari in verdict.candidate_ari.values()) < 0.05
    assert verdict.baseline_ari == pytest.approx(1.0)
    assert not has(verdict, DISAGREES)
    # control: the same candidates with a random baseline disagree
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", random_labels(3)), candidate_classes=candidates)
    assert has(control, DISAGREES)


def test_random_baseline_without_candidates_disagrees():
    classes = balanced_classes()
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", random_labels(3)))
    assert verdict.candidate_ari == {} and verdict.candidate_agreement is None
    assert len(disagreement_warnings(verdict)) == 1
    assert f"(best ARI {verdict.baseline_ari:.2f})" in verdict.warnings[0]
    # control: no baseline and no candidates, nothing to compare, no warning
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE)
    assert control.baseline is None and control.baseline_ari is None
    assert control.candidate_ari == {} and control.candidate_agreement is None
    assert not has(control, DISAGREES)


def test_candidates_that_agree_raise_no_warning():
    classes = balanced_classes()
    candidates = {"pca_kmeans": permuted(classes), "hog_gmm": permuted(classes, (1, 0, 2))}
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes=candidates, chosen_start="pca_kmeans")
    assert verdict.candidate_ari == {"pca_kmeans": pytest.approx(1.0), "hog_gmm": pytest.approx(1.0)}
    assert verdict.candidate_agreement == pytest.approx(1.0)
    assert verdict.chosen_start == "pca_kmeans"
    assert verdict.warnings == []
    paragraph = verdict.paragraph()
    assert "with the candidate partitions ARI 1.00 (among themselves 1.00), started from pca_kmeans" in paragraph
    # control: random candidates disagree, and the paragraph shows the span of their ARIs
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes={"pca_kmeans": random_labels(20), "hog_gmm": random_labels(21)})
    assert has(control, DISAGREES)
    low, high = min(control.candidate_ari.values()), max(control.candidate_ari.values())
    assert f"with the candidate partitions ARI {low:.2f}–{high:.2f}" in control.paragraph()


def test_random_candidates_disagree():
    classes = balanced_classes()
    candidates = {"pca_kmeans": random_labels(20), "hog_gmm": random_labels(21)}
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes=candidates)
    assert max(abs(ari) for ari in verdict.candidate_ari.values()) < 0.05
    assert len(disagreement_warnings(verdict)) == 1
    # control: one candidate that agrees is enough
    candidates["moments_kmeans"] = permuted(classes)
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes=candidates)
    assert max(control.candidate_ari.values()) == pytest.approx(1.0)
    assert not has(control, DISAGREES)


def test_candidates_disagreeing_among_themselves_is_no_warning():
    # feature spaces often disagree about the data: low candidate_agreement alone is not warned about
    classes = balanced_classes()
    candidates = {"a": permuted(classes), "b": random_labels(20), "c": random_labels(21)}
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes=candidates)
    assert verdict.candidate_agreement < DISAGREEMENT_ARI
    assert verdict.warnings == []
    # control: without the agreeing candidate the model is told it agrees with nothing
    del candidates["a"]
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes=candidates)
    assert has(control, DISAGREES)


def test_disagreement_threshold_is_at_half():
    classes = balanced_classes()
    above, below = noisy(classes, 51), noisy(classes, 66)
    assert DISAGREEMENT_ARI < adjusted_rand_index(above, classes) < 0.6
    assert 0.4 < adjusted_rand_index(below, classes) < DISAGREEMENT_ARI
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes={"near": below})
    assert has(verdict, DISAGREES)
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes={"near": above})
    assert not has(control, DISAGREES)
    # the baseline is held to the same line
    assert has(assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("b", below)), DISAGREES)
    assert not has(assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, baseline=("b", above)), DISAGREES)


def test_single_candidate_has_no_pairwise_agreement():
    classes = balanced_classes()
    verdict = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes={"only": classes})
    assert verdict.candidate_agreement is None
    assert verdict.candidate_ari == {"only": pytest.approx(1.0)}
    assert "among themselves" not in verdict.paragraph()
    # control: two candidates do have a pairwise agreement, and the paragraph says so
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, candidate_classes={"only": classes, "other": permuted(classes)})
    assert control.candidate_agreement == pytest.approx(1.0)
    assert "among themselves 1.00" in control.paragraph()


def test_model_without_classes_is_not_compared():
    candidates = {"pca_kmeans": random_labels(20)}
    verdict = assess(None, low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", random_labels(3)), candidate_classes=candidates)
    assert verdict.baseline is None and verdict.candidate_ari == {}
    assert verdict.warnings == []
    # control: the same comparisons for a model with classes do warn
    control = assess(confident_probs(balanced_classes()), low_error(), PIXEL_VARIANCE, baseline=("pca_kmeans", random_labels(3)), candidate_classes=candidates)
    assert has(control, DISAGREES)


# ---------------------------------------------------------------------------------------------
# inconsistent input, diverged models and identical patches


def test_length_mismatch_is_a_parameter_error():
    classes = balanced_classes()
    with pytest.raises(ParameterError, match=f"{N} rows.*{N - 1}"):
        assess(confident_probs(classes), low_error(N - 1), PIXEL_VARIANCE)
    with pytest.raises(ParameterError):
        assess(confident_probs(classes), low_error(N + 1), PIXEL_VARIANCE)
    assert issubclass(ParameterError, MicrovaeError)  # the CLI shows it as a user error
    # controls: matching lengths, and a model without classes, raise nothing
    assert assess(confident_probs(classes), low_error(N), PIXEL_VARIANCE).n_patches == N
    assert assess(None, low_error(N - 1), PIXEL_VARIANCE).n_patches == N - 1


def noisy_blobs(n: int, seed: int, salt: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(signal, observed) (n, 1, 16, 16): one Gaussian blob (σ 2 px, brightness 0.5–1.5) at a random
    place per patch under Gaussian noise of sd 1.2 (ten times the signal's variance), and with
    ``salt`` a fraction of the pixels set to ±4 (salt-and-pepper)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:16, :16]
    centres = rng.uniform(4, 12, (n, 2))
    heights = rng.uniform(0.5, 1.5, n)
    signal = heights[:, None, None] * np.exp(-((rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2) / 8.0)
    observed = signal + 1.2 * rng.standard_normal(signal.shape)
    if salt:
        hit = rng.random(signal.shape) < salt
        observed[hit] = rng.choice([-4.0, 4.0], hit.sum())
    return signal[:, None], observed[:, None]


@pytest.mark.parametrize("salt", [0.0, 0.05])
def test_a_model_that_drew_noisy_objects_faithfully_did_learn_something(salt):
    """Patches whose pixel variance is mostly noise: a model that draws every blob exactly explains
    a few % of the pixel variance, under the 10 % of "learned nothing", but nearly all of the
    covariance between neighbouring pixels, which pixel-independent noise lacks (so it is not
    told it learned nothing); a model that draws the mean patch explains neither and is."""
    import torch

    from microvae.encoding import neighbour_product

    signal, observed = noisy_blobs(2000, seed=3, salt=salt)
    pixel_variance = float(observed.var(axis=0).mean())
    data_neighbours = float(neighbour_product(torch.from_numpy(observed - observed.mean(axis=0))).mean())
    classes = (signal.reshape(len(signal), -1).max(1) > 1.0).astype(int)
    probs = confident_probs(classes, k=2)

    def verdict_of(reconstruction):
        residual = reconstruction - observed
        recon_error = (residual**2).reshape(len(residual), -1).mean(1)
        return assess(probs, recon_error, pixel_variance, neighbours=(neighbour_product(torch.from_numpy(residual)).numpy(), data_neighbours))

    faithful = verdict_of(signal)
    assert faithful.explained_variance < NOTHING_LEARNED  # the pixel variance alone would call it a failure
    assert faithful.signal_explained > 0.8
    assert not has(faithful, NOTHING)
    assert "of the neighbour covariance" in faithful.paragraph()
    # controls: the mean patch, and blobs drawn in the wrong places, explain nothing of either
    mean_only = verdict_of(np.broadcast_to(observed.mean(axis=0), observed.shape))
    assert mean_only.signal_explained == pytest.approx(0.0, abs=0.02) and has(mean_only, NOTHING)
    misplaced = verdict_of(np.roll(signal, 1, axis=0))
    assert misplaced.signal_explained < NOTHING_LEARNED and has(misplaced, NOTHING)
    assert "and " in " ".join(w for w in misplaced.warnings if NOTHING in w)  # both shares named


def test_nan_errors_learned_nothing_and_serialise_strictly():
    classes = balanced_classes()
    error = low_error()
    error[7] = np.nan  # one diverged patch spoils the mean
    verdict = assess(confident_probs(classes), error, PIXEL_VARIANCE, baseline=("pca_kmeans", permuted(classes)), candidate_classes={"pca_kmeans": classes})
    assert verdict.explained_variance == 0.0
    assert has(verdict, NOTHING)
    assert verdict.class_sizes == [100, 100, 100]
    assert "nan" not in verdict.paragraph().lower()
    text = json.dumps(verdict.to_dict(), allow_nan=False)
    assert json.loads(text)["explained_variance"] == 0.0
    all_nan = assess(None, np.full(N, np.nan), PIXEL_VARIANCE)
    assert all_nan.explained_variance == 0.0 and has(all_nan, NOTHING)
    json.dumps(all_nan.to_dict(), allow_nan=False)
    # controls: the same run without the NaN learned a lot, and strict JSON does reject a NaN
    control = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE)
    assert control.explained_variance > 1 - NOTHING_LEARNED and not has(control, NOTHING)
    with pytest.raises(ValueError):
        json.dumps({"explained_variance": float("nan")}, allow_nan=False)


def test_identical_patches_reproduced_exactly_explain_everything():
    classes = balanced_classes()
    verdict = assess(confident_probs(classes), np.zeros(N), 0.0)
    assert verdict.explained_variance == 1.0
    assert verdict.warnings == []
    assert "explains 100 % of the pixel variance" in verdict.paragraph()
    assert assess(None, np.zeros(N), 0.0).warnings == []
    # control: identical patches reproduced with any error explain nothing
    control = assess(confident_probs(classes), np.full(N, 1e-3), 0.0)
    assert control.explained_variance == 0.0
    assert has(control, NOTHING)


# ---------------------------------------------------------------------------------------------
# serialisation


def test_to_dict_is_json_ready():
    classes = balanced_classes()
    verdict = assess(
        confident_probs(classes),
        np.full(N, PIXEL_VARIANCE),
        PIXEL_VARIANCE,
        baseline=("pca_kmeans", random_labels(3)),
        candidate_classes={"hog_gmm": random_labels(20), "pca_kmeans": permuted(classes)},
        chosen_start="pca_kmeans",
    )
    record = verdict.to_dict()
    text = json.dumps(record, allow_nan=False)  # raises on numpy scalars or arrays, and on NaN
    back = json.loads(text)
    assert back["paragraph"] == verdict.paragraph()
    assert back["class_sizes"] == [100, 100, 100]
    assert back["warnings"] == verdict.warnings and back["warnings"]
    assert back["candidate_ari"]["pca_kmeans"] == pytest.approx(1.0)
    assert back["baseline"] == "pca_kmeans"
    assert back["chosen_start"] == "pca_kmeans"
    for key in ("n_patches", "mean_confidence", "explained_variance", "baseline_ari", "candidate_agreement"):
        assert key in back
    assert not any(key.startswith("restart") for key in back)
    # also for a model without classes
    assert "paragraph" in json.loads(json.dumps(assess(None, low_error(), PIXEL_VARIANCE).to_dict(), allow_nan=False))


def test_to_dict_control_numpy_values_would_not_serialise():
    # control for the check above: json.dumps does reject what a careless verdict could hold
    with pytest.raises(TypeError):
        json.dumps({"size": np.int64(3), "sizes": np.array([1, 2])})


# ---------------------------------------------------------------------------------------------
# the partition the run started from

WEAK_START = "does not reproduce on held-out halves"


def test_a_start_partition_that_does_not_reproduce_is_named():
    classes = balanced_classes()
    candidates = {"canonical_kmeans": classes}
    weak = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, None, candidates, "canonical_kmeans", start_strength=0.55)
    assert has(weak, WEAK_START) and "0.55" in weak.paragraph() and weak.start_strength == 0.55
    strong = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, None, candidates, "canonical_kmeans", start_strength=0.95)
    assert not strong.warnings and "prediction strength 0.95" in strong.paragraph()  # control


def test_start_strength_threshold_is_the_prediction_strength_rule():
    from microvae.baselines import STRENGTH_THRESHOLD

    classes = balanced_classes()
    below = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, None, {"pca_kmeans": classes}, "pca_kmeans", STRENGTH_THRESHOLD - 0.01)
    at = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, None, {"pca_kmeans": classes}, "pca_kmeans", STRENGTH_THRESHOLD)
    assert has(below, WEAK_START) and not at.warnings
    # without a start (the paper's procedure) a strength is not judged
    assert not assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, start_strength=0.1).warnings


ANGLES_DISAGREE = "The angle latent and the angle read by matching each class's template disagree"


def test_an_angle_latent_that_disagrees_with_the_template_angle_is_named():
    """Two readings of the same turns that differ by one constant per class (each class's template
    has its own orientation) agree (correlation 1, no warning); a latent unrelated to the turns
    (the control) is named, and so is a latent that reads the turn backwards. NaN template angles
    (a class without a template) are left out."""
    rng = np.random.default_rng(0)
    classes = balanced_classes()
    turn = rng.uniform(-np.pi, np.pi, N)
    template = np.angle(np.exp(1j * (turn + np.array([0.3, 2.0, -1.1])[classes])))
    template[:5] = np.nan
    latent = np.angle(np.exp(1j * (turn + 0.05 * rng.standard_normal(N))))
    agreeing = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, angles=(latent, template, classes))
    assert agreeing.angle_agreement > 0.95 and not has(agreeing, ANGLES_DISAGREE)
    assert "agrees with the template angle at circular correlation" in agreeing.paragraph()
    unrelated = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, angles=(rng.uniform(-np.pi, np.pi, N), template, classes))
    assert abs(unrelated.angle_agreement) < 0.3 and has(unrelated, ANGLES_DISAGREE)
    backwards = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, angles=(-latent, template, classes))
    assert backwards.angle_agreement < -0.9 and has(backwards, ANGLES_DISAGREE)
    without_classes = assess(None, low_error(), PIXEL_VARIANCE, angles=(rng.uniform(-np.pi, np.pi, N), turn, None))
    assert has(without_classes, ANGLES_DISAGREE) and json.loads(json.dumps(without_classes.to_dict()))["angle_agreement"] is not None
    assert assess(confident_probs(classes), low_error(), PIXEL_VARIANCE).angle_agreement is None


def test_angles_of_a_symmetric_class_are_compared_modulo_its_symmetry():
    """A two-fold class (a dimer) whose template angle is read as θ or θ + 180° at random agrees
    with a latent that reads θ once its order is given (orders (2, 1, 2)); without the orders
    (the control) the same readings are named as disagreeing. An unrelated latent is still
    named with the orders."""
    rng = np.random.default_rng(1)
    classes = balanced_classes()
    turn = rng.uniform(-np.pi, np.pi, N)
    flips = np.where(classes != 1, np.pi * rng.integers(0, 2, N), 0.0)
    template = np.angle(np.exp(1j * (turn + flips + np.array([0.3, 2.0, -1.1])[classes])))
    latent = np.angle(np.exp(1j * (turn + 0.05 * rng.standard_normal(N))))
    folded = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, angles=(latent, template, classes, (2, 1, 2)))
    assert folded.angle_agreement > 0.9 and not has(folded, ANGLES_DISAGREE)  # doubled, the 0.05 rad noise lowers it a little
    assert folded.angle_orders == [2, 1, 2] and "orders 2/1/2" in folded.paragraph()
    unfolded = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, angles=(latent, template, classes))
    assert unfolded.angle_agreement < 0.5 and has(unfolded, ANGLES_DISAGREE)
    assert unfolded.angle_orders is None and "orders" not in unfolded.paragraph()
    unrelated = assess(confident_probs(classes), low_error(), PIXEL_VARIANCE, angles=(rng.uniform(-np.pi, np.pi, N), template, classes, (2, 1, 2)))
    assert abs(unrelated.angle_agreement) < 0.3 and has(unrelated, ANGLES_DISAGREE)

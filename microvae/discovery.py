"""The default class-discovery procedure: classes start from the best-separated classical partition.

A joint VAE trained from random weights has to find its classes by itself, and on data it was not
tuned for it often does not: every patch in one class, or classes that split by orientation or by
a nuisance factor. Classical clusterings find the classes of many such data sets at once, but no
single one finds them everywhere (PCA fails on turned shapes, a rotation-invariant descriptor on
sublattices that differ by a turn). The procedure (``class_init='cluster'``, the default):

1. **Pose first** (rotation or translation on): a short class-free model (K = 0, the same pose
   latents, ``restart_fraction`` of the epochs) learns the angle and shift of every patch.
2. **Candidate partitions** of the training patches into K classes (:mod:`microvae.baselines`):
   k-means and a Gaussian mixture on PCA scores of the patches; k-means on the rotation- and
   shift-invariant Fourier descriptor, of the patches as they are and Hann-tapered (the taper
   finds the perovskite film's columns, 1.00 against 0.55–0.68 untapered); k-means on PCA scores
   of the patches with their mean removed and Hann-tapered (the honeycomb's 5 % dopants under a
   slow background: 0.995–0.997 at bench size against 0.71–0.79 for PCA of the patches as they
   are), and the same partition refined by a tied-covariance Gaussian mixture (a 5 % class keeps
   its size: the CI-size honeycomb 0.980 / 0.994 / 0.990 against k-means' 0.953 / 0.921 / 0.943);
   k-means refined by a tied-covariance Gaussian mixture
   (:data:`OBJECT_CANDIDATES`) on the rotation-, shift- and scale-invariant descriptor of the one
   object in each patch (:func:`microvae.baselines.object_descriptor`: outlier pixels and
   a background plane removed, the object marked by Otsu's threshold, the angular harmonics of
   the patch on circles about its centroid, or about the patch centre where the user says the
   objects are centred (no ``translation``: in a patch of a lattice the centroid of the marked
   columns moves towards the brighter side of an interface; the zoo's perovskite film at bench
   size 0.975–0.978 about the centroid, 0.999–1.000 about the centre), at radii scaled by its size; real-space patches,
   whether or not the objects turn: on the two-phase lattice, whose columns do not turn, it
   separates the phases best and finds them, 1.000 at CI size against 0.957–0.966 for the
   tapered Fourier partition chosen without it), which finds font-drawn
   suits under salt-and-pepper noise and a gradient (0.996–1.000 at CI size, k-means alone
   0.940–0.963, where no other candidate passes 0.65), and the same on its sized reading (the same circles for every patch,
   in units of the set's larger objects, :func:`microvae.baselines.object_scale`), which keeps
   what the scale-invariant reading discards: the molecules of the zoo, a dimer, a bent and a
   linear trimer of the same atoms, 0.985–0.988 at CI size against 0.51–0.84; k-means on PCA scores
   of the patches turned and moved into the short model's canonical frame (step 1); where objects
   turn or sit off-centre, multi-reference alignment (:func:`microvae.alignment.aligned_kmeans`:
   class templates and the pose of each patch against them, alternated), which finds the classes
   of shapes that the short model's pose does not align (rotated handwritten digits: 0.76–0.87
   against 0.43–0.52). Alignment is a local search, so it is started from each of
   :data:`ALIGN_STARTS` for :data:`ALIGN_ROUNDS` rounds on a sample of up to
   :data:`ALIGN_SAMPLE` patches, and the start with the lowest objective there (the patches' mean
   misfit to their aligned templates) continues until no patch changes class (at most
   :data:`ALIGN_MORE_ROUNDS` more): ten rounds stop some runs while the objective still falls
   (bench-size digits seed 1: 0.842 after ten, 0.861 at convergence after 23). Every patch is
   then posed against the final templates in one pass.
3. **Choice** (:func:`choose_candidate`): the candidate whose classes are best separated in its
   own feature space (mean silhouette, Rousseeuw 1987, on one common scale) wins, except that
   among candidates within :data:`CONTENDER_FRACTION` of the best, one whose space holds no more
   than K groups (k-means separates K + 1 no better than K, :func:`splits_further`) is
   preferred: such a space splits what the user counts as one kind. Why not the model's likelihood: on the
   zoo (benchmarks/README.md, "Class discovery") the held-out −ELBO of models started from each
   candidate differed by under 1 % between partitions of accuracy 0.4 and 1.0, and preferred
   the wrong one as often as the right one; the silhouette picked the best candidate in most.
   Each candidate's prediction strength (do its K groups reproduce on held-out halves?) is
   recorded beside it; the run's verdict warns when the chosen one's is low
   (:mod:`microvae.verdict`): the best-separated of several arbitrary cuts is still arbitrary.
4. **The main run** starts from random weights with the winning partition as observed classes
   (``init_fraction`` of the epochs, all of them by default: freed classes drifted away from a
   right start on the zoo) and learns the pose, the continuous latents within each class and a
   class posterior for new patches. When the winner is the Fourier descriptor's and rotation is
   on, the class posterior reads that descriptor (``invariant_class_head``); when it is a
   tapered PCA partition, the mean-removed, tapered patch (``tapered_class_head``); when it is
   the object descriptor's, that descriptor (``object_class_head``, with the set's polarity, and
   for the sized reading its unit, ``object_scale_px``).

``class_init='restarts'`` replaces step 3 by one short joint run per candidate, scored by its
held-out −ELBO (kept to measure against); ``'none'`` skips everything (the paper's procedure).
Everything is written under ``RUN_DIR/init/`` (``pose/``, the candidates' labels and
``selection.json``), so an interrupted run resumes and the choice can be read afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .models import JTRVAE, JTRVAEConfig
from .streaming import PatchFile

__all__ = [
    "ALIGN_MORE_ROUNDS",
    "ALIGN_ROUNDS",
    "ALIGN_SAMPLE",
    "ALIGN_STARTS",
    "CONTENDER_FRACTION",
    "FIT_FRACTION",
    "OBJECT_CANDIDATES",
    "SELECTION_VERSION",
    "SEPARATION_SAMPLE",
    "Candidate",
    "COUNT_COMPONENTS",
    "ClassCountChoice",
    "InitialClasses",
    "Partition",
    "candidate_partitions",
    "choose_candidate",
    "choose_initial_classes",
    "choose_n_classes",
    "class_count_spaces",
    "heldout_neg_elbo",
    "learn_pose",
    "restart_epochs",
    "separation",
    "short_run_config",
    "splits_further",
]

#: Version of the files under ``init/``; a selection of another version is recomputed.
SELECTION_VERSION = 14
#: Each candidate clustering is fitted on this fraction of the patches (drawn from the seed) and
#: assigns all: runs with other seeds (an ensemble) start from other partitions where the
#: clusters are not well supported, and from the same where they are.
FIT_FRACTION = 0.8
#: The silhouette is computed on at most this many patches (it costs N² distances).
SEPARATION_SAMPLE = 3000
#: Multi-reference alignment learns its templates from at most this many patches (its starts run
#: and are compared on these alone), then poses and classifies every patch in one pass.
ALIGN_SAMPLE = 3000
#: The partitions multi-reference alignment starts from; it keeps the one that ends best aligned
#: (bench-size digits, seeds 0–2, ten rounds: 0.870 / 0.758 / 0.859 from PCA + k-means alone,
#: 0.866 / 0.842 / 0.859 from the best of these three; 0.869 / 0.861 / 0.859 when that start then
#: runs on to convergence).
ALIGN_STARTS = ("pca_kmeans", "pca_gmm", "fourier_kmeans")
#: Rounds of alignment from each start; the best start then continues for up to
#: :data:`ALIGN_MORE_ROUNDS` more, stopping early when no patch changes class.
ALIGN_ROUNDS = 10
ALIGN_MORE_ROUNDS = 20
#: Candidates separated at least this fraction as well as the best contend (:func:`choose_candidate`).
CONTENDER_FRACTION = 0.8
#: The candidates in the object descriptor's space (scale-invariant, sized): k-means there, then a
#: Gaussian mixture with one covariance shared by all classes started from its centres
#: (``baselines.cluster(method='tied_gmm')``). The descriptor's 96 harmonics are correlated and
#: unequally noisy, which k-means' round cells ignore: on the zoo's font suits at CI size (seeds
#: 0–2) k-means reached 0.940–0.963, the tied mixture 0.996–1.000; on the molecules' sized
#: reading 0.985–0.988 against 0.998 (benchmarks/README.md, "Class discovery").
OBJECT_CANDIDATES = ("object_tied", "sized_object_tied")


@dataclass
class Candidate:
    """One candidate partition.

    Attributes
    ----------
    name : str
        Which clustering made it (a key of :func:`candidate_partitions`, e.g. 'fourier_kmeans').
    sizes : list[int]
        Patches per class.
    separation : float
        Mean silhouette of its classes in its own feature space (−1…1; higher is better separated).
    over_split : bool
        Its feature space holds more than K groups (:func:`splits_further`).
    heldout_neg_elbo : float or None
        Mean −ELBO (nats per patch) of the validation patches under a short run started from it
        (``class_init='restarts'`` only, else None).
    seconds : float
        Wall time to make (and, with restarts, to try) it.
    strength : float or None
        Prediction strength of K k-means clusters in its feature space
        (:func:`microvae.baselines.prediction_strength`, 0…1): below
        :data:`~microvae.baselines.STRENGTH_THRESHOLD` the K groups do not reproduce on held-out
        halves of the patches (None in selections written before it was recorded).
    """

    name: str
    sizes: list[int]
    separation: float
    over_split: bool = False
    heldout_neg_elbo: float | None = None
    seconds: float = 0.0
    strength: float | None = None


@dataclass
class InitialClasses:
    """The outcome of :func:`choose_initial_classes`.

    Attributes
    ----------
    labels : ndarray
        (N,) int64 classes of the winning candidate, for every training patch.
    chosen : str
        Its name.
    criterion : str
        'separation' or 'heldout_neg_elbo'.
    candidates : list[Candidate]
        Every candidate, in the order made.
    candidate_labels : dict[str, ndarray]
        Name → (N,) classes of every candidate (for the agreement in the verdict).
    pose_seconds : float
        Wall time of the class-free pose run (0 when there is no pose).
    """

    labels: np.ndarray
    chosen: str
    criterion: str
    candidates: list[Candidate]
    candidate_labels: dict[str, np.ndarray] = field(default_factory=dict)
    pose_seconds: float = 0.0

    def table(self) -> str:
        """The candidates as a small plain-text table (one line each, the winner marked).

        Returns
        -------
        str
            A header and one line per candidate: name, separation, prediction strength, whether
            its space holds more than K groups, held-out −ELBO (nats per patch, "–" without
            restarts) and patches per class; the winner marked ``← chosen``.
        """
        lines = [f"{'candidate':<22} {'separation':>10} {'strength':>8} {'> K groups':>10} {'held-out −ELBO':>15}  patches per class"]
        for c in self.candidates:
            elbo = "–" if c.heldout_neg_elbo is None else f"{c.heldout_neg_elbo:.2f}"
            strength = "–" if c.strength is None else f"{c.strength:.2f}"
            mark = "  ← chosen" if c.name == self.chosen else ""
            lines.append(f"{c.name:<22} {c.separation:>10.3f} {strength:>8} {'yes' if c.over_split else 'no':>10} {elbo:>15}  {c.sizes}{mark}")
        return "\n".join(lines)

    @property
    def chosen_strength(self) -> float | None:
        """The prediction strength of the chosen candidate (None when not recorded)."""
        return next((c.strength for c in self.candidates if c.name == self.chosen), None)


def restart_epochs(train_config) -> int:
    """Epochs of the pose run and of each short restart: ``restart_fraction`` of the main run's, at least 1.

    Parameters
    ----------
    train_config : TrainConfig
        The main run's settings (``restart_fraction``, ``epochs``).

    Returns
    -------
    int
        ``round(restart_fraction · epochs)``, at least 1.
    """
    return max(1, int(round(train_config.restart_fraction * train_config.epochs)))


def separation(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Mean silhouette of ``labels`` (N,) over (N, F) features brought to one common scale, on a
    seeded sample of at most :data:`SEPARATION_SAMPLE` rows; −1 for a single class.

    Parameters
    ----------
    features : ndarray
        (N, F) features of the patches.
    labels : ndarray
        (N,) int classes.
    seed : int, default 0
        Seed of the row sample.

    Returns
    -------
    float
        The mean silhouette (−1…1; higher is better separated), −1.0 when the labels (or the
        sampled labels) hold a single class.
    """
    from sklearn.metrics import silhouette_score

    from .baselines import standardize

    if len(np.unique(labels)) < 2:
        return -1.0
    rows = np.random.default_rng(seed).permutation(len(labels))[:SEPARATION_SAMPLE]
    if len(np.unique(labels[rows])) < 2:
        return -1.0
    return float(silhouette_score(standardize(features[rows], per_column=False), labels[rows]))


@dataclass
class Partition:
    """A candidate partition: (N,) int64 ``labels``, their :func:`separation`, and the (N, F)
    ``features`` it was made in.

    Attributes
    ----------
    labels : ndarray
        (N,) int64 classes.
    separation : float
        Their :func:`separation` in ``features`` (−1…1).
    features : ndarray
        (N, F) the feature space the clustering was made in.
    over_split : bool, default False
        k-means separates K + 1 clusters better than K in ``features`` (:func:`splits_further`).
    """

    labels: np.ndarray
    separation: float
    features: np.ndarray
    over_split: bool = False


def candidate_partitions(
    images: np.ndarray,
    n_classes: int,
    seed: int,
    pose: tuple[np.ndarray | None, np.ndarray | None] | None = None,
    rotation: bool = False,
    translation: bool = False,
    taper: bool = True,
) -> dict[str, Partition]:
    """Candidate partitions of (N, C, W, W) patches into ``n_classes`` classes (name → :class:`Partition`).

    'tapered_fourier_kmeans' clusters the Fourier descriptor of the Hann-tapered patches
    (:func:`microvae.baselines.fourier_descriptor` with ``taper=True``), 'tapered_pca_kmeans' the
    PCA scores of the patches with their mean removed and Hann-tapered
    (:func:`microvae.baselines.pca_features` with ``taper=True``) and 'tapered_pca_tied' the same
    k-means partition refined by a tied-covariance Gaussian mixture (a 5 % class keeps its size);
    all are left out for FFT
    patches (:func:`microvae.patches.is_spectra`), whose border is no cut through the scene, and
    the tapered PCA also where objects turn (``rotation``): in their frame PCA groups by
    orientation, and on the zoo's font-drawn suits it won the choice in 5 of 9 CI-size runs and
    lowered the accuracy by up to 0.12 (the canonical and aligned candidates pose first).
    'object_tied' clusters the object descriptor
    (:func:`microvae.baselines.object_descriptor`, real-space patches of at least 5 px, with or
    without ``rotation``; without ``translation`` read about the patch centre, ``centred``) and
    'sized_object_tied' its sized reading (``sized=True``: one radius unit for every patch, so
    objects that differ in size or length stay apart), each by k-means refined by a
    tied-covariance mixture (:data:`OBJECT_CANDIDATES`).
    ``pose`` = (angle_rad (N,) or None, shift_px (N, 2) (row, col) pixels or None) of a class-free
    model adds 'canonical_kmeans', the clustering of the patches in that model's frame. With
    ``rotation`` or ``translation``, 'aligned_kmeans' is multi-reference alignment
    (:func:`microvae.alignment.aligned_kmeans`) started from each partition of
    :data:`ALIGN_STARTS` on a sample of up to :data:`ALIGN_SAMPLE` patches, the start with the
    lowest objective on that sample continued to convergence, its templates learned from the
    sample and every patch then posed against them in one pass (so N patches cost one pass, not
    one per start); its separation is read on PCA scores of the patches turned and moved by the
    alignment's pose.

    Parameters
    ----------
    images : ndarray
        (N, C, W, W) patches.
    n_classes : int
        K, the classes of each partition.
    seed : int
        Seed of the PCA, the clusterings (each fitted on :data:`FIT_FRACTION` of the patches) and
        the separation's sample.
    pose : tuple or None, optional
        (angle_rad (N,) in rad or None, shift_px (N, 2) (row, col) in px or None); None (or both
        None) leaves out 'canonical_kmeans'.
    rotation, translation : bool, default False
        Whether the objects turn, or sit off-centre; either adds 'aligned_kmeans'.
    taper : bool, default True
        Add 'tapered_fourier_kmeans' and, without ``rotation``, 'tapered_pca_kmeans' and
        'tapered_pca_tied' (real-space patches only).

    Returns
    -------
    dict of str to Partition
        'pca_kmeans', 'pca_gmm', 'fourier_kmeans', 'tapered_fourier_kmeans', (without
        ``rotation``) 'tapered_pca_kmeans' and 'tapered_pca_tied', and 'object_tied' and
        'sized_object_tied' (real-space patches)
        and, with a pose, 'canonical_kmeans'; with ``rotation`` or ``translation``, 'aligned_kmeans'.
    """
    from .alignment import aligned_kmeans
    from .baselines import canonical_patches, cluster, fourier_descriptor, object_descriptor, object_polarity, pca_features
    from .patches import is_spectra

    pca = pca_features(images, seed=seed)
    spaces = {"pca_kmeans": (pca, "kmeans"), "pca_gmm": (pca, "gmm"), "fourier_kmeans": (fourier_descriptor(images), "kmeans")}
    if taper and not is_spectra(images):  # a spectrum's border holds its highest frequencies, not a cut through the scene
        spaces["tapered_fourier_kmeans"] = (fourier_descriptor(images, taper=True), "kmeans")
        if not rotation:  # in the frame of turned objects PCA groups by orientation (the canonical and aligned candidates pose first)
            spaces["tapered_pca_kmeans"] = (pca_features(images, seed=seed, taper=True), "kmeans")
            spaces["tapered_pca_tied"] = (spaces["tapered_pca_kmeans"][0], "tied_gmm")
    if not is_spectra(images) and images.shape[-1] >= 5:  # offered with or without turns: the separation decides
        polarity = object_polarity(images)
        centred = not translation  # the objects sit at the patch centres: read about the centre, not the centroid
        spaces[OBJECT_CANDIDATES[0]] = (object_descriptor(images, polarity, centred=centred), "tied_gmm")
        spaces[OBJECT_CANDIDATES[1]] = (object_descriptor(images, polarity, sized=True, centred=centred), "tied_gmm")
    if pose is not None and (pose[0] is not None or pose[1] is not None):
        spaces["canonical_kmeans"] = (pca_features(canonical_patches(images, pose[0], pose[1]), seed=seed), "kmeans")
    found = {}
    for name, (features, method) in spaces.items():
        labels = cluster(features, n_classes, method=method, seed=seed, standardize_columns=False, fit_fraction=FIT_FRACTION).astype(np.int64)
        found[name] = Partition(labels, separation(features, labels, seed), features)
    if rotation or translation:
        fit_rows = np.sort(np.random.default_rng(seed).permutation(len(images))[:ALIGN_SAMPLE])
        sample = np.asarray(images[fit_rows])
        starts = (aligned_kmeans(sample, found[name].labels[fit_rows], n_classes, rotation, translation, iterations=ALIGN_ROUNDS) for name in ALIGN_STARTS)
        best = min(starts, key=lambda result: result.objective)  # compared on the template sample: no pass over every patch per start
        start_labels = np.zeros(len(images), np.int64)
        start_labels[fit_rows] = best.labels
        aligned = aligned_kmeans(
            images, start_labels, n_classes, rotation, translation, iterations=ALIGN_MORE_ROUNDS, fit_rows=fit_rows, templates=best.templates
        )
        frame = canonical_patches(images, aligned.angle_rad if rotation else None, aligned.shift_px if translation else None)
        features = pca_features(frame, seed=seed)
        found["aligned_kmeans"] = Partition(aligned.labels, separation(features, aligned.labels, seed), features)
    further: dict[int, bool] = {}  # one answer per feature space (the PCA scores serve two candidates)
    for name, partition in found.items():
        key = id(partition.features)
        if key not in further:
            kmeans_at_k = (
                partition.separation if name in ("pca_kmeans", "fourier_kmeans", "tapered_fourier_kmeans", "tapered_pca_kmeans", "canonical_kmeans") else None
            )
            further[key] = splits_further(partition.features, n_classes, seed, kmeans_at_k)
        partition.over_split = further[key]
    return found


def splits_further(features: np.ndarray, n_classes: int, seed: int, separation_at_k: float | None = None) -> bool:
    """Whether k-means separates K + 1 clusters better than K in ``features`` (mean silhouette,
    :func:`separation`): the space then holds more groups than the K classes the user counts,
    and a partition made in it splits something that is one class to the user (a polarization
    variant, an orientation) or merges two classes to do so.

    Parameters
    ----------
    features : ndarray
        (N, F) a candidate's feature space.
    n_classes : int
        K.
    seed : int
        Seed of the clusterings and the silhouette's sample.
    separation_at_k : float, optional
        The separation of k-means with K clusters there, when already known.

    Returns
    -------
    bool
        True when the separation at K + 1 exceeds that at K.
    """
    from .baselines import cluster

    if len(features) < 2 * (n_classes + 1):
        return False
    if separation_at_k is None:
        labels = cluster(features, n_classes, method="kmeans", seed=seed, standardize_columns=False, fit_fraction=FIT_FRACTION)
        separation_at_k = separation(features, labels, seed)
    more = cluster(features, n_classes + 1, method="kmeans", seed=seed, standardize_columns=False, fit_fraction=FIT_FRACTION)
    return bool(separation(features, more, seed) > separation_at_k)


def choose_candidate(candidates: list[Candidate]) -> Candidate:
    """Step 3: the best-separated candidate, preferring, among those within
    :data:`CONTENDER_FRACTION` of the best separation, one whose feature space holds no more
    groups than K (``over_split`` False).

    The user's K is what they count as kinds; a space in which the patches fall more clearly into
    K + 1 groups separates something they count as one kind (on the zoo's perovskite film, PCA
    scores split the two polarization variants of the film, silhouette 0.54–0.60 at K = 2 and
    0.68–0.75 at 3, while the rotation- and mirror-invariant Fourier descriptor, 0.47–0.56 at 2
    and 0.39–0.45 at 3, splits film from substrate: 0.98 against 0.73–0.81). A space far less
    separated than the best is no contender, however many groups it holds.

    Parameters
    ----------
    candidates : list of Candidate
        At least one, each with ``separation`` and ``over_split``.

    Returns
    -------
    Candidate
        The winner.
    """
    best = max(c.separation for c in candidates)
    contenders = [c for c in candidates if c.separation >= CONTENDER_FRACTION * best] if best > 0 else list(candidates)
    preferred = [c for c in contenders if not c.over_split] or contenders
    return max(preferred, key=lambda c: c.separation)


def short_run_config(train_config):
    """Training settings of the pose run and the short restarts: :func:`restart_epochs` epochs,
    classes (if any) observed throughout.

    Parameters
    ----------
    train_config : TrainConfig
        The main run's settings.

    Returns
    -------
    TrainConfig
        A copy with ``epochs`` = :func:`restart_epochs`, ``init_fraction`` 1.0, ``class_init``
        'none' and ``checkpoint_every`` = those epochs.
    """
    epochs = restart_epochs(train_config)
    return replace(train_config, epochs=epochs, init_fraction=1.0, class_init="none", checkpoint_every=epochs)


def learn_pose(images: np.ndarray, model_config: JTRVAEConfig, train_config, folder: Path | str) -> tuple[np.ndarray | None, np.ndarray | None] | None:
    """Step 1: (angle_rad (N,) or None, shift_px (N, 2) or None) of every patch from a short
    class-free run in ``folder/pose`` (trained once, then reloaded); None without pose latents.

    Parameters
    ----------
    images : ndarray
        (N, C, W, W) float32 patches.
    model_config : JTRVAEConfig
        The main model's settings (the pose run uses them with K = 0).
    train_config : TrainConfig
        The main run's settings (shortened by :func:`short_run_config`).
    folder : path or str
        The ``init`` folder; the pose run lives in ``folder/pose``.

    Returns
    -------
    tuple or None
        (angle_rad (N,) in rad or None without rotation, shift_px (N, 2) (row, col) in px or None
        without translation); None when neither is on.
    """
    from .encoding import encode_array

    if not (model_config.rotation or model_config.translation):
        return None
    # one template of all the patches is no one shape whose near-symmetry several refined turns
    # resolve: the class-free run reads the grid's best turn alone (with three, the ±12° font
    # suits' canonical partition outscored the object descriptor's at seed 2 and the run ended
    # at accuracy 0.588 against 0.971: benchmarks/README.md, "Several turns read off the grid")
    pose_model = _fit_afresh(images, replace(model_config, n_classes=0, pose_candidates=1), short_run_config(train_config), Path(folder) / "pose")
    summary = encode_array(pose_model, images, device=train_config.device, recon_error=False)
    return (summary["angle_rad"] if model_config.rotation else None, summary["shift_px"] if model_config.translation else None)


@dataclass
class ClassCountChoice:
    """The outcome of :func:`choose_n_classes`.

    Attributes
    ----------
    n_classes : int
        The chosen K.
    space : str
        The feature space K was read in ('pca', 'fourier', 'object' or 'canonical').
    rows : list[dict]
        One per K tried, K = 1 first: {'n_classes', 'bic' (of the Gaussian mixture with K
        components), 'separation' (of k-means with K clusters in the space; NaN at K = 1),
        'sizes' (the mixture's patches per component)}.
    """

    n_classes: int
    space: str
    rows: list[dict]

    @property
    def one_class_best(self) -> bool:
        """True when one Gaussian explains the patches better than any K tried: no class structure."""
        return min(self.rows, key=lambda row: row["bic"])["n_classes"] == 1

    @property
    def at_largest(self) -> bool:
        """True when K is the largest tried: the BIC still fell there, so the patches may hold
        more groups than that, or groups that are not Gaussian in the space."""
        return self.n_classes == self.rows[-1]["n_classes"]

    def table(self) -> str:
        """The K tried as a small plain-text table (one line each, the chosen K marked).

        Returns
        -------
        str
            The space, a header and one line per K: BIC, its excess over the lowest, separation
            and patches per component; the chosen K marked ``← chosen``.
        """
        lowest = min(row["bic"] for row in self.rows)
        lines = [
            f"feature space: {self.space} (first {COUNT_COMPONENTS} principal components)",
            f"{'K':>3} {'BIC':>11} {'ΔBIC':>9} {'separation':>10}  patches per class",
        ]
        for row in self.rows:
            mark = "  ← chosen" if row["n_classes"] == self.n_classes else ""
            lines.append(f"{row['n_classes']:>3} {row['bic']:>11.1f} {row['bic'] - lowest:>9.1f} {row['separation']:>10.3f}  {row['sizes']}{mark}")
        return "\n".join(lines)


#: ``--classes auto`` compares Gaussian mixtures on this many leading principal components of its
#: feature space. Measured on the zoo's features without a pose (seeds 0–2, all 11 members): 6, 8
#: and 10 components chose the true K in 20, 19 and 15 of 33 runs at CI size and 11, 17 and 18 at
#: bench size; 8 is the best of both.
COUNT_COMPONENTS = 8


def class_count_spaces(
    images: np.ndarray, seed: int, pose: tuple[np.ndarray | None, np.ndarray | None] | None = None, rotation: bool = False
) -> dict[str, np.ndarray]:
    """The feature spaces ``--classes auto`` reads: PCA scores of the patches, the Fourier
    descriptor, with ``rotation`` the object descriptor (real-space patches of at least 5 px),
    and with a pose the PCA scores of the patches in that pose's canonical frame (as in
    :func:`candidate_partitions`; the tapered spaces are left out: on three plain kinds, spots,
    bars and rings, the tapered descriptor holds stable splits of one kind).

    Parameters
    ----------
    images : ndarray
        (N, C, W, W) patches.
    seed : int
        Seed of the PCA.
    pose : tuple or None, optional
        (angle_rad (N,) or None, shift_px (N, 2) (row, col) px or None) of a class-free model.
    rotation : bool, default False
        Whether the objects turn.

    Returns
    -------
    dict of str to ndarray
        Name ('pca', 'fourier', 'object', 'canonical') → (N, F) features.
    """
    from .baselines import canonical_patches, fourier_descriptor, object_descriptor, pca_features
    from .patches import is_spectra

    spaces = {"pca": pca_features(images, seed=seed), "fourier": fourier_descriptor(images)}
    if rotation and not is_spectra(images) and images.shape[-1] >= 5:
        spaces["object"] = object_descriptor(images)
    if pose is not None and (pose[0] is not None or pose[1] is not None):
        spaces["canonical"] = pca_features(canonical_patches(images, pose[0], pose[1]), seed=seed)
    return spaces


def choose_n_classes(spaces: dict[str, np.ndarray], k_values: range, seed: int = 0) -> ClassCountChoice:
    """K for ``--classes auto``: the Bayesian information criterion of Gaussian mixtures in the
    feature space where k-means separates best.

    1. The space: of ``spaces`` (e.g. :func:`class_count_spaces`), the one whose k-means
       clustering is best separated (mean silhouette, :func:`separation`) at any K tried: the
       space in which the patches fall most clearly into groups.
    2. K: its features on one common scale, their first :data:`COUNT_COMPONENTS` principal
       components, a Gaussian mixture (full covariances, three initialisations) for K = 1 and
       every K tried; the K tried with the lowest BIC (Schwarz 1978; Fraley & Raftery 2002 for
       mixtures) is chosen. A Gaussian per class lets a class be a spread cloud (a continuum of
       sizes or turns) where k-means' stability (prediction strength, the rule until 2026-11-30)
       also finds stable cuts through one kind: on the zoo at CI size the true K 19 times in 33,
       against 9 (13 with the object descriptor among the spaces); every miss but two is a
       lattice member whose patches hold more kinds than its classes (polarization variants,
       sublattice sites) or a 5 % minority (benchmarks/README.md, "Class discovery").

    Parameters
    ----------
    spaces : dict of str to ndarray
        Name → (N, F) features of the same N patches.
    k_values : range
        The K to try (each ≥ 2).
    seed : int, default 0
        Seed of the clusterings, the silhouette's sample and the mixtures.

    Returns
    -------
    ClassCountChoice
        The chosen K, the space and one row per K (K = 1 first). ``one_class_best`` says when one
        component beats every K tried, ``at_largest`` when the largest K tried is chosen.
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    from .baselines import _one_thread, cluster, standardize

    separations = {}
    for name, features in spaces.items():
        for k in k_values:
            labels = cluster(features, k, method="kmeans", seed=seed, standardize_columns=False, fit_fraction=FIT_FRACTION)
            separations[name, k] = separation(features, labels, seed)
    space = max(spaces, key=lambda name: max(separations[name, k] for k in k_values))
    scaled = standardize(np.asarray(spaces[space], np.float64), per_column=False)
    components = min(COUNT_COMPONENTS, scaled.shape[1], len(scaled) - 1)
    with _one_thread():
        scores = PCA(n_components=components, random_state=seed).fit_transform(scaled)
        rows = []
        for k in [1, *k_values]:
            mixture = GaussianMixture(k, covariance_type="full", n_init=3, random_state=seed, reg_covar=1e-4).fit(scores)
            sizes = np.bincount(mixture.predict(scores), minlength=k).tolist()
            rows.append({"n_classes": k, "bic": float(mixture.bic(scores)), "separation": separations.get((space, k), float("nan")), "sizes": sizes})
    chosen = min((row for row in rows if row["n_classes"] in k_values), key=lambda row: row["bic"])
    return ClassCountChoice(chosen["n_classes"], space, rows)


@torch.no_grad()
def heldout_neg_elbo(model: JTRVAE, images: np.ndarray, rows: np.ndarray, seed: int, draws: int = 2, batch_size: int = 256) -> float:
    """Mean −ELBO (nats per patch, β = 1, all pixels, the model's own q(y|x)) of ``images[rows]``,
    averaged over ``draws`` reparametrised draws from a generator seeded with ``seed``.

    Parameters
    ----------
    model : JTRVAE
        The model (put in eval mode; evaluated on its own device, without gradients).
    images : ndarray
        (N, C, W, W) float32 patches.
    rows : ndarray
        (M,) indices of the patches to score.
    seed : int
        Seed of the draws.
    draws : int, default 2
        Reparametrised draws per patch.
    batch_size : int, default 256
        Patches per forward pass.

    Returns
    -------
    float
        The mean −ELBO in nats per patch.
    """
    device = next(model.parameters()).device
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for _ in range(draws):
        for start in range(0, len(rows), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[rows[start : start + batch_size]])).to(device)
            total += float(model.negative_elbo(model.loss_terms(x, generator)).double().sum())
    return total / (draws * len(rows))


def choose_initial_classes(
    images: np.ndarray, model_config: JTRVAEConfig, train_config, folder: Path | str, on_candidate: Callable[[Candidate], None] | None = None
) -> InitialClasses:
    """Steps 1–3 of the procedure (module docstring) for (N, C, W, W) float32 ``images``, in
    ``folder`` (``RUN_DIR/init``); a finished selection there is read back, an interrupted one resumes.

    ``on_candidate`` is called with each :class:`Candidate` once it is scored.

    Parameters
    ----------
    images : ndarray
        (N, C, W, W) float32 training patches.
    model_config : JTRVAEConfig
        The main model's settings (K = ``n_classes``).
    train_config : TrainConfig
        The main run's settings (``seed``, ``class_init``, ``val_fraction``, ``device``,
        ``restart_fraction``).
    folder : path or str
        ``RUN_DIR/init``: the pose run, the restarts, ``initial_classes.npz`` and
        ``selection.json`` (written by rank 0 only under torchrun).
    on_candidate : callable, optional
        Called with each :class:`Candidate` once it is scored.

    Returns
    -------
    InitialClasses
        The winner's (N,) labels, every candidate and the criterion: 'separation' (highest
        wins), or 'heldout_neg_elbo' with ``class_init='restarts'`` (lowest wins, on the
        validation rows, or all rows when there are none).

    Raises
    ------
    InputError
        ``images`` is a streamed :class:`~microvae.streaming.PatchFile` (the candidates need the
        patches in memory; train with ``class_init='none'``).
    """
    from .baselines import prediction_strength
    from .training import distributed_world, split_rows

    if isinstance(images, PatchFile):
        raise InputError(
            f"{images.path}: the default class initialisation needs the patches in memory; raise --memory-limit-gb or train with --class-init none"
        )
    folder = Path(folder)
    done = _read_selection(folder, images, model_config, train_config)
    if done is not None:
        return done
    k, seed = model_config.n_classes, train_config.seed
    short = short_run_config(train_config)
    started = time.perf_counter()
    pose = learn_pose(images, model_config, train_config, folder)
    pose_seconds = time.perf_counter() - started if pose is not None else 0.0
    found = candidate_partitions(images, k, seed, pose, rotation=model_config.rotation, translation=model_config.translation)
    restarts = train_config.class_init == "restarts"
    _, val_rows = split_rows(len(images), train_config.val_fraction, seed)
    rows = val_rows if len(val_rows) else np.arange(len(images))
    candidates = []
    strengths: dict[int, float] = {}  # one per feature space (the PCA scores serve two candidates)
    for name, partition in found.items():
        started = time.perf_counter()
        candidate = Candidate(name, np.bincount(partition.labels, minlength=k).tolist(), partition.separation, partition.over_split)
        if id(partition.features) not in strengths:
            strengths[id(partition.features)] = prediction_strength(partition.features, k, seed)
        candidate.strength = strengths[id(partition.features)]
        if restarts:
            model = _fit_afresh(images, model_config, short, folder / name, init_labels=partition.labels)
            candidate.heldout_neg_elbo = heldout_neg_elbo(model, images, rows, seed)
        candidate.seconds = time.perf_counter() - started
        candidates.append(candidate)
        if on_candidate is not None:
            on_candidate(candidate)
    if restarts:
        best = min(candidates, key=lambda c: c.heldout_neg_elbo)
    else:
        best = choose_candidate(candidates)
    result = InitialClasses(
        found[best.name].labels,
        best.name,
        "heldout_neg_elbo" if restarts else "separation",
        candidates,
        {name: partition.labels for name, partition in found.items()},
        pose_seconds,
    )
    world = distributed_world(train_config.device)
    if world.rank == 0:  # under torchrun every rank computes the same selection; one writes it
        _write_selection(folder, result, images, model_config, train_config)
    world.barrier()
    return result


def _fit_afresh(images, model_config: JTRVAEConfig, train_config, folder: Path, **options) -> JTRVAE:
    """:func:`~microvae.training.fit` in ``folder``, resuming a run with the same settings; a run
    left there with other settings (an earlier selection) is removed first."""
    import shutil

    from .errors import ParameterError
    from .training import fit

    try:
        return fit(images, model_config, train_config, folder, **options).model
    except ParameterError as error:
        if "resume" not in str(error) and "started with different" not in str(error):
            raise
    shutil.rmtree(folder)
    return fit(images, model_config, train_config, folder, **options).model


def _selection_key(images: np.ndarray, model_config: JTRVAEConfig, train_config) -> dict:
    """What a finished selection depends on: the data (shape and a checksum), the model and the
    training settings (those that may change on resume excepted)."""
    sample = np.ascontiguousarray(images[:: max(1, len(images) // 256)], dtype=np.float64)
    settings = {k: v for k, v in train_config.to_dict().items() if k not in ("device", "compile", "checkpoint_every")}
    key = {"version": SELECTION_VERSION, "shape": list(images.shape), "checksum": float(sample.sum()), "model": model_config.to_dict(), "train": settings}
    return json.loads(json.dumps(key, default=_jsonable))


def _write_selection(folder: Path, result: InitialClasses, images, model_config, train_config) -> None:
    from .artifacts import atomic_file

    with atomic_file(folder / "initial_classes.npz") as temp:
        with open(temp, "wb") as handle:
            np.savez(handle, labels=result.labels, **{f"candidate_{k}": v for k, v in result.candidate_labels.items()})
    record = {
        "key": _selection_key(images, model_config, train_config),
        "chosen": result.chosen,
        "criterion": result.criterion,
        "pose_seconds": result.pose_seconds,
        "candidates": [asdict(c) for c in result.candidates],
    }
    with atomic_file(folder / "selection.json") as temp:  # written last: marks the selection finished
        temp.write_text(json.dumps(record, indent=2, default=_jsonable))


def _read_selection(folder: Path, images, model_config, train_config) -> InitialClasses | None:
    """The finished selection in ``folder`` if it was made for these data and settings, else None."""
    try:
        record = json.loads((folder / "selection.json").read_text())
        if record["key"] != _selection_key(images, model_config, train_config):
            return None
        with np.load(folder / "initial_classes.npz") as arrays:
            labels = arrays["labels"]
            candidate_labels = {k[len("candidate_") :]: arrays[k] for k in arrays.files if k.startswith("candidate_")}
        candidates = [Candidate(**c) for c in record["candidates"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if labels.shape != (len(images),):
        return None
    return InitialClasses(labels.astype(np.int64), record["chosen"], record["criterion"], candidates, candidate_labels, record.get("pose_seconds", 0.0))


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(type(value).__name__)

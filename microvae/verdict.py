"""Can the classes of a trained run be trusted? A short verdict from the run's own numbers.

A model that found nothing still assigns every patch a class. The verdict puts beside the classes
the numbers that tell a user whether to believe them: how many patches each class holds, how sure
the posterior is, whether the classical candidate partitions of :mod:`microvae.discovery` and a
fast classical baseline on the same patches agree with it (adjusted Rand index), whether the
partition the run started from reproduces on held-out halves (prediction strength), and how much
of the pixel variance the model explains, and how much of the part of it shared by neighbouring
pixels (which pixel noise lacks, so that noisy patches whose objects the model drew faithfully are
not mistaken for a model that learned nothing). With rotation, it also compares the model's angle latent
with the angle read by matching each class's template (:mod:`microvae.templates`): two independent
readings of the same turn that disagree mean that at least one cannot be trusted. Warnings name
what looks wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np

from .baselines import STRENGTH_THRESHOLD
from .errors import ParameterError
from .metrics import adjusted_rand_index, circular_correlation

__all__ = [
    "ANGLE_AGREEMENT",
    "DISAGREEMENT_ARI",
    "DOMINANT_FRACTION",
    "EMPTY_FRACTION",
    "LOW_CONFIDENCE",
    "NOTHING_LEARNED",
    "Verdict",
    "angle_agreement",
    "assess",
]

#: A class with fewer than this fraction of the patches is called (nearly) empty.
EMPTY_FRACTION = 0.005
#: A class with more than this fraction of the patches holds almost everything.
DOMINANT_FRACTION = 0.9
#: Mean class confidence (max q(y|x)) below this is called low.
LOW_CONFIDENCE = 0.8
#: Adjusted Rand index below this is called disagreement.
DISAGREEMENT_ARI = 0.5
#: A model that explains less than this fraction of the pixel variance, and of its neighbour
#: covariance (:func:`microvae.encoding.neighbour_product`), learned (almost) nothing.
NOTHING_LEARNED = 0.1
#: Circular correlation between the angle latent and the template angle below this is called disagreement.
ANGLE_AGREEMENT = 0.7


@dataclass
class Verdict:
    """What :func:`assess` found; every field is plain data (JSON-ready via :meth:`to_dict`).

    Attributes
    ----------
    n_patches : int
        Patches assessed.
    class_sizes : list[int]
        Patches per argmax class (K entries; empty for a model without classes).
    mean_confidence : float or None
        Mean over patches of max_k q(y = k | x).
    explained_variance : float
        1 − mean squared reconstruction error / mean per-pixel variance of the patches (1: perfect,
        0: no better than the mean patch).
    signal_explained : float or None
        The same share of the patches' covariance between adjacent pixels (their
        :func:`~microvae.encoding.neighbour_product` about the mean patch): pixel-independent noise
        has none, so a model that draws every object and leaves only such noise comes near 1
        however noisy the patches (None when not measured).
    baseline : str or None
        Name of the classical baseline compared with, and ``baseline_ari`` its ARI against the
        model's classes (None when not compared).
    candidate_ari : dict[str, float]
        Name → ARI between the model's classes and each candidate partition of
        :mod:`microvae.discovery` (the classical clusterings the run chose its start from).
    candidate_agreement : float or None
        Mean pairwise ARI among the candidates (None with fewer than two): low when the feature
        spaces disagree about the data, which is common.
    chosen_start : str or None
        The candidate partition the run started from (None: random start).
    start_strength : float or None
        Prediction strength of that partition's K groups in its feature space
        (:func:`microvae.baselines.prediction_strength`; None when not known).
    angle_agreement : float or None
        With rotation: circular correlation between the angle latent and the template angle,
        per class (classes with at least 3 patches; modulo the turn of the class template's
        symmetry), weighted by class size (None without).
    angle_orders : list[int] or None
        The symmetry order of each class that the angles were compared modulo (the near symmetry
        of its template, :data:`microvae.templates.NEAR_SYMMETRY_CORRELATION`; None: not given).
    warnings : list[str]
        One sentence per problem found.
    """

    n_patches: int
    class_sizes: list[int]
    mean_confidence: float | None
    explained_variance: float
    signal_explained: float | None = None
    baseline: str | None = None
    baseline_ari: float | None = None
    candidate_ari: dict[str, float] = field(default_factory=dict)
    candidate_agreement: float | None = None
    chosen_start: str | None = None
    start_strength: float | None = None
    angle_agreement: float | None = None
    angle_orders: list[int] | None = None
    warnings: list[str] = field(default_factory=list)

    def paragraph(self) -> str:
        """The verdict in one paragraph of plain words.

        Returns
        -------
        str
            "Verdict: …" (class sizes and shares, confidence, agreement with the baseline and the
            candidates, explained variance), then the warnings or "No warnings."
        """
        parts = []
        if self.class_sizes:
            shares = "/".join(f"{100 * s / max(self.n_patches, 1):.0f}" for s in self.class_sizes)
            parts.append(
                f"{len(self.class_sizes)} classes of {'/'.join(map(str, self.class_sizes))} patches ({shares} %), "
                f"mean class confidence {self.mean_confidence:.2f}"
            )
            if self.baseline_ari is not None:
                parts.append(f"agreement with the classical baseline ({self.baseline}) ARI {self.baseline_ari:.2f}")
            if self.candidate_ari:
                low, high = min(self.candidate_ari.values()), max(self.candidate_ari.values())
                span = f"{low:.2f}" if abs(high - low) < 0.005 else f"{low:.2f}–{high:.2f}"
                parts.append(
                    f"with the candidate partitions ARI {span}"
                    + (f" (among themselves {self.candidate_agreement:.2f})" if self.candidate_agreement is not None else "")
                    + (f", started from {self.chosen_start}" if self.chosen_start else "")
                    + (f" (prediction strength {self.start_strength:.2f})" if self.chosen_start and self.start_strength is not None else "")
                )
        parts.append(
            f"the model explains {100 * self.explained_variance:.0f} % of the pixel variance"
            + (f" and {100 * self.signal_explained:.0f} % of the neighbour covariance (which pixel noise lacks)" if self.signal_explained is not None else "")
        )
        if self.angle_agreement is not None:
            folded = self.angle_orders is not None and max(self.angle_orders, default=1) > 1
            parts.append(
                f"its angle agrees with the template angle at circular correlation {self.angle_agreement:.2f}"
                + (f" (modulo each class's symmetry, orders {'/'.join(map(str, self.angle_orders))})" if folded else "")
            )
        text = "Verdict: " + "; ".join(parts) + "."
        text += " Warnings: " + " ".join(self.warnings) if self.warnings else " No warnings."
        return text

    def to_dict(self) -> dict:
        """The verdict as plain data (what ``summary.json`` holds).

        Returns
        -------
        dict
            Every field and ``paragraph`` (:meth:`paragraph`).
        """
        return {**asdict(self), "paragraph": self.paragraph()}


def assess(
    class_probs: np.ndarray | None,
    recon_error: np.ndarray,
    pixel_variance: float,
    baseline: tuple[str, np.ndarray] | None = None,
    candidate_classes: dict[str, np.ndarray] | None = None,
    chosen_start: str | None = None,
    start_strength: float | None = None,
    angles: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    neighbours: tuple[np.ndarray, float] | None = None,
) -> Verdict:
    """The verdict on a trained model's classes over N patches.

    Parameters
    ----------
    class_probs : ndarray or None
        (N, K) q(y|x), or None for a model without classes.
    recon_error : ndarray
        (N,) mean squared reconstruction error per pixel of each patch.
    pixel_variance : float
        Mean over pixels of the variance over patches (the error of predicting the mean patch),
        same units as ``recon_error``.
    baseline : tuple[str, ndarray] or None
        (name, (N,) labels) of a classical clustering of the same patches.
    candidate_classes : dict[str, ndarray] or None
        Name → (N,) classes of each candidate partition.
    chosen_start : str or None
        The candidate the run started from.
    start_strength : float or None
        Its prediction strength; below :data:`~microvae.baselines.STRENGTH_THRESHOLD` it is
        named as a warning (its K groups do not reproduce on held-out halves of the patches).
    angles : tuple of ndarray, optional
        ``(latent_rad, template_rad, classes[, orders])`` of M of the patches: the model's angle
        latent and the template angle (:func:`microvae.templates.pose_to_templates`), (M,) rad
        each, their (M,) classes (or None) and optionally each class's symmetry order
        (:func:`microvae.templates.symmetry_orders`); their :func:`angle_agreement` below
        :data:`ANGLE_AGREEMENT` is named as a warning.
    neighbours : tuple of (ndarray, float), optional
        ``(recon_neighbour_product, pixel_neighbour_product)``: the (N,)
        :func:`~microvae.encoding.neighbour_product` of each patch's reconstruction residual and
        the mean one of the patches about the mean patch (units of ``pixel_variance``). The model
        is said to have learned nothing only when it explains less than :data:`NOTHING_LEARNED`
        of both the pixel variance and this covariance; without it, of the pixel variance alone.

    Returns
    -------
    Verdict
        Class sizes, confidence, explained variance, agreements and warnings (without classes:
        explained variance and its warning only).

    Raises
    ------
    ParameterError
        ``class_probs`` and ``recon_error`` have different numbers of rows.
    """
    n = len(recon_error)
    if class_probs is not None and len(class_probs) != n:
        raise ParameterError(f"class_probs has {len(class_probs)} rows but recon_error {n}")
    error = float(np.mean(recon_error)) if n else float("nan")
    if pixel_variance > 0:
        explained = 1.0 - error / pixel_variance
    else:  # identical patches: perfect if reproduced exactly
        explained = 1.0 if error == 0 else 0.0
    if not np.isfinite(explained):  # a diverged model: NaN errors
        explained = 0.0
    signal = None
    if neighbours is not None and neighbours[1] > 0:
        signal = 1.0 - float(np.mean(neighbours[0])) / float(neighbours[1])
        signal = signal if np.isfinite(signal) else 0.0
    warnings: list[str] = []
    if explained < NOTHING_LEARNED and (signal is None or signal < NOTHING_LEARNED):
        warnings.append(
            f"The model explains only {100 * explained:.0f} % of the pixel variance"
            + (f" and {100 * signal:.0f} % of its neighbour covariance" if signal is not None else "")
            + ": it learned (almost) nothing; train longer, check the patches, or lower --gaussian-sd."
        )
    agreement = None if angles is None else angle_agreement(*angles)
    angle_orders = [int(order) for order in angles[3]] if angles is not None and len(angles) > 3 and angles[3] is not None else None
    if agreement is not None and agreement < ANGLE_AGREEMENT:
        warnings.append(
            f"The angle latent and the angle read by matching each class's template disagree (circular correlation {agreement:.2f}): "
            "do not read orientation from angle_rad without checking it; template_angle_rad (encode) is the search-based reading, "
            "and neither means anything for round objects."
        )
    if class_probs is None or class_probs.shape[1] < 2:
        return Verdict(n, [], None, explained, signal_explained=signal, angle_agreement=agreement, angle_orders=angle_orders, warnings=warnings)
    k = class_probs.shape[1]
    classes = class_probs.argmax(1)
    sizes = np.bincount(classes, minlength=k)
    confidence = float(class_probs.max(1).mean())
    verdict = Verdict(
        n,
        sizes.tolist(),
        confidence,
        explained,
        signal_explained=signal,
        chosen_start=chosen_start,
        start_strength=start_strength,
        angle_agreement=agreement,
        angle_orders=angle_orders,
    )
    for index, size in enumerate(sizes):
        if size <= EMPTY_FRACTION * n:
            warnings.append(
                f"Class {index} is {'empty' if size == 0 else f'nearly empty ({size} patches)'}: "
                f"the data may hold fewer than {k} kinds of object (try fewer --classes or --classes auto)."
            )
        elif size > DOMINANT_FRACTION * n:
            warnings.append(f"Class {index} holds {100 * size / n:.0f} % of the patches: the classes may not have formed.")
    if confidence < LOW_CONFIDENCE:
        warnings.append(f"The class posteriors are soft (mean confidence {confidence:.2f}): look at the class_prob maps, not only the class map.")
    if baseline is not None:
        verdict.baseline, labels = baseline
        verdict.baseline_ari = adjusted_rand_index(labels, classes)
    if candidate_classes:
        verdict.candidate_ari = {name: adjusted_rand_index(labels, classes) for name, labels in candidate_classes.items()}
        pairs = [adjusted_rand_index(a, b) for a, b in combinations(candidate_classes.values(), 2)]
        if pairs:
            verdict.candidate_agreement = float(np.mean(pairs))
    agreements = list(verdict.candidate_ari.values()) + ([verdict.baseline_ari] if verdict.baseline_ari is not None else [])
    if agreements and max(agreements) < DISAGREEMENT_ARI:
        warnings.append(
            f"The classes agree with no classical partition of the same patches (best ARI {max(agreements):.2f}): "
            "either the model found what they miss or the classes are not stable; compare seeds with --ensemble "
            "and look at the class maps."
        )
    if chosen_start is not None and start_strength is not None and start_strength < STRENGTH_THRESHOLD:
        warnings.append(
            f"The partition the classes started from ({chosen_start}) does not reproduce on held-out halves of the patches "
            f"(prediction strength {start_strength:.2f}, below {STRENGTH_THRESHOLD}): its {k} groups may be arbitrary cuts "
            "rather than kinds; check the class maps, compare --ensemble seeds, or try another K."
        )
    verdict.warnings = warnings
    return verdict


def angle_agreement(latent_rad: np.ndarray, template_rad: np.ndarray, classes: np.ndarray | None = None, orders: tuple[int, ...] | None = None) -> float | None:
    """Circular correlation of two angle readings of the same patches, per class, weighted by size.

    Each class's template has its own orientation, so the two readings differ by a constant per
    class, which circular correlation ignores. A class whose shape has n-fold symmetry has an
    angle only modulo 360°/n, and two readings may differ by a whole such turn from patch to
    patch (a dimer read as turned by θ or by θ + 180°) without disagreeing: its readings are
    compared as n·angle.

    Parameters
    ----------
    latent_rad : ndarray
        (M,) the model's angle latent, rad.
    template_rad : ndarray
        (M,) the template angle, rad (NaN where the class has no template).
    classes : ndarray, optional
        (M,) class of each patch (all one class when None).
    orders : tuple of int, optional
        Symmetry order of each class's shape, indexed by class
        (:func:`microvae.templates.symmetry_orders` of its template); 1 (no symmetry) when None.

    Returns
    -------
    float or None
        The weighted mean correlation over classes with at least 3 finite pairs; None when none.
    """
    latent_rad, template_rad = np.asarray(latent_rad, np.float64), np.asarray(template_rad, np.float64)
    classes = np.zeros(len(latent_rad), np.int64) if classes is None else np.asarray(classes)
    values, weights = [], []
    for k in np.unique(classes):
        members = (classes == k) & np.isfinite(latent_rad) & np.isfinite(template_rad)
        order = 1 if orders is None or k >= len(orders) else int(orders[k])
        if members.sum() >= 3:
            value = circular_correlation(order * latent_rad[members], order * template_rad[members])
            if np.isfinite(value):
                values.append(value)
                weights.append(int(members.sum()))
    return float(np.average(values, weights=weights)) if values else None

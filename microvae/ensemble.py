"""Ensembles of joint VAEs: class labels aligned across seeds, agreement as class uncertainty.

A joint VAE's classes depend on its seed: two runs may split the data differently, and even when
they agree their class numbers are permuted. The lecture's "ensemble jVAE" trains M runs with
different seeds and reads their (dis)agreement as uncertainty. Here every member's classes are
matched to member 0's by the Hungarian algorithm on their confusion matrix over the same patches;
per patch the aligned class posteriors give a consensus (their mean), the fraction of members whose
argmax equals the consensus class (``agreement``, 1/M to 1) and the spread of the aligned
posteriors (``prob_sd``). Over the data, the mean pairwise adjusted Rand index of the members'
assignments measures how stable the classes are — compare it across numbers of classes K to
choose K (stable splits have ARI near 1; an arbitrary split of a continuum does not). Members that
leave classes (nearly) empty agree trivially, so ``classes_used`` (classes holding ≥ 1 % of the
patches, per member) is recorded beside the ARI: members that fill fewer than K classes say that K
is too large (on two card suits, members with K = 4 filled two classes each).

Layout of an ensemble run folder: ``member_0/``, ``member_1/``, … (each an ordinary run folder with
seed + i) and ``ensemble.json`` (the permutations and the stability figures).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import InputError
from .metrics import adjusted_rand_index
from .run_folder import ENSEMBLE_FILE

__all__ = ["Consensus", "EnsembleRecord", "align_labels", "build_record", "consensus", "permute_probs", "read_record"]


def align_labels(reference: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Permutation (K,) mapping a member's class k to the reference's class: ``permutation[k]``.

    Chosen to maximise the number of patches whose mapped label equals the reference's
    (Hungarian algorithm on the K×K confusion matrix).

    Parameters
    ----------
    reference : (N,) int ndarray
        The reference member's classes (0…K − 1).
    labels : (N,) int ndarray
        The member's classes for the same patches.
    n_classes : int
        K.

    Returns
    -------
    (K,) int64 ndarray
        ``permutation[k]``: the reference's class for the member's class k.
    """
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, reference), 1)
    rows, cols = linear_sum_assignment(-confusion)
    permutation = np.empty(n_classes, dtype=np.int64)
    permutation[rows] = cols
    return permutation


def permute_probs(class_probs: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """(N, K) posteriors with column k moved to column ``permutation[k]``.

    Parameters
    ----------
    class_probs : (N, K) ndarray
        A member's class posteriors.
    permutation : (K,) int ndarray
        From :func:`align_labels`.

    Returns
    -------
    (N, K) ndarray
        The posteriors in the reference's class order (same dtype).
    """
    aligned = np.empty_like(class_probs)
    aligned[:, permutation] = class_probs
    return aligned


@dataclass
class Consensus:
    """Per-patch summary of M aligned class posteriors.

    Attributes
    ----------
    class_probs : ndarray
        (N, K) mean of the aligned posteriors.
    labels : ndarray
        (N,) argmax of ``class_probs``.
    agreement : ndarray
        (N,) fraction of members whose own argmax equals ``labels`` (1/M … 1).
    prob_sd : ndarray
        (N,) sd over members of the aligned posterior, averaged over the K classes.
    """

    class_probs: np.ndarray
    labels: np.ndarray
    agreement: np.ndarray
    prob_sd: np.ndarray


def consensus(aligned_probs: np.ndarray) -> Consensus:
    """Consensus of (M, N, K) aligned class posteriors.

    Parameters
    ----------
    aligned_probs : (M, N, K) ndarray
        Each member's class posteriors, aligned to member 0's classes (:func:`permute_probs`).

    Returns
    -------
    Consensus
        Mean posteriors, their argmax, the members' agreement and the posteriors' sd.
    """
    mean = aligned_probs.mean(0)
    labels = mean.argmax(1)
    agreement = (aligned_probs.argmax(2) == labels[None]).mean(0)
    return Consensus(mean, labels, agreement, aligned_probs.std(0).mean(1))


@dataclass
class EnsembleRecord:
    """What ``ensemble.json`` holds: members, their alignment to member 0, and the stability.

    Attributes
    ----------
    members : list of str
        The members' folder names (``member_<i>``).
    seeds : list of int
        Their training seeds.
    n_classes : int
        K.
    permutations : list of list of int
        Per member, the (K,) permutation onto member 0's classes (:func:`align_labels`).
    pairwise_ari : list of list of float
        (M, M) adjusted Rand index between the members' classes (4 decimals; 1 on the diagonal).
    mean_pairwise_ari : float
        Mean of its off-diagonal entries (1.0 for one member).
    patches : int
        Patches the classes were compared on.
    classes_used : list of int
        Per member, the classes holding at least 1 % of the patches.
    """

    members: list[str]
    seeds: list[int]
    n_classes: int
    permutations: list[list[int]]
    pairwise_ari: list[list[float]]
    mean_pairwise_ari: float
    patches: int
    classes_used: list[int]

    def write(self, run_dir: str | Path) -> None:
        """Write ``ensemble.json`` in the ensemble's folder, atomically.

        Parameters
        ----------
        run_dir : str or path
            The ensemble's folder.
        """
        from .artifacts import atomic_file

        with atomic_file(Path(run_dir) / ENSEMBLE_FILE) as temp:
            temp.write_text(json.dumps(asdict(self), indent=2))


def build_record(labels: list[np.ndarray], n_classes: int, members: list[str], seeds: list[int]) -> EnsembleRecord:
    """Align every member's (N,) labels to member 0's and measure their pairwise agreement (ARI).

    Parameters
    ----------
    labels : list of (N,) int ndarray
        Each member's argmax class per patch, member 0 first.
    n_classes : int
        K.
    members : list of str
        The members' folder names.
    seeds : list of int
        Their training seeds.

    Returns
    -------
    EnsembleRecord
        The alignment, pairwise ARIs and classes used.
    """
    permutations = [align_labels(labels[0], member, n_classes).tolist() for member in labels]
    count = len(labels)
    ari = np.eye(count)
    for i in range(count):
        for j in range(i + 1, count):
            ari[i, j] = ari[j, i] = adjusted_rand_index(labels[i], labels[j])
    off_diagonal = ari[~np.eye(count, dtype=bool)]
    mean = float(off_diagonal.mean()) if off_diagonal.size else 1.0
    used = [int((np.bincount(member, minlength=n_classes) >= 0.01 * len(member)).sum()) for member in labels]
    return EnsembleRecord(members, seeds, n_classes, permutations, np.round(ari, 4).tolist(), mean, int(len(labels[0])), used)


def read_record(run_dir: str | Path) -> EnsembleRecord | None:
    """The ensemble record of a run folder, or None when it is an ordinary run.

    Parameters
    ----------
    run_dir : str or path
        A run folder.

    Returns
    -------
    EnsembleRecord or None
        The record of ``ensemble.json``; None when the folder has none.

    Raises
    ------
    InputError
        ``ensemble.json`` is unreadable.
    """
    path = Path(run_dir) / ENSEMBLE_FILE
    if not path.exists():
        return None
    try:
        return EnsembleRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise InputError(f"{path}: unreadable ensemble record ({error}); rerun 'microvae train --ensemble' to rebuild it") from error

"""Class templates of a trained run, and each patch's angle read by matching its class template.

The j-trVAE's angle latent reads the turn of an object from one encoder pass; on shapes that are
nearly symmetric, or where classes differ in outline only slightly, it can collapse to a narrow
range while the classes come out right (``benchmarks/README.md``: angle correlation 0.07 on ±120°
cards at CI size). Template matching reads the angle by search instead: at the end of ``train``
each class's template is built from a sample of training patches with the model's classes held
fixed (:func:`fit_class_templates`: multi-reference alignment,
:func:`microvae.alignment.align_to_classes`), and ``encode`` poses every patch against its own
class's template over :data:`TEMPLATE_TURNS` turns and the circular shifts, refined below the turn
step by a parabola (:func:`pose_to_templates`). Patches and templates are compared by their
edges (:func:`microvae.alignment.search_view`): compared as they are, a heart or a spade turned by
120° matches its template almost as well as unturned, and the search errs by that turn of the
shape's near-symmetry rather than by degrees (the ±120° cards' template angle: 0.79 at CI size,
median of three seeds, modulo symmetry; 0.96 with the edges, ``benchmarks/README.md``).

Conventions: patches (N, C, W, W) float32; ``angle_rad`` is the counter-clockwise turn (as
displayed) that takes the class template onto the patch, in (−π, π], measured from the
template's own orientation (arbitrary per class: compare angles within a class, or by circular
correlation); ``shift_px`` (row, col) in pixels. The grid's pose (5° turns, whole pixels, a
parabola between turns) is refined by Gauss-Newton steps (``refine_steps``,
:func:`microvae.alignment.refine_poses`), from the ``pose_candidates`` best turns of the grid, the
best refined one kept (:func:`microvae.alignment.best_pose`).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import artifacts
from .alignment import (
    _prepare_tensor,
    _shift_window,
    _turn_scores,
    _turned,
    align_to_classes,
    best_pose,
    search_view,
    soft_disk,
)
from .config import EDGE_SIGMAS_PX, POSE_CANDIDATES, POSE_REFINE_STEPS
from .errors import InputError
from .streaming import evenly_spaced, evenly_spaced_rows

__all__ = [
    "NEAR_SYMMETRY_CORRELATION",
    "SYMMETRY_CORRELATION",
    "SYMMETRY_MARGIN",
    "TEMPLATES_FILE",
    "TEMPLATE_ROUNDS",
    "TEMPLATE_SAMPLE",
    "TEMPLATE_TURNS",
    "ClassTemplates",
    "TemplatePoses",
    "fit_class_templates",
    "pose_to_templates",
    "prepare_templates",
    "read_class_templates",
    "symmetry_orders",
    "turns_to_templates",
]

#: File of a run folder that holds the class templates.
TEMPLATES_FILE = "class_templates.npz"
#: The templates are learned from at most this many training patches, evenly spaced.
TEMPLATE_SAMPLE = 2000
#: Rounds of posing and template rebuilding. Six on the grid (bench-size ±120° cards, seed 0:
#: 0.80 after 3, 0.88 after 6); with each round's turns refined (:data:`TEMPLATE_ROUND_STEPS`) and
#: three starts, three rounds read the zoo's turns as well as six at half the time (true classes,
#: CI size, seeds 0–2, worst seed: ±60° cards 0.990 both, ±120° font suits 0.973 against 0.979).
TEMPLATE_ROUNDS = 3
#: Turns tried, evenly spaced over 2π (5°), before the parabola refines the best.
TEMPLATE_TURNS = 72
#: Largest circular shift tried per axis, as a fraction of the window.
TEMPLATE_MAX_SHIFT = 0.2
#: Gauss-Newton steps per candidate turn in every round of the fit (when the poses are refined):
#: read on the grid, a club or a heart 120° off its template can win and blur the template into a
#: mixture of two turns (:func:`microvae.alignment.best_pose`).
TEMPLATE_ROUND_STEPS = 3
#: Starts of the fit: the class means unturned, then one random member per class; each class
#: keeps the start that its members match best (±60° cards, seed 0, true classes: the hearts
#: settle 120° apart from one start, 0.839, and agree from three, 0.991).
TEMPLATE_RESTARTS = 3


@dataclass
class ClassTemplates:
    """What :func:`fit_class_templates` learned.

    Attributes
    ----------
    templates : ndarray
        (K, C, W, W) float32 templates (under a soft disk, mean-subtracted, unit norm).
    has_members : ndarray
        (K,) bool: the class had members in the sample (a class without has no template).
    rotation : bool
        The poses search over turns.
    translation : bool
        The poses search over circular shifts.
    turns : int
        Turns tried, evenly spaced over 2π.
    max_shift_fraction : float
        Largest shift tried per axis, as a fraction of W.
    sample : int
        Patches the templates were learned from.
    edge_sigmas_px : tuple of float
        The templates are of the patches' edges at these scales
        (:func:`microvae.alignment.search_view`; one block of C channels per scale), and patches
        are posed by theirs; empty: of the patches themselves (files written before the edges).
    refine_steps : int
        Gauss-Newton steps that refine each pose off the search's grid
        (:func:`microvae.alignment.refine_poses`); 0 in files written before the refinement,
        whose poses stay on the grid.
    pose_candidates : int
        Local maxima over the turns that each pose search refines, the best refined one kept
        (:func:`microvae.alignment.best_pose`); 1 in files written before the candidates.
    """

    templates: np.ndarray
    has_members: np.ndarray
    rotation: bool
    translation: bool
    turns: int = TEMPLATE_TURNS
    max_shift_fraction: float = TEMPLATE_MAX_SHIFT
    sample: int = 0
    edge_sigmas_px: tuple[float, ...] = ()
    refine_steps: int = 0
    pose_candidates: int = 1

    def save(self, path: str | Path) -> None:
        """Write the templates as an ``.npz`` file, atomically.

        Parameters
        ----------
        path : str or path
            The file to write (``RUN_DIR/class_templates.npz``, :data:`TEMPLATES_FILE`).
        """
        with artifacts.atomic_file(Path(path)) as temp, open(temp, "wb") as handle:
            np.savez(
                handle,
                templates=self.templates.astype(np.float32),
                has_members=self.has_members.astype(bool),
                rotation=self.rotation,
                translation=self.translation,
                turns=self.turns,
                max_shift_fraction=self.max_shift_fraction,
                sample=self.sample,
                edge_sigmas_px=np.asarray(self.edge_sigmas_px, np.float64),
                refine_steps=self.refine_steps,
                pose_candidates=self.pose_candidates,
            )


@dataclass
class TemplatePoses:
    """Each patch's pose against its class template (:func:`pose_to_templates`).

    Attributes
    ----------
    angle_rad : ndarray
        (N,) float32 turn in (−π, π] rad (counter-clockwise as displayed) that takes the class
        template onto the patch; NaN where the class has no template (0 without rotation).
    shift_px : ndarray
        (N, 2) float32 (row, col) shift in px (whole px when the templates are not refined); NaN
        where the class has no template.
    match : ndarray
        (N,) float32 normalised correlation of the patch with its posed template (1 = identical
        up to contrast and offset); NaN where the class has no template.
    """

    angle_rad: np.ndarray
    shift_px: np.ndarray
    match: np.ndarray


def fit_class_templates(
    patches,
    classes: np.ndarray,
    n_classes: int,
    rotation: bool,
    translation: bool,
    sample: int = TEMPLATE_SAMPLE,
    edge_sigmas_px: tuple[float, ...] = EDGE_SIGMAS_PX,
    refine_steps: int = POSE_REFINE_STEPS,
    pose_candidates: int = POSE_CANDIDATES,
) -> ClassTemplates:
    """Templates of the given classes, from at most ``sample`` evenly spaced patches.

    Parameters
    ----------
    patches : (N, C, W, W) ndarray or PatchFile
        Training patches.
    classes : ndarray
        (N,) int class of every patch (the trained model's), in 0…K−1.
    n_classes : int
        K (classes without members in the sample get no template).
    rotation : bool
        Search over turns.
    translation : bool
        Search over circular shifts.
    sample : int, default TEMPLATE_SAMPLE
        The most patches the templates are learned from.
    edge_sigmas_px : tuple of float, default EDGE_SIGMAS_PX
        Templates of the patches' edges at these scales (:func:`microvae.alignment.search_view`);
        empty: of the patches themselves.
    refine_steps : int, default POSE_REFINE_STEPS
        Gauss-Newton steps that refine every pose against the learned templates off the grid
        (:func:`microvae.alignment.refine_poses`). With steps, every round of the fit refines its
        ``pose_candidates`` best turns by :data:`TEMPLATE_ROUND_STEPS`; 0 learns the templates
        on the grid.
    pose_candidates : int, default POSE_CANDIDATES
        Local maxima over the turns refined per pose, the best refined one kept
        (:func:`microvae.alignment.best_pose`), in the fit and in :func:`pose_to_templates`.

    Returns
    -------
    ClassTemplates
    """
    rows = evenly_spaced_rows(len(patches), sample)
    chosen = evenly_spaced(patches, sample)  # the same rows, in memory
    labels = np.asarray(classes, dtype=np.int64)[rows]
    aligned = align_to_classes(
        chosen,
        labels,
        None,
        rotation=rotation,
        translation=translation,
        rotations=TEMPLATE_TURNS,
        iterations=TEMPLATE_ROUNDS,
        max_shift_fraction=TEMPLATE_MAX_SHIFT,
        edge_sigmas_px=tuple(edge_sigmas_px),
        refine_steps=0,  # the templates only; their poses are read by pose_to_templates
        candidates=pose_candidates,
        round_steps=TEMPLATE_ROUND_STEPS if refine_steps else 0,
        restarts=TEMPLATE_RESTARTS,
    )
    templates = np.zeros((n_classes,) + tuple(aligned.templates.shape[1:]), np.float32)
    templates[: len(aligned.templates)] = aligned.templates
    has_members = np.bincount(labels, minlength=n_classes)[:n_classes] > 0
    return ClassTemplates(
        templates,
        has_members,
        bool(rotation),
        bool(translation),
        sample=len(rows),
        edge_sigmas_px=tuple(float(sigma) for sigma in edge_sigmas_px),
        refine_steps=int(refine_steps),
        pose_candidates=int(pose_candidates),
    )


def read_class_templates(run_dir: str | Path) -> ClassTemplates | None:
    """The run folder's class templates, or None when the run has none (trained without
    rotation, or by a microvae older than the templates).

    Parameters
    ----------
    run_dir : str or path
        A run folder (one member's, for an ensemble).

    Returns
    -------
    ClassTemplates or None
        What :meth:`ClassTemplates.save` wrote there.

    Raises
    ------
    InputError
        The file exists but cannot be read.
    """
    path = Path(run_dir) / TEMPLATES_FILE
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return ClassTemplates(
                data["templates"],
                data["has_members"],
                bool(data["rotation"]),
                bool(data["translation"]),
                int(data["turns"]),
                float(data["max_shift_fraction"]),
                int(data["sample"]),
                tuple(float(sigma) for sigma in data["edge_sigmas_px"]) if "edge_sigmas_px" in data.files else (),
                int(data["refine_steps"]) if "refine_steps" in data.files else 0,
                int(data["pose_candidates"]) if "pose_candidates" in data.files else 1,
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: unreadable class templates ({error}); expected the {TEMPLATES_FILE} that 'microvae train' writes") from error


#: A shape is n-fold symmetric when it correlates with itself turned by 360°/n at least this well.
SYMMETRY_CORRELATION = 0.9
#: A shape is nearly n-fold symmetric at this correlation: a template search may read such a shape
#: turned by θ or by θ + 360°/n from patch to patch (its two peaks are nearly as high), so the
#: verdict compares angle readings modulo that turn (a font-drawn diamond's learned template
#: correlated 0.89 with itself turned by 180° in the ±60° font suits, seed 0, CI size).
NEAR_SYMMETRY_CORRELATION = 0.8
#: An order counts only when its turn's self-correlation is within this of the best order's.
SYMMETRY_MARGIN = 0.05


def symmetry_orders(shapes: np.ndarray, orders: tuple[int, ...] = (6, 4, 3, 2), threshold: float = SYMMETRY_CORRELATION) -> tuple[int, ...]:
    """Rotational symmetry order of each class's shape: the largest n in ``orders`` whose turn by
    360°/n leaves the shape correlated with itself at ``threshold`` or more and within
    :data:`SYMMETRY_MARGIN` of the best-correlated order's turn (Pearson over all channels, the
    shape moved first so that its centre of mass is the frame's centre, then turned about it; the
    mass is each channel's distance from its median, the background, summed over the channels);
    1 when none does. The margin keeps a square at 4 when its 60° turn passes a low threshold
    (0.8 at most, against 1.0 for its 90° turn).

    An object of order n has an angle only modulo 360°/n (a rhombus turned by 180° is the same
    rhombus), so two readings of its angle are compared as n·angle (the zoo's scores,
    :func:`microvae.verdict.angle_agreement`).

    Parameters
    ----------
    shapes : ndarray
        (K, A, A) image of each class, or (K, C, A, A) with C channels (a run's
        :attr:`ClassTemplates.templates`), roughly centred.
    orders : tuple of int, default (6, 4, 3, 2)
        The orders tried.
    threshold : float, default :data:`SYMMETRY_CORRELATION`
        The self-correlation that counts as symmetric (:data:`NEAR_SYMMETRY_CORRELATION`: nearly).

    Returns
    -------
    tuple of int
        (K,) the order of each class.
    """
    from scipy import ndimage

    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim == 3:
        shapes = shapes[:, None]
    middle = (np.array(shapes.shape[-2:]) - 1) / 2.0
    out = []
    for channels in shapes:
        background = np.median(channels, axis=(1, 2))  # most of the frame: a shape's surround, an edge view's flat 0
        weight = np.abs(channels - background[:, None, None]).sum(axis=0)
        centre = np.array(ndimage.center_of_mass(weight)) if weight.sum() > 0 else middle
        channels = np.stack([ndimage.shift(c, middle - centre, order=1, mode="constant", cval=b) for c, b in zip(channels, background)])
        correlations = {}
        for n in orders:
            turned = np.stack([ndimage.rotate(c, 360.0 / n, reshape=False, order=1, mode="constant", cval=b) for c, b in zip(channels, background)])
            correlations[n] = np.corrcoef(channels.ravel(), turned.ravel())[0, 1]
        best = max((value for value in correlations.values() if np.isfinite(value)), default=-1.0)  # NaN: a flat shape
        symmetric = [n for n, value in correlations.items() if value >= threshold and value >= best - SYMMETRY_MARGIN]
        out.append(max(symmetric, default=1))
    return tuple(out)


def pose_to_templates(
    patches,
    classes: np.ndarray,
    templates: ClassTemplates,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> TemplatePoses:
    """Pose every patch against its own class's template, in one pass.

    Parameters
    ----------
    patches : (N, C, W, W) ndarray or PatchFile
        Patches of the templates' shape (read in slices of ``batch_size``).
    classes : ndarray
        (N,) int class of every patch, in 0…K−1.
    templates : ClassTemplates
        From :func:`fit_class_templates` (or :func:`read_class_templates`).
    batch_size : int, default 64
        Patches posed at once (each is turned ``templates.turns`` times; 64 was the fastest of
        64 / 128 / 256 at 24² and 32² on 2 CPU cores).
    device : str or torch.device, default "cpu"
        Where the search runs.
    progress : callable, optional
        ``progress(done, total)`` after each batch.

    Returns
    -------
    TemplatePoses
    """
    device = torch.device(device)
    count, width = len(patches), templates.templates.shape[-1]
    views = max(1, len(templates.edge_sigmas_px))  # the templates hold C channels per edge scale
    if (patches.shape[1] * views,) + tuple(patches.shape[2:]) != tuple(templates.templates.shape[1:]):
        expected = (templates.templates.shape[1] // views,) + tuple(templates.templates.shape[2:])
        raise InputError(f"patches are {'×'.join(map(str, patches.shape[1:]))} but the class templates are for {'×'.join(map(str, expected))}")
    turns = templates.turns if templates.rotation else 1
    step = 2 * math.pi / turns
    angles = (torch.arange(turns, dtype=torch.float32) * step).to(device)
    window = _shift_window(width, templates.max_shift_fraction).to(device) if templates.translation else None
    mask = soft_disk(width)
    stored = torch.as_tensor(templates.templates, dtype=torch.float32).to(device)
    stored = stored / stored.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]  # unit norm: match is a correlation
    classes = np.asarray(classes, dtype=np.int64)
    angle = np.zeros(count, np.float32)
    shift = np.zeros((count, 2), np.float32)
    match = np.zeros(count, np.float32)
    for first in range(0, count, batch_size):
        part = slice(first, min(first + batch_size, count))
        x = search_view(torch.as_tensor(np.asarray(patches[part], dtype=np.float32)).to(device), mask.to(device), templates.edge_sigmas_px)
        own = stored[torch.as_tensor(classes[part], device=device)]
        corr, shift_index = _turn_scores(x, own, angles, window)
        turned, moved, best = best_pose(
            x, own, corr, shift_index, mask.to(device), templates.refine_steps, templates.pose_candidates, templates.rotation, templates.translation
        )
        angle[part] = (math.pi - torch.remainder(math.pi - turned, 2 * math.pi)).cpu().numpy()  # (−π, π]
        shift[part] = moved.cpu().numpy()
        match[part] = best.cpu().numpy()
        if progress is not None:
            progress(part.stop, count)
    missing = ~templates.has_members[classes]
    angle[missing], shift[missing], match[missing] = np.nan, np.nan, np.nan
    return TemplatePoses(angle, shift, match)


def prepare_templates(templates: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(K, C, W, W) templates made ready for :func:`turns_to_templates`: under the soft disk,
    mean-subtracted and unit-norm (a template of zeros stays zeros and never matches).

    Parameters
    ----------
    templates : (K, C, W, W) ndarray or Tensor
        Class templates (:attr:`ClassTemplates.templates`).

    Returns
    -------
    (K, C, W, W) float32 tensor
    """
    stored = torch.as_tensor(np.asarray(templates, dtype=np.float32) if not torch.is_tensor(templates) else templates, dtype=torch.float32)
    return _prepare_tensor(stored, soft_disk(stored.shape[-1]).to(stored.device))


def turns_to_templates(
    x: torch.Tensor,
    templates: torch.Tensor,
    turns: int = TEMPLATE_TURNS,
    translation: bool = False,
    edge_sigmas_px: tuple[float, ...] = EDGE_SIGMAS_PX,
    refine_steps: int = POSE_REFINE_STEPS,
    candidates: int = POSE_CANDIDATES,
) -> torch.Tensor:
    """The turn that takes each of several templates onto each image, found by search.

    Each image's search view (its edges at ``edge_sigmas_px``, under the soft disk,
    mean-subtracted, unit-norm: :func:`microvae.alignment.search_view`) is compared with every template
    turned by ``turns`` evenly spaced angles (and, with ``translation``, at every circular shift up
    to :data:`TEMPLATE_MAX_SHIFT` of the window); per template the best turn wins, refined below
    the step by a parabola through its neighbours, then with its shift by ``refine_steps``
    Gauss-Newton steps (:func:`microvae.alignment.refine_poses`); with ``candidates`` the best few
    local maxima over the turns are refined and the best refined one wins
    (:func:`microvae.alignment.best_pose`). The search needs no class: it
    poses the image as every class would (the start of the angle latent,
    ``JTRVAEConfig.template_pose``).

    Parameters
    ----------
    x : (B, C, W, W) float tensor
        The images.
    templates : (K, C, W, W) float32 tensor
        Prepared templates (:func:`prepare_templates`), on ``x``'s device.
    turns : int, default TEMPLATE_TURNS
        Turns tried over 2π (at least 3).
    translation : bool, default False
        Also search the circular shifts.
    edge_sigmas_px : tuple of float, default EDGE_SIGMAS_PX
        Compare the images' edges at these scales (:func:`microvae.alignment.search_view`), as
        the templates were learned; empty: the images themselves.
    refine_steps : int, default POSE_REFINE_STEPS
        Gauss-Newton steps per (image, template) pair and candidate; 0: the grid's turn and the
        parabola.
    candidates : int, default POSE_CANDIDATES
        Local maxima over the turns refined per pair, the best refined one kept
        (:func:`microvae.alignment.best_pose`).

    Returns
    -------
    (B, K) float32 tensor
        Turn in (−π, π] rad, counter-clockwise as displayed, that takes template k onto image b
        (as :attr:`TemplatePoses.angle_rad`; 0 against a template of zeros).
    """
    width = x.shape[-1]
    step = 2 * math.pi / turns
    angles = torch.arange(turns, dtype=torch.float32, device=x.device) * step
    mask = soft_disk(width).to(x.device)
    views = search_view(x, mask, tuple(edge_sigmas_px))
    turned = _turned(views, angles)  # (B, R, C, W, W)
    if translation:
        window = _shift_window(width, TEMPLATE_MAX_SHIFT).to(x.device)
        spectra = torch.fft.rfft2(turned)[:, :, None] * torch.fft.rfft2(templates).conj()[None, None]  # (B, R, K, C, W, W/2+1)
        corr, where = torch.fft.irfft2(spectra.sum(3), s=(width, width)).masked_fill(~window, -math.inf).flatten(3).max(-1)  # (B, R, K)
    else:
        corr = torch.einsum("brp,kp->brk", turned.flatten(2), templates.flatten(1))
        where = torch.zeros_like(corr, dtype=torch.long)
    count, classes = len(x), len(templates)
    corr, where = corr.transpose(1, 2).flatten(0, 1), where.transpose(1, 2).flatten(0, 1)  # (B·K, R)
    paired_views = views[:, None].expand(-1, classes, -1, -1, -1).flatten(0, 1)
    paired_templates = templates[None].expand(count, -1, -1, -1, -1).flatten(0, 1)
    turned_by, _, _ = best_pose(paired_views, paired_templates, corr, where, mask, refine_steps, candidates, True, translation)
    return math.pi - torch.remainder(math.pi - turned_by.view(count, classes), 2 * math.pi)

"""Classes of objects in any pose by multi-reference alignment (k-means in the space of shapes).

Plain k-means on patches of turned or moved objects groups them by pose, not by kind. Multi-reference
alignment, the classical 2D classification of single-particle cryo-EM, alternates two steps from a
starting partition: each class's template is the mean of its members turned and moved onto it;
each patch joins the class whose template it matches best over all turns (``rotations`` angles)
and shifts (every circular shift up to ``max_shift_fraction`` of the window, by FFT
cross-correlation). The objective is the mean squared distance of each patch to its best-aligned
template: k-means where two patches that differ by a pose are the same point. The first templates
are one member of each starting class (the mean of unaligned turned objects is a featureless blur).

Patches are compared mean-subtracted, unit-norm and under a soft disk (the corners that a turn
brings in are masked), so contrast and background level do not decide the class. The pose
searches (:func:`align_to_classes` and :mod:`microvae.templates`) compare the patches' edges
instead (:func:`search_view`: Laplacians of Gaussians at ``edge_sigmas_px``): a plain
correlation is ruled by an object's body, which a turn of its near-symmetry leaves almost in
place, and the edges keep the small parts that tell the turns apart (a spade's stem, a heart's
notch). The grid's pose (turns 5° apart, whole-pixel shifts) is then refined continuously
(:func:`refine_poses`: the template turned and moved onto the patch by Gauss-Newton steps), from
the few best turns of the grid, the best refined one kept (:func:`best_pose`: a near-symmetric
shape's wrong turn can win on the grid and lose off it).

Conventions: (N, C, W, W) float32 patches; a patch's ``angle_rad`` is the counter-clockwise turn (as
displayed) that takes its class template onto it, ``shift_px`` (row, col) the move in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import EDGE_SIGMAS_PX, POSE_CANDIDATES, POSE_REFINE_STEPS

__all__ = ["AlignedClusters", "align_to_classes", "aligned_kmeans", "best_pose", "place_templates", "refine_poses", "search_view", "soft_disk"]


@dataclass
class AlignedClusters:
    """Result of :func:`aligned_kmeans`.

    Attributes
    ----------
    labels : ndarray
        (N,) int64 class of every patch.
    angle_rad : ndarray
        (N,) turn of each patch relative to its template (0 without rotation).
    shift_px : ndarray
        (N, 2) (row, col) shift of each patch relative to its template, pixels.
    objective : float
        Mean over patches of 1 − (normalised correlation with the best-aligned template): 0 when
        every patch is its template exactly.
    templates : ndarray
        (K, C, W, W) class templates (masked, mean-subtracted).
    """

    labels: np.ndarray
    angle_rad: np.ndarray
    shift_px: np.ndarray
    objective: float
    templates: np.ndarray


def soft_disk(width: int) -> torch.Tensor:
    """(W, W) weights: 1 inside 0.7 of the half-width, a cosine fall to 0 at the inscribed circle.

    Parameters
    ----------
    width : int
        W, the patch side in px.

    Returns
    -------
    Tensor
        (W, W) float32 weights in [0, 1].
    """
    centre = (width - 1) / 2
    row, col = torch.meshgrid(torch.arange(width, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    radius = torch.sqrt((row - centre) ** 2 + (col - centre) ** 2) / max(centre, 1.0)
    fall = ((radius - 0.7) / 0.3).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * fall))


def search_view(x: torch.Tensor, mask: torch.Tensor, edge_sigmas_px: tuple[float, ...] = EDGE_SIGMAS_PX) -> torch.Tensor:
    """What the pose searches compare: each image's edges at every scale σ of ``edge_sigmas_px``
    (−σ²·∇²G_σ, the Laplacian of a Gaussian, mirrored at the border), each as
    :func:`_prepare_tensor` (under ``mask``, mean-subtracted, unit-norm), side by side as channels
    and unit-norm together.

    The band-pass drops the background's level and slope and the object's smooth body, and keeps
    its outline and small parts at the scales of σ.

    Parameters
    ----------
    x : (N, C, W, W) float tensor
        The images.
    mask : (W, W) tensor
        The soft disk (:func:`soft_disk`), on ``x``'s device.
    edge_sigmas_px : tuple of float, default EDGE_SIGMAS_PX
        The scales σ in px; empty compares the images themselves (as run folders from before the
        edges).

    Returns
    -------
    (N, C·S, W, W) float32 tensor
        S = len(edge_sigmas_px) (1 when empty).
    """
    x = x.float()
    if not edge_sigmas_px:
        return _prepare_tensor(x, mask)
    views = [_prepare_tensor(_laplacian_of_gaussian(x, float(sigma)), mask) for sigma in edge_sigmas_px]
    return _prepare_tensor(torch.cat(views, 1), mask)


def _laplacian_of_gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, W, W) −σ²·∇²(G_σ ∗ x), the image mirrored at its border (a kernel of ±⌈4σ⌉ px, at most W − 1);
    responses within float32 rounding of the image (a flat image's) are 0."""
    channels, width = x.shape[1], x.shape[-1]
    reach = max(1, min(math.ceil(4 * sigma), width - 1))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32, device=x.device)
    gauss = torch.exp(-(offsets**2) / (2 * sigma**2))
    gauss = gauss / gauss.sum()
    second = gauss * (offsets**2 - sigma**2) / sigma**4  # d²/dt² of the normalised Gaussian
    kernel = -(sigma**2) * (second[:, None] * gauss[None, :] + gauss[:, None] * second[None, :])
    kernel = (kernel - kernel.mean()).expand(channels, 1, -1, -1)  # zero sum: a flat image gives 0
    padded = F.pad(x, (reach,) * 4, mode="reflect")
    edges = F.conv2d(padded, kernel, groups=channels)
    rounding = 1e-5 * x.flatten(1).abs().amax(1)[:, None, None, None]  # float32 rounding of a flat image's response: none
    return torch.where(edges.abs() > rounding, edges, torch.zeros_like(edges))


def _prepare(patches: np.ndarray, mask: torch.Tensor) -> torch.Tensor:
    """Masked, mean-subtracted (under the mask), unit-norm patches (N, C, W, W)."""
    return _prepare_tensor(torch.as_tensor(np.ascontiguousarray(patches), dtype=torch.float32), mask)


def _prepare_tensor(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """As :func:`_prepare`, for a float32 tensor (N, C, W, W) on ``mask``'s device."""
    weight = mask / mask.sum()
    x = (x - (x * weight).sum((-2, -1), keepdim=True)) * mask
    return x / x.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]


def _undo_turn_theta(angles: torch.Tensor) -> torch.Tensor:
    """(R, 2, 3) ``affine_grid`` matrices that turn content by −angle as displayed (R,) rad.

    affine_grid works in (x=col, y=row); sampling at R(+angle)·u turns the content by −angle as
    displayed, so that an object turned by +angle comes upright.
    """
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(angles)
    return torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)


def _affine_grid(theta: torch.Tensor, width: int) -> torch.Tensor:
    """(B, W, W, 2) sampling grid of the (B, 2, 3) matrices ``theta`` over a square of side W: what
    ``F.affine_grid(theta, (B, C, W, W), align_corners=True)`` returns, by broadcasting (4× faster
    on CPU for the searches' small windows, where its batched matrix product dominates)."""
    axis = torch.linspace(-1.0, 1.0, width, device=theta.device, dtype=theta.dtype)
    col, row = axis[None, None, :], axis[None, :, None]
    t = theta[:, :, :, None, None]
    return torch.stack([t[:, 0, 0] * col + t[:, 0, 1] * row + t[:, 0, 2], t[:, 1, 0] * col + t[:, 1, 1] * row + t[:, 1, 2]], -1)


def _turned(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """(B, R, C, W, W): each image turned by −angle (so that an object turned by +angle comes upright)."""
    b, c, h, w = x.shape
    r = len(angles)
    grid = _affine_grid(_undo_turn_theta(angles), w)
    out = F.grid_sample(x.repeat_interleave(r, 0), grid.repeat(b, 1, 1, 1), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(b, r, c, h, w)


def _turned_each(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """(B, C, W, W): each image turned by −its own angle (B,) (as :func:`_turned`, one turn each)."""
    grid = _affine_grid(_undo_turn_theta(angles), x.shape[-1])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _turn_matrix(angle_rad: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) ``affine_grid`` matrices (x=col, y=row) that turn content by +angle (B,) rad as displayed."""
    return _undo_turn_theta(-angle_rad)[:, :, :2]


def _normalised_shift(shift_px: torch.Tensor, width: int) -> torch.Tensor:
    """(B, 2) (row, col) shifts in px as ``affine_grid``'s (x=col, y=row), align_corners=True units."""
    return shift_px.flip(-1) * (2.0 / (width - 1))


def place_templates(templates: torch.Tensor, angle_rad: torch.Tensor, shift_px: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each template turned by its ``angle_rad`` about the window's centre and moved by its
    ``shift_px``, as the pose searches read a pose (bilinear, zeros outside), under ``mask``,
    unit-norm.

    Parameters
    ----------
    templates : (B, C, W, W) float tensor
        One template per pose.
    angle_rad : (B,) float tensor
        Counter-clockwise turn as displayed, rad.
    shift_px : (B, 2) float tensor
        (row, col) move in px, applied after the turn.
    mask : (W, W) tensor
        The soft disk, on the templates' device.

    Returns
    -------
    (B, C, W, W) float32 tensor
    """
    turn = _turn_matrix(angle_rad)
    theta = torch.cat([turn, -(turn @ _normalised_shift(shift_px, templates.shape[-1])[:, :, None])], 2)
    grid = _affine_grid(theta, templates.shape[-1])
    placed = F.grid_sample(templates, grid, mode="bilinear", padding_mode="zeros", align_corners=True) * mask
    return placed / placed.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]


def _placed_shift(grid_shift_px: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """(B, 2) (row, col) px: the searches' circular shift (B, 2), found on the patch turned back by
    ``angle_rad`` (B,), as the move after the turn that :func:`place_templates` applies (the same
    move, turned with the patch)."""
    turn = _undo_turn_theta(angle_rad)[:, :, :2]  # the search sampled the patch at turn · (u + shift)
    return (turn @ grid_shift_px.flip(-1)[:, :, None])[:, :, 0].flip(-1)


def _posed_back(x: torch.Tensor, angle_rad: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """(B, C, W, W): each image brought into its template's frame, the inverse of :func:`place_templates`'s pose."""
    theta = torch.cat([_turn_matrix(angle_rad).transpose(1, 2), _normalised_shift(shift_px, x.shape[-1])[:, :, None]], 2)
    grid = _affine_grid(theta, x.shape[-1])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def refine_poses(
    views: torch.Tensor,
    templates: torch.Tensor,
    angle_rad: torch.Tensor,
    shift_px: torch.Tensor,
    mask: torch.Tensor,
    steps: int = POSE_REFINE_STEPS,
    rotation: bool = True,
    translation: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Poses refined off the search's grid: each template, turned and moved continuously
    (:func:`place_templates`), is fitted to its view by ``steps`` Gauss-Newton steps.

    The searches try turns 5° apart and whole-pixel shifts; a pose between them is read only
    through a parabola over the turns, and the shift's rounding turns the fitted outline too. Each
    step solves the damped normal equations of ‖placed template − view‖² in (turn, row shift,
    col shift), the Jacobian by central differences (0.01 rad, 0.1 px), moving at most 0.05 rad
    and 0.5 px; the best pose met is kept, so the correlation never falls below the start's.
    No autograd: it runs under ``torch.no_grad``.

    Parameters
    ----------
    views : (B, C, W, W) float tensor
        Search views of the images (:func:`search_view`).
    templates : (B, C, W, W) float tensor
        The template each view is posed against (under ``mask``, unit-norm).
    angle_rad : (B,) float tensor
        Starting turn that takes the template onto the view, rad (counter-clockwise as displayed).
    shift_px : (B, 2) float tensor
        Starting (row, col) move, px.
    mask : (W, W) tensor
        The soft disk, on the views' device.
    steps : int, default POSE_REFINE_STEPS
        Gauss-Newton steps (0 returns the start).
    rotation, translation : bool, default True
        Which of the turn and the shift are refined (the other stays as given).

    Returns
    -------
    angle_rad : (B,) float32 tensor
    shift_px : (B, 2) float32 tensor
    correlation : (B,) float32 tensor
        Correlation of each view with its placed template at the returned pose.
    """
    free = [index for index, on in enumerate((rotation, translation, translation)) if on]
    pose = torch.cat([angle_rad.float()[:, None], shift_px.float()], 1)
    flat = views.flatten(1)

    def placed(at: torch.Tensor) -> torch.Tensor:
        return place_templates(templates, at[:, 0], at[:, 1:], mask).flatten(1)

    current = placed(pose)
    best_pose, best_corr = pose, (current * flat).sum(1)
    if not free or len(views) == 0:
        return best_pose[:, 0], best_pose[:, 1:], best_corr
    probe = torch.tensor([0.01, 0.1, 0.1], device=views.device)
    limit = torch.tensor([0.05, 0.5, 0.5], device=views.device)[free]
    eye = torch.eye(len(free), device=views.device)
    for _ in range(steps):
        columns = []
        for index in free:
            nudge = torch.zeros(3, device=views.device)
            nudge[index] = probe[index]
            columns.append((placed(pose + nudge) - placed(pose - nudge)) / (2 * probe[index]))
        jacobian = torch.stack(columns, 2)  # (B, P, F)
        normal = jacobian.transpose(1, 2) @ jacobian
        normal = normal + 1e-3 * torch.diag_embed(torch.diagonal(normal, dim1=1, dim2=2)) + 1e-6 * eye
        gradient = (jacobian.transpose(1, 2) @ (flat - current)[:, :, None])[:, :, 0]
        step = torch.linalg.solve(normal, gradient).clamp(-limit, limit)
        pose = pose.clone()
        pose[:, free] += step
        current = placed(pose)
        corr = (current * flat).sum(1)
        better = corr > best_corr
        best_pose = torch.where(better[:, None], pose, best_pose)
        best_corr = torch.where(better, corr, best_corr)
    return best_pose[:, 0], best_pose[:, 1:], best_corr


def _shift_window(width: int, max_shift_fraction: float) -> torch.Tensor:
    """(W, W) bool: circular shifts (row, col) within ±max_shift_fraction·W."""
    limit = max_shift_fraction * width
    offsets = torch.arange(width)
    offsets = torch.where(offsets > width // 2, offsets - width, offsets).abs()
    return (offsets[:, None] <= limit) & (offsets[None, :] <= limit)


def _scores(turned: torch.Tensor, templates: torch.Tensor, window: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best correlation (B, K) of every patch with every template over turns (and shifts), and the
    index of the best (turn, shift) as (B, K) flat indices into R·W·W (R without shifts)."""
    b, r, c, h, w = turned.shape
    if window is None:
        corr = torch.einsum("brp,kp->bkr", turned.reshape(b, r, -1), templates.reshape(len(templates), -1))
        best, index = corr.max(-1)
        return best, index
    # the window is a block of row offsets × col offsets: invert the FFT along the rows, keep the
    # block's rows, then along the cols at those rows only (1.4–1.8× faster than irfft2 at 0.2 W)
    rows, cols = torch.nonzero(window.any(1)).flatten(), torch.nonzero(window.any(0)).flatten()
    spectra = torch.fft.rfft2(turned)  # (B, R, C, H, W//2+1)
    template_spectra = torch.fft.rfft2(templates).conj()  # (K, C, H, W//2+1)
    product = (spectra[:, None] * template_spectra[None, :, None]).sum(3)  # (B, K, R, H, W//2+1)
    corr = torch.fft.irfft(torch.fft.ifft(product, dim=-2)[..., rows, :], n=w, dim=-1)[..., cols]  # (B, K, R, h', w')
    best, index = corr.flatten(2).max(-1)
    per_turn = len(rows) * len(cols)
    turn, within = index // per_turn, index % per_turn
    return best, turn * (h * w) + rows[within // len(cols)] * w + cols[within % len(cols)]


def aligned_kmeans(
    patches: np.ndarray,
    init_labels: np.ndarray,
    n_classes: int,
    rotation: bool = True,
    translation: bool = True,
    rotations: int = 24,
    iterations: int = 10,
    max_shift_fraction: float = 0.2,
    batch_size: int = 256,
    fit_rows: np.ndarray | None = None,
    templates: np.ndarray | None = None,
) -> AlignedClusters:
    """Multi-reference alignment classification of (N, C, W, W) patches from ``init_labels`` (N,).

    Without ``rotation`` and ``translation`` this is k-means on the masked, normalised patches.
    Stops early when no patch changes class. A class that empties is reseeded with the patch
    that fits its own template worst. With ``fit_rows``, the templates are learned from those
    patches only, and every patch is then classified and posed against the last templates in one
    pass (the cost of a large set is then about one iteration).

    Parameters
    ----------
    patches : ndarray
        (N, C, W, W) float32 patches.
    init_labels : ndarray
        (N,) int starting classes in 0…K−1.
    n_classes : int
        K.
    rotation : bool, default True
        Align over turns.
    translation : bool, default True
        Align over circular shifts.
    rotations : int, default 24
        Turns tried, evenly spaced over 2π rad.
    iterations : int, default 10
        Most rounds of template building and reassignment.
    max_shift_fraction : float, default 0.2
        Largest shift tried per axis, as a fraction of W.
    batch_size : int, default 256
        Patches scored at once.
    fit_rows : ndarray, optional
        (M,) indices of the patches the templates are learned from; default all.
    templates : ndarray, optional
        (K, C, W, W) first templates, e.g. :attr:`AlignedClusters.templates` of a run to continue
        (then ``init_labels`` are its labels); default one member of each starting class.

    Returns
    -------
    AlignedClusters
        Classes, poses (``angle_rad`` in rad, ``shift_px`` (row, col) in px), objective and
        templates, for every patch.
    """
    width = patches.shape[-1]
    mask = soft_disk(width)
    every = _prepare(patches, mask)
    x = every if fit_rows is None else every[torch.as_tensor(np.asarray(fit_rows), dtype=torch.long)]
    init_labels = np.asarray(init_labels) if fit_rows is None else np.asarray(init_labels)[np.asarray(fit_rows)]
    n = len(x)
    angles = torch.arange(rotations, dtype=torch.float32) * (2 * math.pi / rotations) if rotation else torch.zeros(1)
    window = _shift_window(width, max_shift_fraction) if translation else None
    labels = torch.as_tensor(np.asarray(init_labels), dtype=torch.long)
    turn_index = torch.zeros(n, dtype=torch.long)
    shift_index = torch.zeros(n, dtype=torch.long)
    best = torch.zeros(n)
    given = templates is not None
    for iteration in range(iterations + 1):
        if iteration == 0:  # one sharp member per class: the mean of unaligned members is a blur
            templates = torch.as_tensor(np.asarray(templates, np.float32)) if given else _exemplars(x, labels, n_classes)
        else:
            templates = _templates(x, labels, turn_index, shift_index, angles, n_classes, window is not None, mask)
        new_labels, turn_index, shift_index, best = _assign(x, templates, angles, window, batch_size)
        counts = torch.bincount(new_labels, minlength=n_classes)
        for empty in torch.nonzero(counts == 0).flatten().tolist():  # reseed with the worst-fitting patch
            worst = int(best.argmin())
            new_labels[worst] = empty
            best[worst] = 1.0
        changed = int((new_labels != labels).sum())
        labels = new_labels
        if (changed == 0 and not (given and iteration == 0)) or iteration == iterations:  # a continued run's first round only re-poses
            break
    if fit_rows is not None:  # every patch against the templates the fit rows settled on
        labels, turn_index, shift_index, best = _assign(every, templates, angles, window, batch_size)
    shift = _signed_shift(shift_index, width)
    return AlignedClusters(
        labels.numpy().astype(np.int64),
        angles[turn_index].numpy().astype(np.float64),
        shift.numpy().astype(np.float64),
        float((1 - best).mean()),
        templates.numpy(),
    )


def _assign(x: torch.Tensor, templates: torch.Tensor, angles: torch.Tensor, window: torch.Tensor | None, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Class (N,), turn index (N,), flat shift index (N,) and best correlation (N,) of every prepared patch against ``templates``."""
    n, width = len(x), x.shape[-1]
    labels = torch.empty(n, dtype=torch.long)
    turn_index = torch.zeros(n, dtype=torch.long)
    shift_index = torch.zeros(n, dtype=torch.long)
    best = torch.zeros(n)
    per_turn = width * width if window is not None else 1
    for start in range(0, n, batch_size):
        score, index = _scores(_turned(x[start : start + batch_size], angles), templates, window)
        labels[start : start + batch_size] = score.argmax(1)
        chosen = index.gather(1, labels[start : start + batch_size, None])[:, 0]
        best[start : start + batch_size] = score.max(1).values
        turn_index[start : start + batch_size] = chosen // per_turn
        shift_index[start : start + batch_size] = chosen % per_turn
    return labels, turn_index, shift_index, best


def _exemplars(x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(K, C, W, W): for each class, the member most like the others (highest mean correlation
    with a sample of up to 256 of them, unaligned); a random patch for an empty class."""
    flat = x.flatten(1)
    out = []
    for k in range(n_classes):
        members = torch.nonzero(labels == k).flatten()
        if len(members) == 0:
            members = torch.arange(len(x))
        sample = members[:: max(1, len(members) // 256)]
        similarity = (flat[sample] @ flat[sample].T).mean(1)
        out.append(x[sample[similarity.argmax()]])
    return torch.stack(out)


def _templates(
    x: torch.Tensor,
    labels: torch.Tensor,
    turn_index: torch.Tensor,
    shift_index: torch.Tensor,
    angles: torch.Tensor,
    n_classes: int,
    shifted: bool,
    mask: torch.Tensor,
) -> torch.Tensor:
    """(K, C, W, W) unit-norm mean of each class's members brought into its frame."""
    width = x.shape[-1]
    sums = torch.zeros((n_classes,) + tuple(x.shape[1:]))
    for start in range(0, len(x), 1024):
        part = slice(start, start + 1024)
        aligned = _turned_each(x[part], angles[turn_index[part]])  # (B, C, W, W): each member turned by its own angle only
        if shifted:
            rows, cols = shift_index[part] // width, shift_index[part] % width
            aligned = torch.stack([torch.roll(a, (-int(r), -int(c)), (-2, -1)) for a, r, c in zip(aligned, rows, cols)])
        sums.index_add_(0, labels[part], aligned)
    templates = sums * mask
    return templates / templates.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]


def align_to_classes(
    patches: np.ndarray,
    labels: np.ndarray,
    start_angle_rad: np.ndarray | None = None,
    rotation: bool = True,
    translation: bool = True,
    rotations: int = 72,
    iterations: int = 3,
    max_shift_fraction: float = 0.2,
    batch_size: int = 128,
    edge_sigmas_px: tuple[float, ...] = EDGE_SIGMAS_PX,
    refine_steps: int = POSE_REFINE_STEPS,
    candidates: int = POSE_CANDIDATES,
    round_steps: int = 0,
    restarts: int = 1,
) -> AlignedClusters:
    """Pose of every patch relative to its class's template, the classes held fixed.

    The pose half of :func:`aligned_kmeans`: templates start as the class means of the patches
    turned back by ``start_angle_rad`` (N,) (zeros if None), then ``iterations`` rounds of
    aligning each patch to its own class's template over ``rotations`` turns (and shifts) and
    rebuilding the templates (each member brought into its class's frame by its own pose). The
    best turn is refined below the grid step by a parabola through the correlations of the best
    turn and its two neighbours; with ``round_steps`` the ``candidates`` best turns are each read
    off the grid and the best refined one kept (:func:`best_pose`). With ``restarts`` the rounds
    start again from one member per class, and each class keeps its best start. Then the
    templates are built once more and every pose against them is read off the grid, turn and
    shift together, by ``refine_steps`` Gauss-Newton steps (:func:`refine_poses`).

    Returns an :class:`AlignedClusters` with ``labels`` as given; its ``angle_rad`` is in [0, 2π)
    up to the class template's own (arbitrary) orientation, so compare it with a true angle by
    circular correlation, per class.

    Parameters
    ----------
    patches : ndarray
        (N, C, W, W) float32 patches.
    labels : ndarray
        (N,) int classes, held fixed (K = max + 1).
    start_angle_rad : ndarray or None, optional
        (N,) starting turn of each patch in rad; zeros when None (or without rotation).
    rotation : bool, default True
        Align over turns.
    translation : bool, default True
        Align over circular shifts.
    rotations : int, default 72
        Turns tried, evenly spaced over 2π rad (refined below the step by the parabola).
    iterations : int, default 3
        Rounds of alignment and template rebuilding.
    max_shift_fraction : float, default 0.2
        Largest shift tried per axis, as a fraction of W.
    batch_size : int, default 128
        Patches scored at once.
    edge_sigmas_px : tuple of float, default EDGE_SIGMAS_PX
        Compare the patches' edges at these scales (:func:`search_view`); empty: the patches
        themselves.
    refine_steps : int, default POSE_REFINE_STEPS
        Gauss-Newton steps that refine the last poses off the grid (:func:`refine_poses`); 0:
        the grid's turn (with the parabola) and whole-pixel shifts.
    candidates : int, default POSE_CANDIDATES
        With ``round_steps``: local maxima over the turns that each round refines per patch,
        the best refined one kept (:func:`best_pose`).
    round_steps : int, default 0
        Gauss-Newton steps per candidate in every round; 0: the rounds stay on the grid.
    restarts : int, default 1
        Starts of the rounds: the first from ``start_angle_rad``, each further one from a
        random member of every class (seeded by the restart's number); each class keeps the
        start whose last round its members match best (mean correlation).

    Returns
    -------
    AlignedClusters
        ``labels`` as given, ``angle_rad`` (N,) in [0, 2π) rad, ``shift_px`` (N, 2) (row, col)
        in px (sub-pixel when refined), the objective and the (K, C·S, W, W) templates (of the search views, S scales).
    """
    width = patches.shape[-1]
    mask = soft_disk(width)
    x = search_view(torch.as_tensor(np.ascontiguousarray(patches), dtype=torch.float32), mask, tuple(edge_sigmas_px))
    n = len(x)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n_classes = int(labels_t.max()) + 1 if n else 0
    if not rotation:
        rotations = 1
    step = 2 * math.pi / rotations
    angles = torch.arange(rotations, dtype=torch.float32) * step
    start = np.zeros(n) if start_angle_rad is None or not rotation else np.asarray(start_angle_rad, dtype=np.float64)
    angle = torch.as_tensor(np.mod(start, 2 * math.pi), dtype=torch.float32)
    window = _shift_window(width, max_shift_fraction) if translation else None
    search = dict(
        angles=angles, window=window, mask=mask, batch_size=batch_size, steps=round_steps, candidates=candidates, rotation=rotation, translation=translation
    )
    first = _posed_means(x, labels_t, angle, torch.zeros(n, 2), n_classes, mask)
    angle, shift, best = _rounds(x, labels_t, first, angle, iterations, **search)
    for restart in range(1, restarts):  # each class keeps the start its members match best
        first = _members(x, labels_t, n_classes, restart)
        other = _rounds(x, labels_t, first, torch.zeros(n), iterations, **search)
        for k in range(n_classes):
            members = labels_t == k
            if members.any() and other[2][members].mean() > best[members].mean():
                angle[members], shift[members], best[members] = other[0][members], other[1][members], other[2][members]
    templates = _posed_means(x, labels_t, angle, shift, n_classes, mask)
    for first in range(0, n, batch_size):  # the last poses, read off the grid against the last templates
        part = slice(first, first + batch_size)
        angle[part], shift[part], best[part] = refine_poses(
            x[part], templates[labels_t[part]], angle[part], shift[part], mask, refine_steps, rotation, translation
        )
    return AlignedClusters(
        labels_t.numpy().astype(np.int64),
        torch.remainder(angle, 2 * math.pi).numpy().astype(np.float64),
        shift.numpy().astype(np.float64),
        float((1 - best).mean()),
        templates.numpy(),
    )


def _rounds(
    x: torch.Tensor,
    labels: torch.Tensor,
    templates: torch.Tensor,
    angle: torch.Tensor,
    iterations: int,
    angles: torch.Tensor,
    window: torch.Tensor | None,
    mask: torch.Tensor,
    batch_size: int,
    steps: int,
    candidates: int,
    rotation: bool,
    translation: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``iterations`` rounds of posing every view (N, C, W, W) against its class's template and
    rebuilding the templates from the posed members, from the first ``templates`` (K, C, W, W)
    and turns ``angle`` (N,) rad (returned as they are when ``iterations`` is 0). Returns the last
    poses: angle (N,) rad, shift (N, 2) px and correlation (N,)."""
    n = len(x)
    angle, shift, best = angle.clone(), torch.zeros(n, 2), torch.zeros(n)
    for round_index in range(iterations):
        if round_index:
            templates = _posed_means(x, labels, angle, shift, len(templates), mask)
        for first in range(0, n, batch_size):
            part = slice(first, first + batch_size)
            own = templates[labels[part]]
            corr, shift_index = _turn_scores(x[part], own, angles, window)
            angle[part], shift[part], best[part] = best_pose(x[part], own, corr, shift_index, mask, steps, candidates, rotation, translation)
    return angle, shift, best


def _members(x: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """(K, C, W, W): one member of each class drawn with ``seed`` (a random view for an empty
    class), the start of a restart of :func:`align_to_classes`."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_classes):
        members = torch.nonzero(labels == k).flatten()
        if len(members) == 0:
            members = torch.arange(len(x))
        out.append(x[members[torch.randint(len(members), (1,), generator=generator)]][0])
    return torch.stack(out)


def _posed_means(x: torch.Tensor, labels: torch.Tensor, angle_rad: torch.Tensor, shift_px: torch.Tensor, n_classes: int, mask: torch.Tensor) -> torch.Tensor:
    """(K, C, W, W) unit-norm mean of each class's members, each brought into the class's frame by
    its own pose (:func:`_posed_back`), under ``mask``."""
    sums = torch.zeros((n_classes,) + tuple(x.shape[1:]))
    for start in range(0, len(x), 1024):
        part = slice(start, start + 1024)
        sums.index_add_(0, labels[part], _posed_back(x[part], angle_rad[part], shift_px[part]))
    templates = sums * mask
    return templates / templates.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]


def _turn_scores(x: torch.Tensor, own: torch.Tensor, angles: torch.Tensor, window: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlation (B, R) of each prepared patch (B, C, W, W) with its own template ``own``
    (B, C, W, W) at every turn in ``angles`` (R,), at the best circular shift within ``window``,
    and that shift as a flat index (B, R) into W·W (0 without ``window``)."""
    width = x.shape[-1]
    turned = _turned(x, angles)  # (B, R, C, W, W)
    if window is None:
        corr = torch.einsum("brp,bp->br", turned.flatten(2), own.flatten(1))
        return corr, torch.zeros_like(corr, dtype=torch.long)
    spectra = torch.fft.rfft2(turned) * torch.fft.rfft2(own).conj()[:, None]
    full = torch.fft.irfft2(spectra.sum(2), s=(width, width)).masked_fill(~window, -math.inf)
    return full.flatten(2).max(-1)  # (B, R)


def best_pose(
    views: torch.Tensor,
    templates: torch.Tensor,
    corr: torch.Tensor,
    shift_index: torch.Tensor,
    mask: torch.Tensor,
    steps: int = POSE_REFINE_STEPS,
    candidates: int = POSE_CANDIDATES,
    rotation: bool = True,
    translation: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pose of each view against its template, from the search's scores over turns.

    The ``candidates`` best local maxima of ``corr`` over the turns (the best alone without
    refinement) are each placed below the grid step by a parabola through their neighbours, read
    off the grid by ``steps`` Gauss-Newton steps (:func:`refine_poses`), and the best refined one
    wins. On the grid a near-symmetric object's wrong turn (a club 120° off, its stem elsewhere)
    can score above the right one, whose whole-pixel shift misses by up to half a pixel; read off
    the grid, the right one wins (clubs with a true template, ±60°, 3 seeds: 82–92 % of turns
    within 30° with one candidate, 99–100 % with three).

    Parameters
    ----------
    views : (B, C, W, W) float tensor
        Search views (:func:`search_view`).
    templates : (B, C, W, W) float tensor
        The template each view is posed against (under ``mask``, unit-norm).
    corr : (B, R) float tensor
        Correlation at each of R turns evenly spaced over 2π (at its best shift).
    shift_index : (B, R) long tensor
        That best circular shift, a flat index into W·W.
    mask : (W, W) tensor
        The soft disk, on the views' device.
    steps : int, default POSE_REFINE_STEPS
        Gauss-Newton steps per candidate (0: the grid's best turn, with the parabola).
    candidates : int, default POSE_CANDIDATES
        Local maxima over the turns refined (1 without rotation or refinement).
    rotation, translation : bool, default True
        Which of the turn and the shift are refined.

    Returns
    -------
    angle_rad : (B,) float32 tensor
        Counter-clockwise turn as displayed that takes the template onto the view.
    shift_px : (B, 2) float32 tensor
        (row, col) move after the turn, px.
    correlation : (B,) float32 tensor
        Correlation at the returned pose (the grid's when ``steps`` is 0).
    """
    count, rotations = corr.shape
    width = views.shape[-1]
    step = 2 * math.pi / rotations
    many = min(candidates, rotations) if steps > 0 and rotation and rotations >= 3 else 1
    if many > 1:
        peak = (corr >= corr.roll(1, 1)) & (corr > corr.roll(-1, 1))  # a plateau counts once
        turn = corr.masked_fill(~peak, -math.inf).topk(many, 1).indices  # (B, k)
        turn = torch.where(peak.gather(1, turn), turn, turn[:, :1])  # fewer maxima than k: the best again
    else:
        turn = corr.argmax(1, keepdim=True)
    grid_corr = corr.gather(1, turn)
    if rotation and rotations >= 3:
        angle = (turn.float() + _sub_step(corr[:, None, :].expand(-1, many, -1), turn)) * step
    else:
        angle = torch.zeros(turn.shape, device=corr.device)
    shift = _placed_shift(_signed_shift(shift_index.gather(1, turn).flatten(), width).to(views.device), angle.flatten())
    if steps == 0:
        return angle[:, 0], shift, grid_corr[:, 0]
    angle, shift, refined = refine_poses(
        views.repeat_interleave(many, 0), templates.repeat_interleave(many, 0), angle.flatten(), shift, mask, steps, rotation, translation
    )
    winner = refined.view(count, many).argmax(1) + torch.arange(count, device=refined.device) * many
    return angle[winner], shift[winner], refined[winner]


def _sub_step(corr: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Offset in [−0.5, 0.5] turns of the grid of the best turn ``turn`` (corr.shape[:-1]) from a
    parabola through it and its two neighbours along the last axis of ``corr`` (…, R), R ≥ 3."""
    rotations, best = corr.shape[-1], turn.unsqueeze(-1)
    before, at, after = corr.gather(-1, (best - 1) % rotations), corr.gather(-1, best), corr.gather(-1, (best + 1) % rotations)
    curvature = before - 2 * at + after
    offset = torch.where(curvature < 0, 0.5 * (before - after) / curvature.clamp(max=-1e-12), torch.zeros_like(at))
    return offset.clamp(-0.5, 0.5).squeeze(-1)


def _signed_shift(shift_index: torch.Tensor, width: int) -> torch.Tensor:
    """(N, 2) float (row, col) shifts in px, in (−W/2, W/2], from flat circular shift indices (N,)."""
    rows, cols = shift_index // width, shift_index % width
    return torch.stack([torch.where(rows > width // 2, rows - width, rows), torch.where(cols > width // 2, cols - width, cols)], 1).float()

"""Did two runs learn the same thing? A map between their latent spaces, and the tolerance it reaches.

Two VAEs that learned the same structure need not share coordinates: their latents may be rotated,
reflected or rescaled against each other, their classes permuted, and their canonical frames
turned. Following the diffusion-VAE thesis' Δ-reduction, :func:`compare_runs` fits the simplest map
that carries run A's latent code into run B's — for Euclidean latents an affine map
z_B = W z_A + b, for circular ones a rotation and reflection of each angle (θ_B = ±θ_A + φ, and for
a torus possibly its two angles swapped), for the classes a permutation (Hungarian matching of the two runs' assignments on
the same patches), for the canonical frame one global angle offset — such that B's decoder on the
mapped code renders what A's decoder renders. The reached tolerance Δ is the root-mean-square
difference of the two renderings over A's codes of the patches (intensity units of the model's
output), also given relative to the spread of A's renderings: near 0 means B can reproduce
everything A expresses; near 1 means it cannot.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .ensemble import align_labels
from .errors import InputError
from .refine import frozen

__all__ = ["Comparison", "compare_runs"]


@dataclass
class Comparison:
    """Result of :func:`compare_runs`.

    Attributes
    ----------
    delta : float
        RMS difference between A's and B's renderings after the map (output intensity units).
    delta_relative : float
        ``delta`` over the RMS deviation of A's renderings from their mean image.
    delta_identity : float
        The same RMS difference with the identity map (no fit), for reference.
    latent_map : ndarray
        (D_B, D_A) matrix W of z_B = W z_A + b (for circular latents a signed permutation: each
        angle kept or reflected, a torus' two angles possibly swapped).
    latent_offset : ndarray
        (D_B,) b (for circular latents the turn φ of each angle, radians).
    angle_offset_rad : float
        The global turn φ of B's canonical frame: B renders at angle φ.
    class_map : list[int]
        For each class of A, the matched class of B (empty without classes).
    class_agreement : float
        Fraction of patches whose A class maps to their B class.
    patches : int
        Number of patches used.
    """

    delta: float
    delta_relative: float
    delta_identity: float
    latent_map: np.ndarray
    latent_offset: np.ndarray
    angle_offset_rad: float
    class_map: list[int]
    class_agreement: float
    patches: int

    def to_dict(self) -> dict:
        """Plain-data form (for JSON).

        Returns
        -------
        dict
            Every attribute, the arrays as nested lists.
        """
        return {
            "delta": self.delta,
            "delta_relative": self.delta_relative,
            "delta_identity": self.delta_identity,
            "latent_map": self.latent_map.tolist(),
            "latent_offset": self.latent_offset.tolist(),
            "angle_offset_rad": self.angle_offset_rad,
            "class_map": self.class_map,
            "class_agreement": self.class_agreement,
            "patches": self.patches,
        }


def _render(model, z: torch.Tensor, onehot: torch.Tensor | None, angle_rad: torch.Tensor | None) -> torch.Tensor:
    """(N, C·W·W) output means in the canonical frame (no shift); ``angle_rad`` turns it."""
    return model.decode(z, onehot, angle_rad if model.config.rotation else None, None).flatten(1)


def _fit_map(model_b, z_a, onehot_b, target, weight, offset, learn_weight: bool, steps: int, lr: float):
    """Adam on (W if ``learn_weight``, b, frame angle φ) for the squared difference between B's
    rendering of W z_A + b and ``target``; returns (best loss, W, b, φ), the best seen (Adam's first
    steps can leave an exact starting map)."""
    weight = weight.clone().requires_grad_(learn_weight)
    offset = offset.clone().requires_grad_(True)
    angle = torch.zeros(1, requires_grad=True)
    parameters = ([weight] if learn_weight else []) + [offset] + ([angle] if model_b.config.rotation else [])
    optimizer = torch.optim.Adam(parameters, lr=lr)
    best = (math.inf, None)
    with frozen(model_b):
        for _ in range(steps + 1):
            rendered = _render(model_b, z_a @ weight.T + offset, onehot_b, angle.expand(len(z_a)))
            loss = (rendered - target).pow(2).mean()
            if loss.item() < best[0]:
                best = (loss.item(), [p.detach().clone() for p in (weight, offset, angle)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return (best[0], *best[1])


def compare_runs(model_a, model_b, images: np.ndarray, steps: int = 300, lr: float = 0.05, seed: int = 0) -> Comparison:
    """Fit the map from run A's latent code to run B's on (N, C, W, W) ``images`` (both models fixed).

    The map's parameters (W, b, φ) are fitted by Adam (``steps`` full-batch steps) to the mean
    squared difference between A's and B's renderings of A's posterior means, keeping the best seen;
    W starts at the least-squares map between the two runs' own posterior means on the same patches.

    Parameters
    ----------
    model_a, model_b : JTRVAE
        The two trained runs (encoded on the CPU; neither is changed).
    images : ndarray
        (N, C, W, W) float32 patches.
    steps : int, default 300
        Full-batch Adam steps.
    lr : float, default 0.05
        Adam's learning rate.
    seed : int, default 0
        Not used by the fit (kept in the signature).

    Returns
    -------
    Comparison
        The fitted map (W, b, φ in rad), the class matching and the RMS differences (output
        intensity units).

    Raises
    ------
    InputError
        When the runs differ in patch shape (C, W), latent geometry (or, for circular latents,
        dimension) or number of classes.
    """
    from .encoding import encode_array

    for name, model in (("A", model_a), ("B", model_b)):
        config = model.config
        if (config.channels, config.image_size) != (model_a.config.channels, model_a.config.image_size):
            raise InputError(
                f"run {name} renders {config.channels}×{config.image_size}² patches but run A {model_a.config.channels}×{model_a.config.image_size}²; compare runs trained on the same patch shape"
            )
    if model_a.config.latent_geometry != model_b.config.latent_geometry or (
        model_a.config.latent_geometry != "euclidean" and model_a.config.latent_dim != model_b.config.latent_dim
    ):
        raise InputError(
            f"run A's latents are {model_a.config.latent_geometry} (D = {model_a.config.latent_dim}) and run B's "
            f"{model_b.config.latent_geometry} (D = {model_b.config.latent_dim}); compare needs the same geometry"
        )
    circular_latents = model_a.config.latent_geometry != "euclidean"
    if (model_a.config.n_classes > 0) != (model_b.config.n_classes > 0) or model_a.config.n_classes != model_b.config.n_classes:
        raise InputError(f"run A has {model_a.config.n_classes} classes and run B {model_b.config.n_classes}; comparison needs the same number")
    encoded_a = encode_array(model_a, images, device="cpu", recon_error=False)
    encoded_b = encode_array(model_b, images, device="cpu", recon_error=False)
    n_classes = model_a.config.n_classes
    class_map, agreement = [], float("nan")
    onehot_a = onehot_b = None
    if n_classes > 0:
        permutation = align_labels(encoded_b["class"], encoded_a["class"], n_classes)  # A's k → B's permutation[k]
        class_map = permutation.tolist()
        agreement = float((permutation[encoded_a["class"]] == encoded_b["class"]).mean())
        onehot_a = torch.nn.functional.one_hot(torch.from_numpy(encoded_a["class"]), n_classes).float()
        onehot_b = torch.nn.functional.one_hot(torch.from_numpy(permutation[encoded_a["class"]]), n_classes).float()
    z_a = torch.from_numpy(encoded_a["z_mean"]).float()
    z_b = torch.from_numpy(encoded_b["z_mean"]).float()
    d_a, d_b = z_a.shape[1], z_b.shape[1]
    with torch.no_grad():
        target = _render(model_a, z_a, onehot_a, torch.zeros(len(z_a)))
        identity = (_render(model_b, z_a, onehot_b, torch.zeros(len(z_a))) - target).pow(2).mean().sqrt().item() if d_a == d_b else float("nan")
    if circular_latents:
        # θ_B = P S θ_A + φ: try every signed permutation P S (the symmetries of the torus that keep
        # its grid), fit the offsets φ (started at the circular mean of the two runs' differences)
        candidates = []
        for order in itertools.permutations(range(d_a)):
            for signs in itertools.product((1.0, -1.0), repeat=d_a):
                weight = torch.zeros(d_b, d_a)
                weight[torch.arange(d_a), torch.tensor(order)] = torch.tensor(signs)
                start = torch.atan2(torch.sin(z_b - z_a @ weight.T).mean(0), torch.cos(z_b - z_a @ weight.T).mean(0))
                candidates.append(_fit_map(model_b, z_a, onehot_b, target, weight, start, False, steps, lr))
        loss, weight, offset, angle = min(candidates, key=lambda fit: fit[0])
        offset = torch.atan2(torch.sin(offset), torch.cos(offset))
    else:
        # start from the least-squares affine map between the two runs' own codes of the same patches
        design = torch.cat([z_a, torch.ones(len(z_a), 1)], 1)
        start = torch.linalg.lstsq(design, z_b).solution if d_b and d_a else torch.zeros(d_a + 1, d_b)
        loss, weight, offset, angle = _fit_map(model_b, z_a, onehot_b, target, start[:d_a].T, start[d_a], True, steps, lr)
    with torch.no_grad():
        rendered = _render(model_b, z_a @ weight.T + offset, onehot_b, angle.expand(len(z_a)))
        delta = (rendered - target).pow(2).mean().sqrt().item()
        spread = (target - target.mean(0)).pow(2).mean().sqrt().item()
    angle_offset = float(np.angle(np.exp(1j * angle.item())))
    return Comparison(
        delta, delta / max(spread, 1e-12), identity, weight.detach().numpy(), offset.detach().numpy(), angle_offset, class_map, agreement, int(len(images))
    )

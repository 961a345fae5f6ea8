"""Circular and toroidal latents (the diffusion-VAE thesis): uniform prior on S¹ (or S¹ × S¹), a
wrapped-normal posterior, and its KL to the prior.

The posterior of an angle θ is the heat kernel on the circle at time t: the wrapped normal of mean
μ and σ = √(2t), with density q(θ) = Σ_k N(θ + 2πk; μ, σ²) (the sum over windings converges within
a few terms for σ ≤ 3). Its reparametrised sample is θ = wrap(μ + σ ε), ε ~ N(0, 1), whose density is
exactly q, so the single-sample estimate log q(θ) − log p(θ) = log q(θ) + log 2π is an unbiased
estimate of KL(q ‖ uniform); :func:`kl_to_uniform` gives the same KL by quadrature for tests.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import GEOMETRIES  # noqa: E402,F401  (one list, kept where the settings live)

__all__ = ["MAX_SD", "WINDINGS", "features", "kl_to_uniform", "log_prob", "sample", "winding_number", "wrap"]

MAX_SD = 3.0  # a wrapped normal this wide is uniform to 1e-8; keeps the winding sum short
WINDINGS = 4


def wrap(theta: Tensor) -> Tensor:
    """Angles in [−π, π).

    Parameters
    ----------
    theta : Tensor
        Angles in rad, any shape.

    Returns
    -------
    Tensor
        The same angles wrapped to [−π, π) rad, same shape.
    """
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def log_prob(theta: Tensor, mean: Tensor, sd: Tensor, windings: int = WINDINGS) -> Tensor:
    """log q(θ) of the wrapped normal (elementwise; θ, mean, sd broadcast), summing 2·windings + 1 terms.

    Parameters
    ----------
    theta : Tensor
        Angles in rad.
    mean : Tensor
        μ in rad.
    sd : Tensor
        σ in rad (> 0).
    windings : int, default WINDINGS
        Windings k summed on each side of 0.

    Returns
    -------
    Tensor
        log density in nats per rad, of the broadcast shape.
    """
    offsets = torch.arange(-windings, windings + 1, device=theta.device, dtype=theta.dtype) * (2 * math.pi)
    distance = wrap(theta - mean).unsqueeze(-1) + offsets
    sd = sd.unsqueeze(-1)
    return torch.logsumexp(-0.5 * (distance / sd) ** 2, dim=-1) - torch.log(sd[..., 0]) - 0.5 * math.log(2 * math.pi)


def sample(mean: Tensor, sd: Tensor, noise: Tensor) -> Tensor:
    """The reparametrised draw wrap(μ + σ ε) for standard-normal ``noise``.

    Parameters
    ----------
    mean : Tensor
        μ in rad.
    sd : Tensor
        σ in rad.
    noise : Tensor
        ε, standard-normal draws (broadcasting with ``mean`` and ``sd``).

    Returns
    -------
    Tensor
        Angles in [−π, π) rad.
    """
    return wrap(mean + sd * noise)


def kl_to_uniform(sd: Tensor, points: int = 512) -> Tensor:
    """KL(wrapped normal(0, sd) ‖ uniform on the circle) by the trapezoid rule on ``points`` angles
    (spectrally accurate for a smooth periodic integrand); elementwise over ``sd``.

    Parameters
    ----------
    sd : Tensor
        σ in rad, any shape.
    points : int, default 512
        Quadrature angles.

    Returns
    -------
    Tensor
        KL in nats, shaped and typed as ``sd`` (computed in float64).
    """
    theta = torch.linspace(-math.pi, math.pi, points + 1, dtype=torch.float64)[:-1]
    log_q = log_prob(theta, torch.zeros((), dtype=torch.float64), sd.double().unsqueeze(-1))
    return ((log_q.exp() * (log_q + math.log(2 * math.pi))).sum(-1) * (2 * math.pi / points)).to(sd.dtype)


def features(theta: Tensor) -> Tensor:
    """(B, 2D) decoder inputs (cos θ_1, …, cos θ_D, sin θ_1, …, sin θ_D) for (B, D) angles.

    Parameters
    ----------
    theta : Tensor
        (B, D) angles in rad.

    Returns
    -------
    Tensor
        (B, 2D): the D cosines, then the D sines.
    """
    return torch.cat([torch.cos(theta), torch.sin(theta)], dim=1)


def winding_number(true_phase, encoded_angle) -> int:
    """How many times ``encoded_angle`` (radians) turns while ``true_phase`` goes once around the
    circle: the encoded angles in order of the true phase, their wrapped steps summed, / 2π.

    Parameters
    ----------
    true_phase : array_like
        (N,) the true phase of each sample (only its order is used).
    encoded_angle : array_like
        (N,) encoded angles in rad.

    Returns
    -------
    int
        The winding number, rounded (negative when the encoded angle turns the other way).
    """
    import numpy as np

    order = np.argsort(np.asarray(true_phase))
    angles = np.asarray(encoded_angle)[order]
    steps = np.angle(np.exp(1j * np.diff(np.concatenate([angles, angles[:1]]))))
    return int(np.round(steps.sum() / (2 * math.pi)))

"""Per-sample refinement of the posterior: closing the amortisation gap on new or shifted scans.

The encoder is *amortised*: one network maps every patch to its q(·|x). On patches unlike the
training data (another scan, dose or drift) its guess can be far from the best q for that patch under
the decoder, and the ELBO suffers — the "amortisation gap" of the cryo-EM amortisation study. Its
remedy, the "variational lookup table", is to keep per-sample variational parameters and optimise
them directly. Here each patch's parameters start at the encoder's output and take ``steps`` Adam
steps on that patch's negative ELBO (β = 1, fresh reparametrised draws every step) with the decoder
fixed; the encoder is not changed.

The parameters optimised per patch are those of :meth:`microvae.models.JTRVAE.posterior`: class
logits, z mean and log sd, the angle's 2D mean and log sd, the shift's mean and log sd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from .config import RefineConfig  # (its home is microvae.config)

__all__ = ["RefineConfig", "frozen", "negative_elbo_over_draws", "refine_posterior"]

_LOG_SD = ("z_sd", "angle_vec_sd", "shift_sd")  # optimised on the log scale


def negative_elbo_over_draws(model, x: Tensor, posterior: dict[str, Tensor], draws: list[dict[str, Tensor]]) -> Tensor:
    """(B,) negative ELBO in nats (β = 1, analytic KLs) averaged over the given standard-normal draws.

    Parameters
    ----------
    model : JTRVAE
        The model (its decoder and priors).
    x : (B, C, W, W) tensor
        The images.
    posterior : dict of str to Tensor
        Posterior parameters, as :meth:`JTRVAE.posterior` returns them.
    draws : list of dict of str to Tensor
        Standard-normal draws (:meth:`JTRVAE.standard_normal_draws`).

    Returns
    -------
    (B,) tensor
        The mean −ELBO per image, nats.
    """
    total = x.new_zeros(x.shape[0])
    for noise in draws:
        terms = model.loss_terms(x, noise=noise, posterior=posterior)
        total = total + model.negative_elbo(terms)
    return total / len(draws)


@contextlib.contextmanager
def frozen(model) -> Iterator:
    """Within the block, ``model`` is in eval mode and its parameters take no gradients.

    Both are restored afterwards (gradients still flow *through* the model to other leaves).

    Parameters
    ----------
    model : torch.nn.Module
        The model.

    Yields
    ------
    torch.nn.Module
        ``model`` itself.
    """
    was_training = model.training
    requires_grad = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, flag in zip(model.parameters(), requires_grad):
            parameter.requires_grad_(flag)
        model.train(was_training)


def refine_posterior(model, x: Tensor, posterior: dict[str, Tensor], config: RefineConfig) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Optimise the posterior parameters of one batch against the fixed decoder.

    Parameters
    ----------
    model
        A trained :class:`microvae.models.JTRVAE` (left unchanged).
    x : Tensor
        (B, C, W, W) images on the model's device.
    posterior : dict[str, Tensor]
        The encoder's parameters for ``x`` (:meth:`JTRVAE.posterior`).

    Returns
    -------
    tuple[dict[str, Tensor], Tensor, Tensor]
        (refined posterior, negative ELBO before (B,), negative ELBO after (B,)), all detached.
    """
    config.validate()
    generator = torch.Generator(device=x.device).manual_seed(config.seed)
    eval_draws = [model.standard_normal_draws(x, generator) for _ in range(config.eval_draws)]
    start = {name: value.detach().float() for name, value in posterior.items()}
    with torch.no_grad():
        before = negative_elbo_over_draws(model, x, start, eval_draws)
    if config.steps == 0:
        return start, before, before
    leaves = {name: (value.clamp_min(1e-8).log() if name in _LOG_SD else value).clone().requires_grad_(True) for name, value in start.items()}
    optimizer = torch.optim.Adam(leaves.values(), lr=config.lr)
    with frozen(model), torch.enable_grad():
        for _ in range(config.steps):
            terms = model.loss_terms(x, generator, posterior=_from_leaves(leaves))
            loss = model.negative_elbo(terms).sum()  # per-patch terms are independent
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    refined = {name: value.detach() for name, value in _from_leaves(leaves).items()}
    with torch.no_grad():
        after = negative_elbo_over_draws(model, x, refined, eval_draws)
    return refined, before, after


def _from_leaves(leaves: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: (value.exp() if name in _LOG_SD else value) for name, value in leaves.items()}

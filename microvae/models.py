"""The j-trVAE family: a joint (discrete + continuous) VAE whose rotation and translation are latents.

Generative model (paper Eq. 1), for an image x with P pixels:

    z ~ N(0, I_D)                        continuous latents
    y ~ Cat(1/K)                         discrete class (absent when K = 0)
    v ~ N(mu0, I_2),  angle = atan2(v)   rotation: the angle of a 2D Gaussian vector, i.e. a
                                         Projected Normal; mu0 = (c0, 0) with c0 =
                                         ``angle_prior_concentration`` (0: uniform on the circle)
    s ~ N(0, sigma_s² I_2)               shift in grid units (one unit = half the patch width)
    x ~ p(x | decoder(R(angle)ᵀ(grid - s), z, y))   Bernoulli (logits) or Gaussian (mean, fixed sd)

Variational posterior: one encoder gives q(z|x) = N(m_z, sd_z²), q(v|x) = N(m_v, sd_v² I_2),
q(s|x) = N(m_s, sd_s²) and q(y|x) = Cat(softmax(logits)); z, v and s do not depend on y.

Why the rotation KL is taken on v (and is correct): the angle enters the likelihood only through
atan2(v), so the model with latent v has exactly the same marginal p(x) as the model with a
Projected-Normal angle. The ELBO of the v-model, with the analytic Gaussian
KL(q(v|x) ‖ p(v)), is therefore a valid lower bound on the same log p(x); it is looser than an
ELBO on the angle alone by E_q[KL(q(|v| | angle) ‖ p(|v| | angle))] ≥ 0 (data processing: the
Gaussian KL upper-bounds the KL of the projected distributions). It is analytic (no estimator
variance) and lets the encoder sharpen the angle by growing |m_v| / sd_v.

With ``template_pose`` (the CLI's default where objects turn) class y is drawn at angle
atan2(v) + t_y(x), where t_y(x) is the turn that takes class y's template onto x, found by search
(:func:`microvae.templates.turns_to_templates`; the templates are learned from the initial classes
and kept with the weights): the model describes each patch in its class template's frame, as
multi-reference alignment does, and the prior on v is a prior on the turn the search left over.
The KL terms are unchanged; q(v|x) is the same for every class.

The discrete class is marginalised exactly by parallel enumeration:
ELBO(x) = Σ_y q(y|x)·E_q[log p(x | z, v, s, y)] - KL_z - KL_v - KL_s - KL_y, with one draw of
(z, v, s) shared by all K classes and the decoder run for all K classes in one batched pass.
Loss (paper Eq. 2): recon + β_τ(t)·(KL_v + KL_s) + β_z(t)·KL_z + β_y(t)·KL_y
(+ an optional class-balance term, see ``JTRVAEConfig.class_balance``).

What it takes to make the classes come out right (measured on the ±60° cards; see
``JTRVAEConfig`` for the defaults): the angle must be learned before the classes split, or the
classes split by orientation; z must be held back until then, or it absorbs the rotation and the
class; a high early β_y (a high temperature for q(y|x)) keeps the classes from splitting too early;
a concentrated angle prior keeps symmetric shapes from being explained as other shapes turned by
90° or 180°; and a class posterior that reads the pose-normalised image (``canonical_class_head``)
learns the classes several times faster than the shared MLP head.

:func:`pyro_model` / :func:`pyro_guide` state the same model in Pyro for reference; the test
suite checks that :meth:`JTRVAE.loss_terms` equals Pyro's ``TraceEnum_ELBO`` on the same draws.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex
from torch import Tensor, nn

from . import circular
from .config import DECODERS, ENCODERS, KL_ESTIMATORS, LIKELIHOODS, JTRVAEConfig  # (their home is microvae.config)
from .errors import ParameterError
from .nets import (
    EquivariantEncoder,
    FourierDescriptor,
    MLPEncoder,
    ObjectDescriptor,
    SpatialBroadcastDecoder,
    SpatialMLPDecoder,
    TaperedView,
    coordinate_grid,
    mlp,
    rotated_copies,
    sample_at,
    transform_coordinates,
)
from .templates import prepare_templates, turns_to_templates

__all__ = [
    "DECODERS",
    "ENCODERS",
    "JTRVAE",
    "KL_ESTIMATORS",
    "LIKELIHOODS",
    "JTRVAEConfig",
    "beta_schedule",
    "class_imbalance",
    "marginal_class_kl",
    "pyro_guide",
    "pyro_model",
]


def beta_schedule(epoch: float, n_epochs: int, config: JTRVAEConfig) -> dict[str, float]:
    """KL weights at (0-based, possibly fractional) ``epoch`` of ``n_epochs``.

    Each β moves linearly from its start to its end value between ``begin · n_epochs`` and
    ``end · n_epochs`` of its window (a window lasts at least one epoch), and is constant outside.
    ``z_active`` is 0 while z is switched off (``z_delay``), else 1.

    Parameters
    ----------
    epoch : float
        The epoch, 0-based, possibly fractional.
    n_epochs : int
        The run's epochs.
    config : JTRVAEConfig
        The model's settings: each β's start, end and window (default window: 0 to
        ``anneal_fraction``), ``class_balance``, ``label_weight``, ``z_delay``.

    Returns
    -------
    dict of str to float
        ``beta_z``, ``beta_tau``, ``beta_y``, ``class_balance``, ``label_weight``,
        ``class_balance_unbiased`` (0.0 or 1.0) and ``z_active`` (0.0 or 1.0).
    """

    def ramp(start: float, end: float, window: tuple[float, float] | None) -> float:
        begin, stop = window if window is not None else (0.0, config.anneal_fraction)
        first = begin * n_epochs
        last = max(stop * n_epochs, first + 1.0)
        progress = min(max((epoch - first) / (last - first), 0.0), 1.0)
        return start + (end - start) * progress

    beta_z = config.beta_z if config.beta_z_start is None else ramp(config.beta_z_start, config.beta_z, config.beta_z_window)
    return {
        "beta_z": beta_z,
        "beta_tau": ramp(config.beta_tau_start, config.beta_tau_end, config.beta_tau_window),
        "beta_y": ramp(config.beta_y_start, config.beta_y_end, config.beta_y_window),
        "class_balance": config.class_balance,
        "label_weight": config.label_weight,
        "class_balance_unbiased": float(config.class_balance_unbiased),
        "z_active": float(epoch >= config.z_delay * n_epochs),
    }


class JTRVAE(nn.Module):
    """Joint rotation- and translation-invariant VAE (j-trVAE) and its sub-cases.

    K = 0 gives an rVAE / rtVAE, rotation and translation off a (spatial-decoder) joint VAE, all off
    a plain VAE. Images are (B, C, W, W); shifts are reported in pixels (row, col); angles in
    radians, counter-clockwise as displayed (see :mod:`microvae.nets` for the conventions).

    Parameters
    ----------
    config : JTRVAEConfig
        The model's settings (validated): image size W, channels C, classes K, latents D,
        encoder and decoder kinds and widths, priors, likelihood.

    Attributes
    ----------
    config : JTRVAEConfig
        The settings.
    n_enumerated : int
        K' = max(K, 1), the classes a decoder pass renders.
    half_width_px : float
        (W − 1) / 2: one grid unit in px (shifts in grid units × this = px).
    encoder : MLPEncoder or EquivariantEncoder
        The posterior's network.
    decoder : SpatialMLPDecoder or SpatialBroadcastDecoder
        The spatial decoder.
    """

    def __init__(self, config: JTRVAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        c, w = config.channels, config.image_size
        self.n_enumerated = max(config.n_classes, 1)
        self.half_width_px = (w - 1) / 2.0
        self.register_buffer("grid", coordinate_grid(w), persistent=False)  # (P, 2)
        self.register_buffer("angle_prior_mean", torch.tensor([config.angle_prior_concentration, 0.0]), persistent=False)
        self.circular_latents = config.latent_geometry != "euclidean"
        decoder_latent = 2 * config.latent_dim if self.circular_latents else config.latent_dim  # (cos, sin) per angle
        if config.encoder == "equivariant":
            self.encoder = EquivariantEncoder(
                w,
                c,
                config.latent_dim,
                config.n_classes,
                config.rotation,
                config.translation,
                config.encoder_hidden,
                config.activation,
                mean_size=decoder_latent,
                rotations=config.encoder_rotations,
            )
        else:
            self.encoder = MLPEncoder(
                c * w * w,
                config.latent_dim,
                config.n_classes,
                config.rotation,
                config.translation,
                config.encoder_hidden,
                config.activation,
                mean_size=decoder_latent,
            )
        self._start_at_prior_scale(self.encoder.head)
        self.separate_class_head = (
            config.n_classes > 0
            and config.encoder == "mlp"
            and (
                config.class_rotations > 0
                or config.canonical_class_head
                or config.invariant_class_head
                or config.tapered_class_head
                or config.object_class_head
            )
        )
        self.invariant_head = self.separate_class_head and (config.invariant_class_head or config.object_class_head) and config.class_rotations == 0
        if self.invariant_head and config.object_class_head:
            descriptor = ObjectDescriptor(w, config.object_polarity, scale_px=config.object_scale_px, centred=config.object_centred)
            self.class_encoder = nn.Sequential(
                descriptor,
                nn.LayerNorm(descriptor.out_features),
                mlp(descriptor.out_features, config.encoder_hidden, config.activation),
                nn.Linear(config.encoder_hidden[-1], config.n_classes),
            )
        elif self.invariant_head:
            descriptor = FourierDescriptor(w)
            self.class_encoder = nn.Sequential(
                descriptor,
                nn.LayerNorm(c * descriptor.out_features_per_channel),
                mlp(c * descriptor.out_features_per_channel, config.encoder_hidden, config.activation),
                nn.Linear(config.encoder_hidden[-1], config.n_classes),
            )
        elif self.separate_class_head and config.tapered_class_head and config.class_rotations == 0:
            self.class_encoder = nn.Sequential(
                TaperedView(c, w),
                nn.LayerNorm(c * w * w),
                mlp(c * w * w, config.encoder_hidden, config.activation),
                nn.Linear(config.encoder_hidden[-1], config.n_classes),
            )
        elif self.separate_class_head:
            # its own network: pooling over rotations wants rotation-invariant features, while the
            # main trunk must keep the orientation to infer the angle
            self.class_encoder = nn.Sequential(mlp(c * w * w, config.encoder_hidden, config.activation), nn.Linear(config.encoder_hidden[-1], config.n_classes))
        if config.decoder == "mlp":
            self.decoder = SpatialMLPDecoder(
                decoder_latent, config.n_classes, c, config.decoder_hidden, config.activation, config.latent_skips, config.coordinate_gain
            )
        else:
            self.decoder = SpatialBroadcastDecoder(decoder_latent, config.n_classes, (w, w), c, config.conv_channels, activation=config.activation)
        # (P, C) per-pixel offset of the decoder's output in the patch frame (config.mean_offset);
        # zeros here, the training patches' mean when training starts (training.fit)
        self.mean_offset = nn.Parameter(torch.zeros(w * w, c)) if config.mean_offset else None
        if config.template_pose:  # (K', C·S, W, W) prepared templates of the angle's search (of S edge scales); set when training starts
            self.register_buffer("pose_templates", torch.zeros(self.n_enumerated, c * max(1, len(config.pose_edge_sigmas_px)), w, w))

    def start_template_pose(self, templates) -> None:
        """Set the templates that each patch's angle is searched against (``config.template_pose``).

        Parameters
        ----------
        templates : (K'', C·S, W, W) ndarray or Tensor
            Class templates (:attr:`microvae.templates.ClassTemplates.templates`) of the search
            views at the S = len(``config.pose_edge_sigmas_px``) edge scales (S = 1 without), K''
            ≤ K' = max(K, 1); rows of zeros (classes without members) never match.

        Raises
        ------
        ParameterError
            The model has no template pose, or the templates do not fit it.
        """
        if not self.config.template_pose:
            raise ParameterError("this model has no template pose (config.template_pose is False)")
        prepared = prepare_templates(templates)
        k, c, w = self.n_enumerated, self.pose_templates.shape[1], self.config.image_size
        if prepared.ndim != 4 or tuple(prepared.shape[1:]) != (c, w, w) or not 1 <= len(prepared) <= k:
            raise ParameterError(f"pose templates must be (≤{k}, {c}, {w}, {w}), got {tuple(prepared.shape)}")
        with torch.no_grad():
            self.pose_templates.zero_()
            self.pose_templates[: len(prepared)] = prepared.to(self.pose_templates)

    @torch.no_grad()
    def template_turns(self, x: Tensor, batch_size: int = 64) -> Tensor:
        """(B, K') each image's turn (rad) against every class's pose template (``config.template_pose``).

        Parameters
        ----------
        x : (B, C, W, W) float tensor
            The images.
        batch_size : int, default 64
            Images searched at once.

        Returns
        -------
        (B, K') float32 tensor
            :func:`microvae.templates.turns_to_templates` over ``pose_templates``.
        """
        translation = self.config.translation
        sigmas = self.config.pose_edge_sigmas_px
        steps, candidates = self.config.pose_refine_steps, self.config.pose_candidates
        parts = [
            turns_to_templates(part, self.pose_templates, translation=translation, edge_sigmas_px=sigmas, refine_steps=steps, candidates=candidates)
            for part in x.split(batch_size)
        ]
        return torch.cat(parts) if parts else x.new_zeros(0, self.n_enumerated)

    def start_mean_offset(self, mean_patch) -> None:
        """Set the decoder's per-pixel offset (``config.mean_offset``) to render ``mean_patch``.

        Parameters
        ----------
        mean_patch : ndarray or Tensor
            (C, W, W) the training patches' mean (values in [0, 1] for the Bernoulli
            likelihood, whose offset is its logit, clipped to 10⁻³…1 − 10⁻³).

        Raises
        ------
        ParameterError
            The model has no offset, or ``mean_patch`` is not (C, W, W).
        """
        if self.mean_offset is None:
            raise ParameterError("this model has no mean offset (config.mean_offset is False)")
        c, w = self.config.channels, self.config.image_size
        mean_patch = torch.as_tensor(mean_patch, dtype=torch.float64)
        if tuple(mean_patch.shape) != (c, w, w):
            raise ParameterError(f"mean_patch must be ({c}, {w}, {w}), got {tuple(mean_patch.shape)}")
        values = mean_patch.reshape(c, w * w).T  # (P, C), pixels row-major as the grid
        if self.config.likelihood == "bernoulli":
            values = torch.logit(values.clamp(1e-3, 1 - 1e-3))
        with torch.no_grad():
            self.mean_offset.copy_(values.to(self.mean_offset))

    def _start_at_prior_scale(self, head: nn.Linear) -> None:
        """Start the posterior sd of the shift at the prior's (an sd of 1 grid unit costs ~50 nats)."""
        if self.config.translation:
            with torch.no_grad():
                head.bias[self.encoder.head_slice("shift_log_sd")] = math.log(self.config.shift_prior_sd)

    # --- inference -------------------------------------------------------------------------

    def posterior(self, x: Tensor, class_turns: Tensor | None = None) -> dict[str, Tensor]:
        """Parameters of q(·|x) for (B, C, W, W) images; shifts in grid units.

        Parameters
        ----------
        x : (B, C, W, W) float32 tensor
            The images.
        class_turns : (B, K') tensor, optional
            With ``config.template_pose``: the images' turns against every class's template
            (:meth:`template_turns`), when known already (training computes them once); searched
            when None.

        Returns
        -------
        dict of str to Tensor
            Keys: class_logits (B, K') with K' = max(K, 1) (zeros when K = 0); z_mean, z_sd (B, D)
            (for circular latents: mean angle in radians and the wrapped normal's σ);
            angle_vec_mean (B, 2), angle_vec_sd (B, 1) when rotation is on (with
            ``template_pose`` v's angle is added to class_turns (B, K'), the turn of each
            class's template; the angle of class y is their sum); shift_mean, shift_sd
            (B, 2) (row, col) in grid units when translation is on.
        """
        head = self.encoder(x)
        out = {"z_mean": head["z_mean"], "z_sd": torch.exp(head["z_log_sd"])}
        if self.config.template_pose:  # each class's angle: its template's turn, then the encoder's rest (v's angle)
            out["class_turns"] = self.template_turns(x) if class_turns is None else class_turns.to(x.device, torch.float32)
        if self.circular_latents:  # angles: the direction of the head's 2D vector per latent
            d = self.config.latent_dim
            out["z_mean"] = torch.atan2(head["z_mean"][:, d:], head["z_mean"][:, :d])
            # σ = MAX_SD · sigmoid(h − log 9): 0.3 at h = 0, never above MAX_SD, and never without a gradient
            out["z_sd"] = circular.MAX_SD * torch.sigmoid(head["z_log_sd"] - math.log(9.0))
        out["class_logits"] = head.get("class_logits", x.new_zeros(x.shape[0], 1))
        if self.separate_class_head and self.config.class_rotations > 0:
            copies = self.config.class_rotations
            pooled = self.class_encoder(rotated_copies(x, copies).flatten(1))
            out["class_logits"] = torch.log_softmax(pooled, dim=1).view(x.shape[0], copies, -1).mean(1)
        if self.invariant_head:
            out["class_logits"] = self.class_encoder(x)
        elif self.separate_class_head and (self.config.canonical_class_head or self.config.tapered_class_head) and self.config.class_rotations == 0:
            angle = None
            if self.config.rotation:
                m = head["angle_vec_mean"].detach()
                angle = torch.atan2(m[:, 1], m[:, 0])
            shift = head["shift_mean"].detach() if self.config.translation else None
            if "class_turns" in out:  # class y's logit is read from the patch seen in y's frame (its own pose)
                out["class_logits"] = self._logits_in_class_frames(x, angle[:, None] + out["class_turns"], shift)
            else:
                out["class_logits"] = self.class_encoder(self.canonical_view(x, angle, shift).flatten(1))
        if self.config.rotation:
            out["angle_vec_mean"] = head["angle_vec_mean"]
            out["angle_vec_sd"] = torch.exp(head["angle_vec_log_sd"])
        if self.config.translation:
            out["shift_mean"] = head["shift_mean"]
            out["shift_sd"] = torch.exp(head["shift_log_sd"])
        return out

    def _logits_in_class_frames(self, x: Tensor, angle_rad: Tensor, shift: Tensor | None) -> Tensor:
        """(B, K) class logits of the canonical-frame head where class y's logit reads the patch
        turned back by class y's angle (``angle_rad`` (B, K)): K passes of the head."""
        batch, k = angle_rad.shape
        copies = x.repeat_interleave(k, 0)
        moved = None if shift is None else shift.repeat_interleave(k, 0)
        logits = self.class_encoder(self.canonical_view(copies, angle_rad.reshape(-1), moved).flatten(1)).view(batch, k, -1)
        return logits.diagonal(dim1=1, dim2=2)

    def canonical_view(self, x: Tensor, angle_rad: Tensor | None, shift: Tensor | None) -> Tensor:
        """(B, C, W, W) images resampled into the decoder's canonical frame: ``g(u) = x(R(angle) u + shift)``.

        The inverse of the decoder's pose: an image rendered as ``g(R(angle)ᵀ(x - shift))`` comes
        back as ``g``. Bilinear, zeros outside the image.

        Parameters
        ----------
        x : (B, C, W, W) float32 tensor
            The images.
        angle_rad : (B,) tensor or None
            Rotation in rad, counter-clockwise as displayed; None for 0.
        shift : (B, 2) tensor or None
            Shift (row, col) in grid units; None for 0.

        Returns
        -------
        (B, C, W, W) float32 tensor
            The resampled images.
        """
        return sample_at(x, self.grid, angle_rad, shift)

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """Posterior summaries of (B, C, W, W) images.

        Parameters
        ----------
        x : (B, C, W, W) float32 tensor
            The images.

        Returns
        -------
        dict of str to Tensor
            class_probs (B, K') (K' = max(K, 1); all ones when K = 0), z_mean, z_sd (B, D),
            angle_rad (B,) (rad, mode of the angle posterior; zeros when rotation is off),
            angle_concentration (B,) (|m_v| / sd_v: larger is sharper; inf when rotation is off),
            shift (B, 2) and shift_sd (B, 2) in pixels (row, col) (zeros when translation is off).
        """
        return self.summarise(self.posterior(x))

    def summarise(self, post: dict[str, Tensor]) -> dict[str, Tensor]:
        """The summaries of :meth:`encode` from posterior parameters as :meth:`posterior` returns them.

        Parameters
        ----------
        post : dict of str to Tensor
            Posterior parameters (:meth:`posterior`; shifts in grid units).

        Returns
        -------
        dict of str to Tensor
            As :meth:`encode` (shifts in px).
        """
        x = post["z_mean"]
        batch = x.shape[0]
        out = {"class_probs": torch.softmax(post["class_logits"], dim=1), "z_mean": post["z_mean"], "z_sd": post["z_sd"]}
        if self.config.rotation:
            m = post["angle_vec_mean"]
            out["angle_rad"] = torch.atan2(m[:, 1], m[:, 0])
            if "class_turns" in post:  # the most probable class's angle
                turn = post["class_turns"].gather(1, out["class_probs"].argmax(1, keepdim=True))[:, 0]
                out["angle_rad"] = circular.wrap(out["angle_rad"] + turn)
            out["angle_concentration"] = m.norm(dim=1) / post["angle_vec_sd"][:, 0]
        else:
            out["angle_rad"] = x.new_zeros(batch)
            out["angle_concentration"] = x.new_full((batch,), math.inf)
        if self.config.translation:
            out["shift"] = post["shift_mean"] * self.half_width_px
            out["shift_sd"] = post["shift_sd"] * self.half_width_px
        else:
            out["shift"] = x.new_zeros(batch, 2)
            out["shift_sd"] = x.new_zeros(batch, 2)
        return out

    # --- generation ------------------------------------------------------------------------

    def batch_limit(self, budget_bytes: int) -> int:
        """Images per forward pass whose decoder activations stay within ``budget_bytes``.

        A pass over all pixels holds about three (B, K', P, width) float32 tensors at once (no
        gradient).

        Parameters
        ----------
        budget_bytes : int
            The memory the activations may take, in bytes
            (:func:`microvae.devices.activation_budget`).

        Returns
        -------
        int
            Images per pass, at least 1.
        """
        width = max(self.config.conv_channels if self.config.decoder == "conv" else self.config.decoder_hidden)
        per_image = 3 * 4 * self.n_enumerated * self.grid.shape[0] * width
        return max(1, budget_bytes // per_image)

    def decoder_logits(
        self, z: Tensor, angle_rad: Tensor | None, shift: Tensor | None, pixel_index: Tensor | None = None, class_vectors: Tensor | None = None
    ) -> Tensor:
        """Decoder outputs: (B, K', P, C) logits (Bernoulli) or means (Gaussian) for every class.

        Parameters
        ----------
        z : (B, D) tensor
            Continuous latents (angles in rad for circular latents).
        angle_rad : (B,) tensor or None
            Rotation in rad, counter-clockwise as displayed; (B, K') one per class (MLP decoder
            only; ``template_pose``); None for 0.
        shift : (B, 2) tensor or None
            Shift (row, col) in grid units; None for 0.
        pixel_index : (P',) int tensor, optional
            Restricts the output to those pixels (MLP decoder only).
        class_vectors : (B, K) tensor, optional
            Only that class (one-hot or soft) is decoded: (B, 1, P, C).

        Returns
        -------
        (B, K', P, C) tensor
            P = W² pixels in row-major order (or P' with ``pixel_index``).
        """
        grid = self.grid if pixel_index is None else self.grid[pixel_index]
        coords = transform_coordinates(grid, angle_rad, shift)
        outputs = self.decoder(coords, circular.features(z) if self.circular_latents else z, class_vectors)
        if self.mean_offset is not None:  # the patch frame's offset: it does not turn or move with the pose
            outputs = outputs + (self.mean_offset if pixel_index is None else self.mean_offset[pixel_index])
        return outputs

    def decode(self, z: Tensor, class_onehot: Tensor | None = None, angle_rad: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        """Image means (B, C, W, W) for latents z (B, D).

        Parameters
        ----------
        z : (B, D) tensor
            Continuous latents.
        class_onehot : Tensor or None
            (B, K) one-hot (or any probability vector: the class enters the decoder linearly, so a
            soft vector mixes the class inputs); ignored when K = 0.
        angle_rad : Tensor or None
            (B,) counter-clockwise rotation, or None for 0.
        shift : Tensor or None
            (B, 2) shift in pixels (row, col), or None for 0.

        Returns
        -------
        (B, C, W, W) tensor
            Bernoulli means (sigmoid of the logits) or Gaussian means.

        Raises
        ------
        ParameterError
            ``class_onehot`` is None for a model with classes.
        """
        batch, w = z.shape[0], self.config.image_size
        shift_grid = None if shift is None else shift / self.half_width_px
        if self.config.n_classes > 0 and class_onehot is None:
            raise ParameterError("decode needs class_onehot when the model has a discrete latent")
        class_vectors = class_onehot if self.config.n_classes > 0 else None
        logits = self.decoder_logits(z, angle_rad, shift_grid, class_vectors=class_vectors)[:, 0]  # (B, P, C)
        mean = torch.sigmoid(logits) if self.config.likelihood == "bernoulli" else logits
        return mean.transpose(1, 2).reshape(batch, -1, w, w)

    # --- objective -------------------------------------------------------------------------

    def loss_terms(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        *,
        pixel_fraction: float = 1.0,
        kl_estimator: str = "analytic",
        noise: dict[str, Tensor] | None = None,
        posterior: dict[str, Tensor] | None = None,
        labels: Tensor | None = None,
        use_z: bool = True,
        class_turns: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Negative-ELBO terms per image, in nats, for (B, C, W, W) images.

        The class is marginalised exactly: ``recon = Σ_y q(y|x) · (-log p(x | z, v, s, y))`` over all
        K classes in one batched decoder pass, with one reparametrised draw of (z, v, s).

        Parameters
        ----------
        x : (B, C, W, W) float32 tensor
            The images.
        generator : torch.Generator or None
            Source of the standard-normal draws (and of the pixel subset); None = torch's global
            generator.
        pixel_fraction : float
            Score a random subset of this fraction of the pixels (the same for the whole batch) and
            rescale by P / P' — an unbiased estimate of the full reconstruction term that makes the
            MLP decoder proportionally cheaper (ignored by the conv decoder, which always renders
            whole images).
        kl_estimator : str
            'analytic' (closed-form Gaussian KLs) or 'sample' (single-sample log q - log p at the
            draw; unbiased, as Pyro's Trace ELBOs estimate it).
        noise : dict[str, Tensor] or None
            Standard-normal draws to use instead of drawing: 'z' (B, D), 'angle_vec' (B, 2),
            'shift' (B, 2).
        posterior : dict[str, Tensor] or None
            Parameters of q(·|x) to use instead of the encoder's (as :meth:`posterior` returns
            them; per-sample refinement optimises these against the fixed decoder).
        labels : Tensor or None
            (B,) known classes for semi-supervised training, −1 where unknown. A labelled image's
            class is observed, as in Kingma et al.'s M2 model: its reconstruction uses that class
            only, it has no class KL, and ``class_nll`` = −log q(label | x) trains the class
            posterior (weighted by ``label_weight`` in :meth:`weighted_loss`).
        use_z : bool
            False switches the continuous latents off: z = 0 (the prior mean), KL_z = 0 (training's
            ``z_delay``).
        class_turns : Tensor or None
            (B, K') the images' turns against every class's template (:meth:`posterior`), when known.

        Returns
        -------
        dict[str, Tensor]
            (B,) tensors: recon, kl_z, kl_angle, kl_shift, kl_tau (= kl_angle + kl_shift), kl_y,
            class_nll (nats per image); and class_probs (B, K').

        Raises
        ------
        ParameterError
            An unknown ``kl_estimator``, or ``pixel_fraction`` outside (0, 1].
        """
        if kl_estimator not in KL_ESTIMATORS:
            raise ParameterError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
        post = {name: value.float() for name, value in (posterior or self.posterior(x, class_turns)).items()}  # KLs in float32 under AMP
        draws = noise if noise is not None else self.standard_normal_draws(x, generator)
        z = post["z_mean"] + post["z_sd"] * draws["z"]
        if not use_z:
            z = torch.zeros_like(z)
        if self.circular_latents:
            z = circular.wrap(z)
        angle_rad = angle_vec = shift = None
        if self.config.rotation:  # the posterior has no angle/shift keys when those latents are off
            angle_vec = post["angle_vec_mean"] + post["angle_vec_sd"] * draws["angle_vec"]
            angle_rad = torch.atan2(angle_vec[:, 1], angle_vec[:, 0])
            if "class_turns" in post:  # (B, K'): each class rendered at its template's turn plus v's angle
                angle_rad = angle_rad[:, None] + post["class_turns"]
        if self.config.translation:
            shift = post["shift_mean"] + post["shift_sd"] * draws["shift"]

        pixel_index, pixel_weight = self._pixel_subset(pixel_fraction, generator, x.device)
        outputs = self.decoder_logits(z, angle_rad, shift, pixel_index).float()  # (B, K', P', C)
        target = x.flatten(2).transpose(1, 2)  # (B, P, C)
        if pixel_index is not None:
            target = target[:, pixel_index]
        nll = self._negative_log_likelihood(outputs, target.unsqueeze(1)) * pixel_weight  # (B, K')

        class_log_probs = torch.log_softmax(post["class_logits"].float(), dim=1)
        class_probs = class_log_probs.exp()
        class_weights = class_probs
        kl_y = (class_probs * (class_log_probs + math.log(self.n_enumerated))).sum(1)  # 0 when K = 0
        class_nll = torch.zeros_like(kl_y)
        if labels is not None and self.config.n_classes > 0:
            known = labels >= 0
            observed = F.one_hot(labels.clamp_min(0), self.n_enumerated).to(class_probs.dtype)
            class_weights = torch.where(known[:, None], observed, class_probs)
            kl_y = torch.where(known, torch.zeros_like(kl_y), kl_y)
            class_nll = torch.where(known, -class_log_probs.gather(1, labels.clamp_min(0)[:, None])[:, 0], class_nll)
        terms = {"recon": (class_weights * nll).sum(1), "class_probs": class_probs, "kl_y": kl_y, "class_nll": class_nll}
        kl = _gaussian_kl if kl_estimator == "analytic" else _sampled_gaussian_kl
        zero = torch.zeros_like(terms["recon"])
        one = torch.ones((), device=x.device)
        if not use_z:
            terms["kl_z"] = zero
        elif self.circular_latents:  # single-sample estimate log q(θ) + log 2π, unbiased (see microvae.circular)
            terms["kl_z"] = (circular.log_prob(z, post["z_mean"], post["z_sd"]) + math.log(2 * math.pi)).sum(1)
        else:
            terms["kl_z"] = kl(post["z_mean"], post["z_sd"], 0.0 * one, one, z)
        terms["kl_angle"] = zero if angle_vec is None else kl(post["angle_vec_mean"], post["angle_vec_sd"].expand(-1, 2), self.angle_prior_mean, one, angle_vec)
        terms["kl_shift"] = zero if shift is None else kl(post["shift_mean"], post["shift_sd"], 0.0 * one, self.config.shift_prior_sd * one, shift)
        terms["kl_tau"] = terms["kl_angle"] + terms["kl_shift"]
        return terms

    def forward(self, x: Tensor, generator: torch.Generator | None = None, **options) -> dict[str, Tensor]:
        """:meth:`loss_terms` (so that a DistributedDataParallel wrapper's call computes them).

        Parameters
        ----------
        x : (B, C, W, W) float32 tensor
            The images.
        generator : torch.Generator or None
            As for :meth:`loss_terms`.
        **options
            :meth:`loss_terms`'s keyword arguments.

        Returns
        -------
        dict of str to Tensor
            :meth:`loss_terms`'s terms.
        """
        return self.loss_terms(x, generator, **options)

    @staticmethod
    def negative_elbo(terms: dict[str, Tensor]) -> Tensor:
        """(B,) negative ELBO in nats at β = 1 from :meth:`loss_terms`: recon + KL_z + KL_τ + KL_y.

        Parameters
        ----------
        terms : dict of str to Tensor
            :meth:`loss_terms`'s terms.

        Returns
        -------
        (B,) tensor
            −ELBO per image, nats.
        """
        return terms["recon"] + terms["kl_z"] + terms["kl_tau"] + terms["kl_y"]

    @staticmethod
    def weighted_loss(terms: dict[str, Tensor], betas: dict[str, float]) -> Tensor:
        """Batch mean of recon + β_τ·KL_τ + β_z·KL_z + β_y·KL_y (a scalar to minimise), plus
        ``class_balance`` · :func:`marginal_class_kl` (or :func:`class_imbalance` when
        'class_balance_unbiased' is set) when ``betas`` has a nonzero 'class_balance'; plus
        ``label_weight`` · mean ``class_nll`` when both are there.

        Parameters
        ----------
        terms : dict of str to Tensor
            :meth:`loss_terms`'s terms.
        betas : dict of str to float
            :func:`beta_schedule`'s weights.

        Returns
        -------
        Tensor
            The scalar loss (nats per image).
        """
        per_image = terms["recon"] + betas["beta_tau"] * terms["kl_tau"] + betas["beta_z"] * terms["kl_z"] + betas["beta_y"] * terms["kl_y"]
        loss = per_image.mean()
        if betas.get("label_weight", 0.0) and "class_nll" in terms:
            loss = loss + betas["label_weight"] * terms["class_nll"].mean()
        balance = betas.get("class_balance", 0.0)
        if balance:
            penalty = class_imbalance if betas.get("class_balance_unbiased") else marginal_class_kl
            loss = loss + balance * penalty(terms["class_probs"])
        return loss

    def standard_normal_draws(self, x: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """One set of standard-normal draws per image, for :meth:`loss_terms`'s ``noise``.

        Parameters
        ----------
        x : (B, C, W, W) tensor
            The images (their batch size and device).
        generator : torch.Generator or None
            Source of the draws; None = torch's global generator.

        Returns
        -------
        dict of str to Tensor
            float32 'z' (B, D), 'angle_vec' (B, 2) and 'shift' (B, 2).
        """
        batch, kw = x.shape[0], {"generator": generator, "device": x.device, "dtype": torch.float32}
        return {"z": torch.randn(batch, self.config.latent_dim, **kw), "angle_vec": torch.randn(batch, 2, **kw), "shift": torch.randn(batch, 2, **kw)}

    def _pixel_subset(self, fraction: float, generator: torch.Generator | None, device) -> tuple[Tensor | None, float]:
        if not 0 < fraction <= 1:
            raise ParameterError(f"pixel_fraction must be in (0, 1], got {fraction}")
        n_pixels = self.grid.shape[0]
        keep = max(1, round(fraction * n_pixels))
        if keep == n_pixels or self.config.decoder == "conv":  # the conv decoder renders whole images
            return None, 1.0
        gen_device = generator.device if generator is not None else torch.device("cpu")
        index = torch.randperm(n_pixels, generator=generator, device=gen_device)[:keep].to(device)
        return index, n_pixels / keep

    def _negative_log_likelihood(self, outputs: Tensor, target: Tensor) -> Tensor:
        """-log p summed over pixels and channels: outputs (B, K', P, C), target (B, 1, P, C) → (B, K')."""
        if self.config.likelihood == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(outputs, target.expand_as(outputs), reduction="none")
        else:
            sd = self.config.gaussian_sd
            per_pixel = 0.5 * ((target - outputs) / sd) ** 2 + math.log(sd) + 0.5 * math.log(2 * math.pi)
        return per_pixel.sum((2, 3))


def marginal_class_kl(class_probs: Tensor) -> Tensor:
    """KL(q̄ ‖ uniform) of the batch-mean class posterior q̄ of (B, K) probabilities; a scalar.

    Parameters
    ----------
    class_probs : (B, K) tensor
        q(y|x) per image.

    Returns
    -------
    Tensor
        The KL in nats, a scalar.
    """
    mean = class_probs.mean(0)
    return (mean * (torch.log(mean.clamp_min(1e-12)) + math.log(mean.shape[0]))).sum()


def class_imbalance(class_probs: Tensor) -> Tensor:
    """Unbiased estimate of (K/2)·Σ_k (p̄_k − 1/K)² from a batch of (B, K) probabilities, a scalar.

    p̄ is the class usage E_x q(y|x) over the data; (K/2)·Σ(p̄ − 1/K)² is KL(p̄ ‖ uniform) to second
    order. The estimate is the U-statistic Σ_{i≠j} d_i·d_j / (B(B−1)), d = q(y|x) − 1/K, which is
    the batch's (K/2)·Σ(q̄ − 1/K)² less its sampling variance. A batch of 32 confident images from
    two equal classes has q̄ off (½, ½) by chance, and :func:`marginal_class_kl` (× λ = 20) charges
    that ≈ 0.3 nats per image, a price uniform posteriors never pay; on the two-phase lattice it
    held q(y|x) at ≈ 0.5. This estimate charges confident and uniform posteriors alike when the
    classes are used equally. (A batch of one has no estimate: 0.)

    Parameters
    ----------
    class_probs : (B, K) tensor
        q(y|x) per image.

    Returns
    -------
    Tensor
        The estimate, a scalar (nats to second order).
    """
    batch, n_classes = class_probs.shape
    if batch < 2:
        return class_probs.sum() * 0.0
    excess = class_probs - 1.0 / n_classes
    pairs = excess.sum(0) ** 2 - (excess**2).sum(0)  # Σ_{i≠j} d_i d_j per class
    return 0.5 * n_classes * pairs.sum() / (batch * (batch - 1))


def _gaussian_kl(mean: Tensor, sd: Tensor, prior_mean: Tensor, prior_sd: Tensor, sample: Tensor) -> Tensor:
    """KL(N(mean, sd²) ‖ N(prior_mean, prior_sd²)) summed over the last axis; ``sample`` is unused."""
    var_ratio = (sd / prior_sd) ** 2
    return 0.5 * (var_ratio + ((mean - prior_mean) / prior_sd) ** 2 - 1.0 - torch.log(var_ratio)).sum(-1)


def _sampled_gaussian_kl(mean: Tensor, sd: Tensor, prior_mean: Tensor, prior_sd: Tensor, sample: Tensor) -> Tensor:
    """Single-sample estimate log q(sample) - log p(sample), summed over the last axis (unbiased)."""
    log_q = torch.distributions.Normal(mean, sd).log_prob(sample)
    log_p = torch.distributions.Normal(prior_mean.expand_as(sample), prior_sd.expand_as(sample)).log_prob(sample)
    return (log_q - log_p).sum(-1)


# --- the same model in Pyro (reference formulation) ------------------------------------------


def pyro_model(vae: JTRVAE, x: Tensor, betas: dict[str, float] | None = None) -> None:
    """p(x, z, v, s, y) of ``vae`` as a Pyro model; the class site 'y' is enumerated by the ELBO.
    (Euclidean latents only.)

    KL weights enter as ``poutine.scale`` on the latent sites of both model and guide.

    Parameters
    ----------
    vae : JTRVAE
        The model whose decoder and priors are used.
    x : (B, C, W, W) tensor
        The observed images.
    betas : dict of str to float, optional
        ``beta_z``, ``beta_tau``, ``beta_y`` (each 1 when absent).
    """
    betas = betas or {}
    cfg, batch = vae.config, x.shape[0]
    pyro.module("decoder", vae.decoder)
    target = x.flatten(2).transpose(1, 2).reshape(batch, -1)  # (B, P·C)
    with pyro.plate("data", batch):
        with poutine.scale(scale=betas.get("beta_z", 1.0)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(batch, cfg.latent_dim), 1.0).to_event(1))
        angle_rad = shift = None
        with poutine.scale(scale=betas.get("beta_tau", 1.0)):
            if cfg.rotation:
                v = pyro.sample("angle_vec", dist.Normal(vae.angle_prior_mean.expand(batch, 2), 1.0).to_event(1))
                angle_rad = torch.atan2(v[..., 1], v[..., 0])
            if cfg.translation:
                shift = pyro.sample("shift", dist.Normal(x.new_zeros(batch, 2), cfg.shift_prior_sd).to_event(1))
        outputs = vae.decoder_logits(z, angle_rad, shift).flatten(2)  # (B, K', P·C)
        if cfg.n_classes > 0:
            with poutine.scale(scale=betas.get("beta_y", 1.0)):
                y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(batch, cfg.n_classes)))
            outputs = Vindex(outputs)[torch.arange(batch, device=x.device), y]  # (..., B, P·C)
        else:
            outputs = outputs[:, 0]
        if cfg.likelihood == "bernoulli":
            likelihood = dist.Bernoulli(logits=outputs, validate_args=False)
        else:
            likelihood = dist.Normal(outputs, cfg.gaussian_sd)
        pyro.sample("x", likelihood.to_event(1), obs=target)


@config_enumerate
def pyro_guide(vae: JTRVAE, x: Tensor, betas: dict[str, float] | None = None) -> None:
    """q(z, v, s, y | x) of ``vae`` as a Pyro guide; 'y' is marked for parallel enumeration.

    Parameters
    ----------
    vae : JTRVAE
        The model whose encoder gives the posterior.
    x : (B, C, W, W) tensor
        The images.
    betas : dict of str to float, optional
        ``beta_z``, ``beta_tau``, ``beta_y`` (each 1 when absent), as for :func:`pyro_model`.
    """
    betas = betas or {}
    cfg, batch = vae.config, x.shape[0]
    pyro.module("encoder", vae.encoder)
    post = vae.posterior(x)
    with pyro.plate("data", batch):
        with poutine.scale(scale=betas.get("beta_z", 1.0)):
            pyro.sample("z", dist.Normal(post["z_mean"], post["z_sd"]).to_event(1))
        with poutine.scale(scale=betas.get("beta_tau", 1.0)):
            if cfg.rotation:
                pyro.sample("angle_vec", dist.Normal(post["angle_vec_mean"], post["angle_vec_sd"].expand(-1, 2)).to_event(1))
            if cfg.translation:
                pyro.sample("shift", dist.Normal(post["shift_mean"], post["shift_sd"]).to_event(1))
        if cfg.n_classes > 0:
            with poutine.scale(scale=betas.get("beta_y", 1.0)):
                pyro.sample("y", dist.Categorical(logits=post["class_logits"]))

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
from dataclasses import asdict, dataclass, fields

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex
from torch import Tensor, nn

from .errors import ParameterError, raise_first_failure
from . import circular
from .nets import (EquivariantEncoder, FourierDescriptor, MLPEncoder, SpatialBroadcastDecoder, SpatialMLPDecoder, coordinate_grid, mlp,
                   rotated_copies, sample_at, transform_coordinates)

LIKELIHOODS = ("bernoulli", "gaussian")
DECODERS = ("mlp", "conv")
ENCODERS = ("mlp", "equivariant")
KL_ESTIMATORS = ("analytic", "sample")


@dataclass
class JTRVAEConfig:
    """Architecture, priors and KL schedule of a :class:`JTRVAE`.

    The defaults are the recipe validated on the ±60° cards (matched class accuracy ≥ 0.95, see
    ``tests/test_models.py``); where they depart from the paper, the paper's value is given.

    Attributes:
        image_size: patch side W in pixels (square patches).
        channels: image channels C.
        n_classes: K, values of the discrete latent; 0 = none (rVAE / rtVAE / VAE).
        latent_dim: D, continuous latents besides rotation and shift (paper: 2).
        latent_geometry: 'euclidean' (Gaussian prior, the paper's), 'circle' (D = 1) or 'torus'
            (D = 2): each latent is an angle with a uniform prior and a wrapped-normal posterior
            (:mod:`microvae.circular`), for factors that are periodic (a phase, a cyclic shift).
        rotation: learn a rotation latent.
        translation: learn a 2D shift latent.
        likelihood: 'bernoulli' (images in [0, 1]) or 'gaussian' (fixed sd ``gaussian_sd``,
            identity output: any intensity range).
        gaussian_sd: sd of the Gaussian likelihood, in image intensity units.
        decoder: 'mlp' (spatial generator, one MLP per pixel coordinate) or 'conv' (spatial
            broadcast decoder with latent skip connections).
        invariant_class_head: give q(y|x) its own MLP that reads the rotation- and shift-invariant
            Fourier descriptor of the patch (:class:`microvae.nets.FourierDescriptor`): the class
            cannot depend on the pose even where the pose is not yet learned. Training sets it
            when the initial classes come from that descriptor (:mod:`microvae.discovery`), so
            that the class posterior reads what the classes were found in. Takes precedence over
            ``canonical_class_head``; ``class_rotations`` over it.
        class_rotations: R > 0 gives q(y|x) its own MLP, pooled over R rotated copies of the input
            (mean of their log-probabilities), so that it is nearly rotation invariant by
            construction instead of having to learn it; 0 = no pooling. Takes precedence over
            ``canonical_class_head``.
        canonical_class_head: give q(y|x) its own MLP that reads the input resampled into the
            canonical frame, ``x(R(γ̂) u + ŝ)``, with γ̂, ŝ the posterior means of the angle and
            shift (gradients stopped): the class cannot depend on the pose, and the MLP sees
            upright, centred objects, which it learns to classify far faster than rotated ones.
            False = the class head of the shared encoder (the paper's multi-head encoder).
        encoder: 'mlp' (the paper's multi-head MLP, which has to learn that a turned or moved
            patch has the same code) or 'equivariant' (:class:`microvae.nets.EquivariantEncoder`:
            the pose is inferred by a network that turns and moves with the patch, and z and the
            class read the patch in its canonical frame, so they are invariant by construction;
            the class then comes from that read-out, and ``class_rotations`` /
            ``canonical_class_head`` do not apply).
        encoder_rotations: frames the equivariant encoder compares to find the angle (R, a
            multiple of 4 keeps quarter turns exact).
        encoder_hidden: MLP encoder widths (paper: 2 × 256).
        decoder_hidden: decoder widths (paper: 3 × 256; 2 × 128 is 4–6× cheaper and enough for
            the cards).
        conv_channels: conv decoder channels per layer.
        activation: hidden activation (paper: tanh).
        latent_skips: (z, y) also enter every hidden layer of the MLP decoder (paper: input only).
        coordinate_gain: scale of the MLP decoder's initial coordinate weights (1 = PyTorch's
            default; 5 learns sharp edges several times faster).
        shift_prior_sd: sd of the shift prior per axis in grid units, i.e. in units of the
            half-width of the patch ((W - 1) / 2 pixels); 0.1 at W = 28 is 1.35 px.
        angle_prior_concentration: c0 ≥ 0; the angle prior is the Projected Normal of N((c0, 0), I):
            uniform on the circle for 0, concentrated around angle 0 for large c0 (the paper's
            von Mises prior with concentration k). c0 = 2 makes a quarter turn cost c0² = 4 nats,
            which keeps e.g. a diamond turned by 90° from being explained as a squeezed diamond.
        beta_z_start, beta_z: the KL_z weight goes from ``beta_z_start`` to ``beta_z`` over
            ``beta_z_window`` (None: constant ``beta_z``, the paper's 1). Holding z back while the
            angle and the classes form keeps z from absorbing the rotation or the class; holding
            it back harder (8 until 25 % of the epochs) left z unused for good in 2 of 3 seeds.
        beta_tau_start, beta_tau_end: the same for the rotation + shift KL (τ). The paper starts
            it high; on the cards a high early β_τ pushes the rotation into z, so the default is 1.
        beta_y_start, beta_y_end: the same for the discrete KL. A high start keeps q(y|x) near
            uniform (a high temperature: q ∝ exp(-recon/β_y)) while the angle is learned, so that
            the classes do not split by orientation first.
        anneal_fraction: the default window, (0, anneal_fraction), of any β whose window is None.
        beta_z_window, beta_tau_window, beta_y_window: (begin, end) as fractions of the epochs over
            which that β moves linearly from its start to its end value (constant outside).
        class_balance: λ ≥ 0, extra weight on the marginal part of the class KL: the loss gains
            λ·KL(q̄(y) ‖ p(y)), q̄ the batch mean of q(y|x). Since E_x KL(q(y|x) ‖ p(y)) =
            I(x; y) + KL(q̄ ‖ p), this penalises unequal class usage (collapsed or dead classes)
            without penalising confident assignments. 0 = the paper's objective. On the ±60° cards
            (3 seeds, 45 epochs, GPU): λ = 5 reached matched accuracy 0.96 / 0.82 / 0.99 (one seed
            merged two suits into one class and split another), λ = 20 reached 0.98 / 0.97 / 0.97.
        class_balance_unbiased: estimate the balance term without the batch's sampling noise
            (:func:`class_imbalance`) instead of KL(q̄ ‖ p(y)) of each batch
            (:func:`marginal_class_kl`), which charges confident posteriors for the chance
            imbalance of a small batch and so keeps them soft. Soft posteriors help the cards
            (seed 0: 0.986 with the batch KL, 0.777 unbiased) but kept the two-phase lattice at
            q(y|x) ≈ 0.5; unbiased with ``z_delay`` split it with full confidence.
        z_delay: fraction of the epochs during which the continuous latents are switched off
            (z = 0, the prior mean, and no KL_z): the classes, angle and shift form first, as in a
            model without z, and z then learns what they leave. Without it a z that is on from
            the start can take a two-valued factor (e.g. two phases) for itself and leave
            q(y|x) ≈ 0.5 everywhere (see benchmarks/README.md, "Two phases").
    """

    image_size: int = 28
    channels: int = 1
    n_classes: int = 4
    latent_dim: int = 2
    latent_geometry: str = "euclidean"
    rotation: bool = True
    translation: bool = True
    likelihood: str = "bernoulli"
    gaussian_sd: float = 0.1
    decoder: str = "mlp"
    encoder: str = "mlp"
    encoder_rotations: int = 8
    encoder_hidden: tuple[int, ...] = (256, 256)
    decoder_hidden: tuple[int, ...] = (128, 128)
    conv_channels: tuple[int, ...] = (64, 64, 64)
    activation: str = "tanh"
    latent_skips: bool = True
    coordinate_gain: float = 5.0
    shift_prior_sd: float = 0.1
    angle_prior_concentration: float = 2.0
    beta_z: float = 1.0
    beta_tau_start: float = 1.0
    beta_tau_end: float = 1.0
    beta_y_start: float = 30.0
    beta_y_end: float = 1.0
    anneal_fraction: float = 0.2
    class_rotations: int = 0
    canonical_class_head: bool = True
    invariant_class_head: bool = False
    beta_z_start: float | None = 3.0
    beta_z_window: tuple[float, float] | None = (0.1, 0.3)
    beta_tau_window: tuple[float, float] | None = None
    beta_y_window: tuple[float, float] | None = (0.0, 0.1)
    class_balance: float = 20.0
    label_weight: float = 50.0
    class_balance_unbiased: bool = False
    z_delay: float = 0.0

    def validate(self) -> None:
        """Raise :class:`ParameterError` for values out of range or inconsistent."""
        windows = [w for w in (self.beta_z_window, self.beta_tau_window, self.beta_y_window) if w is not None]
        checks = [
            (self.image_size >= 2, f"image_size must be >= 2, got {self.image_size}"),
            (self.channels >= 1, f"channels must be >= 1, got {self.channels}"),
            (self.n_classes >= 0 and self.n_classes != 1, f"n_classes must be 0 (none) or >= 2, got {self.n_classes}"),
            (self.latent_dim >= 0, f"latent_dim must be >= 0, got {self.latent_dim}"),
            (self.latent_geometry in circular.GEOMETRIES, f"latent_geometry must be one of {circular.GEOMETRIES}, got {self.latent_geometry!r}"),
            (self.latent_geometry != "circle" or self.latent_dim == 1, f"a circle latent has latent_dim 1, got {self.latent_dim}"),
            (self.latent_geometry != "torus" or self.latent_dim == 2, f"a torus latent has latent_dim 2, got {self.latent_dim}"),
            (self.likelihood in LIKELIHOODS, f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}"),
            (self.decoder in DECODERS, f"decoder must be one of {DECODERS}, got {self.decoder!r}"),
            (self.encoder in ENCODERS, f"encoder must be one of {ENCODERS}, got {self.encoder!r}"),
            (self.encoder_rotations >= 1, f"encoder_rotations must be >= 1, got {self.encoder_rotations}"),
            (self.gaussian_sd > 0, f"gaussian_sd must be > 0, got {self.gaussian_sd}"),
            (self.shift_prior_sd > 0, f"shift_prior_sd must be > 0, got {self.shift_prior_sd}"),
            (self.angle_prior_concentration >= 0, "angle_prior_concentration must be >= 0"),
            (self.coordinate_gain > 0, f"coordinate_gain must be > 0, got {self.coordinate_gain}"),
            (len(self.encoder_hidden) >= 1 and min(self.encoder_hidden) >= 1, "encoder_hidden needs positive widths"),
            (len(self.decoder_hidden) >= 1 and min(self.decoder_hidden) >= 1, "decoder_hidden needs positive widths"),
            (len(self.conv_channels) >= 1 and min(self.conv_channels) >= 1, "conv_channels needs positive widths"),
            (min(self.beta_z, self.beta_tau_start, self.beta_tau_end, self.beta_y_start, self.beta_y_end,
                 self.beta_z if self.beta_z_start is None else self.beta_z_start) >= 0,
             "KL weights must be >= 0"),
            (0 <= self.anneal_fraction <= 1, f"anneal_fraction must be in [0, 1], got {self.anneal_fraction}"),
            (all(len(w) == 2 and 0 <= w[0] <= w[1] <= 1 for w in windows),
             "β windows must be (begin, end) with 0 <= begin <= end <= 1"),
            (self.class_rotations >= 0, f"class_rotations must be >= 0, got {self.class_rotations}"),
            (self.class_balance >= 0, f"class_balance must be >= 0, got {self.class_balance}"),
            (self.label_weight >= 0, f"label_weight must be >= 0, got {self.label_weight}"),
            (0 <= self.z_delay < 1, f"z_delay must be in [0, 1), got {self.z_delay}"),
        ]
        raise_first_failure(checks)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "JTRVAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"unknown model settings: {', '.join(sorted(unknown))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def beta_schedule(epoch: float, n_epochs: int, config: JTRVAEConfig) -> dict[str, float]:
    """KL weights at (0-based, possibly fractional) ``epoch`` of ``n_epochs``.

    Each β moves linearly from its start to its end value between ``begin · n_epochs`` and
    ``end · n_epochs`` of its window (a window lasts at least one epoch), and is constant outside.
    ``z_active`` is 0 while z is switched off (``z_delay``), else 1.
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
    """

    def __init__(self, config: JTRVAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        c, w = config.channels, config.image_size
        self.n_enumerated = max(config.n_classes, 1)
        self.half_width_px = (w - 1) / 2.0
        self.register_buffer("grid", coordinate_grid(w), persistent=False)                    # (P, 2)
        self.register_buffer("angle_prior_mean", torch.tensor([config.angle_prior_concentration, 0.0]),
                             persistent=False)
        self.circular_latents = config.latent_geometry != "euclidean"
        decoder_latent = 2 * config.latent_dim if self.circular_latents else config.latent_dim   # (cos, sin) per angle
        if config.encoder == "equivariant":
            self.encoder = EquivariantEncoder(w, c, config.latent_dim, config.n_classes, config.rotation, config.translation,
                                              config.encoder_hidden, config.activation, mean_size=decoder_latent,
                                              rotations=config.encoder_rotations)
        else:
            self.encoder = MLPEncoder(c * w * w, config.latent_dim, config.n_classes, config.rotation,
                                      config.translation, config.encoder_hidden, config.activation,
                                      mean_size=decoder_latent)
        self._start_at_prior_scale(self.encoder.head)
        self.separate_class_head = config.n_classes > 0 and config.encoder == "mlp" and (
            config.class_rotations > 0 or config.canonical_class_head or config.invariant_class_head)
        self.invariant_head = self.separate_class_head and config.invariant_class_head and config.class_rotations == 0
        if self.invariant_head:
            descriptor = FourierDescriptor(w)
            self.class_encoder = nn.Sequential(descriptor, nn.LayerNorm(c * descriptor.out_features_per_channel),
                                               mlp(c * descriptor.out_features_per_channel, config.encoder_hidden, config.activation),
                                               nn.Linear(config.encoder_hidden[-1], config.n_classes))
        elif self.separate_class_head:
            # its own network: pooling over rotations wants rotation-invariant features, while the
            # main trunk must keep the orientation to infer the angle
            self.class_encoder = nn.Sequential(mlp(c * w * w, config.encoder_hidden, config.activation),
                                               nn.Linear(config.encoder_hidden[-1], config.n_classes))
        if config.decoder == "mlp":
            self.decoder = SpatialMLPDecoder(decoder_latent, config.n_classes, c, config.decoder_hidden,
                                             config.activation, config.latent_skips, config.coordinate_gain)
        else:
            self.decoder = SpatialBroadcastDecoder(decoder_latent, config.n_classes, (w, w), c,
                                                   config.conv_channels, activation=config.activation)

    def _start_at_prior_scale(self, head: nn.Linear) -> None:
        """Start the posterior sd of the shift at the prior's (an sd of 1 grid unit costs ~50 nats)."""
        if self.config.translation:
            with torch.no_grad():
                head.bias[self.encoder.head_slice("shift_log_sd")] = math.log(self.config.shift_prior_sd)

    # --- inference -------------------------------------------------------------------------

    def posterior(self, x: Tensor) -> dict[str, Tensor]:
        """Parameters of q(·|x) for (B, C, W, W) images; shifts in grid units.

        Keys: class_logits (B, K') with K' = max(K, 1) (zeros when K = 0); z_mean, z_sd (B, D)
        (for circular latents: mean angle in radians and the wrapped normal's σ);
        angle_vec_mean (B, 2), angle_vec_sd (B, 1) when rotation is on; shift_mean, shift_sd (B, 2)
        (row, col) when translation is on.
        """
        head = self.encoder(x)
        out = {"z_mean": head["z_mean"], "z_sd": torch.exp(head["z_log_sd"])}
        if self.circular_latents:       # angles: the direction of the head's 2D vector per latent
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
        elif self.separate_class_head and self.config.canonical_class_head and self.config.class_rotations == 0:
            angle = None
            if self.config.rotation:
                m = head["angle_vec_mean"].detach()
                angle = torch.atan2(m[:, 1], m[:, 0])
            shift = head["shift_mean"].detach() if self.config.translation else None
            out["class_logits"] = self.class_encoder(self.canonical_view(x, angle, shift).flatten(1))
        if self.config.rotation:
            out["angle_vec_mean"] = head["angle_vec_mean"]
            out["angle_vec_sd"] = torch.exp(head["angle_vec_log_sd"])
        if self.config.translation:
            out["shift_mean"] = head["shift_mean"]
            out["shift_sd"] = torch.exp(head["shift_log_sd"])
        return out

    def canonical_view(self, x: Tensor, angle_rad: Tensor | None, shift: Tensor | None) -> Tensor:
        """(B, C, W, W) images resampled into the decoder's canonical frame: ``g(u) = x(R(angle) u + shift)``.

        The inverse of the decoder's pose: an image rendered as ``g(R(angle)ᵀ(x - shift))`` comes
        back as ``g``. ``shift`` in grid units; bilinear, zeros outside the image.
        """
        return sample_at(x, self.grid, angle_rad, shift)

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """Posterior summaries of (B, C, W, W) images.

        Returns class_probs (B, K') (K' = max(K, 1); all ones when K = 0), z_mean, z_sd (B, D),
        angle_rad (B,) (mode of the angle posterior; zeros when rotation is off),
        angle_concentration (B,) (|m_v| / sd_v: larger is sharper), shift (B, 2) and shift_sd (B, 2)
        in pixels (row, col) (zeros when translation is off).
        """
        return self.summarise(self.posterior(x))

    def summarise(self, post: dict[str, Tensor]) -> dict[str, Tensor]:
        """The summaries of :meth:`encode` from posterior parameters as :meth:`posterior` returns them."""
        x = post["z_mean"]
        batch = x.shape[0]
        out = {"class_probs": torch.softmax(post["class_logits"], dim=1), "z_mean": post["z_mean"], "z_sd": post["z_sd"]}
        if self.config.rotation:
            m = post["angle_vec_mean"]
            out["angle_rad"] = torch.atan2(m[:, 1], m[:, 0])
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
        """Images per forward pass whose decoder activations stay within ``budget_bytes``: a pass
        over all pixels holds about three (B, K', P, width) float32 tensors at once (no gradient)."""
        width = max(self.config.conv_channels if self.config.decoder == "conv" else self.config.decoder_hidden)
        per_image = 3 * 4 * self.n_enumerated * self.grid.shape[0] * width
        return max(1, budget_bytes // per_image)

    def decoder_logits(self, z: Tensor, angle_rad: Tensor | None, shift: Tensor | None,
                       pixel_index: Tensor | None = None, class_vectors: Tensor | None = None) -> Tensor:
        """Decoder outputs: (B, K', P, C) logits (Bernoulli) or means (Gaussian) for every class.

        ``shift`` is in grid units; ``pixel_index`` (P',) restricts the output to those pixels
        (MLP decoder only); with (B, K) ``class_vectors`` only that class is decoded: (B, 1, P, C).
        """
        grid = self.grid if pixel_index is None else self.grid[pixel_index]
        coords = transform_coordinates(grid, angle_rad, shift)
        return self.decoder(coords, circular.features(z) if self.circular_latents else z, class_vectors)

    def decode(self, z: Tensor, class_onehot: Tensor | None = None, angle_rad: Tensor | None = None,
               shift: Tensor | None = None) -> Tensor:
        """Image means (B, C, W, W) for latents z (B, D).

        Args:
            class_onehot: (B, K) one-hot (or any probability vector: the class enters the decoder
                linearly, so a soft vector mixes the class inputs); ignored when K = 0.
            angle_rad: (B,) counter-clockwise rotation, or None for 0.
            shift: (B, 2) shift in pixels (row, col), or None for 0.
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

    def loss_terms(self, x: Tensor, generator: torch.Generator | None = None, *, pixel_fraction: float = 1.0,
                   kl_estimator: str = "analytic", noise: dict[str, Tensor] | None = None,
                   posterior: dict[str, Tensor] | None = None, labels: Tensor | None = None,
                   use_z: bool = True) -> dict[str, Tensor]:
        """Negative-ELBO terms per image, in nats, for (B, C, W, W) images.

        The class is marginalised exactly: ``recon = Σ_y q(y|x) · (-log p(x | z, v, s, y))`` over all
        K classes in one batched decoder pass, with one reparametrised draw of (z, v, s).

        Args:
            generator: source of the standard-normal draws (and of the pixel subset); None = torch's
                global generator.
            pixel_fraction: score a random subset of this fraction of the pixels (the same for the
                whole batch) and rescale by P / P' — an unbiased estimate of the full
                reconstruction term that makes the MLP decoder proportionally cheaper (ignored by
                the conv decoder, which always renders whole images).
            kl_estimator: 'analytic' (closed-form Gaussian KLs) or 'sample' (single-sample
                log q - log p at the draw; unbiased, as Pyro's Trace ELBOs estimate it).
            noise: standard-normal draws to use instead of drawing: 'z' (B, D), 'angle_vec' (B, 2),
                'shift' (B, 2).
            posterior: parameters of q(·|x) to use instead of the encoder's (as :meth:`posterior`
                returns them; per-sample refinement optimises these against the fixed decoder).
            labels: (B,) known classes for semi-supervised training, −1 where unknown. A labelled
                image's class is observed, as in Kingma et al.'s M2 model: its reconstruction uses
                that class only, it has no class KL, and ``class_nll`` = −log q(label | x) trains
                the class posterior (weighted by ``label_weight`` in :meth:`weighted_loss`).
            use_z: False switches the continuous latents off: z = 0 (the prior mean), KL_z = 0
                (training's ``z_delay``).

        Returns:
            dict of (B,) tensors: recon, kl_z, kl_angle, kl_shift, kl_tau (= kl_angle + kl_shift),
            kl_y; and class_probs (B, K').
        """
        if kl_estimator not in KL_ESTIMATORS:
            raise ParameterError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
        post = {name: value.float() for name, value in (posterior or self.posterior(x)).items()}  # KLs in float32 under AMP
        draws = noise if noise is not None else self._standard_normal_draws(x, generator)
        z = post["z_mean"] + post["z_sd"] * draws["z"]
        if not use_z:
            z = torch.zeros_like(z)
        if self.circular_latents:
            z = circular.wrap(z)
        angle_rad = angle_vec = shift = None
        if self.config.rotation:  # the posterior has no angle/shift keys when those latents are off
            angle_vec = post["angle_vec_mean"] + post["angle_vec_sd"] * draws["angle_vec"]
            angle_rad = torch.atan2(angle_vec[:, 1], angle_vec[:, 0])
        if self.config.translation:
            shift = post["shift_mean"] + post["shift_sd"] * draws["shift"]

        pixel_index, pixel_weight = self._pixel_subset(pixel_fraction, generator, x.device)
        outputs = self.decoder_logits(z, angle_rad, shift, pixel_index).float()           # (B, K', P', C)
        target = x.flatten(2).transpose(1, 2)                                              # (B, P, C)
        if pixel_index is not None:
            target = target[:, pixel_index]
        nll = self._negative_log_likelihood(outputs, target.unsqueeze(1)) * pixel_weight   # (B, K')

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
        elif self.circular_latents:   # single-sample estimate log q(θ) + log 2π, unbiased (see microvae.circular)
            terms["kl_z"] = (circular.log_prob(z, post["z_mean"], post["z_sd"]) + math.log(2 * math.pi)).sum(1)
        else:
            terms["kl_z"] = kl(post["z_mean"], post["z_sd"], 0.0 * one, one, z)
        terms["kl_angle"] = zero if angle_vec is None else kl(
            post["angle_vec_mean"], post["angle_vec_sd"].expand(-1, 2), self.angle_prior_mean, one, angle_vec)
        terms["kl_shift"] = zero if shift is None else kl(
            post["shift_mean"], post["shift_sd"], 0.0 * one, self.config.shift_prior_sd * one, shift)
        terms["kl_tau"] = terms["kl_angle"] + terms["kl_shift"]
        return terms

    def forward(self, x: Tensor, generator: torch.Generator | None = None, **options) -> dict[str, Tensor]:
        """:meth:`loss_terms` (so that a DistributedDataParallel wrapper's call computes them)."""
        return self.loss_terms(x, generator, **options)

    @staticmethod
    def negative_elbo(terms: dict[str, Tensor]) -> Tensor:
        """(B,) negative ELBO in nats at β = 1 from :meth:`loss_terms`: recon + KL_z + KL_τ + KL_y."""
        return terms["recon"] + terms["kl_z"] + terms["kl_tau"] + terms["kl_y"]

    @staticmethod
    def weighted_loss(terms: dict[str, Tensor], betas: dict[str, float]) -> Tensor:
        """Batch mean of recon + β_τ·KL_τ + β_z·KL_z + β_y·KL_y (a scalar to minimise), plus
        ``class_balance`` · :func:`marginal_class_kl` (or :func:`class_imbalance` when
        'class_balance_unbiased' is set) when ``betas`` has a nonzero 'class_balance'."""
        per_image = (terms["recon"] + betas["beta_tau"] * terms["kl_tau"] + betas["beta_z"] * terms["kl_z"]
                     + betas["beta_y"] * terms["kl_y"])
        loss = per_image.mean()
        if betas.get("label_weight", 0.0) and "class_nll" in terms:
            loss = loss + betas["label_weight"] * terms["class_nll"].mean()
        balance = betas.get("class_balance", 0.0)
        if balance:
            penalty = class_imbalance if betas.get("class_balance_unbiased") else marginal_class_kl
            loss = loss + balance * penalty(terms["class_probs"])
        return loss

    def _standard_normal_draws(self, x: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        batch, kw = x.shape[0], {"generator": generator, "device": x.device, "dtype": torch.float32}
        return {"z": torch.randn(batch, self.config.latent_dim, **kw), "angle_vec": torch.randn(batch, 2, **kw),
                "shift": torch.randn(batch, 2, **kw)}

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
    """KL(q̄ ‖ uniform) of the batch-mean class posterior q̄ of (B, K) probabilities; a scalar."""
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
    """
    batch, n_classes = class_probs.shape
    if batch < 2:
        return class_probs.sum() * 0.0
    excess = class_probs - 1.0 / n_classes
    pairs = excess.sum(0) ** 2 - (excess ** 2).sum(0)          # Σ_{i≠j} d_i d_j per class
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
    """
    betas = betas or {}
    cfg, batch = vae.config, x.shape[0]
    pyro.module("decoder", vae.decoder)
    target = x.flatten(2).transpose(1, 2).reshape(batch, -1)                                # (B, P·C)
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
        outputs = vae.decoder_logits(z, angle_rad, shift).flatten(2)                         # (B, K', P·C)
        if cfg.n_classes > 0:
            with poutine.scale(scale=betas.get("beta_y", 1.0)):
                y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(batch, cfg.n_classes)))
            outputs = Vindex(outputs)[torch.arange(batch, device=x.device), y]             # (..., B, P·C)
        else:
            outputs = outputs[:, 0]
        if cfg.likelihood == "bernoulli":
            likelihood = dist.Bernoulli(logits=outputs, validate_args=False)
        else:
            likelihood = dist.Normal(outputs, cfg.gaussian_sd)
        pyro.sample("x", likelihood.to_event(1), obs=target)


@config_enumerate
def pyro_guide(vae: JTRVAE, x: Tensor, betas: dict[str, float] | None = None) -> None:
    """q(z, v, s, y | x) of ``vae`` as a Pyro guide; 'y' is marked for parallel enumeration."""
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

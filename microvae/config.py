"""The settings of every stage: plain dataclasses, with no torch behind them.

One dataclass per stage holds every default once; the CLI's options and the pipeline's TOML keys
are read from them:

=============  ==============================================================================
stage          settings
=============  ==============================================================================
find-atoms     :class:`FindAtomsConfig` (:class:`~microvae.atoms.FindAtomsParams` + how scans are read)
extract        :class:`ExtractConfig` (:class:`~microvae.patches.PatchParams` + reading, compression)
train          :class:`JTRVAEConfig` (architecture, priors, KL schedule) and :class:`TrainConfig`
               (epochs, batch, optimiser, device); :func:`configs_from_settings` splits flat settings
encode         :class:`EncodeConfig` (with :class:`RefineConfig`)
export         :class:`ExportConfig`
=============  ==============================================================================

Each stage config reads and writes its *flat settings* (``from_settings`` / ``settings``): the keys
of the pipeline's TOML section and of the recipe that ``encode --pretrained`` replays. Kept apart
from :mod:`microvae.models` and :mod:`microvae.training` so that reading them (``microvae train
--help``, a pipeline file's check) does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from .atoms.tables import FindAtomsParams
from .errors import ParameterError, raise_first_failure
from .patches import PatchParams

__all__ = [
    "CLASS_INITS",
    "DECODERS",
    "DEFAULT_EXPORT_FORMATS",
    "EDGE_SIGMAS_PX",
    "ENCODERS",
    "EXPORT_FORMATS",
    "GEOMETRIES",
    "KL_ESTIMATORS",
    "LIKELIHOODS",
    "POSE_CANDIDATES",
    "POSE_REFINE_STEPS",
    "SETTING_ALIASES",
    "STACK_AS",
    "EncodeConfig",
    "ExportConfig",
    "ExtractConfig",
    "FindAtomsConfig",
    "JTRVAEConfig",
    "NestedSettings",
    "RefineConfig",
    "TrainConfig",
    "configs_from_settings",
    "setting_names",
]

GEOMETRIES = ("euclidean", "circle", "torus")  # latent geometries (see microvae.circular)
CLASS_INITS = ("cluster", "restarts", "none")


LIKELIHOODS = ("bernoulli", "gaussian")
DECODERS = ("mlp", "conv")
ENCODERS = ("mlp", "equivariant")
KL_ESTIMATORS = ("analytic", "sample")


#: Scales (px) of the Laplacians of Gaussians whose responses the pose searches compare
#: (:func:`microvae.alignment.search_view`). Template alignment handed the true classes and angles
#: (``bench_discovery`` 'truth_alignment', CI size, median of seeds 0–2, modulo symmetry) read the
#: ±120° cards at 0.784 from the plain patches and 0.957 from these edges, the ±120° glyph suits
#: at 0.516 and 0.934, the digits at 0.460 and 0.555 (benchmarks/README.md, "Class discovery").
EDGE_SIGMAS_PX = (1.0, 2.0)

#: Gauss-Newton steps that refine each searched pose (turn and shift) off the search's grid
#: (:func:`microvae.alignment.refine_poses`): the template, turned and moved continuously, is fitted
#: to the patch. Truth alignment (``bench_discovery`` 'truth_alignment', CI size, seed 0, modulo
#: symmetry) read the ±12° glyph suits at 0.665 from the grid (5°, whole pixels, a parabola
#: between turns) and 0.813 refined; the ±12° cards 0.758 and 0.813 (benchmarks/README.md).
POSE_REFINE_STEPS = 6
#: Turns read off the grid per pose search: the best local maxima of the correlation over the
#: turns, each refined, the best refined one kept (:func:`microvae.alignment.best_pose`). A
#: near-symmetric object's wrong turn can beat the right one on the grid and lose off it.
POSE_CANDIDATES = 3


@dataclass
class JTRVAEConfig:
    """Architecture, priors and KL schedule of a :class:`JTRVAE`.

    The defaults are the recipe validated on the ±60° cards (matched class accuracy ≥ 0.95, see
    ``tests/test_models.py``); where they depart from the paper, the paper's value is given.

    Attributes
    ----------
    image_size : int, default 28
        Patch side W in pixels (square patches).
    channels : int, default 1
        Image channels C.
    n_classes : int, default 4
        K, values of the discrete latent; 0 = none (rVAE / rtVAE / VAE).
    latent_dim : int, default 2
        D, continuous latents besides rotation and shift (paper: 2).
    latent_geometry : str, default 'euclidean'
        'euclidean' (Gaussian prior, the paper's), 'circle' (D = 1) or 'torus'
        (D = 2): each latent is an angle with a uniform prior and a wrapped-normal posterior
        (:mod:`microvae.circular`), for factors that are periodic (a phase, a cyclic shift).
    rotation : bool, default True
        Learn a rotation latent.
    translation : bool, default True
        Learn a 2D shift latent.
    likelihood : str, default 'bernoulli'
        'bernoulli' (images in [0, 1]) or 'gaussian' (fixed sd ``gaussian_sd``,
        identity output: any intensity range).
    gaussian_sd : float, default 0.1
        The sd of the Gaussian likelihood, in image intensity units.
    decoder : str, default 'mlp'
        'mlp' (spatial generator, one MLP per pixel coordinate) or 'conv' (spatial
        broadcast decoder with latent skip connections).
    invariant_class_head : bool, default False
        Give q(y|x) its own MLP that reads the rotation- and shift-invariant
        Fourier descriptor of the patch (:class:`microvae.nets.FourierDescriptor`): the class
        cannot depend on the pose even where the pose is not yet learned. Training sets it
        when the initial classes come from that descriptor (:mod:`microvae.discovery`), so
        that the class posterior reads what the classes were found in. Takes precedence over
        ``canonical_class_head``; ``class_rotations`` over it.
    tapered_class_head : bool, default False
        Give q(y|x) its own MLP that reads the patch in the canonical frame with its mean
        removed and Hann-tapered (:class:`microvae.nets.TaperedView`, then a LayerNorm): the view
        of the 'tapered_pca_kmeans' and 'tapered_pca_tied' candidates. Training sets it when the
        initial classes come from one of them (:mod:`microvae.discovery`): on the zoo's honeycomb a class posterior
        that read the plain patch never learned the 5 % dopants of its start (model 0.950 from a
        0.995 partition, bench size, seed 0). ``invariant_class_head`` takes precedence.
    object_class_head : bool, default False
        Give q(y|x) its own MLP that reads the rotation-, shift- and scale-invariant descriptor of
        the object in the patch (:class:`microvae.nets.ObjectDescriptor` with ``object_polarity``,
        then a LayerNorm): the space of the 'object_tied' candidate. Training sets it when the
        initial classes come from that candidate (:mod:`microvae.discovery`). Takes precedence
        over every other class head but ``class_rotations``.
    object_polarity : float, default 1.0
        +1 (objects brighter than their surround) or −1 (darker), for ``object_class_head``; set
        with it from the training patches (:func:`microvae.baselines.object_polarity`).
    object_scale_px : float or None, default None
        None: ``object_class_head`` reads the scale-invariant descriptor. A number of px: it reads
        the sized one, radii in that unit for every patch (the space of the
        'sized_object_tied' candidate; set with ``object_class_head`` from the training
        patches, :func:`microvae.baselines.object_scale`).
    object_centred : bool, default False
        ``object_class_head`` reads its descriptor about the patch's centre instead of the
        object's centroid (``centred`` of :class:`microvae.nets.ObjectDescriptor`); set with it
        when ``translation`` is off, as the candidate was made.
    class_rotations : int, default 0
        R > 0 gives q(y|x) its own MLP, pooled over R rotated copies of the input
        (mean of their log-probabilities), so that it is nearly rotation invariant by
        construction instead of having to learn it; 0 = no pooling. Takes precedence over
        ``canonical_class_head``.
    canonical_class_head : bool, default True
        Give q(y|x) its own MLP that reads the input resampled into the
        canonical frame, ``x(R(γ̂) u + ŝ)``, with γ̂, ŝ the posterior means of the angle and
        shift (gradients stopped): the class cannot depend on the pose, and the MLP sees
        upright, centred objects, which it learns to classify far faster than rotated ones.
        False = the class head of the shared encoder (the paper's multi-head encoder).
    encoder : str, default 'mlp'
        'mlp' (the paper's multi-head MLP, which has to learn that a turned or moved
        patch has the same code) or 'equivariant' (:class:`microvae.nets.EquivariantEncoder`:
        the pose is inferred by a network that turns and moves with the patch, and z and the
        class read the patch in its canonical frame, so they are invariant by construction;
        the class then comes from that read-out, and ``class_rotations`` /
        ``canonical_class_head`` do not apply).
    encoder_rotations : int, default 8
        Frames the equivariant encoder compares to find the angle (R, a
        multiple of 4 keeps quarter turns exact).
    encoder_hidden : tuple of int, default (256, 256)
        MLP encoder widths (paper: 2 × 256).
    decoder_hidden : tuple of int, default (128, 128)
        Decoder widths (paper: 3 × 256; 2 × 128 is 4–6× cheaper and enough for
        the cards).
    conv_channels : tuple of int, default (64, 64, 64)
        Conv decoder channels per layer.
    activation : str, default 'tanh'
        Hidden activation (paper: tanh).
    latent_skips : bool, default True
        (z, y) also enter every hidden layer of the MLP decoder (paper: input only).
    coordinate_gain : float, default 5.0
        Scale of the MLP decoder's initial coordinate weights (1 = PyTorch's
        default; 5 learns sharp edges several times faster).
    mean_offset : bool, default False
        Add a learned per-pixel offset in the patch's own frame to the decoder's output (logits
        for the Bernoulli likelihood, means for the Gaussian), started at the training patches'
        mean (:func:`microvae.training_data.patch_mean`): the spatial decoder then renders how a
        patch departs from the mean patch. A coordinate MLP learns the sharp mean of atom-centred
        or FFT patches slowly, and there the departures are small against it; on the zoo's
        lattices (``bench_discovery.py --size ci``, 30 epochs, median / worst of seeds 0–2) the
        share of the pixel variance the model explains is 0.48/0.44 (perovskite film; −1.02/−1.11
        without), 0.20/0.17 (STM FFT patches; −1.32/−1.41 without), 0.57/0.37 (two-phase) and
        0.56/0.53 (honeycomb), classes unchanged and at the same time. It does not turn or move
        with the pose, so with pose latents it competes with them (±60° cards, forced on: angle
        correlation 0.421/0.294 → 0.213/0.152, ``results/discovery_ci_mean_offset.md``). Nor does it serve classes learned from random weights
        (``class_init='none'``, the paper's procedure): with the mean drawn by the offset, the
        phases recipe's two-phase classes went soft (confidence 0.53, tests/stages/test_pipeline.py)
        and K = 4 on two suits filled all four classes (tests/test_ensemble.py).
        :func:`configs_from_settings` (the CLI's and the pipeline's defaults) therefore turns it
        on exactly for models without rotation and translation whose classes start from a
        partition (``class_init`` not 'none'). False here keeps run folders written before it
        loading as they were.
    template_pose : bool, default False
        (With ``rotation`` and the MLP decoder.) Each class is rendered at its own template's turn
        onto the patch plus the angle latent's: the turns are found by search over 72 turns
        against every class's template (:func:`microvae.templates.turns_to_templates`), learned
        when training starts from the initial classes (``init_labels`` of
        :func:`microvae.training.fit`; else one template of all patches) and kept with the
        weights (``pose_templates``). The model then describes each patch in its class
        template's frame, as multi-reference alignment does, and the angle prior
        (``angle_prior_concentration``) is on the turn left after the template's: the search
        is usually right, and the encoder learns what it left over. The decoder renders each
        class in one frame, so the turn is carried by the angle, not by z; ``angle_rad`` is the
        most probable class's. :func:`configs_from_settings` turns it on for models with
        rotation, the MLP encoder and decoder (the equivariant encoder reads its own angle) and
        K ≥ 2 classes that start from a partition. Costs one search per patch and class when
        encoding: 516 patches/s at 32², K = 2 on 2 CPU cores (edges at two scales; 539 with the
        plain search in the same session), against 68 000 for the encoder alone
        (``benchmarks/bench_encode.py --quick``, 2026-12-01); with ``pose_refine_steps`` 1.45×
        that (149 against 216 patches/s on the grid, one later session, a slower machine), and
        with ``pose_candidates`` 3 about 1.4× more: the same command, a later session, 108
        patches/s against 23 900 for the encoder alone (a scratch timing of the search alone
        on 512 cards in that session: 186 patches/s on the grid, 141 refined, 98 with three
        refined turns).
    pose_edge_sigmas_px : tuple of float, default ()
        (With ``template_pose``.) The turns are searched on the patches' and templates' edges at
        these scales in px (:func:`microvae.alignment.search_view`), which tell apart the turns
        of a near-symmetric shape that a plain correlation confuses; empty searches the patches
        themselves, as run folders written before it did. :func:`configs_from_settings` sets
        :data:`EDGE_SIGMAS_PX` with the template pose.
    pose_refine_steps : int, default 0
        (With ``template_pose``.) Gauss-Newton steps that refine each searched turn off the
        search's 5° grid, the template turned and moved continuously onto the patch
        (:func:`microvae.alignment.refine_poses`); 0 keeps the grid's turn and the parabola
        between turns, as run folders written before it did. :func:`configs_from_settings` sets
        :data:`POSE_REFINE_STEPS` with the template pose.
    pose_candidates : int, default 1
        (With ``pose_refine_steps``.) Local maxima over the searched turns that are each refined,
        the best refined one kept (:func:`microvae.alignment.best_pose`): on the grid a
        near-symmetric shape's wrong turn can score above the right one. 1 refines the grid's
        best alone, as run folders written before it did. :func:`configs_from_settings` sets
        :data:`POSE_CANDIDATES` with the template pose.
    shift_prior_sd : float, default 0.1
        The sd of the shift prior per axis in grid units, i.e. in units of the
        half-width of the patch ((W - 1) / 2 pixels); 0.1 at W = 28 is 1.35 px.
    angle_prior_concentration : float, default 2.0
        c0 ≥ 0; the angle prior is the Projected Normal of N((c0, 0), I):
        uniform on the circle for 0, concentrated around angle 0 for large c0 (the paper's
        von Mises prior with concentration k). c0 = 2 makes a quarter turn cost c0² = 4 nats,
        which keeps e.g. a diamond turned by 90° from being explained as a squeezed diamond.
    beta_z_start, beta_z : float or None, float (defaults 3.0, 1.0)
        The KL_z weight goes from ``beta_z_start`` to ``beta_z`` over
        ``beta_z_window`` (None: constant ``beta_z``, the paper's 1). Holding z back while the
        angle and the classes form keeps z from absorbing the rotation or the class; holding
        it back harder (8 until 25 % of the epochs) left z unused for good in 2 of 3 seeds.
    beta_tau_start, beta_tau_end : float (defaults 1.0, 1.0)
        The same for the rotation + shift KL (τ). The paper starts
        it high; on the cards a high early β_τ pushes the rotation into z, so the default is 1.
    beta_y_start, beta_y_end : float (defaults 30.0, 1.0)
        The same for the discrete KL. A high start keeps q(y|x) near
        uniform (a high temperature: q ∝ exp(-recon/β_y)) while the angle is learned, so that
        the classes do not split by orientation first.
    anneal_fraction : float, default 0.2
        The default window, (0, anneal_fraction), of any β whose window is None.
    beta_z_window, beta_tau_window, beta_y_window : (float, float) or None (defaults (0.1, 0.3), None, (0.0, 0.1))
        (begin, end) as fractions of the epochs over
        which that β moves linearly from its start to its end value (constant outside).
    class_balance : float, default 20.0
        λ ≥ 0, extra weight on the marginal part of the class KL: the loss gains
        λ·KL(q̄(y) ‖ p(y)), q̄ the batch mean of q(y|x). Since E_x KL(q(y|x) ‖ p(y)) =
        I(x; y) + KL(q̄ ‖ p), this penalises unequal class usage (collapsed or dead classes)
        without penalising confident assignments. 0 = the paper's objective. On the ±60° cards
        (3 seeds, 45 epochs, GPU): λ = 5 reached matched accuracy 0.96 / 0.82 / 0.99 (one seed
        merged two suits into one class and split another), λ = 20 reached 0.98 / 0.97 / 0.97.
    class_balance_unbiased : bool, default False
        Estimate the balance term without the batch's sampling noise
        (:func:`class_imbalance`) instead of KL(q̄ ‖ p(y)) of each batch
        (:func:`marginal_class_kl`), which charges confident posteriors for the chance
        imbalance of a small batch and so keeps them soft. Soft posteriors help the cards
        (seed 0: 0.986 with the batch KL, 0.777 unbiased) but kept the two-phase lattice at
        q(y|x) ≈ 0.5; unbiased with ``z_delay`` split it with full confidence.
    z_delay : float, default 0.0
        Fraction of the epochs during which the continuous latents are switched off
        (z = 0, the prior mean, and no KL_z): the classes, angle and shift form first, as in a
        model without z, and z then learns what they leave. Without it a z that is on from
        the start can take a two-valued factor (e.g. two phases) for itself and leave
        q(y|x) ≈ 0.5 everywhere (see benchmarks/README.md, "Two phases").
    label_weight : float, default 50.0
        Weight (≥ 0) of the mean ``class_nll`` = −log q(label | x) of the patches whose class is
        observed (known labels, or initial classes while they act as observed), added to the loss
        by :meth:`JTRVAE.weighted_loss`.
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
    mean_offset: bool = False
    template_pose: bool = False
    pose_edge_sigmas_px: tuple[float, ...] = ()
    pose_refine_steps: int = 0
    pose_candidates: int = 1
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
    tapered_class_head: bool = False
    object_class_head: bool = False
    object_polarity: float = 1.0
    object_scale_px: float | None = None
    object_centred: bool = False
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
            (self.latent_geometry in GEOMETRIES, f"latent_geometry must be one of {GEOMETRIES}, got {self.latent_geometry!r}"),
            (self.latent_geometry != "circle" or self.latent_dim == 1, f"a circle latent has latent_dim 1, got {self.latent_dim}"),
            (self.latent_geometry != "torus" or self.latent_dim == 2, f"a torus latent has latent_dim 2, got {self.latent_dim}"),
            (self.likelihood in LIKELIHOODS, f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}"),
            (self.decoder in DECODERS, f"decoder must be one of {DECODERS}, got {self.decoder!r}"),
            (self.encoder in ENCODERS, f"encoder must be one of {ENCODERS}, got {self.encoder!r}"),
            (self.encoder_rotations >= 1, f"encoder_rotations must be >= 1, got {self.encoder_rotations}"),
            (self.gaussian_sd > 0, f"gaussian_sd must be > 0, got {self.gaussian_sd}"),
            (self.shift_prior_sd > 0, f"shift_prior_sd must be > 0, got {self.shift_prior_sd}"),
            (self.angle_prior_concentration >= 0, "angle_prior_concentration must be >= 0"),
            (not self.template_pose or (self.rotation and self.decoder == "mlp"), "template_pose needs rotation and the MLP decoder"),
            (all(sigma > 0 for sigma in self.pose_edge_sigmas_px), f"pose_edge_sigmas_px must be > 0, got {self.pose_edge_sigmas_px}"),
            (self.pose_refine_steps >= 0, f"pose_refine_steps must be >= 0, got {self.pose_refine_steps}"),
            (self.pose_candidates >= 1, f"pose_candidates must be >= 1, got {self.pose_candidates}"),
            (self.coordinate_gain > 0, f"coordinate_gain must be > 0, got {self.coordinate_gain}"),
            (len(self.encoder_hidden) >= 1 and min(self.encoder_hidden) >= 1, "encoder_hidden needs positive widths"),
            (len(self.decoder_hidden) >= 1 and min(self.decoder_hidden) >= 1, "decoder_hidden needs positive widths"),
            (len(self.conv_channels) >= 1 and min(self.conv_channels) >= 1, "conv_channels needs positive widths"),
            (
                min(
                    self.beta_z,
                    self.beta_tau_start,
                    self.beta_tau_end,
                    self.beta_y_start,
                    self.beta_y_end,
                    self.beta_z if self.beta_z_start is None else self.beta_z_start,
                )
                >= 0,
                "KL weights must be >= 0",
            ),
            (0 <= self.anneal_fraction <= 1, f"anneal_fraction must be in [0, 1], got {self.anneal_fraction}"),
            (all(len(w) == 2 and 0 <= w[0] <= w[1] <= 1 for w in windows), "β windows must be (begin, end) with 0 <= begin <= end <= 1"),
            (self.class_rotations >= 0, f"class_rotations must be >= 0, got {self.class_rotations}"),
            (self.object_polarity in (-1.0, 1.0), f"object_polarity must be 1 or -1, got {self.object_polarity}"),
            (
                self.object_scale_px is None or (math.isfinite(self.object_scale_px) and self.object_scale_px > 0),
                f"object_scale_px must be a positive number of pixels or None, got {self.object_scale_px}",
            ),
            (not self.object_class_head or self.image_size >= 5, f"object_class_head needs patches of at least 5 px, got {self.image_size}"),
            (self.class_balance >= 0, f"class_balance must be >= 0, got {self.class_balance}"),
            (self.label_weight >= 0, f"label_weight must be >= 0, got {self.label_weight}"),
            (0 <= self.z_delay < 1, f"z_delay must be in [0, 1), got {self.z_delay}"),
        ]
        raise_first_failure(checks)

    def to_dict(self) -> dict:
        """The settings as a plain dict.

        Returns
        -------
        dict
            Field name → value (:func:`dataclasses.asdict`).
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JTRVAEConfig:
        """The settings from a dict such as :meth:`to_dict` writes (lists become tuples).

        Parameters
        ----------
        data : dict
            Field name → value; absent fields take their defaults.

        Returns
        -------
        JTRVAEConfig
            The settings (not validated).

        Raises
        ------
        ParameterError
            When ``data`` has keys that are not fields.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"unknown model settings: {', '.join(sorted(unknown))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass
class TrainConfig:
    """How to train.

    Attributes
    ----------
    epochs : int, default 50
        Total epochs (a resumed run continues up to this number).
    batch_size : int, default 32
        Images per optimisation step.
    lr : float, default 0.002
        Adam learning rate (paper: 5e-4 to 1e-3; 2e-3 with batches of 32 was stable and
        faster on the cards).
    seed : int, default 0
        Seeds the initial weights, the validation split, shuffling and the noise draws.
    checkpoint_every : int, default 5
        Write ``checkpoints/last.pt`` every this many epochs (and at the end).
    device : str, default 'auto'
        'auto' (CUDA when available), 'cpu' or 'cuda' (or 'cuda:N').
    amp : bool, default False
        bf16 autocast on CUDA (ignored on CPU).
    compile : bool, default False
        ``torch.compile`` the training step's forward pass (the loss terms). It changes
        how fast, not what is learned. Each new batch shape or schedule phase compiles once
        (10–25 s on 2 CPU cores); then on the CPU the paper's network trains 1.09× (28²) and
        1.22× (48²) faster, the default recipe 1.11× (benchmarks/README.md, "VAE training
        throughput"). Unmeasured on CUDA, where fusing the decoder's elementwise work is
        what the memory-bound bf16 step needs.
    val_fraction : float, default 0.1
        Fraction of the images held out for the validation loss (0 = none).
    pixel_fraction : float, default 0.05
        Score this random fraction of the pixels per step (unbiased; 1 = all
        pixels; ignored by the conv decoder). 0.05 (with ``min_pixels``) makes a step of the MLP
        decoder 26× / 39× cheaper than all pixels on 28² / 48² patches (benchmarks/results/peers.md),
        with the same classes on four of five zoo members (benchmarks/results/pixel_fraction.md); on the ±60° cards (CPU, seeds 0–2) it reached 0.99/0.88/0.97 matched
        accuracy against 0.99/0.66/0.95 with 0.1. See :meth:`JTRVAE.loss_terms`.
    min_pixels : int, default 40
        Never fewer than this many pixels per patch and step (a floor on ``pixel_fraction``).
        Subtle classes need enough of them: on 20×20 patches of the two-phase lattice (no continuous latent), 20
        pixels per step left q(y|x) at 0.5 everywhere while 40 and 100 gave confident classes;
        on the 24×24 oxide-interface patches 29 pixels put 85 % of one side in its class, 48
        pixels 96 % / 97 % (seed 0) and 100 % / 100 % (seed 1), 58 pixels 96 % / 98 %.
    max_classes : int, default 0
        0: K is the model's ``n_classes``. Above 1 (``--classes auto``): K is chosen
        in 2…max_classes by :func:`microvae.discovery.choose_n_classes` before training.
    class_init : str, default 'cluster'
        How the classes start (:mod:`microvae.discovery`; used by
        :func:`microvae.stages.run_train`, not by :func:`fit` itself). 'cluster' (default):
        classical clusterings (PCA, a rotation- and shift-invariant Fourier descriptor,
        patches turned into the frame of a short class-free model) are made, and the one
        whose classes are best separated guides the first ``init_fraction`` of the run.
        'restarts': the candidate whose short run has the lowest held-out −ELBO guides it
        instead (costlier, and on the zoo a worse judge). 'none': classes start from the
        random initialisation (the paper's procedure).
    init_fraction : float, default 1.0
        Fraction of the epochs during which initial class labels (``init_labels``
        of :func:`fit`) act as observed classes (and the class-balance term is off); after
        it the classes are free. 1 (default): the model keeps the chosen partition and learns
        pose, continuous latents and a class posterior for new patches around it. On the zoo
        at CI size (±60° cards started from a partition of accuracy 0.99) freeing the classes
        after 30 % / 60 % of the epochs ended at 0.67–0.72 / 0.84, keeping them at 0.91: the
        joint objective does not hold on to the right partition (its held-out −ELBO hardly
        differs between partitions).
    restart_fraction : float, default 0.2
        Length of the class-free pose run (and of each short restart), as a
        fraction of ``epochs`` (at least one epoch).
    """

    epochs: int = 50
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    checkpoint_every: int = 5
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    val_fraction: float = 0.1
    pixel_fraction: float = 0.05
    min_pixels: int = 40
    max_classes: int = 0
    class_init: str = "cluster"
    init_fraction: float = 1.0
    restart_fraction: float = 0.2

    def validate(self) -> None:
        """Raise :class:`ParameterError` for the first value out of range.

        Raises
        ------
        ParameterError
            When a setting is out of range (epochs, batch size, lr, fractions, ``max_classes``
            0 or ≥ 2, ``class_init``, ``device`` 'auto', 'cpu' or 'cuda[:N]').
        """
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (0 < self.pixel_fraction <= 1, f"pixel_fraction must be in (0, 1], got {self.pixel_fraction}"),
            (self.min_pixels >= 1, f"min_pixels must be >= 1, got {self.min_pixels}"),
            (self.max_classes == 0 or self.max_classes >= 2, f"max_classes must be 0 (K fixed) or >= 2, got {self.max_classes}"),
            (self.class_init in CLASS_INITS, f"class_init must be one of {CLASS_INITS}, got {self.class_init!r}"),
            (0 <= self.init_fraction <= 1, f"init_fraction must be in [0, 1], got {self.init_fraction}"),
            (0 < self.restart_fraction <= 1, f"restart_fraction must be in (0, 1], got {self.restart_fraction}"),
            (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}"),
        ]
        raise_first_failure(checks)

    def scored_fraction(self, n_pixels: int) -> float:
        """The pixel fraction a step scores on patches of ``n_pixels`` pixels: ``pixel_fraction``,
        raised so that at least ``min_pixels`` pixels are scored (at most all of them).

        Parameters
        ----------
        n_pixels : int
            Pixels per patch (W·W).

        Returns
        -------
        float
            ``min(1, max(pixel_fraction, min_pixels / n_pixels))``.
        """
        return min(1.0, max(self.pixel_fraction, self.min_pixels / n_pixels))

    def to_dict(self) -> dict:
        """The settings as a plain dict.

        Returns
        -------
        dict
            Field name → value (:func:`dataclasses.asdict`).
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The settings from a dict such as :meth:`to_dict` writes.

        Parameters
        ----------
        data : dict
            Field name → value; absent fields take their defaults.

        Returns
        -------
        TrainConfig
            The settings (not validated).

        Raises
        ------
        ParameterError
            When ``data`` has keys that are not fields.
        """
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ParameterError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**data)


#: Settings that :func:`configs_from_settings` accepts besides the two dataclasses' own fields.
SETTING_ALIASES = {
    "classes": "n_classes, the number of discrete classes K, or 'auto' (K chosen in 2…max_classes)",
    "hidden": "one width for every hidden layer (encoder 2 layers, MLP decoder 3: the paper's layout)",
}


def setting_names() -> set[str]:
    """Every key :func:`configs_from_settings` accepts (a TOML [train] section, the CLI's options).

    Returns
    -------
    set of str
        The fields of :class:`JTRVAEConfig` and :class:`TrainConfig` and the keys of
        :data:`SETTING_ALIASES`, less ``n_classes`` (spelled ``classes``).
    """
    return ({f.name for f in fields(JTRVAEConfig)} | {f.name for f in fields(TrainConfig)} | set(SETTING_ALIASES)) - {"n_classes"}


def configs_from_settings(settings: dict) -> tuple[JTRVAEConfig, TrainConfig]:
    """Split flat user settings into a :class:`JTRVAEConfig` and a :class:`TrainConfig`.

    Keys are the two dataclasses' field names plus the aliases in :data:`SETTING_ALIASES`; a key that
    is absent takes the dataclass default (the validated recipe), so the CLI, a pipeline TOML file
    and the library share one set of defaults. ``likelihood`` defaults to 'auto' (resolved from the
    data by :func:`microvae.stages.run_train`); ``mean_offset`` to on exactly when both
    ``rotation`` and ``translation`` are off and ``class_init`` is not 'none'; ``template_pose``
    to on exactly for models with ``rotation``, the MLP encoder and decoder and K ≥ 2 whose
    ``class_init`` is not 'none'. Unknown keys raise :class:`ParameterError`.

    Parameters
    ----------
    settings : dict
        Flat settings (lists become tuples). ``classes`` is a whole number or 'auto' (then
        ``n_classes`` 2 as a placeholder and ``max_classes`` the given one, else 6); ``hidden``
        sets ``encoder_hidden`` (2 layers) and ``decoder_hidden`` (3 layers) unless they are given.

    Returns
    -------
    tuple of (JTRVAEConfig, TrainConfig)
        The model's and the training's settings (not validated).

    Raises
    ------
    ParameterError
        When a key is unknown or ``classes`` is neither a whole number nor 'auto'.
    """
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
    unknown = set(values) - setting_names()
    if unknown:
        raise ParameterError(f"unknown training settings: {', '.join(sorted(unknown))}")
    if values.get("classes") == "auto":  # K chosen from the data in 2…max_classes (placeholder 2)
        values.pop("classes")
        values["n_classes"] = 2
        values["max_classes"] = int(values.get("max_classes") or 6)
    elif "classes" in values:
        try:
            values["n_classes"] = int(values.pop("classes"))
        except (TypeError, ValueError):
            raise ParameterError(f"classes must be a whole number or 'auto', got {settings['classes']!r}") from None
    if "hidden" in values:
        width = int(values.pop("hidden"))
        values.setdefault("encoder_hidden", (width, width))
        values.setdefault("decoder_hidden", (width, width, width))
    values.setdefault("likelihood", "auto")
    model_fields = {f.name for f in fields(JTRVAEConfig)}
    model = JTRVAEConfig(**{k: v for k, v in values.items() if k in model_fields})
    train = TrainConfig(**{k: v for k, v in values.items() if k not in model_fields})
    if "mean_offset" not in values:  # on for centred, upright patches (lattices, FFT), off for the paper's procedure; see JTRVAEConfig
        model.mean_offset = not (model.rotation or model.translation) and train.class_init != "none"
    if "template_pose" not in values:  # on where objects turn and the classes start from a partition; see JTRVAEConfig
        model.template_pose = model.rotation and model.n_classes >= 2 and train.class_init != "none" and model.decoder == model.encoder == "mlp"
    if "pose_edge_sigmas_px" not in values and model.template_pose:  # the searched turns read edges; see JTRVAEConfig
        model.pose_edge_sigmas_px = EDGE_SIGMAS_PX
    if "pose_refine_steps" not in values and model.template_pose:  # the searched turns are refined off the grid; see JTRVAEConfig
        model.pose_refine_steps = POSE_REFINE_STEPS
    if "pose_candidates" not in values and model.template_pose:  # the best few turns are refined; see JTRVAEConfig
        model.pose_candidates = POSE_CANDIDATES
    return model, train


@dataclass
class RefineConfig:
    """Settings of per-sample refinement.

    Attributes
    ----------
    steps : int, default 0
        Adam steps per patch (0 = no refinement).
    lr : float, default 0.05
        Adam learning rate on the variational parameters (latent units; log units for sds).
    eval_draws : int, default 8
        Reparametrised draws averaged to estimate each patch's negative ELBO before and
        after (the same draws for both, so the two are compared pairwise).
    seed : int, default 0
        Seeds the draws.
    """

    steps: int = 0
    lr: float = 0.05
    eval_draws: int = 8
    seed: int = 0

    def validate(self) -> None:
        """Check the settings.

        Raises
        ------
        ParameterError
            When ``steps`` < 0, ``lr`` ≤ 0 or ``eval_draws`` < 1.
        """
        if self.steps < 0:
            raise ParameterError(f"refine steps must be ≥ 0, got {self.steps}")
        if not self.lr > 0:
            raise ParameterError(f"refine learning rate must be > 0, got {self.lr}")
        if self.eval_draws < 1:
            raise ParameterError(f"eval_draws must be ≥ 1, got {self.eval_draws}")


@dataclass
class EncodeConfig:
    """How ``encode`` runs a trained model over patches; the CLI and the pipeline read their
    defaults from here.

    Attributes
    ----------
    device : str, default 'auto'
        'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.
    batch_size : int, default 1024
        Patches per forward pass (lowered to fit the device when scores are computed).
    scores : bool, default True
        Also each patch's reconstruction error and −ELBO (1 + K decoder passes over every
        pixel); False runs the encoder alone.
    amp : bool, default False
        bfloat16 autocast on CUDA (ignored on the CPU).
    memory_limit_bytes : int, default 1_000_000_000
        Patches larger than this many bytes (as float32) are read block by block (1 GB, as
        :data:`microvae.streaming.RESIDENT_LIMIT_BYTES`).
    refine : RefineConfig
        Per-patch posterior refinement against the fixed decoder (steps 0 = off).
    template_angle : bool or None, default None
        With a run that has class templates (trained with rotation): also each patch's angle and
        match against its class template, found by search (:mod:`microvae.templates`; 72 turns
        and the shifts per patch, then six Gauss-Newton steps; about 700 patches/s at 32² on 2
        CPU cores before those steps, not remeasured since). None: with scores
        only, so that ``scores=False`` stays the encoder alone.
    """

    device: str = "auto"
    batch_size: int = 1024
    scores: bool = True
    amp: bool = False
    template_angle: bool | None = None
    memory_limit_bytes: int = 1_000_000_000  # as microvae.streaming.RESIDENT_LIMIT_BYTES (1 GB)
    refine: RefineConfig = field(default_factory=RefineConfig)

    @property
    def uses_template_angle(self) -> bool:
        """Whether encode reads the template angle (``template_angle``, or with scores when None)."""
        return self.scores if self.template_angle is None else self.template_angle

    def validate(self) -> None:
        """Check the settings (and those of ``refine``).

        Raises
        ------
        ParameterError
            When ``batch_size`` < 1, ``memory_limit_bytes`` < 0, ``refine`` is invalid, or
            refinement is asked for without scores.
        """
        if self.batch_size < 1:
            raise ParameterError(f"encode batch size must be ≥ 1, got {self.batch_size}")
        if self.memory_limit_bytes < 0:
            raise ParameterError(f"memory limit must be ≥ 0 bytes, got {self.memory_limit_bytes}")
        self.refine.validate()
        if self.refine.steps and not self.scores:
            raise ParameterError("encode --refine optimises each patch's −ELBO and records it: it cannot be combined with --no-scores")


# --- the stages around training ------------------------------------------------------------------

STACK_AS = ("frames", "channels")  # how a 3-D stack in one file is read (microvae.images.read_scans)
#: What ``export`` can write besides ``maps.h5``: h5 (maps.h5 only), tiff (one calibrated TIFF per
#: map), png (overlays), hspy (HyperSpy signals, one per map family), tiff-stack (one ImageJ
#: hyperstack per scan, a labelled slice per map).
EXPORT_FORMATS = ("h5", "tiff", "png", "hspy", "tiff-stack")
#: What ``export`` writes unless told.
DEFAULT_EXPORT_FORMATS = ("h5", "tiff", "png")


def _split_settings(settings: dict[str, Any], names: set[str], section: str) -> dict[str, Any]:
    """The settings as a dict, after refusing unknown keys (named, with the allowed ones)."""
    unknown = set(settings) - names
    if unknown:
        raise ParameterError(f"unknown key(s) {', '.join(sorted(unknown))} in [{section}]; allowed: {', '.join(sorted(names))}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}


class NestedSettings:
    """What :class:`FindAtomsConfig` and :class:`ExtractConfig` share: a stage config that holds one
    dataclass of parameters (the field named by ``NESTED``) beside plain fields, and reads and
    writes *flat settings*: the nested dataclass's fields with the plain ones, in one dict (the
    keys of the pipeline's TOML section ``SECTION``; the recipe a run replays on new scans).
    """

    NESTED: ClassVar[str]
    SECTION: ClassVar[str]

    @classmethod
    def setting_names(cls) -> set[str]:
        """The flat settings' keys.

        Returns
        -------
        set of str
            The fields of the nested parameters with the config's own fields.
        """
        own = [f for f in fields(cls) if f.name != cls.NESTED]
        nested = next(f for f in fields(cls) if f.name == cls.NESTED).default_factory
        return {f.name for f in fields(nested)} | {f.name for f in own}

    @classmethod
    def from_settings(cls, settings: dict[str, Any], section: str | None = None):
        """From flat settings; absent keys take the defaults.

        Parameters
        ----------
        settings : dict of str to Any
            Flat settings (lists become tuples).
        section : str, optional
            The TOML section named in an error message (default ``SECTION``).

        Returns
        -------
        NestedSettings
            An instance of the class it is called on (not validated).

        Raises
        ------
        ParameterError
            A key that is not a setting (named, with the allowed ones).
        """
        values = _split_settings(settings, cls.setting_names(), section or cls.SECTION)
        own = {f.name for f in fields(cls) if f.name != cls.NESTED}
        plain = {key: values.pop(key) for key in own if key in values}
        nested = next(f for f in fields(cls) if f.name == cls.NESTED).default_factory
        return cls(nested(**values), **plain)

    def settings(self) -> dict[str, Any]:
        """The flat settings.

        Returns
        -------
        dict of str to Any
            The nested parameters' fields with the config's own fields.
        """
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != self.NESTED}
        return {**asdict(getattr(self, self.NESTED)), **own}


@dataclass
class FindAtomsConfig(NestedSettings):
    """``find-atoms`` as a stage: how columns are detected in each image, and how scans are read.

    The flat settings (a pipeline's ``[find_atoms]`` keys; the recipe a run replays on new scans)
    are the fields of ``detection`` with ``channel`` and ``stack_as``.

    Attributes
    ----------
    detection : FindAtomsParams
        The detection and refinement parameters (:class:`~microvae.atoms.FindAtomsParams`).
    channel : int, default 0
        Channel of a multichannel scan used for detection (0-based).
    stack_as : str, default 'frames'
        Read a 3-D stack as separate ``frames`` or as co-registered ``channels``.
    """

    NESTED: ClassVar[str] = "detection"
    SECTION: ClassVar[str] = "find_atoms"

    detection: FindAtomsParams = field(default_factory=FindAtomsParams)
    channel: int = 0
    stack_as: str = "frames"

    def validate(self) -> None:
        """Check the settings (and those of ``detection``).

        Raises
        ------
        ParameterError
            When ``detection`` is invalid, ``channel`` < 0 or ``stack_as`` is not in :data:`STACK_AS`.
        """
        self.detection.validate()
        if self.channel < 0:
            raise ParameterError(f"--channel {self.channel}: expected a channel number ≥ 0")
        if self.stack_as not in STACK_AS:
            raise ParameterError(f"--stack-as {self.stack_as!r}: expected one of {', '.join(STACK_AS)}")


@dataclass
class ExtractConfig(NestedSettings):
    """``extract`` as a stage: where and how patches are cut, how scans are read, how they are stored.

    The flat settings (a pipeline's ``[extract]`` keys; the recipe a run replays) are the fields
    of ``patches`` with ``stack_as`` and ``compression``.

    Attributes
    ----------
    patches : PatchParams
        Window, grid step, FFT, normalisation, edges, sublattices
        (:class:`~microvae.patches.PatchParams`); ``patches.grid_step`` None cuts one patch per atom.
    stack_as : str, default 'frames'
        Read a 3-D stack as ``frames`` or co-registered ``channels`` (C×W×W patches).
    compression : str, default 'gzip'
        ``gzip`` or ``none`` (larger files that read faster).
    """

    NESTED: ClassVar[str] = "patches"
    SECTION: ClassVar[str] = "extract"

    patches: PatchParams = field(default_factory=PatchParams)
    stack_as: str = "frames"
    compression: str = "gzip"

    def validate(self) -> None:
        """Check the settings (and those of ``patches``).

        Raises
        ------
        ParameterError
            When ``patches`` is invalid, ``stack_as`` is not in :data:`STACK_AS` or
            ``compression`` is neither gzip nor none.
        """
        self.patches.validate()
        if self.stack_as not in STACK_AS:
            raise ParameterError(f"--stack-as {self.stack_as!r}: expected one of {', '.join(STACK_AS)}")
        if self.compression not in ("gzip", "none"):
            raise ParameterError(f"--compression {self.compression!r}: expected gzip or none")


@dataclass
class ExportConfig:
    """``export`` as a stage.

    Attributes
    ----------
    formats : tuple of str, default ('h5', 'tiff', 'png')
        Files to write besides ``maps.h5`` (always written): a subset of
        :data:`EXPORT_FORMATS` (default :data:`DEFAULT_EXPORT_FORMATS`).
    radius : float or None, default None
        Pixels farther than this (px) from every patch centre are missing in the maps;
        None: half the patch window.
    """

    formats: tuple[str, ...] = DEFAULT_EXPORT_FORMATS
    radius: float | None = None

    @staticmethod
    def setting_names() -> set[str]:
        """The flat settings' keys.

        Returns
        -------
        set of str
            ``formats`` and ``radius``.
        """
        return {f.name for f in fields(ExportConfig)}

    @classmethod
    def from_settings(cls, settings: dict[str, Any], section: str = "export") -> ExportConfig:
        """From flat settings; absent keys take the defaults.

        Parameters
        ----------
        settings : dict of str to Any
            Flat settings; ``formats`` a list or a comma-separated string.
        section : str, default "export"
            The TOML section named in the error message.

        Returns
        -------
        ExportConfig
            The settings (not normalised; see :meth:`normalised`).

        Raises
        ------
        ParameterError
            When a key is unknown (the message lists the allowed ones).
        """
        values = _split_settings(settings, cls.setting_names(), section)
        if isinstance(values.get("formats"), str):
            values["formats"] = tuple(values["formats"].split(","))
        return cls(**values)

    def normalised(self) -> ExportConfig:
        """A copy with the formats stripped, lower-case and without repeats; validated.

        Returns
        -------
        ExportConfig
            The copy.

        Raises
        ------
        ParameterError
            When a format is unknown or none is left, or ``radius`` is not a positive number of px.
        """
        formats = tuple(dict.fromkeys(f.strip().lower() for f in self.formats if f.strip()))
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown or not formats:
            raise ParameterError(f"unknown export format(s) {', '.join(unknown) or '(none)'}; expected a comma-separated subset of {','.join(EXPORT_FORMATS)}")
        if self.radius is not None and not self.radius > 0:
            raise ParameterError(f"--radius {self.radius}: expected a positive number of pixels")
        return replace(self, formats=formats)

"""What a trained model says about each patch, and whether a new scan lies outside what it saw.

:func:`microvae.encoding.encode_array` gives per patch the reconstruction error and the
negative ELBO (nats, the model's loss at β = 1, one fixed-seed draw of the latents).
:class:`ScoreStatistics` summarises them on the training patches (saved in the run folder as ``training_stats.json``) so that
:func:`scan_summaries` can compare every new scan with the training data, as the paper's Fig. 7
does for a scan with new defect types: a scan whose patches reconstruct much worse, or have a
much lower ELBO, than the training patches is outside the model's experience.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from .config import RefineConfig
from .devices import activation_budget, resolve_device
from .models import JTRVAE
from .refine import refine_posterior
from .run_folder import ScoreStatistics
from .streaming import PatchFile
from .training import check_images

__all__ = ["device_batches", "encode_array", "measure_encode_rate", "neighbour_product", "observed_classes", "scan_summaries", "store_batch"]


def neighbour_product(fields: torch.Tensor) -> torch.Tensor:
    """Mean product of the values of horizontally and vertically adjacent pixels of each image.

    Of a zero-mean field (a residual, or a patch minus the mean patch) this is its covariance at
    a lag of one pixel: pixel-independent noise (Poisson, Gaussian, salt-and-pepper) adds nothing
    to it, while anything drawn over several pixels (an object, a column, a background) does. It
    separates a model that reproduced the structure of noisy patches, leaving white noise, from
    one that reproduced nothing.

    Parameters
    ----------
    fields : torch.Tensor
        (N, C, H, W) zero-mean fields, H, W >= 2.

    Returns
    -------
    torch.Tensor
        (N,) the mean over channels and over both directions of the adjacent pixels' products,
        in the fields' units squared.
    """
    down = (fields[..., 1:, :] * fields[..., :-1, :]).flatten(1).mean(1)
    across = (fields[..., :, 1:] * fields[..., :, :-1]).flatten(1).mean(1)
    return 0.5 * (down + across)


def scan_summaries(
    image_index: np.ndarray, recon_error: np.ndarray | None, neg_elbo: np.ndarray | None, names: list[str], training: dict[str, ScoreStatistics] | None
) -> list[dict]:
    """Per scan: mean recon error and negative ELBO, and how they compare with the training patches.

    Parameters
    ----------
    image_index : (N,) int ndarray
        The scan of each patch (an index into ``names``).
    recon_error, neg_elbo : (N,) ndarray or None
        Each patch's reconstruction error and negative ELBO (nats); None without scores
        (``encode --no-scores``).
    names : list of str
        One name per scan.
    training : dict of str to ScoreStatistics, optional
        The run's statistics of the training patches (``"recon_error"``, ``"neg_elbo"``).

    Returns
    -------
    list of dict
        One per scan: ``scan``, ``patches`` (count) and, with scores, ``mean_recon_error``,
        ``mean_neg_elbo`` (nats) and, with ``training``, ``recon_error_ratio`` and
        ``neg_elbo_ratio`` (the scan's mean over the training mean) and ``beyond_training_p99``:
        the fraction of the scan's patches whose negative ELBO exceeds the 99th percentile of the
        training patches (about 0.01 for a scan like the training data).
    """
    summaries = []
    for index, name in enumerate(names):
        members = image_index == index
        entry = {"scan": name, "patches": int(members.sum())}
        if members.any() and recon_error is not None and neg_elbo is not None:
            entry["mean_recon_error"] = float(recon_error[members].mean())
            entry["mean_neg_elbo"] = float(neg_elbo[members].mean())
            if training:
                entry["recon_error_ratio"] = entry["mean_recon_error"] / max(training["recon_error"].mean, 1e-12)
                entry["neg_elbo_ratio"] = entry["mean_neg_elbo"] / max(abs(training["neg_elbo"].mean), 1e-12)
                entry["beyond_training_p99"] = float((neg_elbo[members] > training["neg_elbo"].p99).mean())
        summaries.append(entry)
    return summaries


@torch.no_grad()
def encode_array(
    model: JTRVAE,
    images: np.ndarray,
    batch_size: int = 256,
    device: str = "auto",
    refine: RefineConfig | None = None,
    labels: np.ndarray | None = None,
    *,
    recon_error: bool = True,
    neg_elbo: bool = False,
    residual_neighbours: bool = False,
    seed: int = 0,
    amp: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Encode images with a trained model, in one pass over the images; numpy arrays out.

    Parameters
    ----------
    model : JTRVAE
        The trained model (moved to ``device`` and put in eval mode).
    images : (N, C, H, W) float32 ndarray or PatchFile
        An array, or a :class:`~microvae.streaming.PatchFile` read block by block.
    batch_size : int, default 256
        Largest batch; lowered to what the device's memory allows when decoder passes are made.
    device : str, default "auto"
        A torch device name (:func:`microvae.devices.resolve_device`).
    refine : RefineConfig, optional
        With ``steps > 0`` every patch's posterior is first optimised against the fixed decoder
        (:mod:`microvae.refine`) and the summaries are those of the refined posterior.
    labels : (N,) int ndarray, optional
        The known class of some images (−1 = unknown), as in training with labels (a conditional
        model when every image has one): their ``class_probs`` are that class (one-hot) and their
        reconstruction and −ELBO use it.
    recon_error : bool, default True
        Compute ``recon_error`` (one decoder pass per image).
    neg_elbo : bool, default False
        Compute ``neg_elbo`` (K decoder passes per image).
    residual_neighbours : bool, default False
        With ``recon_error``, also ``recon_neighbour_product``.
    seed : int, default 0
        Seed of the generator of the reparametrised draws.
    amp : bool, default False
        Run the networks under bfloat16 autocast on CUDA (ignored on the CPU).
    progress : callable, optional
        Called with (images done, total) after every batch.

    Returns
    -------
    dict of str to ndarray
        The encoder alone gives ``class_probs`` (N, K') (K' = max(K, 1)), ``class`` (N,) argmax,
        ``z_mean``, ``z_sd`` (N, D), ``angle_rad`` (N,) (rad), ``angle_concentration`` (N,),
        ``shift_px`` (N, 2) (row, col) in px and ``shift_sd_px`` (N, 2). On request, each of which
        costs decoder passes over every pixel:

        - ``recon_error`` (N,): mean squared error between each image and its reconstruction from
          the posterior means with the argmax class; with ``residual_neighbours`` also
          ``recon_neighbour_product`` (N,), the :func:`neighbour_product` of that residual;
        - ``neg_elbo`` (N,) float64: the negative ELBO in nats at β = 1 (recon + KL_z + KL_τ + KL_y,
          analytic KLs, all K classes) at one reparametrised draw per image from a generator seeded
          with ``seed``; deterministic for a fixed ``batch_size``;
        - with ``refine``: ``neg_elbo_encoder`` and ``neg_elbo_refined`` (N,), each patch's negative
          ELBO (nats) before and after, on the same draws (``neg_elbo`` is then not computed
          separately).

    Raises
    ------
    InputError, ParameterError
        The images do not fit the model (shape, NaN/Inf values, range of a Bernoulli model).

    Examples
    --------
    >>> import numpy as np
    >>> from microvae.config import JTRVAEConfig
    >>> from microvae.encoding import encode_array
    >>> from microvae.training import build_model
    >>> model = build_model(JTRVAEConfig(image_size=16, n_classes=2), seed=0)   # untrained
    >>> images = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    >>> out = encode_array(model, images, device="cpu")
    >>> out["class_probs"].shape, out["shift_px"].shape, out["recon_error"].shape
    ((4, 2), (4, 2), (4,))
    """
    data = check_images(images, model.config)
    target = resolve_device(device)
    model = model.to(target).eval()
    refining = refine is not None and refine.steps > 0
    neg_elbo = neg_elbo and not refining
    if recon_error or neg_elbo or refining:
        batch_size = min(batch_size, model.batch_limit(activation_budget(target)))
    generator = torch.Generator(device=target).manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and target.type == "cuda" and not refining)
    out: dict[str, np.ndarray] = {}  # filled in place: many small kept arrays fragment the heap
    for start, x in device_batches(data, batch_size, target):
        known = None if labels is None else torch.as_tensor(labels[start : start + len(x)], device=target)
        batch: dict[str, torch.Tensor] = {}
        with autocast:
            if refining:
                batch_refine = replace(refine, seed=refine.seed + start)
                posterior, batch["neg_elbo_encoder"], batch["neg_elbo_refined"] = refine_posterior(model, x, model.posterior(x), batch_refine)
            else:
                posterior = model.posterior(x)
            enc = model.summarise(posterior)
            if known is not None:
                enc["class_probs"] = observed_classes(enc["class_probs"], known)
            classes = enc["class_probs"].argmax(1)
            batch.update(
                {
                    "class_probs": enc["class_probs"],
                    "class": classes,
                    "z_mean": enc["z_mean"],
                    "z_sd": enc["z_sd"],
                    "angle_rad": enc["angle_rad"],
                    "angle_concentration": enc["angle_concentration"],
                    "shift_px": enc["shift"],
                    "shift_sd_px": enc["shift_sd"],
                }
            )
            if recon_error:
                onehot = torch.nn.functional.one_hot(classes, model.n_enumerated).float()
                recon = model.decode(
                    enc["z_mean"], onehot, enc["angle_rad"] if model.config.rotation else None, enc["shift"] if model.config.translation else None
                )
                residual = recon.float() - x
                batch["recon_error"] = (residual**2).flatten(1).mean(1)
                if residual_neighbours and x.shape[-1] >= 2 and x.shape[-2] >= 2:
                    batch["recon_neighbour_product"] = neighbour_product(residual)
            if neg_elbo:
                terms = model.loss_terms(x, generator, posterior=posterior, labels=known)
                batch["neg_elbo"] = model.negative_elbo(terms).double()
        store_batch(out, start, batch, len(data))
        if progress is not None:
            progress(start + len(x), len(data))
    return out


def measure_encode_rate(
    model: JTRVAE,
    images,
    sample: int,
    batch_size: int = 256,
    device: str = "auto",
    refine: RefineConfig | None = None,
    *,
    recon_error: bool = True,
    neg_elbo: bool = False,
    amp: bool = False,
) -> float:
    """Patches per second that :func:`encode_array` reaches with these settings on this device.

    The first ``sample`` patches of ``images`` are encoded once untimed (8 of them: warm-up) and
    once timed, in batches of at most ``batch_size``. The timed pass is short, so on a GPU, where
    large batches pay off, the rate is a lower bound. Touches no random state of the caller.

    Parameters
    ----------
    model : JTRVAE
        The trained model.
    images : (N, C, H, W) ndarray or PatchFile
        Patches to time on.
    sample : int
        How many of them (the first ones).
    batch_size, device, refine, recon_error, neg_elbo, amp
        As for :func:`encode_array`.

    Returns
    -------
    float
        Patches per second.
    """
    count = min(int(sample), len(images))
    head = images.take(np.arange(count)) if isinstance(images, PatchFile) else images[:count]
    settings = {"batch_size": min(batch_size, count), "device": device, "refine": refine, "recon_error": recon_error, "neg_elbo": neg_elbo, "amp": amp}
    encode_array(model, head[: min(8, count)], **settings)
    started = time.perf_counter()
    encode_array(model, head, **settings)
    return count / max(time.perf_counter() - started, 1e-9)


def device_batches(data: np.ndarray | PatchFile, batch_size: int, device: torch.device):
    """The batches of ``data`` in order, on ``device``.

    A :class:`PatchFile` is read block by block (whole HDF5 chunks, each decompressed once), not
    batch by batch; on CUDA each batch goes through pinned memory with a non-blocking copy.

    Parameters
    ----------
    data : (N, C, H, W) float32 ndarray or PatchFile
        The images.
    batch_size : int
        Largest batch.
    device : torch.device
        Where the batches go.

    Yields
    ------
    first : int
        Row of the batch's first image.
    x : (B, C, H, W) float32 tensor
        The batch, on ``device``.
    """
    blocks = data.blocks() if isinstance(data, PatchFile) else [(0, data)]
    for first, block in blocks:
        for offset in range(0, len(block), batch_size):
            x = torch.from_numpy(block[offset : offset + batch_size])
            if device.type == "cuda":
                x = x.pin_memory()
            yield first + offset, x.to(device, non_blocking=True)


def observed_classes(class_probs: torch.Tensor, labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Class probabilities with the rows of known labels replaced by one-hots.

    Parameters
    ----------
    class_probs : (B, K') tensor
        The encoder's class probabilities.
    labels : (B,) int tensor or ndarray
        Known class of each row, −1 = unknown.

    Returns
    -------
    (B, K') tensor
    """
    known = torch.as_tensor(labels, device=class_probs.device)
    onehot = torch.nn.functional.one_hot(known.clamp_min(0), class_probs.shape[1]).to(class_probs.dtype)
    return torch.where((known >= 0)[:, None], onehot, class_probs)


def store_batch(out: dict[str, np.ndarray], start: int, batch: dict[str, torch.Tensor], count: int) -> None:
    """Write a batch's values into ``out`` in place.

    Half-precision values (bf16 autocast) are stored as float32. One synchronisation per batch on
    CUDA.

    Parameters
    ----------
    out : dict of str to ndarray
        The arrays being filled; ``out[key]`` is allocated for ``count`` rows on first use.
    start : int
        Row of the batch's first value.
    batch : dict of str to tensor
        (B, ...) values per key.
    count : int
        Total rows N.
    """
    wide = {key: value.float() if value.dtype in (torch.bfloat16, torch.float16) else value for key, value in batch.items()}
    host = {key: value.detach().to("cpu", non_blocking=True) for key, value in wide.items()}
    if any(value.is_cuda for value in batch.values()):
        torch.cuda.synchronize()
    for key, value in host.items():
        array = value.numpy()
        if key not in out:
            out[key] = np.empty((count,) + array.shape[1:], dtype=array.dtype)
        out[key][start : start + len(array)] = array

"""The images a run trains on: checks, the train/validation split, and batches.

:func:`check_images` and :func:`check_labels` refuse what the model cannot train on, with a
message; :func:`split_rows` is the seeded split into training and validation rows;
:class:`TrainingData` holds the images resident on the device or streams them from a
:class:`~microvae.streaming.PatchFile`, and deals out this process's share of each batch under DDP.
Used by :func:`microvae.training.fit` (re-exported there).
"""

from __future__ import annotations

import numpy as np
import torch

from .config import JTRVAEConfig
from .distributed import World
from .errors import InputError, ParameterError
from .streaming import PatchFile, shuffled_batches

__all__ = ["TrainingData", "check_images", "check_labels", "patch_mean", "split_rows"]


def check_images(images, config: JTRVAEConfig):
    """The images as contiguous float32, checked against the model.

    Parameters
    ----------
    images : (N, C, H, W) ndarray or PatchFile
        The images; a :class:`PatchFile` is only checked for its shape here (its values are
        checked block by block as they are read).
    config : JTRVAEConfig
        The model's settings (``channels``, ``image_size``, ``likelihood``).

    Returns
    -------
    (N, C, H, W) float32 ndarray or PatchFile
        The images, contiguous float32 (a :class:`PatchFile` as it was given).

    Raises
    ------
    InputError
        Not a 4-D array, fewer than 2 images, NaN or infinite values, or values outside [0, 1]
        for the Bernoulli likelihood.
    ParameterError
        Images of another (C, H, W) than the model expects.
    """
    if isinstance(images, PatchFile):
        _check_shape(images.shape, config)
        return images
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise InputError(f"expected images as an (N, C, H, W) array, got {getattr(images, 'shape', type(images))}")
    _check_shape(images.shape, config)
    data = np.ascontiguousarray(images, dtype=np.float32)
    if not np.isfinite(data).all():
        raise InputError("images contain NaN or infinite values")
    if config.likelihood == "bernoulli" and (data.min() < 0 or data.max() > 1):
        raise InputError(
            f"the Bernoulli likelihood needs intensities in [0, 1], got [{data.min():.3g}, {data.max():.3g}]; "
            "normalise the patches or use the Gaussian likelihood"
        )
    return data


def _check_shape(shape: tuple[int, ...], config: JTRVAEConfig) -> None:
    n, c, h, w = shape
    if (c, h, w) != (config.channels, config.image_size, config.image_size):
        raise ParameterError(f"images are {c}×{h}×{w} but the model expects {config.channels}×{config.image_size}×{config.image_size}")
    if n < 2:
        raise InputError(f"need at least 2 images to train, got {n}")


def check_labels(labels: np.ndarray, count: int, n_classes: int) -> np.ndarray:
    """(N,) int64 labels in [−1, K): −1 = unknown; refused with a message otherwise.

    Parameters
    ----------
    labels : (N,) int ndarray
        Each image's class, −1 where unknown.
    count : int
        The number of images N.
    n_classes : int
        The model's number of classes K.

    Returns
    -------
    (N,) int64 ndarray
        The labels.

    Raises
    ------
    InputError
        Not ``count`` integers, outside −1…K − 1, or all −1.
    ParameterError
        A model without classes (K < 1).
    """
    labels = np.asarray(labels)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise InputError(f"labels must be {count} integers (one per image, −1 = unknown), got shape {labels.shape} of {labels.dtype}")
    if n_classes < 1:
        raise ParameterError("labels need a model with classes (--classes 1 or more)")
    if labels.min(initial=-1) < -1 or labels.max(initial=-1) >= n_classes:
        raise InputError(f"labels must lie in 0…{n_classes - 1} (or −1 for unknown), got {labels.min()}…{labels.max()}")
    if not (labels >= 0).any():
        raise InputError("no image has a label (all −1)")
    return labels.astype(np.int64)


def patch_mean(images) -> np.ndarray:
    """The mean patch (C, W, W) float64 of (N, C, W, W) images, an array (accumulated in
    float64 without a float64 copy) or a :class:`~microvae.streaming.PatchFile` (read block by
    block).

    Parameters
    ----------
    images : (N, C, W, W) ndarray or PatchFile
        The patches (N ≥ 1).

    Returns
    -------
    (C, W, W) float64 ndarray
        Their mean, pixel by pixel.
    """
    if not isinstance(images, PatchFile):
        return np.asarray(images).mean(axis=0, dtype=np.float64)
    total = np.zeros(images.shape[1:], np.float64)
    for _, block in images.blocks():
        total += block.sum(axis=0, dtype=np.float64)
    return total / len(images)


def split_rows(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) row indices from ``seed``; at least one training image.

    Parameters
    ----------
    count : int
        The number of images.
    val_fraction : float
        The fraction held out for validation (rounded; at most ``count - 1`` rows).
    seed : int
        Seed of the permutation.

    Returns
    -------
    train, validation : int ndarray
        Row indices, both in the order of one seeded permutation (the resident path indexes in
        that order).
    """
    n_val = min(int(round(val_fraction * count)), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return order[n_val:], order[:n_val]


class TrainingData:
    """The images a run trains on: resident on the device as one tensor, or streamed from a
    :class:`~microvae.streaming.PatchFile` (see :mod:`microvae.streaming`), with the split into
    training and validation rows, the labels, and this process's share under DDP.

    An epoch (:meth:`epoch_batches`) is a sequence of global batches of ``batch_size × ranks``
    images, each rank taking every ``ranks``-th image of each; the last global batch is cut to a
    multiple of the number of ranks so that every rank makes the same number of steps.

    Parameters
    ----------
    images : (N, C, W, W) float32 ndarray or PatchFile
        Checked images (:func:`check_images`): an array is moved to ``device`` whole.
    labels : (N,) int ndarray or None
        Known classes, −1 where unknown.
    val_fraction : float
        Fraction of rows held out for validation (:func:`split_rows`).
    seed : int
        Seed of the split.
    device : torch.device
        Where batches are delivered.
    world : World
        This process's place in a DDP launch (:mod:`microvae.distributed`).
    initial : (N,) int ndarray, optional
        Initial classes (:mod:`microvae.discovery`); observed ``labels`` take precedence where
        known.
    class_turns : (N, K') float32 ndarray, optional
        Each image's turns against the classes' templates in rad (``JTRVAEConfig.template_pose``),
        delivered with it.
    """

    #: Streamed runs count classes per epoch on at most this many images.
    COUNT_SAMPLE = 20_000

    def __init__(
        self,
        images,
        labels: np.ndarray | None,
        val_fraction: float,
        seed: int,
        device: torch.device,
        world: World,
        initial: np.ndarray | None = None,
        class_turns: np.ndarray | None = None,
    ):
        self.device, self.world = device, world
        self.class_turns = None if class_turns is None else torch.from_numpy(np.asarray(class_turns, np.float32)).to(device)
        self.streamed = isinstance(images, PatchFile)
        train_rows, val_rows = split_rows(len(images), val_fraction, seed)
        self.labels = None if labels is None else torch.from_numpy(labels).to(device)
        self.initial = None
        if initial is not None:  # observed labels take precedence over initial classes
            merged = initial if labels is None else np.where(labels >= 0, labels, initial)
            self.initial = torch.from_numpy(merged).to(device)
        if self.streamed:
            self.source = images
            self.train_rows, self.val_rows = np.sort(train_rows), np.sort(val_rows)
        else:
            self.resident = torch.from_numpy(images).to(device)  # resident for the whole run
            self.train_rows = torch.from_numpy(train_rows).to(device)
            self.val_rows = torch.from_numpy(val_rows).to(device)

    def steps(self, batch_size: int) -> int:
        """Optimiser steps per epoch on this rank.

        Parameters
        ----------
        batch_size : int
            Images per batch per rank.

        Returns
        -------
        int
            ⌈(training rows // ranks) / batch_size⌉.
        """
        return -(-(len(self.train_rows) // self.world.size) // batch_size)

    def epoch_batches(self, batch_size: int, generator: torch.Generator, guided: bool = False):
        """The batches of one shuffled epoch, this rank's share of each.

        Parameters
        ----------
        batch_size : int
            Images per batch per rank.
        generator : torch.Generator
            The CPU generator of the shuffle.
        guided : bool, default False
            The labels are the initial classes (observed labels where known).

        Yields
        ------
        x : (B, C, W, W) float32 tensor
            Images, on the device.
        y : (B,) int64 tensor or None
            Their labels (−1 = unknown), None without labels.
        class_turns : (B, K') float32 tensor or None
            Their turns against the classes' templates, None without.

        Raises
        ------
        InputError
            Streamed patches contain NaN or Inf values.
        """
        labels = self.initial if guided else self.labels
        size, rank = self.world.size, self.world.rank
        if self.streamed:
            batches = shuffled_batches(self.source, self.train_rows, batch_size * size, generator)
        else:
            order = torch.randperm(len(self.train_rows), generator=generator).to(self.device)
            batches = ((rows, None) for rows in self.train_rows[order].split(batch_size * size))
        for rows, patches in batches:
            keep = len(rows) // size * size
            if keep == 0:
                continue
            rows = rows[rank:keep:size]
            if patches is None:
                x = self.resident[rows]
            else:
                patches = patches[rank:keep:size]
                if not np.isfinite(patches).all():
                    raise InputError(f"{self.source.path}: patches contain NaN or Inf values (near patch {int(rows[0])})")
                x = self._to_device(patches)
            index = torch.as_tensor(rows, device=self.device)
            y = None if labels is None else labels[index]
            yield x, y, None if self.class_turns is None else self.class_turns[index]

    def count_rows(self):
        """Rows whose classes are counted after each epoch.

        Returns
        -------
        int tensor or ndarray
            All rows when resident; when streamed, the validation rows (or the training rows
            without any) thinned to at most :attr:`COUNT_SAMPLE`.
        """
        if not self.streamed:
            return torch.arange(len(self.resident), device=self.device)
        rows = self.val_rows if len(self.val_rows) else self.train_rows
        return rows[:: max(1, -(-len(rows) // self.COUNT_SAMPLE))]

    def blocks(self, rows, batch_size: int):
        """The images at ``rows`` in blocks of ``batch_size``, on the device.

        Parameters
        ----------
        rows : int tensor or ndarray
            Row indices.
        batch_size : int
            Images per block.

        Yields
        ------
        x : (B, C, W, W) float32 tensor
            One block, on the device.
        class_turns : (B, K') float32 tensor or None
            Its turns against the classes' templates, None without.
        """
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            x = self.resident[part] if not self.streamed else self._to_device(self.source.take(part))
            yield x, None if self.class_turns is None else self.class_turns[torch.as_tensor(part, device=self.device)]

    def _to_device(self, patches: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(patches)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

"""numpy / torch helpers: the numerical core is written once for numpy arrays and torch tensors."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["array_module", "as_float32", "chunk_workers", "f64", "like", "percentiles", "to_numpy"]


def array_module(array):
    """The array module of ``array``: numpy, or torch for a tensor.

    Parameters
    ----------
    array : ndarray or Tensor
        The array.

    Returns
    -------
    module
        :mod:`numpy` for a numpy array, else :mod:`torch` (imported on demand).
    """
    if isinstance(array, np.ndarray):
        return np
    import torch

    return torch


def to_numpy(array, dtype=None) -> np.ndarray:
    """A numpy array of a numpy array or (any device's) torch tensor.

    Parameters
    ----------
    array : ndarray or Tensor
        The array (a tensor is detached and copied to the CPU).
    dtype : dtype, optional
        Cast to this dtype (without a copy when it already has it); None keeps the dtype.

    Returns
    -------
    ndarray
        The values, same shape.
    """
    if not isinstance(array, np.ndarray):
        array = array.detach().cpu().numpy()
    return array if dtype is None else array.astype(dtype, copy=False)


def like(values, reference):
    """``values`` (numpy) as an array of ``reference``'s kind (and torch device).

    Parameters
    ----------
    values : array_like
        The values (a read-only array is copied before it becomes a tensor).
    reference : ndarray or Tensor
        The array whose kind (and device) to match.

    Returns
    -------
    ndarray or Tensor
        ``values`` as a numpy array, or as a tensor on ``reference``'s device.
    """
    if isinstance(reference, np.ndarray):
        return np.asarray(values)
    import torch

    values = np.asarray(values)
    return torch.as_tensor(values if values.flags.writeable else values.copy(), device=reference.device)


def f64(array):
    """``array`` in float64, of the same kind.

    Parameters
    ----------
    array : ndarray or Tensor
        The array.

    Returns
    -------
    ndarray or Tensor
        A float64 copy (numpy) or double tensor.
    """
    return array.astype(np.float64) if isinstance(array, np.ndarray) else array.double()


def as_float32(image) -> np.ndarray:
    """One 2D image as a C-contiguous float32 numpy array.

    Parameters
    ----------
    image : array_like
        (H, W) image.

    Returns
    -------
    ndarray
        (H, W) float32, C-contiguous (no copy when it already is).

    Raises
    ------
    ParameterError
        When ``image`` is not 2D.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ParameterError(f"atom finding needs one 2D image, got shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.float32)


def percentiles(values, percents) -> np.ndarray:
    """np.percentile (linear interpolation) of a float array or tensor, as float64 numpy.

    Parameters
    ----------
    values : ndarray or Tensor
        1D values (computed in float64; a tensor beyond torch.quantile's 2²⁴ elements is sorted).
    percents : array_like
        Percentiles in [0, 100].

    Returns
    -------
    ndarray
        float64 percentiles, shaped as ``percents``.
    """
    if isinstance(values, np.ndarray):
        return np.percentile(values.astype(np.float64), percents)
    import torch

    values = values.double()
    if values.numel() <= 1 << 24:  # torch.quantile's limit
        return to_numpy(torch.quantile(values, torch.as_tensor(np.asarray(percents, dtype=np.float64) / 100.0, device=values.device)))
    ordered = torch.sort(values).values
    position = np.asarray(percents, dtype=np.float64) / 100.0 * (ordered.numel() - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, ordered.numel() - 1)
    low, high = to_numpy(ordered[like(below, ordered)]), to_numpy(ordered[like(above, ordered)])
    return low + (position - below) * (high - low)


def chunk_workers() -> int:
    """Threads that fit chunks of columns side by side on the CPU: the cores this process may use, at most 4.

    Returns
    -------
    int
        At least 1.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))

"""Patches larger than memory: a lazy view of a chunked HDF5 dataset and shuffled batches from it.

``train`` and ``encode`` keep the patches resident (one array, on the device for training) when
they fit under :data:`RESIDENT_LIMIT_BYTES`; above it they read a :class:`PatchFile` block by block,
so peak memory is set by the block and shuffle-buffer sizes, not by the number of patches.

Shuffling a stream (:func:`shuffled_batches`): every epoch the HDF5 chunks (``extract`` writes
chunks of about 1 MiB, e.g. 256 patches of 32×32) are visited in a fresh random order; the rows of
``buffer_rows // chunk_rows`` consecutive chunks of that order are loaded into a buffer and cut into
batches after a random permutation of the buffer. Each training row is used exactly once per epoch,
and every batch mixes rows of many chunks drawn from anywhere in the file; what it gives up against
a full permutation is that two rows of the same chunk land in the same buffer, which for atom-centred
patches (written scan by scan, in detection order) means the same scan region. Use a buffer of
many chunks (the default holds 64 MiB of patches) so that a batch spans many regions and scans.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from .errors import InputError

__all__ = ["BLOCK_BYTES", "RESIDENT_LIMIT_BYTES", "SHUFFLE_BUFFER_BYTES", "PatchFile", "evenly_spaced", "evenly_spaced_rows", "shuffled_batches", "value_range"]

#: Patch arrays above this size are streamed from their file instead of read into memory.
RESIDENT_LIMIT_BYTES = 1_000_000_000  # 1 GB: the CLI's --memory-limit-gb 1
#: Bytes of patches one shuffle buffer holds while streaming.
SHUFFLE_BUFFER_BYTES = 64 << 20
#: Bytes of patches read per block by sequential passes (encoding, statistics).
BLOCK_BYTES = 16 << 20


class PatchFile:
    """A read-only, lazy (N, C, W, W) float32 view of one HDF5 dataset (a patches artifact's
    ``patches``), read in slices. Supports ``len``, ``.shape``, ``.nbytes`` and ``view[a:b]`` (a
    contiguous slice, read from disk as float32) so that code written for arrays that only slices
    them works on it unchanged.

    Parameters
    ----------
    path : str or path
        The HDF5 file (kept open, read-only, until :meth:`close`).
    dataset : str, default "patches"
        The dataset, (N, C, W, W).

    Attributes
    ----------
    path : Path
        The file.
    dataset : str
        The dataset's name.
    shape : tuple of int
        (N, C, W, W).
    chunk_rows : int
        Rows per HDF5 chunk (for an unchunked dataset, the rows of :data:`BLOCK_BYTES`).
    """

    def __init__(self, path: str | Path, dataset: str = "patches"):
        import h5py

        self.path, self.dataset = Path(path), dataset
        self._handle = h5py.File(self.path, "r")
        data = self._handle[dataset]
        self.shape = tuple(int(s) for s in data.shape)
        self.chunk_rows = int(data.chunks[0]) if data.chunks else max(1, BLOCK_BYTES // self.row_bytes)

    @property
    def row_bytes(self) -> int:
        return 4 * int(np.prod(self.shape[1:]))

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("a PatchFile reads contiguous slices only; use take() for other rows")
        return np.asarray(self._handle[self.dataset][rows], dtype=np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The patches at sorted row indices (reads each touched chunk once).

        Parameters
        ----------
        rows : (M,) int ndarray
            Sorted row indices.

        Returns
        -------
        (M, C, W, W) float32 ndarray
            The patches, in memory.
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + self.shape[1:], dtype=np.float32)
        chunk_of = rows // self.chunk_rows
        bounds = np.flatnonzero(np.diff(chunk_of)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(rows)]):
            first = int(chunk_of[start]) * self.chunk_rows
            block = self[first : min(first + self.chunk_rows, self.shape[0])]
            out[start:stop] = block[rows[start:stop] - first]
        return out

    def blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Consecutive blocks over the whole dataset.

        Parameters
        ----------
        block_rows : int, optional
            Rows per block (default: a multiple of the chunk rows near :data:`BLOCK_BYTES`).

        Yields
        ------
        first : int
            The block's first row.
        patches : (B, C, W, W) float32 ndarray
            The block.
        """
        step = block_rows or max(self.chunk_rows, (BLOCK_BYTES // self.row_bytes) // self.chunk_rows * self.chunk_rows)
        for start in range(0, self.shape[0], step):
            yield start, self[start : start + step]

    def close(self) -> None:
        """Close the HDF5 file."""
        self._handle.close()

    def __del__(self):
        try:
            self._handle.close()
        except Exception:
            pass


def value_range(images: np.ndarray | PatchFile, name: str) -> tuple[float, float]:
    """(min, max) over all patches, read block by block for a :class:`PatchFile`.

    Parameters
    ----------
    images : (N, C, W, W) ndarray or PatchFile
        The patches.
    name : str
        Their source, named in the message.

    Returns
    -------
    tuple of (float, float)
        The lowest and highest value ((inf, −inf) when there are none).

    Raises
    ------
    InputError
        NaN or Inf values (naming ``name`` and the first bad patch for a file).
    """
    low, high = np.inf, -np.inf
    parts = images.blocks() if isinstance(images, PatchFile) else [(0, images)]
    for start, block in parts:
        finite = np.isfinite(block).reshape(len(block), -1).all(1)
        if not finite.all():
            raise InputError(f"{name}: patches contain NaN or Inf values (first at patch {start + int(np.argmin(finite))})")
        if block.size:
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    return low, high


def evenly_spaced(images: np.ndarray | PatchFile, limit: int) -> np.ndarray:
    """At most ``limit`` patches, evenly spaced over the rows (all of them when fewer), in memory.

    Parameters
    ----------
    images : (N, C, W, W) ndarray or PatchFile
        The patches.
    limit : int
        The most patches to keep (0 = all).

    Returns
    -------
    (M, C, W, W) ndarray
        The rows :func:`evenly_spaced_rows` picks (a strided view of an array; read from a
        :class:`PatchFile`).
    """
    if isinstance(images, PatchFile):
        return images.take(evenly_spaced_rows(len(images), limit))
    return images[:: _spacing(len(images), limit)]


def evenly_spaced_rows(count: int, limit: int) -> np.ndarray:
    """Rows 0, k, 2k, … of ``count`` with the smallest step k that keeps at most ``limit`` of them.

    Parameters
    ----------
    count : int
        The number of rows.
    limit : int
        The most rows to keep (0 = all).

    Returns
    -------
    (M,) int64 ndarray
        The rows.
    """
    return np.arange(0, count, _spacing(count, limit))


def _spacing(count: int, limit: int) -> int:
    return max(1, -(-count // limit)) if limit else 1


def shuffled_batches(
    source: PatchFile, rows: np.ndarray, batch_size: int, generator: torch.Generator, buffer_rows: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of batches over the sorted ``rows`` of ``source``, in shuffled chunk order through
    a shuffle buffer (see the module docstring).

    Deterministic for a given ``generator`` state; every row is yielded exactly once, in batches
    of ``batch_size`` except the last.

    Parameters
    ----------
    source : PatchFile
        The patches.
    rows : (M,) int ndarray
        Sorted rows to deal out.
    batch_size : int
        Rows per batch.
    generator : torch.Generator
        The CPU generator of the shuffles.
    buffer_rows : int, optional
        Rows the shuffle buffer holds (default: :data:`SHUFFLE_BUFFER_BYTES` worth, at least one
        batch).

    Yields
    ------
    rows : (B,) int64 ndarray
        The batch's row indices.
    patches : (B, C, W, W) float32 ndarray
        Their patches.
    """
    buffer_rows = buffer_rows or max(batch_size, SHUFFLE_BUFFER_BYTES // source.row_bytes)
    chunk_of = rows // source.chunk_rows
    chunks, first = np.unique(chunk_of, return_index=True)
    ends = np.r_[first[1:], len(rows)]
    import torch

    order = torch.randperm(len(chunks), generator=generator).numpy()
    per_buffer = max(1, buffer_rows // source.chunk_rows)
    carry_rows = np.zeros(0, dtype=np.int64)
    carry = np.zeros((0,) + source.shape[1:], dtype=np.float32)
    for group_start in range(0, len(order), per_buffer):
        group = np.sort(order[group_start : group_start + per_buffer])
        picked = np.concatenate([rows[first[g] : ends[g]] for g in group])
        buffer_rows_now = np.concatenate([carry_rows, picked])
        buffer = np.concatenate([carry, source.take(picked)])
        mix = torch.randperm(len(buffer_rows_now), generator=generator).numpy()
        buffer_rows_now, buffer = buffer_rows_now[mix], buffer[mix]
        full = len(buffer) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield buffer_rows_now[start : start + batch_size], buffer[start : start + batch_size]
        carry_rows, carry = buffer_rows_now[full:], buffer[full:]
    if len(carry):
        yield carry_rows, carry

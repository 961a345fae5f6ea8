"""Training in several processes (``torchrun``): this process's place in the run.

:func:`distributed_world` joins the process group when ``WORLD_SIZE`` > 1 (NCCL with one GPU per
process, else gloo on the CPU) and returns a :class:`World`: its size, this process's rank and
device, the model wrapped in DistributedDataParallel, a barrier and a sum over the ranks. A plain
run is a world of size 1, where all of these do nothing. Used by :func:`microvae.training.fit`
(re-exported there).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch

__all__ = ["World", "distributed_world"]


@dataclass
class World:
    """This process's place in a DistributedDataParallel run (size 1: a plain run).

    Attributes
    ----------
    size : int, default 1
        Processes in the run (WORLD_SIZE).
    rank : int, default 0
        This process's rank, 0…size−1.
    device : torch.device, default cpu
        This process's device (``cuda:LOCAL_RANK`` with NCCL).
    """

    size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to call in training steps: ``model`` itself, or its DDP wrapper, which
        averages the gradients over the ranks during ``backward``.

        Parameters
        ----------
        model : torch.nn.Module
            The model, on this process's device.

        Returns
        -------
        torch.nn.Module
            ``model`` when size is 1, else its DistributedDataParallel wrapper (unused parameters
            allowed).
        """
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # z_delay and labelled batches leave some heads without gradient in some steps
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing in a plain run)."""
        if self.size > 1:
            torch.distributed.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place.

        Parameters
        ----------
        tensor : torch.Tensor
            This rank's values (on its device).

        Returns
        -------
        torch.Tensor
            The same tensor, now holding the sum over the ranks (unchanged in a plain run).
        """
        if self.size > 1:
            torch.distributed.all_reduce(tensor)
        return tensor


def _leave_process_group() -> None:
    """Destroy this process's process group, if it still exists (registered at exit)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def distributed_world(device: str = "auto") -> World:
    """The :class:`World` of this process. Under ``torchrun`` (WORLD_SIZE > 1 in the environment)
    this joins the process group on first call: NCCL with one GPU per process (``cuda:LOCAL_RANK``)
    when CUDA is available and ``device`` allows it, else gloo on the CPU.

    Parameters
    ----------
    device : str, default "auto"
        The run's device setting; "cpu" keeps the ranks on gloo and the CPU.

    Returns
    -------
    World
        Size, rank and device from the process group; ``World()`` (size 1) when WORLD_SIZE ≤ 1.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device != "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        # left alive at exit, the group's threads can abort the process ("terminate called
        # without an active exception"; a two-rank CPU test did so once in a full test run)
        atexit.register(_leave_process_group)
    return World(dist.get_world_size(), dist.get_rank(), torch.device("cuda", local) if use_cuda else torch.device("cpu"))

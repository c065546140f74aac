"""Training in several processes, as ``accelerate launch`` or ``torchrun`` starts them.

Every process holds the full (small) set of trainable weights. Each step, all processes
draw the same batch from the same seeded generator, each computes the examples whose
index falls to its rank, and the gradients are summed across processes before the same
optimizer step everywhere, so the weights stay identical and the run equals a
one-process run of the same batch size. Only the main process writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and the outputs."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether this process computes example ``index`` of a batch."""
        return index % self.world == self.rank

    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its sum over all processes (in place)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any of them."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=self._device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on the main process first (it fills caches), then on the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


SINGLE = Processes()


@contextmanager
def joined(device: str) -> Iterator[Processes]:
    """Join the launched processes (``WORLD_SIZE`` > 1 in the environment) for the block, or run alone.

    ``device`` is the torch device type the run uses: NCCL connects CUDA processes, Gloo
    CPU ones. A group started here is left when the block ends: Gloo's worker threads
    still alive at interpreter exit can abort the process (SIGABRT) after a finished run.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield SINGLE
        return
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    started = not dist.is_initialized()
    if started:
        if device == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        yield Processes(rank=rank, world=world, local_rank=local_rank)
    finally:
        if started:
            dist.destroy_process_group()

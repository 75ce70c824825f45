"""Multi-process training with ``torch.distributed``, launched by ``torchrun`` (one process per GPU or CPU slot).

``torchrun --nproc_per_node N -m styleforge.cli.main train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them and joins the process group (``nccl`` on
CUDA, ``gloo`` on CPU). Multi-node works the same way (``--nnodes``, ``--rdzv-endpoint``). There is no DDP
wrapper: after each phase the gradients of all trainable parameters are flattened into one tensor and summed
with :meth:`DistContext.all_reduce` (the losses are already divided by the global sample count).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["DistContext", "init_from_env", "single_process"]


@dataclass
class DistContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over all processes (a new tensor on ``t``'s device; ``t`` itself unchanged)."""
        if not self.distributed:
            return t.clone()
        out = t.detach().to(self.device).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device)

    def all_reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over processes in one flattened all-reduce.

        Parameters without a gradient (not reached by this phase's loss, the same on every process) are left
        alone, so that Adam skips them exactly as in a single-process run.
        """
        params = [p for p in params if p.grad is not None and p.numel() > 0]
        if not self.distributed or not params:
            return
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if not self.distributed:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def float_buffers(self, module: nn.Module) -> list[torch.Tensor]:
        """Copies of ``module``'s floating-point buffers (w_avg, magnitude EMAs), for :meth:`merge_buffers`."""
        return [b.detach().clone() for b in module.buffers() if b.is_floating_point()]

    def merge_buffers(self, module: nn.Module, before: list[torch.Tensor]) -> None:
        """Give every process ``before + sum over processes of (own buffer - before)``.

        Each process updates the running averages of G (w_avg, StyleGAN3's magnitude EMAs) from its own
        chunks; adding up the changes makes the result equal, to first order in the EMA rate, to one process
        updating from all chunks in turn.
        """
        if not self.distributed:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if not bufs:
            return
        flat = torch.cat([(b - b0).flatten() for b, b0 in zip(bufs, before, strict=True)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for b, b0 in zip(bufs, before, strict=True):
            b.copy_(b0 + flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()

    def all_gather_object(self, obj: object) -> list[object]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
        if not self.distributed:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def shutdown(self, barrier: bool = True) -> None:
        """Leave the process group this context joined. With ``barrier`` all ranks meet first, so that rank 0
        (which hosts the rendezvous store) does not exit while another rank is still using the group."""
        if self.initialized_here and dist.is_initialized():
            if barrier:
                dist.barrier()
            dist.destroy_process_group()


def single_process(device: str | torch.device = "cpu") -> DistContext:
    """The context of an ordinary, non-distributed run."""
    return DistContext(device=torch.device(device))


def init_from_env(device: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables, or run as a single process.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``None``/``"auto"`` (CUDA when available). A single
            process uses ``cuda:N`` when given (else ``cuda:0``); under torchrun each process uses
            ``cuda:LOCAL_RANK`` (an index given here is then ignored: the launcher assigns the devices).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda and world <= 1 and device not in (None, "auto"):
        dev = torch.device(device)
        dev = torch.device("cuda", dev.index if dev.index is not None else 0)
    if use_cuda:
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistContext(device=dev)
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                rank=rank, world_size=world)
        initialized_here = True
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev,
                       initialized_here=initialized_here)

"""Helpers for DistributedDataParallel runs (torchrun): process-group set-up, gathers with autograd."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank; before/after the process group exists, the rank torchrun assigned (else 0)."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@contextlib.contextmanager
def node_leader_first() -> Iterator[None]:
    """Run the block on each node's first process (LOCAL_RANK 0) before the others of the group enter it.

    For work whose result the others reuse, such as building a dataset cache: one build per node instead of
    one per process at once. Without a process group it just runs the block.
    """
    if world_size() == 1:
        yield
        return
    leader = int(os.environ.get("LOCAL_RANK", rank())) == 0
    if not leader:
        dist.barrier()  # wait for the leaders to finish the block
    try:
        yield
    finally:
        if leader:
            dist.barrier()


def init_from_env(device_type: str) -> torch.device:
    """Join the process group torchrun describes (nccl on GPU, gloo on CPU); return this rank's device."""
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return device


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank computed a loss on the same global batch; the gradient reaching this rank's own rows is
        # the sum over ranks. DDP then averages parameter gradients, so with identical per-rank losses the
        # update equals the single-process update on the global batch.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start:start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """[B, ...] on each rank -> [world_size * B, ...] in rank order; gradients flow back to each rank's rows.

    Every rank must pass the same B. Identity when not distributed.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """[B, ...] on each rank -> [world_size * B, ...] in rank order, without gradient (e.g. labels)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_grad(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` in the backward pass."""
    return _ScaleGrad.apply(tensor, scale)

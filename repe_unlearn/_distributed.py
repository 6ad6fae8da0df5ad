"""torch.distributed plumbing for data parallelism: who am I, which rows are mine, gather and reduce.

Launch with ``torchrun --nproc-per-node N repe-unlearn ...`` (or ``accelerate launch``): the process group is
initialised from the environment (gloo on CPU, NCCL on CUDA). Without a launcher every helper is the identity
of a world of one, so single-process code pays nothing.
"""

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process logs, shows progress bars and writes outputs (rank 0)."""
    return world()[0] == 0


def init_from_env() -> bool:
    """Join the process group a launcher describes (``WORLD_SIZE`` > 1); returns whether one is active."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def my_rows(n: int) -> slice:
    """This rank's contiguous share of ``n`` rows (the last ranks may get fewer, or none)."""
    rank, size = world()
    per = -(-n // size)
    return slice(min(rank * per, n), min((rank + 1) * per, n))


def collective_device() -> torch.device:
    """Where this process's collectives must run: its CUDA device under NCCL (which refuses CPU tensors)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks, in place (on the process's collective device); returns it."""
    if world()[1] > 1:
        device = collective_device()
        sent = tensor if tensor.device == device else tensor.to(device)
        dist.all_reduce(sent, op=dist.ReduceOp.SUM)
        if sent is not tensor:
            tensor.copy_(sent)
    return tensor


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (picklable objects, moved through the process group)."""
    size = world()[1]
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out

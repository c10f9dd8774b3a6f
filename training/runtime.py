"""Seeding, device choice and the distributed process group, in one place (STYLE rule 4)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable on the same hardware."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when present (this process's GPU under torchrun), else the CPU. An explicit name that is
    not available is an error."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available on this machine")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX): there autocast to bf16 about
    halves the step time of the MLP recipe; elsewhere bf16 is emulated and slower than fp32. The probes are
    private torch functions, hence the fallback."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    except RuntimeError:
        return False


def use_bf16_autocast(device: torch.device, precision: str) -> bool:
    """``precision``: ``bf16``, ``fp32``, or ``auto`` (bf16 on CUDA and on CPUs with native bf16)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}: choose auto, bf16 or fp32")
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job; rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_name: str) -> Distributed:
    """Join the process group that torchrun set up through RANK/WORLD_SIZE/MASTER_ADDR (NCCL on CUDA,
    gloo on the CPU); a plain launch is a world of one and starts no group."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Distributed()
    context = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return context


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


STOP_VOTE_EVERY = 50  # steps between the DDP ranks' votes on stopping


def agree_to_stop(distributed: Distributed, device: torch.device, requested: bool, step: int) -> bool:
    """Whether to stop now. Under DDP every rank must stop at the same step (a rank that leaves early would
    hang the others in an all-reduce), so the ranks vote every few steps; a world of one answers at once
    without any sync."""
    if not distributed.enabled:
        return requested
    if step % STOP_VOTE_EVERY:
        return False
    flag = torch.tensor([1.0 if requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def mean_over_ranks(distributed: Distributed, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    """Per-step means of losses summed on the device, averaged over the ranks (one sync per call)."""
    averages = {name: total / max(1, count) for name, total in sums.items()}
    if distributed.enabled:
        stacked = torch.stack(list(averages.values()))
        dist.all_reduce(stacked)
        averages = dict(zip(averages, stacked / distributed.world_size, strict=True))
    return {name: value.item() for name, value in averages.items()}

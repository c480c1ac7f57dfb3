"""Where a training process runs: its device, its place among ``torchrun``'s processes, its random seeds."""

from __future__ import annotations

import random

import numpy as np
import torch

from .config import DeviceName
from .distributed import SINGLE, Dist, join_group, launched_by_torchrun, local_rank
from .errors import ArcvaeError


def start(device: DeviceName) -> tuple[Dist, torch.device]:
    """This process's place and device: ``(SINGLE, the device)``, or under ``torchrun`` its rank in the joined group.

    Under ``torchrun`` each process on a machine takes its own CUDA device (by
    ``LOCAL_RANK``) when there is CUDA and ``device`` allows it, else the CPU.
    """
    if not launched_by_torchrun():
        return SINGLE, resolve_device(device)
    target = _rank_device(device)
    return join_group(target), target


def resolve_device(name: DeviceName) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ArcvaeError(
            "device 'cuda' was requested, but CUDA is not available on this machine (use --device auto or cpu)"
        )
    if name == "mps" and not _mps_available():
        raise ArcvaeError(
            "device 'mps' was requested, but MPS is not available on this machine (use --device auto or cpu)"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy's global generator takes 32-bit seeds; torch takes them all
    torch.manual_seed(seed)


def _rank_device(name: DeviceName) -> torch.device:
    if name == "mps":
        raise ArcvaeError("distributed training needs CUDA (NCCL) or the CPU (gloo); MPS has no process-group backend")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        local = local_rank()
        if local >= torch.cuda.device_count():
            raise ArcvaeError(
                f"LOCAL_RANK={local}, but this machine has {torch.cuda.device_count()} CUDA devices; start fewer processes per node"
            )
        return torch.device("cuda", local)
    return resolve_device("cpu" if name == "auto" else name)  # an explicit "cuda" without CUDA: the one error


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()

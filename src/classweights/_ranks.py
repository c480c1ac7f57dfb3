"""Counting across the processes of a torch.distributed group: each rank its shard, one all_reduce for all."""

from __future__ import annotations

from typing import Any

import torch

from ._errors import ClassWeightError
from ._fingerprint import _LabelHasher
from ._stream import Shard


def _process_group_shard(block_bytes: int | None) -> Shard:
    """This rank's shard in the default process group, or a clear error if there is none."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ClassWeightError(
            "Expected an initialised torch.distributed process group for distributed=True, but there is none "
            "(call torch.distributed.init_process_group first, e.g. under torchrun, or pass distributed=False)"
        )
    return Shard(dist.get_rank(), dist.get_world_size(), block_bytes)


def _reduce_across_ranks(
    counts: torch.Tensor,
    image_pixels: torch.Tensor | None,
    images: int,
    labels: int,
    hashed: _LabelHasher | None,
    failure: BaseException | None,
) -> tuple[torch.Tensor, torch.Tensor | None, int, int, _LabelHasher | None]:
    """Sum this rank's statistics with every other rank's; raise on all ranks if any rank failed."""
    import torch.distributed as dist

    c = counts.numel()
    parts = [counts, image_pixels if image_pixels is not None else torch.zeros(0, dtype=torch.int64),
             torch.tensor([labels, images, failure is not None], dtype=torch.int64)]  # fmt: skip
    packed = torch.cat(parts)
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        packed = packed.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(packed)
    packed = packed.cpu()
    if int(packed[-1]):
        messages: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(messages, None if failure is None else str(failure))
        if failure is not None:
            raise failure
        rank, message = next((r, m) for r, m in enumerate(messages) if m is not None)
        raise ClassWeightError(f"counting failed on rank {rank}: {message}")
    if hashed is not None:  # every rank's block digests, in rank order: the single-process fingerprint
        shards: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (hashed.blocks, hashed.dtype, hashed.per_sample))
        hashed = _LabelHasher(hashed.algorithm)
        hashed.blocks = [block for blocks, _, _ in shards for block in blocks]
        hashed.dtype, hashed.per_sample = next(((d, p) for _, d, p in shards if d is not None), (None, None))
    pixels = packed[c : 2 * c] if image_pixels is not None else None
    return packed[:c], pixels, int(packed[-2]), int(packed[-3]), hashed

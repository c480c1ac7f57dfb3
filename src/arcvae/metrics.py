"""Reconstruction metrics that stay on the device until they are logged.

An all-black model scores ~93% pixel accuracy on ARC grids, so the metrics
that matter are foreground accuracy (non-black pixels), balanced accuracy
(mean over the classes present) and per-class accuracy. A class absent from
the targets has no accuracy: it is reported as ``None``, never as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Tally:
    """Running per-class counts: ``correct[c]`` and ``total[c]`` (targets of class c), plus whole grids."""

    correct: torch.Tensor
    total: torch.Tensor
    perfect: torch.Tensor
    grids: torch.Tensor

    @classmethod
    def zeros(cls, num_classes: int, device: torch.device | str = "cpu") -> Tally:
        z = torch.zeros(num_classes, dtype=torch.int64, device=device)
        return cls(
            z,
            z.clone(),
            torch.zeros((), dtype=torch.int64, device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``preds`` and ``targets`` are ``[B, H, W]`` class indices. No host sync."""
        num_classes = self.total.numel()
        hit = preds == targets
        # One histogram over (class, hit): bins [0, C) are misses, [C, 2C) hits. No boolean
        # indexing, so nothing waits for the device.
        both = torch.bincount((targets + num_classes * hit).reshape(-1), minlength=2 * num_classes)
        self.correct += both[num_classes:]
        self.total += both[:num_classes] + both[num_classes:]
        self.perfect += hit.reshape(hit.shape[0], -1).all(dim=1).sum()
        self.grids += targets.shape[0]

    def summed(self, sum_: Callable[[torch.Tensor], torch.Tensor]) -> Tally:
        """A copy with every count passed through ``sum_`` (one call), e.g. a sum over processes."""
        c = self.total.numel()
        packed = sum_(torch.cat([self.correct, self.total, self.perfect.reshape(1), self.grids.reshape(1)]))
        return Tally(packed[:c], packed[c : 2 * c], packed[2 * c], packed[2 * c + 1])

    def summary(self, background: int = 0) -> dict[str, Any]:
        """Plain-Python metrics (one host transfer)."""
        correct, total = self.correct.cpu(), self.total.cpu()
        per_class = [float(c) / float(t) if t > 0 else None for c, t in zip(correct.tolist(), total.tolist())]
        present = [accuracy for accuracy in per_class if accuracy is not None]
        foreground = torch.ones(total.numel(), dtype=torch.bool)
        foreground[background] = False
        fg_total = int(total[foreground].sum())
        return {
            "pixel_accuracy": float(correct.sum()) / max(1, int(total.sum())),
            "foreground_accuracy": float(correct[foreground].sum()) / fg_total if fg_total else None,
            # in float64, so that predicting one colour everywhere scores exactly one_colour_score
            "balanced_accuracy": math.fsum(present) / len(present) if present else None,
            "perfect_rate": float(self.perfect) / max(1, int(self.grids)),
            "per_class_accuracy": per_class,
        }


def batch_metrics(preds: torch.Tensor, targets: torch.Tensor, num_classes: int = 10) -> dict[str, Any]:
    """The metrics of one batch (see :meth:`Tally.summary`).

    Example:
        >>> t = torch.tensor([[[0, 0], [0, 3]]])
        >>> m = batch_metrics(torch.zeros_like(t), t)
        >>> m["pixel_accuracy"], m["foreground_accuracy"], m["per_class_accuracy"][:4]
        (0.75, 0.0, [1.0, None, None, 0.0])
    """
    tally = Tally.zeros(num_classes, preds.device)
    tally.update(preds, targets)
    return tally.summary()


def one_colour_score(per_class: list[float | None]) -> float:
    """The balanced accuracy of predicting one colour everywhere (all black, say): ``1 / K`` for K colours present.

    A model must beat it to be better than a collapsed one.

    Example:
        >>> one_colour_score([1.0, 0.0, None, 0.0])
        0.3333333333333333
    """
    present = sum(accuracy is not None for accuracy in per_class)
    return 1.0 / present if present else 0.0


def format_per_class(per_class: list[float | None]) -> list[str]:
    """``['0.92', '-', ...]``: two decimals, ``-`` for a class absent from the targets."""
    return [f"{a:.2f}" if a is not None else "-" for a in per_class]

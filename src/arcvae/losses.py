"""Focal loss, the KL term with free bits, and beta schedules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from classweights import ClassWeightError, validate_weights

from .config import BetaScheduleName, TrainConfig, choices
from .errors import ArcvaeError

Reduction = Literal["mean", "sum", "none"]


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor | None = None,
    gamma: float = 2.0,
    ignore_index: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Focal loss ``alpha[t] * (1 - p_t) ** gamma * -log(p_t)`` per element (Lin et al. 2017).

    Args:
        logits: ``(N, C, *)`` unnormalised scores.
        target: ``(N, *)`` integer class indices in ``[0, C)`` (or ``ignore_index``).
        alpha: optional ``(C,)`` class weights, e.g. from :mod:`classweights`.
        gamma: focusing parameter ``>= 0``; ``gamma=0`` is (weighted) cross-entropy.
        ignore_index: target value whose elements contribute nothing.
        reduction: ``"mean"`` over the non-ignored elements (a plain mean: the
            weights are not renormalised, unlike ``F.cross_entropy``), ``"sum"``,
            or ``"none"`` for the ``(N, *)`` per-element loss (0 where ignored).

    Returns:
        A scalar, or ``(N, *)`` for ``reduction="none"``.

    Example:
        >>> logits = torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]]]).permute(1, 0, 2)  # (1, 2, 2)
        >>> round(float(focal_loss(logits, torch.tensor([[0, 1]]), gamma=0.0)), 4)
        0.1269
    """
    if logits.ndim < 2:
        raise ArcvaeError(f"Expected `logits` of shape (N, C, *), but got {list(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ArcvaeError(
            f"Expected `target` of shape {list(logits.shape[:1] + logits.shape[2:])}, but got {list(target.shape)}"
        )
    if gamma < 0:
        raise ArcvaeError(f"Expected `gamma` >= 0, but got {gamma}")
    if alpha is not None and alpha.shape != (logits.shape[1],):
        raise ArcvaeError(f"Expected `alpha` of shape [{logits.shape[1]}], but got {list(alpha.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ArcvaeError(f"Expected `reduction` to be 'mean', 'sum' or 'none', but got {reduction!r}")

    valid = None if ignore_index is None else target != ignore_index
    index = target if valid is None else target.masked_fill(~valid, 0)
    log_pt = F.log_softmax(logits, dim=1).gather(1, index.unsqueeze(1)).squeeze(1)
    loss = -log_pt
    if gamma != 0:
        loss = (-torch.expm1(log_pt)).clamp(min=0).pow(gamma) * loss  # 1 - p_t, accurate near p_t = 1
    if alpha is not None:
        loss = alpha.to(loss.dtype)[index] * loss
    if valid is not None:
        loss = loss * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1) if valid is not None else loss.mean()


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`; ``alpha`` is a buffer, so ``.to(device)`` moves it.

    ``alpha`` is validated when the module is built (1-D, finite, non-negative,
    not all zero), so a bad weight vector never reaches a training step.
    """

    alpha: torch.Tensor | None

    def __init__(
        self,
        alpha: torch.Tensor | None = None,
        gamma: float = 2.0,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if alpha is not None:  # shape, NaN, inf and sign are checked once here, not on every step
            try:
                alpha = validate_weights(torch.as_tensor(alpha).detach(), torch.as_tensor(alpha).numel())
            except ClassWeightError as exc:
                raise ArcvaeError(f"FocalLoss alpha: {exc}") from None
        self.register_buffer("alpha", alpha)
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.reduction: Reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.alpha, self.gamma, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, weighted={self.alpha is not None}, reduction={self.reduction!r}"


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float = 0.0) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch.

    With ``free_bits > 0`` each sample's KL in each dimension is floored at
    ``free_bits`` nats (Kingma et al. 2016), so the encoder is not pushed to
    collapse dimensions below that budget.

    Args:
        mu, logvar: ``(N, D)``.
    """
    per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    if free_bits > 0:
        per_dim = per_dim.clamp(min=free_bits)
    return per_dim.sum(dim=1).mean()


@dataclass(frozen=True)
class BetaSchedule:
    """Weight of the KL term as a function of (fractional) epoch.

    - ``linear_warmup``: 0 for ``warmup_epochs``, then linear to ``beta_max``
      over ``ramp_epochs``, then constant.
    - ``cyclical``: cycles of ``cycle_epochs``; in each, linear from 0 to
      ``beta_max`` over the first half, then constant (Fu et al. 2019).
    - ``constant``: always ``beta_max``.

    Example:
        >>> schedule = BetaSchedule("linear_warmup", beta_max=1.0, warmup_epochs=1, ramp_epochs=4)
        >>> [schedule(e) for e in (0.0, 1.0, 3.0, 9.0)]
        [0.0, 0.0, 0.5, 1.0]
    """

    # the defaults of `arcvae train`'s options
    kind: BetaScheduleName = TrainConfig.beta_schedule
    beta_max: float = TrainConfig.beta_max
    warmup_epochs: float = TrainConfig.beta_warmup_epochs
    ramp_epochs: float = TrainConfig.beta_ramp_epochs
    cycle_epochs: float = TrainConfig.beta_cycle_epochs

    def __post_init__(self) -> None:
        names = choices(BetaScheduleName)
        if self.kind not in names:
            raise ArcvaeError(
                f"Expected the beta schedule to be {', '.join(names[:-1])} or {names[-1]}, but got {self.kind!r}"
            )
        if not (math.isfinite(self.beta_max) and self.beta_max >= 0):
            raise ArcvaeError(f"Expected beta_max to be a finite number >= 0, but got {self.beta_max}")
        if self.ramp_epochs <= 0 or self.cycle_epochs <= 0 or self.warmup_epochs < 0:
            raise ArcvaeError("Expected ramp_epochs > 0, cycle_epochs > 0 and warmup_epochs >= 0")

    @property
    def settled_epoch(self) -> float:
        """The epoch from which beta no longer changes (``inf`` for ``cyclical``)."""
        if self.kind == "constant":
            return 0.0
        if self.kind == "cyclical":
            return math.inf
        return self.warmup_epochs + self.ramp_epochs

    def __call__(self, epoch: float) -> float:
        if self.kind == "constant":
            return self.beta_max
        if self.kind == "cyclical":
            phase = (epoch % self.cycle_epochs) / (self.cycle_epochs / 2)
            return self.beta_max * min(1.0, phase)
        ramp = (epoch - self.warmup_epochs) / self.ramp_epochs
        return self.beta_max * min(1.0, max(0.0, ramp))

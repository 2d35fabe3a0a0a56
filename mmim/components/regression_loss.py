"""Element-wise regression losses on the predicted tokens."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mmim.interfaces import Loss
from mmim.types import LossOutput


class _ElementwiseLoss(Loss):
    """Mean over tokens and channels of an element-wise distance.

    With the same number of predicted tokens per sample this equals MAE's
    ``sum(per_token_loss * mask) / sum(mask)``. With per-token ``weight`` ``(B, n)`` it is
    ``sum(weight * per_token_loss) / sum(weight)`` (VideoMAE v2's ``cal_loss_mask``), or, with
    ``reduction="sample"``, that ratio per sample and then the mean over the samples that have
    any weight (MultiMAE's masked losses; a sample with nothing to predict is left out).
    """

    label = "loss"
    supports_weight = True

    def __init__(self, reduction: Literal["token", "sample"] = "token") -> None:
        super().__init__()
        if reduction not in ("token", "sample"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'token' or 'sample', got {reduction!r}")
        self.reduction = reduction

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        """Element-wise distance, same shape as the inputs."""
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> LossOutput:
        if pred.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
        per_token = self.distance(pred.float(), target.float()).mean(dim=-1)
        if weight is None:
            weight = torch.ones_like(per_token)
        elif weight.shape != per_token.shape:
            raise ValueError(f"{type(self).__name__}: weight {tuple(weight.shape)} vs tokens {tuple(per_token.shape)}")
        weight = weight.to(per_token.dtype)
        if self.reduction == "token":
            loss = (per_token * weight).sum() / weight.sum().clamp_min(1e-12)
        else:
            counts = weight.sum(dim=1)
            has = counts > 0
            per_sample = (per_token * weight).sum(dim=1) / counts.clamp_min(1e-12)
            loss = torch.where(has, per_sample, 0.0).sum() / has.sum().clamp_min(1)
        return LossOutput(loss, {self.label: loss.detach()})


class MSELoss(_ElementwiseLoss):
    """Mean squared error (MAE, VideoMAE, Audio-MAE)."""

    label = "mse"

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(pred, target, reduction="none")


class L1Loss(_ElementwiseLoss):
    """Mean absolute error (SimMIM)."""

    label = "l1"

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred, target, reduction="none")


class SmoothL1Loss(_ElementwiseLoss):
    """Smooth-L1 (Huber with ``beta``)."""

    label = "smooth_l1"

    def __init__(self, beta: float = 1.0, reduction: Literal["token", "sample"] = "token") -> None:
        super().__init__(reduction)
        self.beta = beta

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(pred, target, beta=self.beta, reduction="none")

"""Element-wise regression losses on the predicted tokens."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mmim.interfaces import Loss
from mmim.types import LossOutput


class _ElementwiseLoss(Loss):
    """Mean over tokens and channels of an element-wise distance.

    With the same number of predicted tokens per sample this equals MAE's
    ``sum(per_token_loss * mask) / sum(mask)``.
    """

    label = "loss"

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor) -> LossOutput:
        if pred.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
        loss = self.distance(pred.float(), target.float())
        return LossOutput(loss, {self.label: float(loss.detach())})


class MSELoss(_ElementwiseLoss):
    """Mean squared error (MAE, VideoMAE, Audio-MAE)."""

    label = "mse"

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(pred, target)


class L1Loss(_ElementwiseLoss):
    """Mean absolute error (SimMIM)."""

    label = "l1"

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred, target)


class SmoothL1Loss(_ElementwiseLoss):
    """Smooth-L1 (Huber with ``beta``)."""

    label = "smooth_l1"

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(pred, target, beta=self.beta)

"""Chamfer losses between predicted and true masked neighbourhoods (Point-MAE ``cdl2`` / ``cdl1``)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmim.interfaces import Loss
from mmim.types import LossOutput
from mmim_points.ops.chamfer import chamfer_l1, chamfer_l2


class _ChamferLoss(Loss):
    """Reads every token's ``C = k * point_dim`` values as a set of ``k`` points and compares the sets.

    ``pred`` and ``target`` ``(B, Lm, C)`` become ``(B * Lm, k, point_dim)`` point sets (batch-major,
    token order kept), exactly Point-MAE's ``rebuild_points`` / ``gt_points``.

    Args:
        point_dim: coordinates per point (3).
    """

    label = "chamfer"

    def __init__(self, point_dim: int = 3) -> None:
        super().__init__()
        if point_dim < 1:
            raise ValueError(f"point_dim must be positive, got {point_dim}")
        self.point_dim = point_dim

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def as_point_sets(self, x: Tensor, what: str) -> Tensor:
        """``(B, n, k * point_dim)`` -> ``(B * n, k, point_dim)``."""
        if x.dim() != 3 or x.shape[-1] % self.point_dim:
            raise ValueError(f"{type(self).__name__}: {what} {tuple(x.shape)} is not (B, n, k*{self.point_dim}) "
                             f"(each token must hold whole {self.point_dim}-D points)")
        return x.reshape(x.shape[0] * x.shape[1], -1, self.point_dim)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> LossOutput:
        if pred.shape[:2] != target.shape[:2]:
            raise ValueError(f"{type(self).__name__}: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
        loss = self.distance(self.as_point_sets(pred.float(), "prediction"), self.as_point_sets(target.float(), "target"))
        return LossOutput(loss, {self.label: loss.detach()})

    def example_inputs(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A valid ``(pred, target)`` pair ``(2, 5, 8 * point_dim)`` (conformance kit)."""
        shape = (2, 5, 8 * self.point_dim)
        return torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator)


class ChamferL2Loss(_ChamferLoss):
    """Point-MAE's ``cdl2``: ``mean(dist1) + mean(dist2)`` of squared nearest-point distances."""

    label = "chamfer_l2"

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return chamfer_l2(pred, target)


class ChamferL1Loss(_ChamferLoss):
    """Point-MAE's ``cdl1``: ``(mean(sqrt(dist1)) + mean(sqrt(dist2))) / 2``."""

    label = "chamfer_l1"

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        return chamfer_l1(pred, target)

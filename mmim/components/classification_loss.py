"""Cross-entropy on per-token class targets (semantic maps: MultiMAE's masked cross-entropy)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mmim.interfaces import Loss
from mmim.types import LossOutput


class CrossEntropyLoss(Loss):
    """Each token holds ``k`` class ids (e.g. the pixels of a segmentation-map patch); the
    prediction holds ``num_classes`` logits for each, channel-major ``(num_classes, k)`` (as
    MultiMAE's output adapter lays out a patch). The token's loss is the mean cross-entropy over
    its ``k`` items; tokens are reduced as the element-wise losses (``token`` or ``sample``).

    Args:
        num_classes: classes ``C``; the prediction has ``C * k`` values per token.
        label_smoothing: as ``torch.nn.functional.cross_entropy``.
        reduction: ``"token"`` (mean over weighted tokens) or ``"sample"`` (per sample, then over
            the samples that have any weight).
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0,
                 reduction: Literal["token", "sample"] = "token") -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"cross_entropy needs num_classes >= 2, got {num_classes}")
        if reduction not in ("token", "sample"):
            raise ValueError(f"cross_entropy: reduction must be 'token' or 'sample', got {reduction!r}")
        self.num_classes, self.label_smoothing, self.reduction = num_classes, label_smoothing, reduction

    supports_weight = True

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> LossOutput:
        b, n, k = target.shape
        if pred.shape != (b, n, self.num_classes * k):
            raise ValueError(f"cross_entropy: prediction {tuple(pred.shape)} does not hold {self.num_classes} logits "
                             f"for each of the {k} items of target {tuple(target.shape)}")
        labels = target.round().long()
        if not torch.compiler.is_compiling() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"cross_entropy: target classes span {int(labels.min())}..{int(labels.max())}, "
                             f"outside 0..{self.num_classes - 1}")
        logits = pred.float().reshape(b * n, self.num_classes, k)
        per_item = F.cross_entropy(logits, labels.reshape(b * n, k), reduction="none",
                                   label_smoothing=self.label_smoothing)
        per_token = per_item.reshape(b, n, k).mean(-1)
        w = torch.ones_like(per_token) if weight is None else weight.to(per_token.dtype)
        if self.reduction == "token":
            loss = (per_token * w).sum() / w.sum().clamp_min(1e-12)
        else:
            counts = w.sum(1)
            has = counts > 0
            loss = torch.where(has, (per_token * w).sum(1) / counts.clamp_min(1e-12), 0.0).sum() / has.sum().clamp_min(1)
        return LossOutput(loss, {"ce": loss.detach()})

    @classmethod
    def example_options(cls) -> dict:
        return {"num_classes": 5}

    def example_perfect(self, target: Tensor) -> Tensor:
        onehot = F.one_hot(target.round().long(), self.num_classes).float() * 30  # (B, n, k, C)
        return onehot.transpose(-1, -2).flatten(2)  # channel-major (C, k)

    def example_inputs(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        target = torch.randint(0, self.num_classes, (2, 5, 4), generator=generator).float()
        return torch.randn(2, 5, self.num_classes * 4, generator=generator), target

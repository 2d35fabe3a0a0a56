"""InfoNCE between predicted and target token features (contrastive MIM) and a cosine loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmim.interfaces import Loss
from mmim.types import LossOutput


class InfoNCELoss(Loss):
    """Each predicted masked token must pick its own target among negatives.

    ``logits = normalize(pred) @ normalize(target)^T / temperature``; the positive of predicted
    token ``i`` is target token ``i``. Negatives are the other predicted tokens of the same sample
    (``negatives="sample"``: ``(B, n, n)`` logits) or of the whole batch (``"batch"``:
    ``(B*n, B*n)``, memory grows with the square of the batch's token count).

    Args:
        temperature: softmax temperature.
        negatives: ``"sample"`` or ``"batch"``.
    """

    def __init__(self, temperature: float = 0.1, negatives: str = "sample") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if negatives not in ("sample", "batch"):
            raise ValueError(f"negatives must be 'sample' or 'batch', got {negatives!r}")
        self.temperature, self.negatives = temperature, negatives

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> LossOutput:
        if pred.shape != target.shape:
            raise ValueError(f"InfoNCELoss: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
        p, t = F.normalize(pred.float(), dim=-1), F.normalize(target.float(), dim=-1)
        if self.negatives == "batch":
            p, t = p.reshape(1, -1, p.shape[-1]), t.reshape(1, -1, t.shape[-1])
        logits = p @ t.transpose(1, 2) / self.temperature  # (B, n, n)
        labels = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels).float().mean()
        return LossOutput(loss, {"info_nce": loss.detach(), "nce_acc": acc})


class CosineLoss(Loss):
    """``1 - cos(pred, target)`` averaged over tokens (BYOL/SimSiam-style feature regression)."""

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> LossOutput:
        if pred.shape != target.shape:
            raise ValueError(f"CosineLoss: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
        loss = (1 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()
        return LossOutput(loss, {"cosine": loss.detach()})

"""Classification metrics on collected logits: top-1 accuracy and mean average precision (mAP)."""

from __future__ import annotations

import torch
from torch import Tensor


def top1(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose arg-max is the label. ``logits`` ``(N, C)``, ``labels`` ``(N,)`` int."""
    if logits.shape[0] == 0:
        return 0.0
    return float((logits.argmax(-1) == labels.to(logits.device)).float().mean())


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class average precision, as scikit-learn's ``average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order
    (samples with equal scores enter together). Equivalently: the mean, over the positives, of
    the precision at the threshold of each positive's score.

    Args:
        scores: ``(N, C)`` any monotone score (logits or probabilities).
        targets: ``(N, C)`` multi-hot (0/1, any dtype).

    Returns:
        ``(C,)`` float64; NaN for classes with no positive.
    """
    if scores.shape != targets.shape or scores.dim() != 2:
        raise ValueError(f"scores and targets must both be (N, C), got {tuple(scores.shape)} and {tuple(targets.shape)}")
    scores, targets = scores.detach().double().cpu(), (targets.detach().cpu() > 0.5).double()
    n = scores.shape[0]
    order = scores.argsort(dim=0, descending=True, stable=True)
    s, y = scores.gather(0, order), targets.gather(0, order)
    tp = y.cumsum(0)
    precision = tp / torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    # the last row of each run of equal scores is where that threshold's precision is read
    group_end = torch.ones_like(s, dtype=torch.bool)
    group_end[:-1] = s[1:] != s[:-1]
    rows = torch.arange(n)[:, None].expand_as(s)
    end_of = torch.where(group_end, rows, torch.full_like(rows, n)).flip(0).cummin(0).values.flip(0)
    at_threshold = precision.gather(0, end_of)
    positives = y.sum(0)
    ap = (y * at_threshold).sum(0) / positives
    return torch.where(positives > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Macro mAP over the classes with at least one positive (AudioSet's metric); 0 if none has."""
    ap = average_precision(scores, targets)
    valid = ~torch.isnan(ap)
    return float(ap[valid].mean()) if valid.any() else 0.0

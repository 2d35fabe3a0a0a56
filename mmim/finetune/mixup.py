"""Batch mixup / cutmix with soft (label-smoothed) targets, as the official fine-tuning loops of MAE,
Audio-MAE and DeiT use it (timm 0.3.2's ``Mixup(mode="batch")``).

One set of draws per batch, in this order (what timm draws; a draw that is not needed is not made):

1. ``rand() < prob``: mix this batch at all (else the targets are only smoothed);
2. with both alphas, ``rand() < switch_prob``: cutmix instead of mixup;
3. ``beta(alpha, alpha)``: the mixing weight ``lam`` (the cutmix or the mixup alpha);
4. cutmix only, ``randint(0, H)`` and ``randint(0, W)``: the box centre.

Sample ``i`` is mixed with sample ``B - 1 - i`` (the batch flipped). A cutmix box of side
``int(H * sqrt(1 - lam))`` is centred on the drawn point, **half a side each way rounded down**
(``[c - s // 2, c + s // 2)``, clipped to the image), as timm 0.3.2 to 0.8 cut it; timm 0.9 and
later cut ``(s + 1) // 2`` after the centre, one row or column more for odd sides. ``lam`` is then
corrected to the uncut area. The draws come from :attr:`Mixup.random` (numpy's global generator,
which the trainer seeds for every micro-batch); replacing it replays recorded draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def one_hot_targets(labels: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """``(B,)`` class indices -> ``(B, C)`` smoothed one-hot: ``1 - s + s / C`` on, ``s / C`` off."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    return torch.full((labels.shape[0], num_classes), off, device=labels.device).scatter_(
        1, labels.long().view(-1, 1), on)


class Mixup:
    """Mixup (``mixup_alpha``) and/or cutmix (``cutmix_alpha``) over a batch ``(B, C, H, W)`` (or
    any ``(B, ..., H, W)``) with class-index labels; returns the mixed inputs and soft targets
    ``(B, num_classes)`` (label smoothing included). ``B`` must be even.

    Args:
        mixup_alpha, cutmix_alpha: Beta parameters; 0 disables either.
        prob: probability of mixing a batch at all (``finetune.mixup_prob``).
        switch_prob: with both alphas, probability of cutmix (``finetune.mixup_switch_prob``).
        label_smoothing: smoothing of the one-hot targets.
        num_classes: width of the targets.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5,
                 label_smoothing: float = 0.1, num_classes: int = 1000) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha == cutmix_alpha == 0:
            raise ValueError(f"finetune.mixup / finetune.cutmix: alphas must be >= 0 and one of them > 0, "
                             f"got {mixup_alpha}, {cutmix_alpha}")
        for name, value in (("mixup_prob", prob), ("mixup_switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"finetune.{name} must be in [0, 1], got {value}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing, self.num_classes = float(label_smoothing), int(num_classes)
        self.random: Any = np.random  # rand(), beta(a, b), randint(low, high): the source of every draw

    def draw(self) -> tuple[float, bool]:
        """``(lam, cutmix)`` for one batch; ``lam == 1``: not mixed."""
        rng = self.random
        if not rng.rand() < self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = bool(rng.rand() < self.switch_prob)
        else:
            cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), cutmix

    def box(self, height: int, width: int, lam: float) -> tuple[tuple[int, int, int, int], float]:
        """The cutmix box ``(y0, y1, x0, x1)`` for ``lam`` and the weight of the uncut area."""
        ratio = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(self.random.randint(0, height)), int(self.random.randint(0, width))
        y0, y1 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
        x0, x1 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
        return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)

    def __call__(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed copy of ``inputs`` (the caller's tensor is left as it is) and the soft targets."""
        if inputs.shape[0] % 2:
            raise ValueError(f"mixup/cutmix need an even batch size, got {inputs.shape[0]}")
        lam, cutmix = self.draw()
        if lam != 1.0:
            if cutmix:
                (y0, y1, x0, x1), lam = self.box(inputs.shape[-2], inputs.shape[-1], lam)
                inputs = inputs.clone()
                inputs[..., y0:y1, x0:x1] = inputs.flip(0)[..., y0:y1, x0:x1]
            else:
                inputs = inputs * lam + inputs.flip(0) * (1.0 - lam)
        targets = one_hot_targets(labels, self.num_classes, self.label_smoothing)
        return inputs, targets * lam + targets.flip(0) * (1.0 - lam)

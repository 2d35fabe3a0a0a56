"""Learning-rate rules: MAE's scaling rule and per-step linear warmup + half-cycle cosine."""

from __future__ import annotations

import math


def scaled_lr(base_lr: float, effective_batch_size: int) -> float:
    """``lr = base_lr * effective_batch_size / 256`` (MAE, VideoMAE, Audio-MAE, ...)."""
    return base_lr * effective_batch_size / 256


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate before optimizer step ``step`` (0-based): linear warmup, then cosine to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

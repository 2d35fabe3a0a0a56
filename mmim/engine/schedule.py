"""Learning-rate rules: MAE's scaling rule and per-step linear warmup + half-cycle cosine; timm's
per-epoch cosine (Point-MAE)."""

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


def epoch_cosine_lr(epoch: int, epochs: int, warmup_epochs: float, peak_lr: float, min_lr: float,
                    warmup_lr_init: float, cycle_epochs: int | None = None, lag: int = 1) -> float:
    """Learning rate of epoch ``epoch`` (0-based) under timm's ``CosineLRScheduler`` with
    ``t_in_epochs=True``, ``t_mul=1``, ``cycle_limit=1``, ``warmup_prefix=False`` and no noise, stepped
    with the epoch index ``lag`` epochs late (Point-MAE: ``lag=1``, so epochs 0 and 1 both train at
    ``warmup_lr_init``); ``cycle_epochs`` is timm's ``t_initial`` (default ``epochs``)."""
    t = max(epoch - lag, 0)
    cycle = cycle_epochs if cycle_epochs is not None else epochs
    if warmup_epochs > 0 and t < warmup_epochs:
        return warmup_lr_init + t * ((peak_lr - warmup_lr_init) / warmup_epochs)
    if t >= cycle:
        return min_lr
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * t / cycle))

"""Learning-rate rules: MAE's scaling rule and per-step linear warmup + half-cycle cosine; BEiT's
``utils.cosine_scheduler`` (linspace warmup from ``warmup_lr``, min/warmup lr scaled with the batch,
a cosine weight-decay schedule), which VideoMAE, VideoMAE v2 and MultiMAE use; timm's per-epoch
``CosineLRScheduler`` (Point-MAE). A recipe picks the rule (``schedule.warmup_style``,
``schedule.warmup_lr``, ``schedule.scale_min_lr``, ``schedule.epoch_cosine``,
``optim.weight_decay_end``); :func:`build_schedule` turns its loop settings into a :class:`Schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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


def cosine_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cycle cosine from ``start`` (step 0) towards ``end`` over ``total_steps`` steps, no
    warmup: BEiT's ``cosine_scheduler(start, end, epochs, niter_per_ep)`` (a weight-decay schedule)."""
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / max(1, total_steps)))


def linspace_lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0,
                   warmup_lr: float = 0.0) -> float:
    """BEiT's ``utils.cosine_scheduler`` (VideoMAE, VideoMAE v2, MultiMAE): the warmup is
    ``np.linspace(warmup_lr, peak_lr, warmup_steps)`` -- it starts at ``warmup_lr`` and reaches the
    peak on the last warmup step -- then the same cosine to ``min_lr`` as :func:`lr_at`."""
    if warmup_steps > 0 and step < warmup_steps:
        if warmup_steps == 1:
            return warmup_lr
        return warmup_lr + (peak_lr - warmup_lr) * step / (warmup_steps - 1)
    return lr_at(step, total_steps, warmup_steps, peak_lr, min_lr)


@dataclass(frozen=True)
class Schedule:
    """The per-step lr and weight decay of one run, as a recipe declares them.

    - ``warmup_style``: ``"linear"`` (MAE ``lr_sched``: :func:`lr_at`) or ``"linspace"`` (BEiT
      ``cosine_scheduler``: :func:`linspace_lr_at`, from ``warmup_lr``);
    - ``min_lr`` and ``warmup_lr`` are the values used (already scaled by :func:`build_schedule`
      where the recipe says ``schedule.scale_min_lr``);
    - ``weight_decay_end``: ``None`` keeps every group's weight decay; a number makes the groups
      that are decayed follow :func:`cosine_at` from ``weight_decay`` to it over the whole run;
    - ``epoch_cosine`` (``EpochCosineConfig``, with ``steps_per_epoch`` and ``warmup_epochs``; the run has
      ``total_steps // steps_per_epoch`` epochs):
      the lr changes once per epoch, :func:`epoch_cosine_lr` (timm's ``CosineLRScheduler``, Point-MAE),
      in place of the per-step rule.
    """

    total_steps: int
    warmup_steps: int
    peak_lr: float
    min_lr: float = 0.0
    warmup_style: str = "linear"
    warmup_lr: float = 0.0
    weight_decay: float = 0.0
    weight_decay_end: float | None = None
    epoch_cosine: Any = None
    steps_per_epoch: int = 1
    warmup_epochs: float = 0.0

    def lr(self, step: int) -> float:
        if self.epoch_cosine is not None:
            c, per_epoch = self.epoch_cosine, max(1, self.steps_per_epoch)
            return epoch_cosine_lr(step // per_epoch, self.total_steps // per_epoch, self.warmup_epochs, self.peak_lr,
                                   self.min_lr, c.warmup_lr_init, c.cycle_epochs, c.lag)
        if self.warmup_style == "linspace":
            return linspace_lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr, self.warmup_lr)
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)

    def weight_decay_at(self, step: int) -> float | None:
        """The decayed groups' weight decay before step ``step``; ``None`` when it is constant."""
        if self.weight_decay_end is None:
            return None
        return cosine_at(step, self.total_steps, self.weight_decay, self.weight_decay_end)

    def apply(self, step: int, groups: list[dict], decayed: list[bool]) -> None:
        """Set each optimizer group's lr (times its ``lr_scale``) and, with a weight-decay schedule,
        the weight decay of the groups marked ``decayed`` (those built with weight decay > 0, as
        the official loops set only groups whose weight decay is > 0)."""
        lr, wd = self.lr(step), self.weight_decay_at(step)
        for group, is_decayed in zip(groups, decayed):
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if wd is not None and is_decayed:
                group["weight_decay"] = wd


def build_schedule(settings: Any, total_steps: int, warmup_steps: int, peak_lr: float,
                   effective_batch_size: int, steps_per_epoch: int = 1) -> Schedule:
    """The :class:`Schedule` of a run's loop settings (``LoopSettings``: ``min_lr``,
    ``warmup_style``, ``warmup_lr``, ``scale_min_lr``, ``weight_decay``, ``weight_decay_end``,
    ``epoch_cosine``, ``warmup_epochs``)."""
    style = getattr(settings, "warmup_style", "linear")
    if style not in ("linear", "linspace"):
        raise ValueError(f"schedule.warmup_style: {style!r} is not one of 'linear', 'linspace'")
    warmup_lr = getattr(settings, "warmup_lr", 0.0)
    if style == "linear" and warmup_lr:
        raise ValueError(f"schedule.warmup_lr={warmup_lr:g} needs schedule.warmup_style: linspace "
                         "(the linear warmup starts at 0)")
    min_lr = settings.min_lr
    per_epoch = getattr(settings, "epoch_cosine", None)
    if per_epoch is not None and (style != "linear" or warmup_lr or getattr(settings, "scale_min_lr", False)):
        raise ValueError("schedule.epoch_cosine is timm's per-epoch scheduler with its own warmup "
                         "(epoch_cosine.warmup_lr_init): leave schedule.warmup_style, warmup_lr and scale_min_lr unset")
    if getattr(settings, "scale_min_lr", False):
        min_lr, warmup_lr = scaled_lr(min_lr, effective_batch_size), scaled_lr(warmup_lr, effective_batch_size)
    return Schedule(total_steps=total_steps, warmup_steps=warmup_steps, peak_lr=peak_lr, min_lr=min_lr,
                    warmup_style=style, warmup_lr=warmup_lr, weight_decay=settings.weight_decay,
                    weight_decay_end=getattr(settings, "weight_decay_end", None), epoch_cosine=per_epoch,
                    steps_per_epoch=steps_per_epoch, warmup_epochs=getattr(settings, "warmup_epochs", 0.0))

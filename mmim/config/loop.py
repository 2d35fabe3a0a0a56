"""The training loop's recipe sections: the optimizer (``optim``) and the lr / weight-decay schedule
(``schedule``), with the rule each official loop uses (docs/training_parity.md). Re-exported by
:mod:`mmim.config.recipe`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class OptimConfig:
    name: Literal["adamw"] = "adamw"
    base_lr: float = 1.5e-4  # lr = base_lr * effective_batch_size / 256 unless lr is given
    lr: float | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    fused: bool | None = None  # None: fused where the device supports it
    # Weight-decay exemptions beyond 1-D parameters and biases (which are never decayed): None is
    # mmim's rule (positions, cls/mask/global tokens, stream embeddings); a list of fnmatch patterns
    # on parameter names is the official code's rule, e.g. [] for MAE (timm add_weight_decay: tokens
    # decayed). See mmim.engine.optim.
    no_weight_decay: list[str] | None = None
    # True: 1-D parameters (norm gains) and biases are decayed too, only no_weight_decay (a list)
    # is exempt: MultiMAE's pre-training (create_optimizer given a dict of modules: one group of
    # every parameter at args.weight_decay). See mmim.engine.optim.
    decay_norm_and_bias: bool = False
    # None: constant weight decay; a number: the decayed groups' weight decay follows a cosine over
    # the whole run from weight_decay to this (BEiT's utils.cosine_scheduler, as VideoMAE/MultiMAE
    # --weight_decay_end). See mmim.engine.schedule.
    weight_decay_end: float | None = None


@dataclass
class EpochCosineConfig:
    """The lr of timm's ``CosineLRScheduler(t_in_epochs=True)`` stepped once per epoch, as Point-MAE's
    ``tools/builder.py`` builds it and ``runner_pretrain.py`` steps it (``scheduler.step(epoch)`` after
    epoch ``epoch``): the lr is constant within an epoch, and epoch ``e`` trains at the scheduler's value
    for ``t = max(e - lag, 0)``: ``warmup_lr_init + t * (peak - warmup_lr_init) / warmup_epochs`` while
    ``t < warmup_epochs``, then ``min_lr + (peak - min_lr) / 2 * (1 + cos(pi * t / cycle_epochs))``
    (``warmup_prefix=False``: the cosine counts from epoch 0), ``min_lr`` from ``t >= cycle_epochs``.
    See :func:`mmim.engine.schedule.epoch_cosine_lr`."""

    warmup_lr_init: float = 0.0
    cycle_epochs: int | None = None  # timm's t_initial; None: schedule.epochs
    lag: int = 1  # 1: stepped after each epoch with that epoch's index (Point-MAE); 0: before it

    def __post_init__(self) -> None:
        if self.warmup_lr_init < 0:
            raise ValueError(f"epoch_cosine.warmup_lr_init must be >= 0, got {self.warmup_lr_init}")
        if self.cycle_epochs is not None and self.cycle_epochs < 1:
            raise ValueError(f"epoch_cosine.cycle_epochs must be >= 1, got {self.cycle_epochs}")
        if self.lag < 0:
            raise ValueError(f"epoch_cosine.lag must be >= 0, got {self.lag}")


@dataclass
class ScheduleConfig:
    epochs: int = 1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    max_steps: int | None = None  # stop early (smoke tests); the schedule still spans ``epochs``
    # How the lr warms up (mmim.engine.schedule): "linear" is MAE's lr_sched (peak x step / warmup,
    # from 0); "linspace" is BEiT's utils.cosine_scheduler (np.linspace(warmup_lr, peak, warmup):
    # starts at warmup_lr, reaches the peak on the last warmup step), used by VideoMAE, VideoMAE v2, MultiMAE.
    warmup_style: Literal["linear", "linspace"] = "linear"
    warmup_lr: float = 0.0  # the first warmup lr; "linspace" only
    # True: min_lr and warmup_lr are also multiplied by effective batch / 256, as the BEiT-family
    # scripts do (args.min_lr = args.min_lr * total_batch_size / 256); False: they are absolute.
    scale_min_lr: bool = False
    # None: per-iteration linear warmup + half-cycle cosine (MAE's util/lr_sched.py); a mapping: the lr
    # changes once per epoch as timm's CosineLRScheduler does (Point-MAE), see EpochCosineConfig
    epoch_cosine: EpochCosineConfig | None = None

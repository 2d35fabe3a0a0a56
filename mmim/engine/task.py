"""What the training loop trains: a module, its data, its loop settings and one step's loss.

The loop (:class:`mmim.engine.trainer.Trainer`) is the same for masked pre-training
(:class:`PretrainTask`) and supervised fine-tuning (:class:`mmim.finetune.task.FinetuneTask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmim import registry
from mmim.config.recipe import Recipe
from mmim.engine.optim import param_groups
from mmim.model import MaskedModel, build_model


@dataclass(frozen=True)
class LoopSettings:
    """Batching, schedule and optimizer numbers of one training run: the one shape in which the
    loop reads them, for pre-training and fine-tuning alike (each task fills it, by keyword, from
    its recipe sections). Where and how the run executes (device, precision, logging,
    checkpoints) stays in ``recipe.train``."""

    batch_size: int
    effective_batch_size: int | None
    epochs: int
    warmup_epochs: float
    min_lr: float
    base_lr: float
    lr: float | None
    weight_decay: float
    betas: tuple[float, float]
    eps: float = 1e-8
    fused: bool | None = None
    grad_clip: float | None = None
    max_steps: int | None = None
    num_workers: int = 0
    persistent_workers: bool = False
    prefetch_factor: int = 4
    pin_memory: bool | None = None  # None: on for CUDA
    skip_corrupt: bool = False
    sample_weights: Tensor | None = None  # weighted sampling (see ResumableSampler)
    epoch_samples: int | None = None
    replacement: bool = True
    shards: str | list[str] | None = None  # train from tar shards instead of the map-style sampler
    shards_index: str | None = None
    shuffle_buffer: int = 1000
    # the schedule rule (mmim.engine.schedule.build_schedule): MAE's by default
    warmup_style: str = "linear"
    warmup_lr: float = 0.0
    scale_min_lr: bool = False
    weight_decay_end: float | None = None
    epoch_cosine: Any = None  # EpochCosineConfig: the lr changes once per epoch (timm CosineLRScheduler)


class Task(Protocol):
    module: nn.Module
    dataset: Dataset
    settings: LoopSettings
    #: recipe fields (dotted) that may change when this task's run is resumed, beyond the engine's own
    resumable_changes: tuple[str, ...]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups; a group's ``lr_scale`` multiplies the scheduled lr."""

    def step(self, net: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor], int]:
        """Loss of one micro-batch, named parts for logging (detached tensors), and the number of samples."""


class PretrainTask:
    """Masked pre-training of ``recipe.model`` on ``recipe.data``."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.module: MaskedModel = self.build_module()
        if recipe.data.shards:  # the dataset only decodes shard records; its files need not be here
            from mmim.data.records import build_decoder
            self.dataset = build_decoder(recipe.data.dataset, split="train", augment=True)
        else:
            self.dataset = registry.build("dataset", recipe.data.dataset, where="data.dataset", split="train", augment=True)
        o, s, d, t = recipe.optim, recipe.schedule, recipe.data, recipe.train
        self.settings = LoopSettings(
            batch_size=d.batch_size, effective_batch_size=t.effective_batch_size, epochs=s.epochs,
            warmup_epochs=s.warmup_epochs, min_lr=s.min_lr, base_lr=o.base_lr, lr=o.lr, weight_decay=o.weight_decay,
            betas=o.betas, eps=o.eps, fused=o.fused, grad_clip=t.grad_clip, max_steps=s.max_steps,
            num_workers=d.num_workers, persistent_workers=d.persistent_workers, prefetch_factor=d.prefetch_factor,
            pin_memory=d.pin_memory, skip_corrupt=d.skip_corrupt, shards=d.shards, shards_index=d.shards_index,
            shuffle_buffer=d.shuffle_buffer, warmup_style=s.warmup_style, warmup_lr=s.warmup_lr,
            scale_min_lr=s.scale_min_lr, weight_decay_end=o.weight_decay_end,
            epoch_cosine=s.epoch_cosine)

    #: fine-tuning settings do not shape pre-training
    resumable_changes = ("finetune",)

    def build_module(self) -> MaskedModel:
        """A fresh (unsharded) model of the recipe; the engine loads gathered weights into one."""
        return build_model(self.recipe.model, self.recipe.source)

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.module, self.settings.weight_decay, self.recipe.optim.no_weight_decay,
                            self.recipe.optim.decay_norm_and_bias)

    def after_step(self, progress: float) -> dict[str, float]:
        """After each optimizer step: move the EMA teacher (if any) towards the student."""
        momentum = self.module.update_teacher(progress)
        return {"teacher_momentum": momentum} if momentum is not None else {}

    def step(self, net: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor], int]:
        out = net(batch, generator=generator)
        return out.loss, out.parts, out.mask.batch_size

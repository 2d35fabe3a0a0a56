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


@dataclass
class LoopSettings:
    """Batching, schedule and optimizer numbers of one training run."""

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
    skip_corrupt: bool = False
    sample_weights: Tensor | None = None  # weighted sampling (see ResumableSampler)
    epoch_samples: int | None = None
    replacement: bool = True


class Task(Protocol):
    module: nn.Module
    dataset: Dataset
    settings: LoopSettings

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups; a group's ``lr_scale`` multiplies the scheduled lr."""

    def step(self, net: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, float], int]:
        """Loss of one micro-batch, named parts for logging, and the number of samples."""


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
        self.settings = LoopSettings(d.batch_size, t.effective_batch_size, s.epochs, s.warmup_epochs, s.min_lr, o.base_lr,
                                     o.lr, o.weight_decay, o.betas, o.eps, o.fused, t.grad_clip, s.max_steps,
                                     d.num_workers, d.skip_corrupt)

    def build_module(self) -> MaskedModel:
        """A fresh (unsharded) model of the recipe; the engine loads gathered weights into one."""
        return build_model(self.recipe.model, self.recipe.source)

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.module, self.settings.weight_decay)

    def after_step(self, progress: float) -> dict[str, float]:
        """After each optimizer step: move the EMA teacher (if any) towards the student."""
        momentum = self.module.update_teacher(progress)
        return {"teacher_momentum": momentum} if momentum is not None else {}

    def step(self, net: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, float], int]:
        out = net(batch, generator=generator)
        return out.loss, out.parts, next(iter(out.tokens.values())).embeddings.shape[0]

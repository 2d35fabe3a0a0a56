"""Supervised fine-tuning as a :class:`~mmim.engine.task.Task` of the shared training loop."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mmim import registry
from mmim.config.recipe import Recipe
from mmim.data.loading import collate_skipping
from mmim.engine.checkpoint import load_checkpoint
from mmim.engine.task import LoopSettings
from mmim.finetune.classifier import EncoderClassifier, set_drop_path
from mmim.finetune.layer_decay import layer_decay_groups
from mmim.model import MaskedModel, build_model
from mmim.timm_compat import import_timm

log = logging.getLogger(__name__)


def load_pretrained(model: MaskedModel, init: str) -> None:
    """Load encoder weights: an mmim run directory or checkpoint, or ``<converter>:<path>`` for an
    official checkpoint through a plugin's converter (e.g. ``mae:mae_pretrain_vit_base.pth``)."""
    name, sep, path = init.partition(":")
    if sep and name in {c.split(":")[1] for c in registry.available("converter")}:
        missing = registry.resolve("converter", name)(path, model)
        log.info("loaded %s through converter %r (%d keys not in the checkpoint)", path, name, len(missing))
        return
    state = load_checkpoint(init)["model"]
    result = model.load_state_dict(state, strict=False)
    encoder_missing = [k for k in result.missing_keys if k.startswith("encoder.") or ".tokenizer." in k]
    if encoder_missing or result.unexpected_keys:
        raise ValueError(f"{init}: checkpoint does not fit the recipe's model: missing {encoder_missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def dataset_spec(recipe: Recipe) -> dict[str, Any]:
    return recipe.finetune.dataset or recipe.eval.dataset or recipe.data.dataset


class FinetuneTask:
    """Fine-tunes ``recipe.model``'s encoder (optionally initialised from ``init``) with the
    ``recipe.finetune`` settings: layer-wise lr decay, drop path, label smoothing, mixup/cutmix."""

    def __init__(self, recipe: Recipe, init: str | None = None) -> None:
        ft = recipe.finetune
        backbone = build_model(recipe.model, recipe.source)
        if init:
            load_pretrained(backbone, init)
        set_drop_path(backbone, ft.drop_path)
        spec = dataset_spec(recipe)
        self.dataset: Dataset = registry.build("dataset", spec, where="finetune.dataset", split=ft.train_split, augment=True)
        num_classes = ft.num_classes or getattr(self.dataset, "num_classes", None)
        if not num_classes:
            raise ValueError("finetune.num_classes is not set and the dataset has no num_classes attribute")
        self.module = EncoderClassifier(backbone, num_classes, ft.pool)
        self.num_layers = len(backbone.encoder.blocks)
        self.layer_decay, self.num_classes = ft.layer_decay, num_classes
        self.input_keys = [s.input_key or n for n, s in backbone.streams.items()]
        self.mixup = None
        if ft.mixup > 0 or ft.cutmix > 0:
            if len(self.input_keys) != 1:
                raise ValueError("mixup/cutmix need a single-stream model")
            mixup_cls = import_timm().data.Mixup
            self.mixup = mixup_cls(mixup_alpha=ft.mixup, cutmix_alpha=ft.cutmix, label_smoothing=ft.label_smoothing,
                                   num_classes=num_classes)
        self.label_smoothing = ft.label_smoothing
        self.settings = LoopSettings(ft.batch_size, ft.effective_batch_size, ft.epochs, ft.warmup_epochs, ft.min_lr,
                                     ft.base_lr, ft.lr, ft.weight_decay, ft.betas, grad_clip=ft.grad_clip,
                                     max_steps=ft.max_steps, num_workers=recipe.data.num_workers,
                                     skip_corrupt=recipe.data.skip_corrupt)

    def param_groups(self) -> list[dict[str, Any]]:
        return layer_decay_groups(self.module, self.num_layers, self.settings.weight_decay, self.layer_decay)

    def step(self, net: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, float], int]:
        labels = batch["label"].long()
        if self.mixup is not None:
            key = self.input_keys[0]
            batch = dict(batch)
            batch[key], soft = self.mixup(batch[key], labels)
            logits = net(batch)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = net(batch)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return loss, {"ce": float(loss.detach())}, labels.shape[0]


@torch.no_grad()
def top1_accuracy(classifier: nn.Module, dataset: Dataset, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``classifier`` on ``dataset`` (no augmentation expected)."""
    was_training = classifier.training
    classifier.eval()
    correct = total = 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skipping):
        batch.pop("_skipped", None)
        inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, Tensor)}
        pred = classifier(inputs).argmax(-1).cpu()
        correct += int((pred == batch["label"]).sum())
        total += pred.shape[0]
    classifier.train(was_training)
    return correct / max(total, 1)

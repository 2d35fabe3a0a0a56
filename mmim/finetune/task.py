"""Supervised fine-tuning as a :class:`~mmim.engine.task.Task` of the shared training loop.

Labels: ``batch["label"]`` is ``(B,)`` class indices (cross-entropy), or with
``finetune.multilabel: true`` a float multi-hot ``(B, num_classes)`` tensor (binary cross-entropy
with logits; evaluated by mAP).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmim import registry
from mmim.config.recipe import Recipe
from mmim.data.records import build_decoder
from mmim.data.stream import ShardSequence
from mmim.engine.checkpoint import load_checkpoint
from mmim.engine.task import LoopSettings
from mmim.finetune.classifier import EncoderClassifier, build_head, pooled_dim, set_drop_path, train_positions
from mmim.finetune.evaluate import evaluate, vote_hook
from mmim.finetune.layer_decay import layer_decay_groups
from mmim.finetune.mixup import Mixup
from mmim.model import MaskedModel, build_model

log = logging.getLogger(__name__)


FRESH_KEYS = ("encoder.cls_token", "encoder.cls_pos")  # may stay freshly initialised (pre-training had no cls)


def load_pretrained(model: MaskedModel, init: str, head: nn.Module | None = None) -> None:
    """Load encoder weights: an mmim run directory or checkpoint, or ``<converter>:<path>`` for an
    official checkpoint through a plugin's converter (e.g. ``mae:mae_pretrain_vit_base.pth``).

    Every converter is called as ``converter(path, model, head=head)`` (the registry's converter
    contract): one whose format carries a classifier head may fill ``head`` from a fine-tuned
    checkpoint (Point-MAE's ``cls_head_finetune`` into ``head: mlp``); the others leave it alone.
    A cls token (and its position) missing from an mmim pre-training checkpoint stays freshly
    initialised, as in Point-MAE's fine-tuning.
    """
    name, sep, path = init.partition(":")
    if sep and name in {c.split(":")[1] for c in registry.available("converter")}:
        converter = registry.resolve("converter", converter_for(model, name))
        missing = converter(path, model, head=head)
        log.info("loaded %s through converter %r (%d keys not in the checkpoint)", path, name, len(missing))
        return
    state = load_checkpoint(init)["model"]
    result = model.load_state_dict(state, strict=False)
    encoder_missing = [k for k in result.missing_keys
                       if (k.startswith("encoder.") or ".tokenizer." in k) and k not in FRESH_KEYS]
    if encoder_missing or result.unexpected_keys:
        raise ValueError(f"{init}: checkpoint does not fit the recipe's model: missing {encoder_missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def tokenizer_plugins(model: MaskedModel, among: list[str] | None = None) -> list[str]:
    """The plugins (of ``among``, default all) whose registered tokenizer classes ``model``'s streams use."""
    used = {type(s.tokenizer) for s in model.streams.values() if s.tokenizer is not None}
    found = []
    for name, plugin in registry.plugins().items():
        if among is not None and name not in among:
            continue
        for short in plugin.components.get("tokenizer", {}):
            try:
                if registry.resolve("tokenizer", f"{name}:{short}") in used:
                    found.append(name)
                    break
            except registry.RegistryError:
                continue
    return found


def converter_for(model: MaskedModel, name: str) -> str:
    """The qualified converter ``name`` for ``model``: a name several plugins register (``hf``: the
    image and the video plugin) is taken from the plugin whose tokenizer the model uses."""
    owners = [c.split(":")[0] for c in registry.available("converter") if c.split(":")[1] == name]
    if len(owners) > 1:
        mine = tokenizer_plugins(model, owners)
        if len(mine) != 1:
            raise ValueError(f"--init {name}:...: no {name!r} converter for this model: plugins {', '.join(owners)} "
                             f"register one, the model's tokenizers come from none of them")
        owners = mine
    return f"{owners[0]}:{name}"


def dataset_spec(recipe: Recipe) -> dict[str, Any]:
    return recipe.finetune.dataset or recipe.eval.dataset or recipe.data.dataset


class FinetuneTask:
    """Fine-tunes ``recipe.model``'s encoder (optionally initialised from ``init``) with the
    ``recipe.finetune`` settings: layer-wise lr decay, drop path, label smoothing, mixup/cutmix,
    a linear or MLP head, multi-label targets; :meth:`evaluate` tests with optional voting."""

    def __init__(self, recipe: Recipe, init: str | None = None) -> None:
        ft = recipe.finetune
        self.recipe = recipe
        spec = dataset_spec(recipe)
        if ft.train_shards:  # the dataset only decodes shard records; its files need not be here
            self.dataset: Dataset = build_decoder(spec, ft.train_split, augment=True)
        else:
            self.dataset = registry.build("dataset", spec, where="finetune.dataset", split=ft.train_split, augment=True)
        num_classes = ft.num_classes or getattr(self.dataset, "num_classes", None)
        if not num_classes:
            raise ValueError("finetune.num_classes is not set and the dataset has no num_classes attribute" +
                             (" (a dataset decoding shards does not scan files for classes)" if ft.train_shards else ""))
        vote_hook(self.dataset, ft.votes)  # fail before training when voting cannot work
        self.num_classes = num_classes
        self.module = self.build_module(init)
        backbone = self.module.backbone
        self.num_layers = len(backbone.encoder.blocks)
        self.layer_decay = ft.layer_decay
        self.multilabel, self.votes = ft.multilabel, ft.votes
        self.input_keys = [backbone.streams[n].input_key or n for n in backbone.inputs]
        self.mixup = None
        if ft.mixup > 0 or ft.cutmix > 0:
            if len(self.input_keys) != 1:
                raise ValueError("mixup/cutmix need a single-stream model")
            # multi-label: Mixup mixes the inputs; the multi-hot labels are mixed by mix_multihot
            self.mixup = Mixup(mixup_alpha=ft.mixup, cutmix_alpha=ft.cutmix, prob=ft.mixup_prob,
                               switch_prob=ft.mixup_switch_prob,
                               label_smoothing=0.0 if ft.multilabel else ft.label_smoothing, num_classes=num_classes)
        self.label_smoothing = ft.label_smoothing
        self.settings = LoopSettings(
            batch_size=ft.batch_size, effective_batch_size=ft.effective_batch_size, epochs=ft.epochs,
            warmup_epochs=ft.warmup_epochs, min_lr=ft.min_lr, base_lr=ft.base_lr, lr=ft.lr,
            weight_decay=ft.weight_decay, betas=ft.betas, grad_clip=ft.grad_clip, max_steps=ft.max_steps,
            num_workers=recipe.data.num_workers, persistent_workers=recipe.data.persistent_workers,
            prefetch_factor=recipe.data.prefetch_factor, pin_memory=recipe.data.pin_memory,
            skip_corrupt=recipe.data.skip_corrupt,
            sample_weights=self.sample_weights(ft), epoch_samples=ft.epoch_samples,
            replacement=ft.sampler_replacement, shards=ft.train_shards, shards_index=ft.train_shards_index,
            shuffle_buffer=recipe.data.shuffle_buffer)

    #: where fine-tuning runs, when it stops and its notes may change on resume
    resumable_changes = ("finetune.max_steps", "finetune.out_dir", "finetune.notes", "finetune.reported_top1",
                         "finetune.train_shards", "finetune.train_shards_index", "finetune.test_shards",
                         "finetune.test_shards_index")  # where the same shards are read from

    def sample_weights(self, ft) -> Tensor | None:  # noqa: ANN001 - FinetuneConfig
        """``finetune.sampler: weighted``: the training set's ``sample_weights()`` (AudioSet's
        class-balancing weights); ``None`` for uniform sampling."""
        if ft.sampler != "weighted":
            if ft.epoch_samples is not None:
                raise ValueError("finetune.epoch_samples needs finetune.sampler: weighted")
            return None
        weights = getattr(self.dataset, "sample_weights", None)
        if not callable(weights):
            raise ValueError(f"finetune.sampler: weighted needs a training set with sample_weights(); "
                             f"{type(self.dataset).__name__} has none")
        return torch.as_tensor(weights(), dtype=torch.float64)

    def build_module(self, init: str | None = None) -> EncoderClassifier:
        """The classifier: the recipe's encoder (weights from ``init`` if given), drop path, the
        head, the input streams and the token masker. Also how FSDP2 runs rebuild a plain copy."""
        ft = self.recipe.finetune
        backbone = build_model(self.recipe.model, self.recipe.source)
        head = build_head(ft.head, pooled_dim(backbone, ft.pool), self.num_classes, ft.head_hidden, ft.head_dropout)
        if init:
            load_pretrained(backbone, init, head)
        set_drop_path(backbone, ft.drop_path)
        if ft.streams is not None:
            backbone.restrict_inputs(ft.streams)
        if ft.train_positions:  # after the checkpoint (the table starts from its positions), for the streams seen
            train_positions(backbone)
        module = EncoderClassifier(backbone, self.num_classes, ft.pool, head=head)
        if ft.token_masker is not None:
            module.set_token_masker(registry.build("masker", ft.token_masker, where="finetune.token_masker"))
        return module

    def param_groups(self) -> list[dict[str, Any]]:
        return layer_decay_groups(self.module, self.num_layers, self.settings.weight_decay, self.layer_decay,
                                  self.recipe.finetune.no_weight_decay)

    def step(self, net: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, float], int]:
        if self.multilabel:
            return self._multilabel_step(net, batch, generator)
        labels = batch["label"]
        if labels.dim() != 1:
            raise ValueError(f"batch['label'] has shape {tuple(labels.shape)}; class indices (B,) expected "
                             f"(multi-hot labels need finetune.multilabel: true)")
        labels = labels.long()
        if self.mixup is not None:
            key = self.input_keys[0]
            batch = dict(batch)
            batch[key], soft = self.mixup(batch[key], labels)
            logits = net(batch, generator=generator)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = net(batch, generator=generator)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return loss, {"ce": loss.detach()}, labels.shape[0]

    def _multilabel_step(self, net: nn.Module, batch: dict[str, Any],
                         generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float], int]:
        labels = batch["label"]
        if not (isinstance(labels, Tensor) and labels.is_floating_point() and labels.dim() == 2
                and labels.shape[1] == self.num_classes):
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"finetune.multilabel: batch['label'] must be a float multi-hot tensor (B, {self.num_classes}), "
                             f"got {got}{' ' + str(labels.dtype) if isinstance(labels, Tensor) else ''}")
        if self.mixup is not None:
            key = self.input_keys[0]
            batch = dict(batch)
            batch[key], labels = mix_multihot(self.mixup, batch[key], labels)
        if self.label_smoothing > 0:  # timm's on/off values: 1 -> 1 - eps + eps / C, 0 -> eps / C
            labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        logits = net(batch, generator=generator)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return loss, {"bce": loss.detach()}, labels.shape[0]

    def evaluate(self, classifier: nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
        """The test split's ``top1`` (or ``mAP`` when multi-label), voting when ``finetune.votes > 1``."""
        ft = self.recipe.finetune
        spec = dataset_spec(self.recipe)
        if ft.test_shards:  # read once, in packed order, by the dataset's own reader
            test = ShardSequence.of(spec, ft.test_split, ft.test_shards, ft.test_shards_index)
        else:
            test = registry.build("dataset", spec, where="finetune.dataset", split=ft.test_split, augment=False)
        return evaluate(classifier, test, multilabel=self.multilabel, votes=self.votes, device=device,
                        seed=self.recipe.seed)


def mix_multihot(mixup: Any, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """timm mixup/cutmix of ``inputs`` with the same mixing applied to multi-hot ``labels`` ``(B, C)``.

    timm's ``Mixup`` only builds one-hot targets from class indices. Asked to mix the targets
    ``arange(B)`` over ``B`` classes (no smoothing), it returns the mixing matrix ``W`` ``(B, B)``
    (``W[i, j]``: the share of sample ``j`` in mixed sample ``i``, whatever mode and cut-mix area
    correction timm chose), and ``W @ labels`` are the mixed multi-hot labels.
    """
    size = labels.shape[0]
    mixup.num_classes, mixup.label_smoothing = size, 0.0
    mixed, weights = mixup(inputs, torch.arange(size, device=labels.device))
    return mixed, weights.to(labels.dtype) @ labels


def top1_accuracy(classifier: nn.Module, dataset: Dataset, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``classifier`` on ``dataset`` (no augmentation expected)."""
    return evaluate(classifier, dataset, batch_size=batch_size, device=device)["top1"]

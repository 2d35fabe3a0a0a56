"""Layer-wise learning-rate decay (BEiT/MAE fine-tuning) combined with mmim's no-decay rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from mmim.engine.optim import check_exempt, no_weight_decay


def layer_id(name: str, num_layers: int) -> int:
    """0 for everything before the blocks (tokenizers, cls token), ``i + 1`` for block ``i``,
    ``num_layers + 1`` for what follows (final norms, head)."""
    if ".encoder.blocks." in f".{name}":
        return int(name.split("encoder.blocks.")[1].split(".")[0]) + 1
    if "encoder.cls_token" in name or "encoder.cls_pos" in name or ".tokenizer." in name or ".mask_token" in name:
        return 0
    return num_layers + 1


def layer_decay_groups(model: nn.Module, num_layers: int, weight_decay: float, layer_decay: float,
                       exempt: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parameter groups with ``lr_scale = layer_decay ** (num_layers + 1 - layer_id)``; ``exempt``
    as in :func:`mmim.engine.optim.no_weight_decay` (``finetune.no_weight_decay``)."""
    check_exempt(model, exempt, "finetune.no_weight_decay")
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid, decay = layer_id(name, num_layers), not no_weight_decay(name, param, exempt)
        group = groups.setdefault((lid, decay), {
            "params": [], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": layer_decay ** (num_layers + 1 - lid), "layer_id": lid,
        })
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]

"""AdamW with parameter groups: no weight decay on norms, biases, positions, mask/cls tokens."""

from __future__ import annotations

import torch
from torch import nn

from mmim.config.recipe import OptimConfig

NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "global_tokens", "modality_embed")
NO_DECAY_DICTS = ("modality_embed", "task_embeddings")  # per-stream embeddings: ``task_embeddings.rgb``


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for 1-D parameters (norm gains, biases) and position/cls/mask-token tensors."""
    parts = name.split(".")
    in_dict = len(parts) > 1 and parts[-2] in NO_DECAY_DICTS
    return param.ndim <= 1 or name.endswith(".bias") or parts[-1] in NO_DECAY_NAMES or in_dict


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed and not decayed (frozen parameters are left out)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if no_weight_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(groups: list[dict], lr: float, betas: tuple[float, float], eps: float, fused: bool | None,
                device: torch.device) -> torch.optim.Optimizer:
    """AdamW over parameter ``groups``; fused kernels on CUDA unless ``fused`` says otherwise."""
    fused = fused if fused is not None else device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups` of ``model`` with ``cfg``'s settings."""
    return build_adamw(param_groups(model, cfg.weight_decay), lr, cfg.betas, cfg.eps, cfg.fused, device)

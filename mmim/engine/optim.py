"""AdamW with parameter groups, and the weight-decay rules that split them.

Every official MAE-family loop exempts 1-D parameters (norm gains) and biases from weight decay;
they differ in which other tensors they exempt, and a recipe says which with
``optim.no_weight_decay`` (``finetune.no_weight_decay`` for fine-tuning):

- ``None`` (mmim's own rule): also position tables, cls/mask/global tokens and per-stream
  modality/task embeddings;
- a list of patterns: only the parameters whose mmim name matches one of them
  (:func:`fnmatch.fnmatchcase` on the dotted name). ``[]`` is timm's ``add_weight_decay`` with no
  skip list, which MAE's ``main_pretrain.py`` uses: its cls and mask tokens, shaped ``(1, 1, D)``,
  ARE decayed. VideoMAE skips exactly the names its model's ``no_weight_decay()`` lists.

MultiMAE's pre-training decays every parameter: ``run_pretraining_multimae.py`` calls
``create_optimizer(args, {'model': model, 'balancer': balancer})``, and the dict form builds one
group of all the model's parameters with ``args.weight_decay``, skipping the bias/norm filter. A
recipe says so with ``optim.decay_norm_and_bias: true`` (and ``optim.no_weight_decay: []``).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from torch import nn

from mmim.config.recipe import FinetuneConfig, OptimConfig, read_yaml

NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "global_tokens", "modality_embed")
NO_DECAY_DICTS = ("modality_embed", "task_embeddings")  # per-stream embeddings: ``task_embeddings.rgb``


def no_weight_decay(name: str, param: nn.Parameter, exempt: Sequence[str] | None = None,
                    decay_norm_and_bias: bool = False) -> bool:
    """True for 1-D parameters (norm gains, biases) unless ``decay_norm_and_bias`` and, with
    ``exempt=None``, mmim's own list (position/cls/mask-token tensors, per-stream embeddings); else
    for names matching ``exempt``."""
    if not decay_norm_and_bias and (param.ndim <= 1 or name.endswith(".bias")):
        return True
    if exempt is not None:
        return any(fnmatchcase(name, pattern) for pattern in exempt)
    parts = name.split(".")
    in_dict = len(parts) > 1 and parts[-2] in NO_DECAY_DICTS
    return parts[-1] in NO_DECAY_NAMES or in_dict


def check_exempt(model: nn.Module, exempt: Sequence[str] | None, where: str = "optim.no_weight_decay") -> None:
    """A pattern that names no trainable parameter is a mistake (a typo, or a rule written for
    another model): raise naming it and the parameters there are."""
    if not exempt:
        return
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for pattern in exempt:
        if not any(fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(n for n in names if ".blocks." not in f".{n}")
            raise ValueError(f"{where}: {pattern!r} matches no trainable parameter of the model; patterns "
                             f"are matched against full names: {shown} (and those in the blocks)")


def describe_no_decay(exempt: Sequence[str] | None, decay_norm_and_bias: bool = False) -> str:
    """One line for ``mmim recipes``: which parameters are not decayed."""
    if decay_norm_and_bias:
        return ", ".join(exempt) if exempt else "nothing (every parameter decayed, norms and biases too)"
    if exempt is None:
        return "1-D, biases, positions, cls/mask/global tokens, stream embeddings (mmim default)"
    if not exempt:
        return "1-D and biases only (tokens decayed)"
    return "1-D, biases, " + ", ".join(exempt)


def param_groups(model: nn.Module, weight_decay: float, exempt: Sequence[str] | None = None,
                 decay_norm_and_bias: bool = False) -> list[dict]:
    """Two groups: decayed and not decayed (frozen parameters are left out); see
    :func:`no_weight_decay` for ``exempt`` and ``decay_norm_and_bias``."""
    if decay_norm_and_bias and exempt is None:
        raise ValueError("optim.decay_norm_and_bias: true needs optim.no_weight_decay as a list of patterns "
                         "([]: every parameter is decayed, as MultiMAE's pre-training), not null (mmim's rule)")
    check_exempt(model, exempt)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if no_weight_decay(name, param, exempt, decay_norm_and_bias) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(groups: list[dict], lr: float, betas: tuple[float, float], eps: float, fused: bool | None,
                device: torch.device) -> torch.optim.Optimizer:
    """AdamW over parameter ``groups``; fused kernels on CUDA unless ``fused`` says otherwise."""
    fused = fused if fused is not None else device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups` of ``model`` with ``cfg``'s settings."""
    return build_adamw(param_groups(model, cfg.weight_decay, cfg.no_weight_decay), lr, cfg.betas, cfg.eps, cfg.fused,
                       device)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def schedule_rule(schedule: dict, optim: dict) -> str:
    """One line for ``mmim recipes``: the warmup, the lr floor and the weight-decay schedule
    (see :mod:`mmim.engine.schedule`)."""
    scaled = " x batch/256" if schedule.get("scale_min_lr") else ""
    warmup = f"{_number(schedule.get('warmup_epochs', 0))} warmup epochs"
    per_epoch = schedule.get("epoch_cosine")
    if per_epoch:  # Point-MAE: timm's CosineLRScheduler stepped once per epoch
        lag = per_epoch.get("lag", 1)
        cycle = per_epoch.get("cycle_epochs")
        warmup = (f"lr per epoch (timm cosine{f' over {cycle} epochs' if cycle else ''}, "
                  f"{warmup} from {_number(per_epoch.get('warmup_lr_init', 0.0))}{f', {lag} epoch late' if lag else ''})")
    elif schedule.get("warmup_style", "linear") == "linspace":
        warmup += f" linspace from {_number(schedule.get('warmup_lr', 0.0))}{scaled} (BEiT cosine_scheduler)"
    else:
        warmup += " linear from 0 (MAE lr_sched)"
    wd, end = optim.get("weight_decay", OptimConfig().weight_decay), optim.get("weight_decay_end")
    decay = "constant wd" if end is None else f"wd cosine {_number(wd)} -> {_number(end)}"
    return f"{warmup}; cosine to min_lr {_number(schedule.get('min_lr', 0.0))}{scaled}; {decay}"


def mixup_rule(ft: dict, fd: FinetuneConfig) -> str:
    """``; mixup 0.8 / cutmix 1 (prob 1, switch 0.5), smoothing 0.1`` for a fine-tuning section that mixes."""
    mixup, cutmix = ft.get("mixup", fd.mixup), ft.get("cutmix", fd.cutmix)
    if not (mixup or cutmix):
        return ""
    return (f"; mixup {_number(mixup)} / cutmix {_number(cutmix)} (prob {_number(ft.get('mixup_prob', fd.mixup_prob))}, "
            f"switch {_number(ft.get('mixup_switch_prob', fd.mixup_switch_prob))}), "
            f"smoothing {_number(ft.get('label_smoothing', fd.label_smoothing))}")


def optimizer_rules(path: Path) -> list[str]:
    """How the recipe's loop optimizes, as the official code does it: betas, weight decay and
    what is exempt from it, the lr rule, clipping; and the same for fine-tuning (layer decay)."""
    data = read_yaml(path)
    optim, train, ft = data.get("optim") or {}, data.get("train") or {}, data.get("finetune") or {}
    defaults = OptimConfig()

    def lr_rule(section: dict, base_default: float) -> str:
        if section.get("lr") is not None:
            return f"lr {_number(section['lr'])} (not scaled)"
        return f"lr = {_number(section.get('base_lr', base_default))} x batch/256"

    def clip(value: object) -> str:
        return f"clip grad norm {_number(value)}" if value else "no clipping"

    betas = tuple(optim.get("betas", defaults.betas))
    lines = [f"pretrain: AdamW betas ({_number(betas[0])}, {_number(betas[1])}), "
             f"wd {_number(optim.get('weight_decay', defaults.weight_decay))}, "
             f"no decay on {describe_no_decay(optim.get('no_weight_decay'), bool(optim.get('decay_norm_and_bias')))}; "
             f"{lr_rule(optim, defaults.base_lr)}; "
             f"{clip(train.get('grad_clip'))}",
             "pretrain schedule: " + schedule_rule(data.get("schedule") or {}, optim)]
    if train.get("grad_accumulation") == "sum":
        lines[0] += "; accumulated gradients summed"
    if ft:
        fd = FinetuneConfig()
        fb = tuple(ft.get("betas", fd.betas))
        lines.append(f"finetune: AdamW betas ({_number(fb[0])}, {_number(fb[1])}), "
                     f"wd {_number(ft.get('weight_decay', fd.weight_decay))}, "
                     f"no decay on {describe_no_decay(ft.get('no_weight_decay'))}; {lr_rule(ft, fd.base_lr)}, "
                     f"layer decay {_number(ft.get('layer_decay', fd.layer_decay))}; {clip(ft.get('grad_clip'))}"
                     + ("; positions trained" if ft.get("train_positions") else "") + mixup_rule(ft, fd))
    return lines

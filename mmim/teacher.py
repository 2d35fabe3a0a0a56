"""Teachers for feature-target methods (Algorithm 2 of the MIM survey: data2vec, contrastive MIM).

A teacher encodes the *unmasked* input; targets built on it (``requires_teacher``) receive the
teacher's per-block token features. Two kinds:

- ``ema: true``: a frozen copy of the student's tokenizers and encoder, moved towards the student
  after every optimizer step with momentum ``m``: ``t = m * t + (1 - m) * s``. ``m`` follows a
  schedule from ``momentum`` to ``momentum_end`` over training. The copy is a submodule, so
  checkpoints and resume include it.
- ``ema: false``: the student itself, run without gradients (a shared, stop-gradient teacher).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mmim.trunk.joint import encode


@dataclass
class TeacherConfig:
    ema: bool = True
    momentum: float = 0.999
    momentum_end: float = 0.9999
    schedule: Literal["cosine", "linear", "constant"] = "cosine"

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum <= 1.0 or not 0.0 <= self.momentum_end <= 1.0:
            raise ValueError(f"teacher momentum must be in [0, 1], got {self.momentum} -> {self.momentum_end}")


def momentum_at(cfg: TeacherConfig, progress: float) -> float:
    """EMA momentum at ``progress`` in ``[0, 1]`` of training."""
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "constant":
        return cfg.momentum
    if cfg.schedule == "linear":
        return cfg.momentum + (cfg.momentum_end - cfg.momentum) * progress
    return cfg.momentum_end - (cfg.momentum_end - cfg.momentum) * (math.cos(math.pi * progress) + 1) / 2


class Teacher(nn.Module):
    """Per-block features of every stream's unmasked input, through the model's one :func:`encode`.

    ``ema: true``: the teacher owns frozen copies of the student's encoder and tokenizers, always
    in eval mode (it is a target, not a learner), moved towards the student by :meth:`update`.
    ``ema: false``: it owns nothing; the caller passes the shared encoder and tokenizers, which
    run as they are (the student's own mode) without gradients.
    """

    def __init__(self, cfg: TeacherConfig, encoder: nn.Module, tokenizers: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.ema:
            self.encoder = copy.deepcopy(encoder)
            self.tokenizers = nn.ModuleDict({n: copy.deepcopy(t) for n, t in tokenizers.items()})
            for p in self.parameters():
                p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """The EMA copy stays in eval mode whatever its parent's mode."""
        return super().train(False)

    @torch.no_grad()
    def update(self, encoder: nn.Module, tokenizers: Mapping[str, nn.Module], progress: float) -> float:
        """One EMA step towards the student's ``encoder`` and ``tokenizers``; returns the momentum
        used (1.0, nothing moved, for a shared teacher)."""
        if not self.cfg.ema:
            return 1.0
        m = momentum_at(self.cfg, progress)
        pairs = [(self.encoder, encoder)] + [(self.tokenizers[n], t) for n, t in tokenizers.items()]
        for mine, theirs in pairs:
            t_params = list(mine.parameters())
            s_params = [p.detach() for p in theirs.parameters()]
            torch._foreach_lerp_(t_params, s_params, 1.0 - m)
            for tb, sb in zip(mine.buffers(), theirs.buffers()):
                tb.copy_(sb)
        return m

    @torch.no_grad()
    def forward(self, raw: Mapping[str, Tensor], encoder: nn.Module, tokenizers: Mapping[str, nn.Module]
                ) -> dict[str, list[Tensor]]:
        """Per stream, every block's output on the unmasked input, prefix tokens removed:
        ``(B, L_s, D)``. ``encoder``/``tokenizers`` are the student's (used by a shared teacher)."""
        if self.cfg.ema:
            encoder, tokenizers = self.encoder, self.tokenizers
        tokens = {n: tokenizers[n](raw[n]) for n in tokenizers if n in raw}
        _, _, layers = encode(encoder, tokens, None, return_layers=True)
        sizes = [t.embeddings.shape[1] for t in tokens.values()]
        out: dict[str, list[Tensor]] = {n: [] for n in tokens}
        for layer in layers:
            for name, part in zip(tokens, torch.split(layer[:, encoder.num_prefix:], sizes, dim=1)):
                out[name].append(part)
        return out

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
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from mmim.model import MaskedModel


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
    """Produces per-block teacher features of every stream's unmasked input."""

    def __init__(self, student: MaskedModel, cfg: TeacherConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.ema:
            self.encoder = copy.deepcopy(student.encoder)
            self.tokenizers = nn.ModuleDict({n: copy.deepcopy(s.tokenizer) for n, s in student.streams.items()})
            for p in self.parameters():
                p.requires_grad_(False)
        else:
            object.__setattr__(self, "_student", student)  # a reference, not a submodule

    def _parts(self) -> tuple[nn.Module, Mapping[str, nn.Module]]:
        if self.cfg.ema:
            return self.encoder, self.tokenizers
        student = self.__dict__["_student"]
        return student.encoder, {n: s.tokenizer for n, s in student.streams.items()}

    @torch.no_grad()
    def update(self, student: MaskedModel, progress: float) -> float:
        """One EMA step towards ``student``; returns the momentum used (no-op for a shared teacher)."""
        if not self.cfg.ema:
            return 1.0
        m = momentum_at(self.cfg, progress)
        pairs = [(self.encoder, student.encoder)] + [(self.tokenizers[n], s.tokenizer) for n, s in student.streams.items()]
        for mine, theirs in pairs:
            t_params = [p for p in mine.parameters()]
            s_params = [p.detach() for p in theirs.parameters()]
            torch._foreach_lerp_(t_params, s_params, 1.0 - m)
            for tb, sb in zip(mine.buffers(), theirs.buffers()):
                tb.copy_(sb)
        return m

    @torch.no_grad()
    def layer_features(self, raw: Mapping[str, Tensor]) -> dict[str, list[Tensor]]:
        """Per stream, every block's output on the unmasked input, prefix tokens removed: ``(B, L_s, D)``."""
        encoder, tokenizers = self._parts()
        modules = [encoder, *tokenizers.values()]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            tokens = {n: tokenizers[n](raw[n]) for n in tokenizers}
            sep = encoder.pos_every_block
            xs = [t.embeddings if sep else t.embeddings + t.pos.to(t.embeddings.dtype) for t in tokens.values()]
            pos = torch.cat([t.pos.expand(t.embeddings.shape[0], -1, -1) for t in tokens.values()], 1) if sep else None
            _, _, layers = encoder(torch.cat(xs, 1), pos=pos, return_layers=True)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        sizes = [x.shape[1] for x in xs]
        out: dict[str, list[Tensor]] = {n: [] for n in tokens}
        for layer in layers:
            for name, part in zip(tokens, torch.split(layer[:, encoder.num_prefix:], sizes, dim=1)):
                out[name].append(part)
        return out

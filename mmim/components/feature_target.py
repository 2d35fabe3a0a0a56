"""Teacher-feature targets (data2vec-style regression; contrastive MIM)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mmim.interfaces import Target, Tokenizer
from mmim.types import Tokens


class TeacherFeatureTarget(Target):
    """The average of the teacher's top-``top_k`` block outputs on the unmasked input (data2vec).

    Each block output ``(B, L, D)`` is instance-normalised over the tokens (per channel) before
    averaging when ``instance_norm``; the average is layer-normalised (no affine) when
    ``final_norm``. Computed under no-grad, so the teacher gets no gradient.

    Args:
        top_k: how many of the last blocks to average.
        instance_norm: normalise each block's output over the tokens first.
        final_norm: layer-normalise the average.
    """

    requires_teacher = True

    def __init__(self, top_k: int = 6, instance_norm: bool = True, final_norm: bool = False) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k, self.instance_norm, self.final_norm = top_k, instance_norm, final_norm

    def forward(self, raw: Tensor, tokens: Tokens, teacher_layers: list[Tensor] | None = None) -> Tensor:
        if not teacher_layers:
            raise ValueError("TeacherFeatureTarget needs the teacher's block outputs (the model supplies them)")
        layers = teacher_layers[-self.top_k:]
        if self.instance_norm:
            layers = [F.instance_norm(x.float().transpose(1, 2)).transpose(1, 2) for x in layers]
        target = sum(x.float() for x in layers) / len(layers)
        if self.final_norm:
            target = F.layer_norm(target, target.shape[-1:])
        return target

    def dim(self, tokenizer: Tokenizer) -> int:
        return tokenizer.embed_dim

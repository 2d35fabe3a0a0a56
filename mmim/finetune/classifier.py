"""A classifier over a pretrained mmim encoder (MAE's fine-tuning model)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmim.model import MaskedModel
from mmim.timm_compat import import_timm


def set_drop_path(model: MaskedModel, rate: float) -> None:
    """Stochastic depth rising linearly over the encoder blocks to ``rate`` (timm's DropPath)."""
    drop_path_cls = import_timm().layers.DropPath
    blocks = model.encoder.blocks
    for i, block in enumerate(blocks):
        r = rate * i / max(1, len(blocks) - 1)
        block.drop_path1 = drop_path_cls(r) if r > 0 else nn.Identity()
        block.drop_path2 = drop_path_cls(r) if r > 0 else nn.Identity()


class EncoderClassifier(nn.Module):
    """Tokenizers + encoder of a :class:`MaskedModel` (decoders dropped), pooled, then a linear head.

    ``pool="mean"`` averages every stream's tokens and applies a fresh ``fc_norm`` instead of the
    encoder's final norm (MAE ``global_pool``); ``pool="cls"`` uses the normed cls token;
    ``pool="cls_max"`` concatenates the cls token and the max over tokens (Point-MAE), so the head
    sees ``2 * D`` features.

    Args:
        backbone: a masked model whose encoder is to be fine-tuned.
        num_classes: output classes.
        pool: ``"mean"`` or ``"cls"``.
    """

    def __init__(self, backbone: MaskedModel, num_classes: int, pool: str = "mean") -> None:
        super().__init__()
        if pool not in ("mean", "cls", "cls_max"):
            raise ValueError(f"pool must be 'mean', 'cls' or 'cls_max', got {pool!r}")
        if pool != "mean" and backbone.encoder.cls_token is None:
            raise ValueError(f"pool={pool!r} needs an encoder with a cls token")
        for stream in backbone.streams.values():
            stream.decoder = nn.Identity()
            stream.target = nn.Identity()
        self.backbone, self.pool = backbone, pool
        dim = backbone.encoder.embed_dim
        if pool == "mean":
            eps = backbone.encoder.norm.eps
            backbone.encoder.norm = nn.Identity()
            self.fc_norm = nn.LayerNorm(dim, eps=eps)
        else:
            self.fc_norm = nn.Identity()
        self.head = nn.Linear(2 * dim if pool == "cls_max" else dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)  # MAE's head init
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Raw inputs by batch key -> logits ``(B, num_classes)``."""
        tokens = self.backbone.tokenize(self.backbone.raw_inputs(batch))
        prefix, encoded = self.backbone.encode(tokens, None)
        if self.pool == "cls":
            feats = prefix[:, 0]
        elif self.pool == "cls_max":
            feats = torch.cat([prefix[:, 0], torch.cat(list(encoded.values()), dim=1).max(dim=1).values], dim=-1)
        else:
            feats = torch.cat(list(encoded.values()), dim=1).mean(dim=1)
        return self.head(self.fc_norm(feats))

"""ViT encoder built from timm's ``Block`` with timm's parameter names.

The encoder sees only what it is given: the model gathers the visible tokens of every stream
(positions already added), concatenates them, and the encoder prepends its cls token.
Parameter names follow timm's ``VisionTransformer`` (``cls_token``, ``blocks.N.attn.qkv``,
``norm``), so official checkpoints map onto it with prefix changes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmim.timm_compat import import_timm

# timm's names -> (embed_dim, depth, num_heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


@dataclass
class EncoderConfig:
    """ViT trunk settings. ``size`` fills ``embed_dim``/``depth``/``num_heads`` left at 0."""

    size: str | None = None
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    cls_token: bool = True
    drop_path: float = 0.0
    grad_checkpointing: bool = False

    def resolved(self) -> EncoderConfig:
        dims = (self.embed_dim, self.depth, self.num_heads)
        if self.size is not None:
            if self.size not in VIT_SIZES:
                raise ValueError(f"model.encoder.size: unknown ViT size {self.size!r}; choices: {', '.join(VIT_SIZES)}")
            dims = tuple(d or s for d, s in zip(dims, VIT_SIZES[self.size]))
        if min(dims) <= 0:
            raise ValueError("model.encoder: give a size or embed_dim, depth and num_heads")
        if dims[0] % dims[2]:
            raise ValueError(f"model.encoder: embed_dim {dims[0]} is not divisible by num_heads {dims[2]}")
        return EncoderConfig(None, *dims, self.mlp_ratio, self.qkv_bias, self.norm_eps, self.cls_token,
                             self.drop_path, self.grad_checkpointing)


def make_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                norm_eps: float = 1e-6, drop_path: float = 0.0) -> nn.ModuleList:
    """``depth`` timm ``Block``s (fused attention), drop-path rising linearly to ``drop_path``."""
    block_cls = import_timm().models.vision_transformer.Block
    rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
    norm = partial(nn.LayerNorm, eps=norm_eps)
    return nn.ModuleList(
        block_cls(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=r, norm_layer=norm) for r in rates
    )


class ViTEncoder(nn.Module):
    """Transformer encoder over a token sequence with an optional cls token.

    Args:
        config: trunk settings (see :class:`EncoderConfig`).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        cfg = config.resolved()
        self.config = cfg
        self.embed_dim = cfg.embed_dim
        self.num_prefix = 1 if cfg.cls_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.cls_token else None
        self.blocks = make_blocks(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias,
                                  cfg.norm_eps, cfg.drop_path)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.grad_checkpointing = cfg.grad_checkpointing
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor, return_layers: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """``x`` ``(B, N, D)`` tokens with positions added -> ``(prefix (B, P, D), tokens (B, N, D))``.

        With ``return_layers`` also the output of every block (before the final norm).
        """
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        layers = []
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if return_layers:
                layers.append(x)
        x = self.norm(x)
        prefix, tokens = x[:, : self.num_prefix], x[:, self.num_prefix :]
        return (prefix, tokens, layers) if return_layers else (prefix, tokens)

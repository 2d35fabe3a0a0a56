"""ViT encoder built from timm's ``Block`` with timm's parameter names.

The encoder sees only what it is given: the model gathers the visible tokens of every stream
(positions already added), concatenates them, and the encoder prepends its cls token.
Parameter names follow timm's ``VisionTransformer`` (``cls_token``, ``blocks.N.attn.qkv``,
``norm``), so official checkpoints map onto it with prefix changes only.
"""

from __future__ import annotations

import dataclasses
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
    num_prefix_tokens: int = 1  # learned prefix tokens when cls_token is set (MultiMAE's num_global_tokens)
    cls_pos: bool = False  # a learned position for the cls token (Point-MAE fine-tuning)
    pos_every_block: bool = False  # add positions before every block (Point-MAE), not once
    final_norm: bool = True  # a LayerNorm after the last block (MultiMAE has none)
    drop_path: float = 0.0
    grad_checkpointing: bool = False
    # add positions in the token embeddings' dtype (VideoMAE's ``pos_embed.type_as(x)``: a bf16
    # residual stream under bf16 autocast); False keeps them fp32, promoting the residual stream
    # to fp32 as the official MAE, Audio-MAE and MultiMAE do
    cast_positions: bool = False

    def resolved(self) -> EncoderConfig:
        dims = (self.embed_dim, self.depth, self.num_heads)
        if self.size is not None:
            if self.size not in VIT_SIZES:
                raise ValueError(f"model.encoder.size: unknown ViT size {self.size!r}; choices: {', '.join(VIT_SIZES)}")
            dims = tuple(d or s for d, s in zip(dims, VIT_SIZES[self.size]))
        if min(dims) <= 0:
            raise ValueError("model.encoder: give a size or embed_dim, depth and num_heads")
        if self.cls_token and self.num_prefix_tokens < 1:
            raise ValueError(f"model.encoder.num_prefix_tokens: {self.num_prefix_tokens}; at least 1 with cls_token "
                             "(cls_token: false for none)")
        if dims[0] % dims[2]:
            raise ValueError(f"model.encoder: embed_dim {dims[0]} is not divisible by num_heads {dims[2]}")
        return dataclasses.replace(self, size=None, embed_dim=dims[0], depth=dims[1], num_heads=dims[2])


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
    """Transformer encoder over a token sequence with optional learned prefix tokens.

    ``cls_token`` holds ``(1, num_prefix, D)``: one cls token, or MultiMAE's ``num_global_tokens``.

    Args:
        config: trunk settings (see :class:`EncoderConfig`).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        cfg = config.resolved()
        self.config = cfg
        self.embed_dim = cfg.embed_dim
        self.num_prefix = cfg.num_prefix_tokens if cfg.cls_token else 0
        prefix_shape = (1, self.num_prefix, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(prefix_shape)) if cfg.cls_token else None
        self.cls_pos = nn.Parameter(torch.zeros(prefix_shape)) if cfg.cls_token and cfg.cls_pos else None
        self.pos_every_block = cfg.pos_every_block
        self.blocks = make_blocks(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias,
                                  cfg.norm_eps, cfg.drop_path)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps) if cfg.final_norm else nn.Identity()
        self.grad_checkpointing = cfg.grad_checkpointing
        for p in (self.cls_token, self.cls_pos):
            if p is not None:
                nn.init.normal_(p, std=0.02)

    def forward(self, x: Tensor, pos: Tensor | None = None,
                return_layers: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """Encode a token sequence.

        Args:
            x: ``(B, N, D)`` tokens; with positions already added unless ``pos_every_block``.
            pos: ``(B, N, D)`` positions, required (only) with ``pos_every_block``: added before
                every block, ``x = block(x + pos)``.
            return_layers: also return every block's output (before the final norm).

        Returns:
            ``prefix`` ``(B, P, D)`` (the ``P = num_prefix`` cls/global tokens, or ``P = 0``) and ``tokens`` ``(B, N, D)``.
        """
        if self.pos_every_block != (pos is not None):
            raise ValueError("pass pos to the encoder if and only if pos_every_block is set")
        if self.cls_token is not None:
            cls = self.cls_token
            if pos is None and self.cls_pos is not None:  # positions added before the encoder: the cls row's too
                cls = cls + self.cls_pos
            x = torch.cat([cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if pos is not None:
                cls_pos = self.cls_pos if self.cls_pos is not None else torch.zeros_like(self.cls_token)
                pos = torch.cat([cls_pos.expand(x.shape[0], -1, -1).to(pos.dtype), pos], dim=1)
        layers = []
        for block in self.blocks:
            inp = x if pos is None else x + pos
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, inp, use_reentrant=False)
            else:
                x = block(inp)
            if return_layers:
                layers.append(x)
        x = self.norm(x)
        prefix, tokens = x[:, : self.num_prefix], x[:, self.num_prefix :]
        return (prefix, tokens, layers) if return_layers else (prefix, tokens)

"""Point-MAE's decoder: [visible tokens, mask tokens], positions before every block, a 1x1-conv head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mmim.interfaces import Decoder, DecoderContext
from mmim.trunk.encoder import make_blocks
from mmim.trunk.init import xavier_init_
from mmim.types import Layout, Prediction, StreamMask, gather_tokens
from mmim_points.pointnet import PointwiseConv


class PointMAEDecoder(Decoder):
    """Predicts the content (``3M`` neighbourhood coordinates) of every masked patch.

    The sequence is ``[prefix..., visible... (mask.visible order), mask_token x Lm (mask.masked
    order)]`` with positions ``[0..., pos(visible centers)..., pos(masked centers)...]`` from the
    decoder's own position module (``position(embed_dim)``, Point-MAE's ``decoder_pos_embed``),
    added before every block (``x = block(x + pos)``). The final LayerNorm is applied to the last
    ``Lm`` tokens, and ``increase_dim`` (a ``Conv1d(embed_dim, out_dim, 1)``, official name)
    maps each to ``out_dim`` values. Point-MAE's decoder has the encoder's width (384) and no
    input projection; when ``embed_dim`` differs from ``encoder_dim`` a ``Linear`` named ``embed``
    projects the encoded tokens first.

    Args:
        encoder_dim: width of the encoded tokens (injected).
        out_dim: values per masked token, ``3M`` for point patches (injected).
        position: ``position(dim)`` builds the position module over a layout (injected).
        stream: the stream it predicts (injected).
        embed_dim: decoder width (Point-MAE: 384, its encoder width); ``None`` = ``encoder_dim``.
        depth, num_heads, mlp_ratio: decoder trunk (Point-MAE: 4, 6, 4.0).
        qkv_bias: bias on the qkv projection (Point-MAE: False).
        norm_eps: LayerNorm eps (Point-MAE: torch's default 1e-5).
        drop_path: stochastic depth rising linearly to this over the blocks (Point-MAE: 0.1).
    """

    def __init__(self, encoder_dim: int, out_dim: int, position: Callable[[int], nn.Module], stream: str,
                 embed_dim: int | None = 384, depth: int = 4, num_heads: int = 6, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False, norm_eps: float = 1e-5, drop_path: float = 0.1) -> None:
        super().__init__()
        self.stream = stream
        embed_dim = embed_dim or encoder_dim
        if embed_dim % num_heads:
            raise ValueError(f"decoder embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed = nn.Linear(encoder_dim, embed_dim) if embed_dim != encoder_dim else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.position = position(embed_dim)
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps, drop_path)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.increase_dim = nn.Sequential(PointwiseConv(embed_dim, out_dim))
        xavier_init_(self.blocks)
        if self.embed is not None:
            xavier_init_(self.embed)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-2.0, b=2.0)

    def forward(self, context: DecoderContext) -> Prediction:
        return self.decode(context.prefix, context.stream_encoded(self.stream), context.stream_mask(self.stream),
                           context.layouts[self.stream])

    def decode(self, prefix: Tensor, visible: Tensor, mask: StreamMask, layout: Layout) -> Prediction:
        """Args:
            prefix: ``(B, P, D_enc)`` encoded prefix tokens (``P`` may be 0).
            visible: ``(B, Lv, D_enc)`` encoded visible tokens in ``mask.visible`` order.
            mask: the stream's mask; layout: its layout (``centers`` for point patches).

        Returns:
            ``values`` ``(B, Lm, out_dim)`` at ``index = mask.masked``.
        """
        x = torch.cat([prefix, visible], dim=1)
        if self.embed is not None:
            x = self.embed(x)
        batch, num_prefix, num_masked = x.shape[0], prefix.shape[1], mask.masked.shape[1]
        pos = self.position(layout).to(x.dtype)  # (1 or B, L, D)
        pos = torch.cat([
            pos.new_zeros(batch, num_prefix, pos.shape[-1]),
            gather_tokens(pos, mask.visible),
            gather_tokens(pos, mask.masked),
        ], dim=1)
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(batch, num_masked, -1)], dim=1)
        for block in self.blocks:
            x = block(x + pos)
        x = self.norm(x[:, x.shape[1] - num_masked :])
        values = self.increase_dim(x)  # (B, Lm, out_dim)
        return Prediction(values, mask.masked)

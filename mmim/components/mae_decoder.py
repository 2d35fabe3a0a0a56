"""MAE's light decoder: mask tokens, self-attention over all tokens, a linear head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mmim.interfaces import Decoder, DecoderContext
from mmim.trunk.encoder import make_blocks
from mmim.trunk.init import xavier_init_
from mmim.types import Prediction, gather_tokens


class MAEDecoder(Decoder):
    """Embeds encoded tokens to ``embed_dim``, scatters them among mask tokens, adds positions,
    runs ``depth`` blocks and predicts ``out_dim`` values per token.

    Prefix tokens (cls) are decoded alongside with a zero position, as in the official MAE.

    Args:
        encoder_dim: width of the encoded tokens (injected).
        out_dim: target size per token (injected).
        position: ``position(embed_dim)`` builds the module mapping a layout to positions (injected).
        stream: the stream it predicts (injected).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps: decoder trunk.
        predict: ``"masked"`` (head on masked tokens only) or ``"all"`` (head on every token,
            returned as ``Prediction.full``; the loss still covers the masked tokens).
    """

    gives_full = True

    def __init__(self, encoder_dim: int, out_dim: int, position: Callable[[int], nn.Module], stream: str,
                 embed_dim: int = 512, depth: int = 8, num_heads: int = 16, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, norm_eps: float = 1e-6, predict: str = "masked") -> None:
        super().__init__()
        self.stream = stream
        if predict not in ("masked", "all"):
            raise ValueError(f"predict must be 'masked' or 'all', got {predict!r}")
        self.predict = predict
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.position = position(embed_dim)
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, out_dim)
        xavier_init_(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, context: DecoderContext) -> Prediction:
        prefix, visible = context.prefix, context.stream_encoded(self.stream)
        mask, layout = context.stream_mask(self.stream), context.layouts[self.stream]
        num_prefix = prefix.shape[1]
        x = self.embed(torch.cat([prefix, visible], dim=1))
        batch, dim = x.shape[0], x.shape[2]
        if context.encodes_all(self.stream):  # the encoder already saw every position (mask_in_encoder)
            full = x[:, num_prefix:]
        else:
            full = self.mask_token.to(x.dtype).expand(batch, layout.num_tokens, dim)
            full = full.scatter(1, mask.visible.unsqueeze(-1).expand(-1, -1, dim), x[:, num_prefix:])
        full = full + self.position(layout)  # fp32 positions: an fp32 residual under autocast, as the official MAE
        x = torch.cat([x[:, :num_prefix].to(full.dtype), full], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)[:, num_prefix:]
        if self.predict == "all" or context.full:
            full = self.head(x)
            return Prediction(gather_tokens(full, mask.masked), mask.masked, full)
        return Prediction(self.head(gather_tokens(x, mask.masked)), mask.masked)

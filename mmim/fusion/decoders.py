"""Decoders that read the whole joint context: each predicts one stream's tokens from every encoded token.

``multimae``: MultiMAE's spatial output adapter — the stream's queries (its own encoded tokens
where visible, mask tokens elsewhere, plus stream embedding and positions) cross-attend to all
encoded tokens, then a few self-attention blocks over the queries.
``joint``: the plain joint decoder — one self-attention stack over the encoded context and the
stream's queries together (MAE's decoder over the fused sequence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmim.interfaces import Decoder, DecoderContext
from mmim.timm_compat import import_timm
from mmim.trunk.encoder import make_blocks
from mmim.trunk.init import xavier_init_
from mmim.types import Prediction, gather_tokens


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``(B, Nq, D)`` over a context ``(B, Nc, D)``.

    Parameters as MultiMAE's: ``q`` and a fused ``kv`` (rows ``(2, heads, head_dim)``), ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, nq, d = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, nq, h, d // h).transpose(1, 2)
        kv = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, nq, d))


class _FusionDecoderBase(Decoder):
    """Shared parts: context projection, mask token, per-stream embeddings and positions.

    They predict every token of their stream (``Prediction.full`` always) and weight the loss by
    ``mask.predict``; they read the joint sequence, so budgets that vary per sample are fine.
    """

    gives_full = True
    per_stream = False

    def __init__(self, encoder_dim: int, out_dim: int, context_positions: Mapping[str, Callable[[int], nn.Module]],
                 stream: str, dim: int, stream_embeddings: bool = True) -> None:
        super().__init__()
        if stream not in context_positions:
            raise ValueError(f"decoder of stream {stream!r}: no such tokenized stream; streams: {list(context_positions)}")
        self.stream = stream
        self.proj_context = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.ModuleDict({n: make(dim) for n, make in context_positions.items()})
        self.task_embeddings = nn.ParameterDict(
            {n: nn.Parameter(torch.zeros(1, 1, dim)) for n in context_positions}) if stream_embeddings else None

    def _init_embeddings(self) -> None:
        if self.task_embeddings is not None:
            for p in self.task_embeddings.values():
                nn.init.trunc_normal_(p, std=0.02)

    def sequence(self, context: DecoderContext) -> tuple[Tensor, Tensor]:
        """All ``N`` tokens at decoder width (encoded ones projected, mask tokens elsewhere, plus
        stream embeddings and positions) and the projected global tokens."""
        mask = context.mask
        enc = self.proj_context(context.encoded)
        glob = self.proj_context(context.prefix)
        b, _, d = enc.shape
        full = self.mask_token.to(enc.dtype).expand(b, mask.num_tokens, d)
        full = full.scatter(1, mask.visible.unsqueeze(-1).expand(-1, -1, d), enc)
        emb = []
        for name, size in zip(mask.names, mask.sizes):
            # fp32 positions and embeddings, as MultiMAE's adapters add them: an fp32 sequence under autocast
            pos = self.positions[name](context.layouts[name]).expand(b, size, d)
            emb.append(pos + self.task_embeddings[name] if self.task_embeddings is not None else pos)
        return full + torch.cat(emb, dim=1), glob

    def prediction(self, values: Tensor, context: DecoderContext) -> Prediction:
        mask = context.mask
        weight = mask.stream_slice(mask.predict, self.stream).to(values.dtype)
        index = torch.arange(values.shape[1], device=values.device).expand(values.shape[0], -1)
        return Prediction(values, index, full=values, weight=weight)


class MultiMAEDecoder(_FusionDecoderBase):
    """MultiMAE's output adapter (``SpatialOutputAdapter`` with task queries and cross-attention).

    Queries are the stream's slice of the decoder sequence (visible tokens keep their encoded
    features, masked ones are the mask token; stream embedding and positions added); the context
    is every encoded token (with its embeddings) plus the global tokens. Then
    ``x = xattn(query_norm(q), context_norm(ctx))``, ``x = x + mlp(out_norm(x))`` (no residual
    around the cross-attention, as the official code), ``depth`` self-attention blocks over the
    queries, and ``out_proj``. Predicts every token of the stream; the loss counts
    ``mask.predict``.

    Args:
        encoder_dim, out_dim, position, context_positions, stream: injected by the model builder.
        dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps: decoder sizes (MultiMAE: 256, 2, 8).
        stream_embeddings: learned per-stream embeddings on the context (MultiMAE's task embeddings).
    """

    def __init__(self, encoder_dim: int, out_dim: int, position: Callable[[int], nn.Module],
                 context_positions: Mapping[str, Callable[[int], nn.Module]], stream: str, dim: int = 256,
                 depth: int = 2, num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, stream_embeddings: bool = True) -> None:
        super().__init__(encoder_dim, out_dim, context_positions, stream, dim, stream_embeddings)
        self.query_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.context_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.out_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias)
        self.mlp = import_timm().layers.Mlp(dim, int(dim * mlp_ratio))
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps)
        self.out_proj = nn.Linear(dim, out_dim)
        xavier_init_(self)
        self._init_embeddings()

    def forward(self, context: DecoderContext) -> Prediction:
        full, glob = self.sequence(context)
        queries = context.mask.stream_slice(full, self.stream)
        ctx = torch.cat([gather_tokens(full, context.mask.visible), glob], dim=1)
        x = self.xattn(self.query_norm(queries), self.context_norm(ctx))
        x = x + self.mlp(self.out_norm(x))
        for block in self.blocks:
            x = block(x)
        return self.prediction(self.out_proj(x), context)


class JointDecoder(_FusionDecoderBase):
    """Self-attention over ``[global tokens, encoded tokens, the stream's queries]`` together,
    then a norm and a linear head on the queries.

    Args:
        encoder_dim, out_dim, position, context_positions, stream: injected by the model builder.
        dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps: decoder sizes.
        stream_embeddings: learned per-stream embeddings.
    """

    def __init__(self, encoder_dim: int, out_dim: int, position: Callable[[int], nn.Module],
                 context_positions: Mapping[str, Callable[[int], nn.Module]], stream: str, dim: int = 256,
                 depth: int = 4, num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, stream_embeddings: bool = True) -> None:
        super().__init__(encoder_dim, out_dim, context_positions, stream, dim, stream_embeddings)
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, out_dim)
        xavier_init_(self)
        self._init_embeddings()
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, context: DecoderContext) -> Prediction:
        full, glob = self.sequence(context)
        queries = context.mask.stream_slice(full, self.stream)
        # the stream's own encoded tokens already sit in its queries; the context holds the others
        x = torch.cat([glob, gather_tokens(full, context.mask.visible), queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.prediction(self.head(self.norm(x[:, -queries.shape[1]:])), context)

"""The one encoding of token streams: the student's, the fused model's and the teacher's."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmim.trunk.encoder import ViTEncoder
from mmim.types import JointMask, Tokens, gather_tokens


def encode(encoder: ViTEncoder, tokens: Mapping[str, Tokens], mask: JointMask | None = None,
           modality_embed: Mapping[str, Tensor] | None = None, mask_tokens: Mapping[str, Tensor] | None = None,
           return_layers: bool = False) -> tuple[Tensor, ...]:
    """The one encoding of the student, the fused model and the teacher.

    Args:
        encoder: the trunk.
        tokens: the streams' tokens, in ``mask.names`` order when a mask is given.
        mask: which tokens to encode, in its ``visible`` order; ``None``: every token of ``tokens``.
        modality_embed: per-stream learned embeddings added to the stream's tokens (fusion).
        mask_tokens: per-stream mask tokens replacing the tokens that are encoded *and*
            predicted (``mask_in_encoder``).
        return_layers: also return every block's output.

    Returns:
        ``prefix`` ``(B, P, D)``, ``encoded`` ``(B, K, D)`` in ``mask.visible`` order (every token
        in stream order without a mask), and with ``return_layers`` the block outputs.

    Positions are added as they are (``encoder.config.cast_positions`` false): under bf16 autocast
    the embeddings come out in bf16 and the fp32 positions promote the residual stream to fp32, as
    in the official MAE; with ``cast_positions`` they are cast to the embeddings' dtype first, as
    VideoMAE's ``type_as``, and the residual stream stays bf16.
    """
    cast = encoder.config.cast_positions
    xs, ps = [], []
    for name, tok in tokens.items():
        x = tok.embeddings
        if modality_embed is not None and name in modality_embed:
            x = x + modality_embed[name]
        if mask is not None and mask_tokens is not None and mask_tokens.get(name) is not None:
            hidden = mask.stream_slice(mask.predict, name).unsqueeze(-1)
            x = torch.where(hidden, mask_tokens[name].to(x.dtype), x)
        xs.append(x)
        ps.append(tok.pos.to(x.dtype) if cast else tok.pos)
    if len(xs) == 1:
        x, pos = xs[0], ps[0]
    else:
        x = torch.cat(xs, dim=1)
        pos = torch.cat([p.expand(x.shape[0], -1, -1) for p in ps], dim=1)
    if mask is not None:  # select first: positions are added to the K encoded tokens only
        x, pos = gather_tokens(x, mask.visible), gather_tokens(pos, mask.visible)
    if encoder.pos_every_block:
        return encoder(x, pos=pos.expand(x.shape[0], -1, -1), return_layers=return_layers)
    return encoder(x + pos, return_layers=return_layers)

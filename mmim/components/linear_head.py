"""A linear prediction head on encoded tokens (SimMIM, MaskFeat, BEiT-style)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mmim.interfaces import Decoder, DecoderContext
from mmim.types import Prediction, gather_tokens


class LinearHead(Decoder):
    """Predicts each masked token's target with one linear layer from its encoded token.

    Needs a stream that encodes mask tokens (``mask_in_encoder: true``), so that masked
    positions have encoded tokens to predict from.

    Args:
        encoder_dim: encoded token width (injected).
        out_dim: target size per token (injected).
        position: unused (injected); a linear head adds no positions.
        stream: the stream it predicts (injected).
    """

    needs_all_tokens = True
    gives_full = True

    def __init__(self, encoder_dim: int, out_dim: int, stream: str,
                 position: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.head = nn.Linear(encoder_dim, out_dim)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, context: DecoderContext) -> Prediction:
        if not context.encodes_all(self.stream):
            raise ValueError(
                f"stream {self.stream!r}: the linear head predicts masked tokens from their encoded mask tokens: "
                "set the stream's mask_in_encoder: true"
            )
        encoded, mask = context.stream_encoded(self.stream), context.stream_mask(self.stream)
        if context.full:
            full = self.head(encoded)
            return Prediction(gather_tokens(full, mask.masked), mask.masked, full)
        return Prediction(self.head(gather_tokens(encoded, mask.masked)), mask.masked)

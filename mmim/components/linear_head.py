"""A linear prediction head on encoded tokens (SimMIM, MaskFeat, BEiT-style)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from mmim.interfaces import Decoder
from mmim.types import Layout, Prediction, StreamMask, gather_tokens


class LinearHead(Decoder):
    """Predicts each masked token's target with one linear layer from its encoded token.

    Needs a stream that encodes mask tokens (``mask_in_encoder: true``), so that masked
    positions have encoded tokens to predict from.

    Args:
        encoder_dim: encoded token width (injected).
        out_dim: target size per token (injected).
        position: unused (injected); a linear head adds no positions.
    """

    needs_all_tokens = True

    def __init__(self, encoder_dim: int, out_dim: int, position: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        self.head = nn.Linear(encoder_dim, out_dim)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, prefix: Tensor, visible: Tensor, mask: StreamMask, layout: Layout) -> Prediction:
        if visible.shape[1] != layout.num_tokens:
            raise ValueError(
                "the linear head predicts masked tokens from their encoded mask tokens: set the stream's "
                f"mask_in_encoder: true (got {visible.shape[1]} encoded tokens of {layout.num_tokens})"
            )
        return Prediction(self.head(gather_tokens(visible, mask.masked)), mask.masked)

"""Target = the token's own raw content, optionally normalised per token (MAE ``norm_pix_loss``)."""

from __future__ import annotations

from torch import Tensor

from mmim.interfaces import Target
from mmim.types import Tokens


class ContentTarget(Target):
    """``tokens.content`` ``(B, L, C)``, normalised per token over ``C`` when ``normalize``.

    Normalisation is MAE's: ``(x - mean) / sqrt(var + eps)`` with the unbiased variance.

    Args:
        normalize: per-token mean/std normalisation (``norm_pix_loss``).
        eps: added to the variance.
    """

    def __init__(self, normalize: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.normalize = normalize
        self.eps = eps

    def forward(self, raw: Tensor, tokens: Tokens) -> Tensor:
        if tokens.content is None:
            raise ValueError("ContentTarget needs a tokenizer that fills Tokens.content")
        x = tokens.content
        if not self.normalize:
            return x
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True)
        return (x - mean) / (var + self.eps) ** 0.5

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


class ClassIdTarget(Target):
    """Per-token class ids taken from ``tokens.content`` (e.g. the pixels of a segmentation-map
    patch), for a ``cross_entropy`` loss: the decoder head predicts ``num_classes`` logits for each
    of the ``C`` ids, so :meth:`dim` is ``num_classes * C``.

    Args:
        num_classes: the number of classes.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"class_ids needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes

    def forward(self, raw: Tensor, tokens: Tokens) -> Tensor:
        if tokens.content is None:
            raise ValueError("ClassIdTarget needs a tokenizer that fills Tokens.content with class ids")
        return tokens.content

    def dim(self, tokenizer) -> int:
        return self.num_classes * tokenizer.content_dim

    @classmethod
    def example_options(cls) -> dict:
        return {"num_classes": 5}

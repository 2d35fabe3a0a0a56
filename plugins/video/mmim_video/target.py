"""VideoMAE's target: per-tubelet, per-channel normalised pixels of the un-normalised video."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mmim.interfaces import Target
from mmim.types import Layout, Tokens

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TubeletPixelTarget(Target):
    """Pixels of each tubelet, first un-normalised (``x * std + mean``, undoing the data pipeline's
    ImageNet normalisation), then normalised per token *and per channel* over the tubelet's
    ``t*p*q`` pixels: ``(x - mean) / (std_unbiased + eps)`` (eps on the std, not the variance).

    This is not the core ``content`` target, which normalises over all channels together with eps
    on the variance. Works on ``tokens.content`` in channel-fastest order ``(t p q c)`` (the
    tubelet tokenizer's layout, the official target's feature order).

    Args:
        normalize: VideoMAE's ``normlize_target``; False gives the raw ``[0, 1]`` pixels.
        eps: added to the per-patch standard deviation.
        mean: per-channel mean the input was normalised with (``None``: the input is raw).
        std: per-channel std the input was normalised with.
    """

    def __init__(self, normalize: bool = True, eps: float = 1e-6, mean: Sequence[float] | None = IMAGENET_MEAN,
                 std: Sequence[float] | None = IMAGENET_STD) -> None:
        super().__init__()
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
            raise ValueError("give mean and std together, one value per channel")
        self.normalize, self.eps = normalize, eps
        self.register_buffer("mean", torch.tensor(mean or (), dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std or (), dtype=torch.float32), persistent=False)
        self.channels = len(mean) if mean is not None else 0

    def pixels(self, content: Tensor, channels: int | None = None) -> Tensor:
        """Token content ``(B, L, t*p*q*C)`` -> un-normalised pixels ``(B, L, t*p*q, C)``."""
        channels = self.channels or channels or 1
        if content.shape[-1] % channels:
            raise ValueError(f"content size {content.shape[-1]} is not a multiple of {channels} channels")
        x = content.float().unflatten(-1, (-1, channels))
        return x * self.std + self.mean if self.channels else x

    def to_pixels(self, pred: Tensor, content: Tensor) -> Tensor:
        """Map target-space predictions ``(B, L, t*p*q*C)`` back to un-normalised pixels in the same layout,
        with each token's own mean and std (as VideoMAE's visualisation does)."""
        x = self.pixels(content)
        pred = pred.float().unflatten(-1, x.shape[-2:])
        if self.normalize:
            std = x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + self.eps
            pred = pred * std + x.mean(dim=-2, keepdim=True)
        return pred.flatten(-2)

    def forward(self, raw: Tensor, tokens: Tokens) -> Tensor:
        """``tokens.content`` ``(B, L, t*p*q*C)`` -> target ``(B, L, t*p*q*C)`` (same feature order)."""
        if tokens.content is None:
            raise ValueError("TubeletPixelTarget needs a tokenizer that fills Tokens.content")
        x = self.pixels(tokens.content, raw.shape[-4] if raw.dim() >= 5 else 1)  # (B, L, t*p*q, C)
        if self.normalize:
            mean = x.mean(dim=-2, keepdim=True)
            std = x.var(dim=-2, unbiased=True, keepdim=True).sqrt()
            x = (x - mean) / (std + self.eps)
        return x.flatten(-2)

    def example_inputs(self, generator: torch.Generator) -> tuple[Tensor, Tokens]:
        """Tokens of a ``(2, 3, 4, 8, 8)`` clip with ``(2, 4, 4)`` tubelets: content ``(2, 8, 96)``."""
        raw = torch.randn(2, 3, 4, 8, 8, generator=generator)
        content = raw.unflatten(2, (2, 2)).unflatten(4, (2, 4)).unflatten(6, (2, 4))  # b c n t h p w q
        content = content.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(2, 8, 96)
        layout = Layout(batch_size=2, grid=(2, 2, 2))
        return raw, Tokens(torch.randn(2, 8, 8, generator=generator), torch.zeros(1, 8, 8), content, layout)

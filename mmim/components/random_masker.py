"""Per-sample uniform random masking by ratio (MAE)."""

from __future__ import annotations

import torch

from mmim.interfaces import Masker
from mmim.types import Layout, StreamMask


class RandomMasker(Masker):
    """MAE's random masking: argsort of uniform noise, the ``int(L * (1 - ratio))`` lowest kept.

    Visible indices come in increasing-noise order (not spatial order), exactly as the official
    ``random_masking``; the noise is drawn as ``torch.rand(B, L, generator=generator)``.

    Args:
        ratio: fraction of tokens to mask, in ``[0, 1)``.
    """

    def __init__(self, ratio: float = 0.75) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        length = layout.num_tokens
        keep = int(length * (1 - self.ratio))
        if keep < 1:
            raise ValueError(f"ratio {self.ratio} leaves no visible token out of {length}")
        noise = torch.rand(layout.batch_size, length, generator=generator, device=generator.device)
        order = torch.argsort(noise, dim=1).to(layout.device)
        return StreamMask(visible=order[:, :keep], masked=order[:, keep:])

"""Span masking: hide contiguous runs of time patches instead of scattered ones.

Scattered masking is easy on smooth signals: a hidden patch can be interpolated from its two
visible neighbours. Masking whole spans forces the encoder to model longer-range structure
(period, trend, decay), the same reason SpanBERT masks spans of words.
"""

from __future__ import annotations

import math

import torch
from mmim.interfaces import Masker
from mmim.types import Layout, StreamMask


class SpanMasker(Masker):
    """Masks ``round(L * ratio)`` tokens per sample, grouped in contiguous spans along the token order.

    For each sample, span lengths are drawn from a geometric distribution on ``{1, 2, ...}`` with
    mean ``mean_span`` until they cover the masked count (the last span is trimmed so the total is
    exact). The spans are then dropped into distinct random gaps between the visible tokens, so two
    spans are always separated by at least one visible token. If there are more spans than gaps,
    the surplus spans are merged into the last one.

    Spans run along the flattened (row-major) token order, which for a time-series layout with
    grid ``(L,)`` is time. All randomness comes from ``generator``; visible and masked indices are
    returned in increasing (time) order.

    Args:
        ratio: fraction of tokens to mask, in ``[0, 1)``; the count is ``round(L * ratio)``.
        mean_span: mean span length in tokens, ``>= 1`` (1 means single tokens).
    """

    def __init__(self, ratio: float = 0.4, mean_span: float = 3.0) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        if mean_span < 1.0:
            raise ValueError(f"mean_span must be >= 1, got {mean_span}")
        self.ratio = ratio
        self.mean_span = float(mean_span)

    @classmethod
    def example_layout(cls) -> Layout:
        return Layout(batch_size=3, grid=(16,))

    def num_masked(self, length: int) -> int:
        """How many of ``length`` tokens are masked."""
        return round(length * self.ratio)

    def span_lengths(self, num_masked: int, generator: torch.Generator) -> list[int]:
        """Geometric span lengths summing exactly to ``num_masked`` (uses ``num_masked`` uniforms)."""
        if num_masked == 0:
            return []
        u = torch.rand(num_masked, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        if self.mean_span == 1.0:
            lengths = torch.ones(num_masked, dtype=torch.int64)
        else:  # inverse CDF of Geometric(p) on {1, 2, ...}; u in [0, 1) so log1p(-u) is finite
            p = 1.0 / self.mean_span
            lengths = 1 + torch.floor(torch.log1p(-u) / math.log1p(-p)).to(torch.int64)
        cum = torch.cumsum(lengths, 0)
        count = int(torch.searchsorted(cum, num_masked)) + 1  # first prefix covering num_masked
        out = lengths[:count].tolist()
        out[-1] -= int(cum[count - 1]) - num_masked
        return out

    def sample_row(self, length: int, num_masked: int, generator: torch.Generator) -> torch.Tensor:
        """One sample's ``(L,)`` bool mask (True = masked) with exactly ``num_masked`` True."""
        spans = self.span_lengths(num_masked, generator)
        num_visible = length - num_masked
        gaps = num_visible + 1  # places between visible tokens, both ends included
        if len(spans) > gaps:
            spans = spans[: gaps - 1] + [sum(spans[gaps - 1 :])]
        slots = torch.randperm(gaps, generator=generator, device=generator.device)[: len(spans)]
        row = torch.zeros(length, dtype=torch.bool)
        masked_before = 0
        for slot, span in zip(sorted(slots.tolist()), spans):
            start = slot + masked_before  # `slot` visible tokens and the earlier spans precede it
            row[start : start + span] = True
            masked_before += span
        return row

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        """Return visible ``(B, Lv)`` and masked ``(B, Lm)`` indices, the same counts for every sample."""
        length = layout.num_tokens
        num_masked = self.num_masked(length)
        if num_masked >= length:
            raise ValueError(f"ratio {self.ratio} leaves no visible token out of {length}")
        rows = [self.sample_row(length, num_masked, generator) for _ in range(layout.batch_size)]
        return StreamMask.from_bool(torch.stack(rows)).to(layout.device)

"""Point-MAE's patch maskers: uniform random, and a block of patches nearest to a random seed center.

Both mask ``int(ratio * G)`` patches per cloud (Point-MAE truncates; MAE's core ``random``
masker instead keeps ``int(G * (1 - ratio))``) and return visible and masked indices in
ascending patch order, the order the official boolean indexing ``x[~mask]`` produces. Every
random number comes from the ``torch.Generator`` they are given.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmim.interfaces import Masker
from mmim.types import Layout, StreamMask


def _num_masked(ratio: float, length: int) -> int:
    n = int(ratio * length)
    if n >= length:
        raise ValueError(f"mask ratio {ratio} leaves no visible patch out of {length}")
    return n


def _split(order: Tensor, num_masked: int) -> StreamMask:
    """First ``num_masked`` entries of each row of ``order`` are masked; both parts sorted ascending."""
    masked = torch.sort(order[:, :num_masked], dim=1).values
    visible = torch.sort(order[:, num_masked:], dim=1).values
    return StreamMask(visible=visible, masked=masked)


def _check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return float(ratio)


class PointRandomMasker(Masker):
    """Point-MAE's ``_mask_center_rand``: ``int(ratio * G)`` patches chosen uniformly per cloud.

    The official code shuffles a 0/1 vector with numpy's global RNG; here the choice is the
    argsort of ``torch.rand(B, G, generator=generator)`` (same distribution, reproducible).

    Args:
        ratio: fraction of patches to mask, in ``[0, 1)`` (0.6 in Point-MAE).
    """

    def __init__(self, ratio: float = 0.6) -> None:
        self.ratio = _check_ratio(ratio)

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        length = layout.num_tokens
        noise = torch.rand(layout.batch_size, length, generator=generator, device=generator.device)
        order = torch.argsort(noise, dim=1).to(layout.device)
        return _split(order, _num_masked(self.ratio, length))

    @classmethod
    def example_layout(cls) -> Layout:
        g = torch.Generator().manual_seed(0)
        return Layout(batch_size=3, num_tokens=16, centers=torch.randn(3, 16, 3, generator=g))


class PointBlockMasker(Masker):
    """Point-MAE's ``_mask_center_block``: the ``int(ratio * G)`` patches nearest a random seed patch.

    Per cloud a seed patch is drawn uniformly (``torch.randint(0, G)`` from ``generator``; the
    official code uses Python's ``random.randint(0, G-1)``), the L2 distances of all centers to
    its center are sorted ascending (stable), and the first ``int(ratio * G)`` are masked, the
    seed itself included. Needs ``layout.centers`` ``(B, G, 3)``.

    Args:
        ratio: fraction of patches to mask, in ``[0, 1)``.
    """

    def __init__(self, ratio: float = 0.6) -> None:
        self.ratio = _check_ratio(ratio)

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        centers = layout.centers
        if centers is None:
            raise ValueError("point_block masking needs a layout with centers (B, G, 3), e.g. from point_patch tokens")
        length = layout.num_tokens
        seeds = torch.randint(0, length, (layout.batch_size,), generator=generator, device=generator.device)
        seeds = seeds.to(centers.device)
        seed_centers = centers[torch.arange(layout.batch_size, device=centers.device), seeds]  # (B, 3)
        dist = torch.linalg.vector_norm(centers - seed_centers[:, None], dim=-1)  # (B, G)
        order = torch.argsort(dist, dim=1, stable=True).to(layout.device)
        return _split(order, _num_masked(self.ratio, length))

    @classmethod
    def example_layout(cls) -> Layout:
        return PointRandomMasker.example_layout()

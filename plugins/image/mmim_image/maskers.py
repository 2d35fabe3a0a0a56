"""Image maskers beyond uniform random: BEiT's block-wise masking and SimMIM's mask-patch masking."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmim.interfaces import Masker
from mmim.types import Layout, StreamMask


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Integer in ``[low, high]`` inclusive."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _fill_to_count(mask: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Mask extra random tokens of the flat bool ``mask`` ``(L,)`` until ``count`` are masked."""
    missing = count - int(mask.sum())
    if missing > 0:
        free = torch.nonzero(~mask).flatten()
        pick = free[torch.randperm(free.numel(), generator=generator)[:missing]]
        mask[pick] = True
    return mask


class BlockMasker(Masker):
    """BEiT's block-wise masking: rectangles of at least ``min_num_patches`` tokens with aspect
    ratio in ``[min_aspect, 1/min_aspect]`` until ``round(ratio * L)`` tokens are masked.

    Each block's area is drawn uniformly in ``[min_num_patches, remaining]`` and its log aspect
    ratio uniformly; a block is kept if it masks at least one new token without overshooting
    (10 attempts per block, as in BEiT). When no block fits any more, the remaining count is
    made up with random tokens, so every sample masks exactly the same number (dense gathers).

    Args:
        ratio: fraction of tokens to mask.
        min_num_patches: smallest block area in tokens.
        min_aspect: smallest aspect ratio (the largest is ``1 / min_aspect``).
    """

    def __init__(self, ratio: float = 0.4, min_num_patches: int = 16, min_aspect: float = 0.3) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
        if not 0.0 < min_aspect <= 1.0:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.ratio, self.min_num_patches = ratio, min_num_patches
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def _add_block(self, mask: Tensor, budget: int, generator: torch.Generator) -> int:
        height, width = mask.shape
        for _ in range(10):
            area = _uniform(generator, self.min_num_patches, budget)
            aspect = math.exp(_uniform(generator, *self.log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < h < height and 0 < w < width:
                top, left = _randint(generator, 0, height - h), _randint(generator, 0, width - w)
                window = mask[top : top + h, left : left + w]
                new = h * w - int(window.sum())
                if 0 < new <= budget:
                    window.fill_(True)
                    return new
        return 0

    def sample(self, grid: tuple[int, int], generator: torch.Generator) -> Tensor:
        """One sample's flat bool mask ``(H*W,)`` with exactly ``round(ratio * H * W)`` True."""
        count = round(self.ratio * grid[0] * grid[1])
        mask = torch.zeros(grid, dtype=torch.bool)
        done = 0
        while done < count:
            budget = count - done
            if budget < self.min_num_patches:
                break
            added = self._add_block(mask, budget, generator)
            if added == 0:
                break
            done += added
        return _fill_to_count(mask.flatten(), count, generator)

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        if len(layout.grid) != 2:
            raise ValueError(f"block masking needs a 2-D token grid, got grid {layout.grid}")
        masks = torch.stack([self.sample(layout.grid, generator) for _ in range(layout.batch_size)])
        return StreamMask.from_bool(masks).to(layout.device)

    @classmethod
    def example_layout(cls) -> Layout:
        return Layout(batch_size=3, grid=(8, 10))


class MaskPatchMasker(Masker):
    """SimMIM's masking: the image is cut into ``mask_patch_size`` units (e.g. 32 px over 16-px
    tokens) and ``ceil(ratio * units)`` random units are masked with all their tokens.

    Args:
        ratio: fraction of mask units to mask.
        mask_patch_size: side of a mask unit in pixels.
        model_patch_size: side of a token in pixels (the tokenizer's patch size).
    """

    def __init__(self, ratio: float = 0.6, mask_patch_size: int = 32, model_patch_size: int = 16) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
        if mask_patch_size % model_patch_size:
            raise ValueError(f"mask_patch_size {mask_patch_size} is not a multiple of model_patch_size {model_patch_size}")
        self.ratio, self.scale = ratio, mask_patch_size // model_patch_size

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        if len(layout.grid) != 2 or layout.grid[0] % self.scale or layout.grid[1] % self.scale:
            raise ValueError(f"token grid {layout.grid} is not divisible into {self.scale}x{self.scale}-token mask units")
        rows, cols = layout.grid[0] // self.scale, layout.grid[1] // self.scale
        count = math.ceil(rows * cols * self.ratio)
        noise = torch.rand(layout.batch_size, rows * cols, generator=generator, device=generator.device)
        units = torch.zeros(layout.batch_size, rows * cols, dtype=torch.bool)
        units.scatter_(1, torch.argsort(noise, dim=1)[:, :count].cpu(), True)
        tokens = units.reshape(-1, rows, cols).repeat_interleave(self.scale, 1).repeat_interleave(self.scale, 2)
        return StreamMask.from_bool(tokens.flatten(1)).to(layout.device)

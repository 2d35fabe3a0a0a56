"""BEiT block-wise and SimMIM mask-patch masking."""

from __future__ import annotations

import math

import pytest
import torch

from mmim.types import Layout
from mmim_image.maskers import BlockMasker, MaskPatchMasker


def test_block_masker_exact_count_and_blocks():
    masker = BlockMasker(ratio=0.4, min_num_patches=16)
    layout = Layout(batch_size=8, grid=(14, 14))
    mask = masker(layout, torch.Generator().manual_seed(0))
    count = round(0.4 * 196)
    assert mask.masked.shape == (8, count) and mask.visible.shape == (8, 196 - count)
    grid = mask.bool_mask().reshape(8, 14, 14).float()
    # block masks are spatially coherent: most masked tokens have a masked 4-neighbour
    neighbours = torch.nn.functional.conv2d(grid[:, None], torch.tensor([[[[0, 1, 0], [1, 0, 1], [0, 1, 0]]]]).float(), padding=1)[:, 0]
    coherent = ((neighbours > 0) & (grid > 0)).sum() / grid.sum()
    assert coherent > 0.9, f"only {coherent:.2f} of masked tokens touch another masked token"
    random_grid = torch.zeros(8, 196)
    random_grid[:, torch.randperm(196)[:count]] = 1
    assert not torch.equal(grid.flatten(1), random_grid)


def test_block_masker_is_deterministic_per_generator():
    masker = BlockMasker(0.4)
    layout = Layout(batch_size=2, grid=(14, 14))
    a = masker(layout, torch.Generator().manual_seed(3)).masked
    assert torch.equal(a, masker(layout, torch.Generator().manual_seed(3)).masked)
    assert not torch.equal(a, masker(layout, torch.Generator().manual_seed(4)).masked)


def test_mask_patch_masker_masks_whole_units():
    masker = MaskPatchMasker(ratio=0.6, mask_patch_size=32, model_patch_size=16)
    layout = Layout(batch_size=4, grid=(12, 12))
    mask = masker(layout, torch.Generator().manual_seed(0))
    units = 36
    assert mask.masked.shape[1] == math.ceil(units * 0.6) * 4
    grid = mask.bool_mask().reshape(4, 6, 2, 6, 2)
    assert torch.equal(grid.all(dim=(2, 4)), grid.any(dim=(2, 4))), "a 2x2 mask unit is partly masked"


def test_maskers_reject_bad_layouts():
    with pytest.raises(ValueError, match="not divisible"):
        MaskPatchMasker()(Layout(batch_size=1, grid=(7, 8)), torch.Generator())
    with pytest.raises(ValueError, match="2-D token grid"):
        BlockMasker()(Layout(batch_size=1, grid=(2, 4, 4)), torch.Generator())
    with pytest.raises(ValueError, match="multiple"):
        MaskPatchMasker(mask_patch_size=24, model_patch_size=16)


def test_patch_tokenizer_rejects_wrong_sizes_and_channels():
    from mmim_image.tokenizer import PatchTokenizer

    tok = PatchTokenizer(16, img_size=(28, 20), patch_size=4, in_chans=1)
    assert tok(torch.randn(2, 1, 28, 20)).layout.grid == (7, 5)
    with pytest.raises(ValueError, match=r"expects images \(B, 1, 28, 20\), got \(2, 3, 28, 20\)"):
        tok(torch.randn(2, 3, 28, 20))
    with pytest.raises(ValueError, match="got \\(2, 1, 8, 8\\)"):
        tok(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="not divisible by patch size"):
        PatchTokenizer(16, img_size=30, patch_size=4)

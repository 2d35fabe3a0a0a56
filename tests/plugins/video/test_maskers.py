"""Tube and running-cell masks: invariants and the official running-cell pattern."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mmim.types import Layout
from mmim_video.maskers import RunningCellMasker, TubeMasker, running_cell_maps

from .conftest import FIXTURES


def test_tube_mask_repeats_over_time_and_counts():
    layout = Layout(batch_size=4, grid=(8, 14, 14))
    mask = TubeMasker()(layout, torch.Generator().manual_seed(0))
    per_slice = 14 * 14
    assert mask.masked.shape == (4, 8 * int(0.9 * per_slice))
    bool_mask = mask.bool_mask().view(4, 8, per_slice)
    assert (bool_mask == bool_mask[:, :1]).all()
    assert not torch.equal(bool_mask[0], bool_mask[1])
    for idx in (mask.visible, mask.masked):  # ascending token order, as the official x[~mask]
        assert torch.equal(idx, idx.sort(1).values)


def test_tube_mask_rejects_bad_input():
    with pytest.raises(ValueError):
        TubeMasker(1.0)
    with pytest.raises(ValueError, match="grid"):
        TubeMasker()(Layout(batch_size=1, grid=(4, 4)), torch.Generator())


def test_running_cell_pattern_runs_one_position_per_slice():
    maps = running_cell_maps((4, 2, 2), 0.5).view(4, 4, 4)  # (start, slice, cell position)
    assert torch.equal(maps[0, 0], torch.tensor([True, True, False, False]).roll(-1))
    for s in range(4):
        for t in range(3):
            assert torch.equal(maps[s, t + 1], maps[s, t].roll(-1))
    assert torch.equal(maps[1, 0], maps[0, 1])
    assert (running_cell_maps((3, 4, 6), 0.25).view(4, 3, 24).sum(-1) == 6).all()


def test_running_cell_maps_hold_the_official_decoder_masks():
    inp = load_file(FIXTURES / "videomaev2" / "inputs.safetensors")
    maps = running_cell_maps((2, 4, 4), 0.5)
    for row in inp["decode_masked_pos"]:
        assert (row == maps).all(1).sum() == 1


def test_running_cell_masker():
    layout = Layout(batch_size=6, grid=(4, 6, 8))
    mask = RunningCellMasker(0.75)(layout, torch.Generator().manual_seed(0))
    assert mask.masked.shape == (6, 4 * 48 * 3 // 4)
    maps = running_cell_maps((4, 6, 8), 0.75)
    assert all((row == maps).all(1).any() for row in mask.bool_mask())
    with pytest.raises(ValueError, match="even"):
        running_cell_maps((2, 3, 4))
    with pytest.raises(ValueError):
        RunningCellMasker(0.1)

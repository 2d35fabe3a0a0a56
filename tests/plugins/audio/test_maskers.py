"""Time, frequency and time+frequency masking: structure, counts, generator use, official semantics."""

from __future__ import annotations

import pytest
import torch

from mmim.types import Layout
from mmim_audio.maskers import FrequencyMasker, TimeFrequencyMasker, TimeMasker

GRID = (64, 8)  # Audio-MAE's token grid for 1024 x 128 input, patch 16


def _grid_mask(mask, batch: int) -> torch.Tensor:
    return mask.bool_mask().reshape(batch, *GRID)


def test_time_masking_masks_whole_time_columns():
    layout = Layout(batch_size=4, grid=GRID)
    mask = TimeMasker(0.8)(layout, torch.Generator().manual_seed(0))
    hidden = _grid_mask(mask, 4)
    # int(64 * (1 - 0.8)) = 12 time columns stay visible, 52 are masked
    assert mask.visible.shape == (4, 12 * 8) and mask.masked.shape == (4, 52 * 8)
    assert (hidden.all(2) | ~hidden.any(2)).all(), "a time column is either fully masked or fully visible"
    assert (hidden.all(2).sum(1) == 52).all()


def test_frequency_masking_masks_whole_mel_bands():
    layout = Layout(batch_size=3, grid=GRID)
    mask = FrequencyMasker(0.5)(layout, torch.Generator().manual_seed(1))
    hidden = _grid_mask(mask, 3)
    assert (hidden.all(1) | ~hidden.any(1)).all(), "a mel band is either fully masked or fully visible"
    assert (hidden.all(1).sum(1) == 4).all() and mask.visible.shape == (3, 64 * 4)


def test_time_frequency_visible_tokens_are_a_crossing_of_kept_rows_and_columns():
    layout = Layout(batch_size=5, grid=GRID)
    masker = TimeFrequencyMasker(time_ratio=0.7, freq_ratio=0.3)  # official mask_t_prob / mask_f_prob defaults
    mask = masker(layout, torch.Generator().manual_seed(2))
    hidden = _grid_mask(mask, 5)
    kt, kf = int(64 * 0.3), int(8 * 0.7)  # 19 time columns x 5 mel bands visible
    assert mask.visible.shape == (5, kt * kf)
    visible = ~hidden
    for b in range(5):
        cols, rows = visible[b].any(1), visible[b].any(0)
        assert cols.sum() == kt and rows.sum() == kf
        assert torch.equal(visible[b], cols[:, None] & rows[None, :])


def test_same_noise_as_official_random_masking_2d():
    """Kept time steps/bands are the lowest of rand(B, T') then rand(B, F') from the same generator;
    visible and masked tokens come in increasing order (the official id2res argsort)."""
    layout = Layout(batch_size=2, grid=GRID)
    mask = TimeFrequencyMasker(0.5, 0.25)(layout, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    noise_t, noise_f = torch.rand(2, 64, generator=g), torch.rand(2, 8, generator=g)
    keep_t = torch.zeros(2, 64, dtype=torch.bool).scatter_(1, noise_t.argsort(1)[:, :32], True)
    keep_f = torch.zeros(2, 8, dtype=torch.bool).scatter_(1, noise_f.argsort(1)[:, :6], True)
    expected_visible = (keep_t[:, :, None] & keep_f[:, None, :]).reshape(2, -1)
    assert torch.equal(mask.bool_mask(), ~expected_visible)
    assert torch.equal(mask.visible, torch.sort(mask.visible, 1).values)
    assert torch.equal(mask.masked, torch.sort(mask.masked, 1).values)
    # a zero-ratio axis still draws its noise, as the official code does
    a = TimeMasker(0.5)(layout, torch.Generator().manual_seed(3))
    b = TimeFrequencyMasker(0.5, 0.0)(layout, torch.Generator().manual_seed(3))
    assert torch.equal(a.visible, b.visible)


def test_masks_depend_on_the_generator_only():
    layout = Layout(batch_size=2, grid=GRID)
    masker = TimeFrequencyMasker()
    torch.manual_seed(0)
    a = masker(layout, torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = masker(layout, torch.Generator().manual_seed(5))
    c = masker(layout, torch.Generator().manual_seed(6))
    assert torch.equal(a.visible, b.visible) and not torch.equal(a.visible, c.visible)


def test_bad_ratios_and_layouts():
    with pytest.raises(ValueError, match="time_ratio must be in"):
        TimeFrequencyMasker(time_ratio=1.0)
    with pytest.raises(ValueError, match="both 0"):
        TimeFrequencyMasker(0.0, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        TimeMasker()(Layout(batch_size=1, grid=(4, 4, 4)), torch.Generator())
    with pytest.raises(ValueError, match="masks every token"):
        TimeMasker(0.9)(Layout(batch_size=1, grid=(4, 4)), torch.Generator())  # int(4 * 0.1) = 0 columns kept

"""SpecAugment and waveform roll + gain."""

from __future__ import annotations

import torch

from mmim_audio.augment import mask_band, roll_and_scale, spec_augment


def test_spec_augment_masks_one_band_per_axis_within_bounds():
    torch.manual_seed(0)
    for _ in range(50):
        x = torch.randn(100, 64).abs() + 1  # no zeros of its own
        out = spec_augment(x, freqm=16, timem=20)
        zero = out == 0
        cols, rows = zero.all(0), zero.all(1)
        assert int(cols.sum()) < 16 and int(rows.sum()) < 20
        assert torch.equal(zero, cols[None, :] | rows[:, None]), "zeros form whole bands only"
        if cols.any():
            idx = cols.nonzero()[:, 0]
            assert int(idx[-1] - idx[0]) + 1 == len(idx), "one contiguous band"
    assert torch.equal(spec_augment(x, 0, 0), x)


def test_mask_band_is_reproducible_from_the_global_rng():
    x = torch.ones(10, 30)
    torch.manual_seed(1)
    a = mask_band(x, 25, dim=1)
    torch.manual_seed(1)
    assert torch.equal(a, mask_band(x, 25, dim=1))
    assert mask_band(x, 1, dim=0).eq(1).all()  # width U[0, 1) is always 0


def test_roll_and_scale():
    torch.manual_seed(2)
    x = torch.arange(1.0, 11.0)
    y = roll_and_scale(x)
    gain = y.sum() / x.sum()
    assert 0.5 <= float(gain) <= 1.5
    assert any(torch.allclose(y / gain, torch.roll(x, k)) for k in range(10)), "a cyclic roll of the input"

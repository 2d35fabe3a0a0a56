"""The local (shifted-window) decoder: locality, the shift mask, the temperature clamp, any grid."""

from __future__ import annotations

import torch

from mmim.components.random_masker import RandomMasker
from mmim.interfaces import DecoderContext
from mmim.types import Layout
from mmim_audio.local_decoder import AudioMAELocalDecoder
from mmim_audio.tokenizer import SpectrogramPatchTokenizer, spectrogram_position_table
from mmim_audio.window_attention import LocalWindowBlock, window_attention_mask, window_merge, window_partition

GRID = (64, 8)


def _block(shift=(0, 0)) -> LocalWindowBlock:
    torch.manual_seed(0)
    return LocalWindowBlock(16, 4, window=(4, 4), shift=shift, mlp_ratio=2.0).eval()


def _changed_times(block: LocalWindowBlock, t: int, f: int = 0) -> set[int]:
    x = torch.randn(1, 64 * 8, 16, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[0, t * 8 + f] += 1.0
    with torch.no_grad():
        diff = (block(x, GRID) - block(y, GRID)).abs().reshape(64, 8, 16).amax(-1)
    return set((diff > 0).nonzero()[:, 0].tolist())


def test_partition_round_trip_and_window_order():
    x = torch.arange(64 * 8, dtype=torch.float32).reshape(1, 64, 8, 1)
    windows = window_partition(x, (4, 4))
    assert windows.shape == (32, 16, 1)
    assert windows[1, :4, 0].tolist() == [4.0, 5.0, 6.0, 7.0]  # window 1 = time 0-3, mel 4-7
    assert windows[2, 0, 0].item() == 32.0  # window 2 starts at time 4
    assert torch.equal(window_merge(windows, (4, 4), GRID), x)


def test_shift_mask_only_masks_the_wrapped_time_windows():
    mask = window_attention_mask(GRID, (4, 4), (2, 0))
    assert mask.shape == (32, 16, 16)
    masked_windows = (mask != 0).any(-1).any(-1).nonzero()[:, 0].tolist()
    assert masked_windows == [30, 31] and set(mask.unique().tolist()) == {0.0, -100.0}
    assert window_attention_mask(GRID, (4, 4), (0, 0)) is None
    # Swin's three regions along time: [0, 60), [60, 62), [62, 64); freq unshifted
    region = (torch.arange(64) >= 60).long() + (torch.arange(64) >= 62).long()
    cells = window_partition(region.repeat_interleave(8).reshape(1, 64, 8, 1).float(), (4, 4))[..., 0]
    swin = torch.zeros(32, 16, 16).masked_fill(cells[:, None, :] != cells[:, :, None], -100.0)
    assert torch.equal(mask, swin)


def test_padding_for_grids_the_window_does_not_divide():
    mask = window_attention_mask((6, 8), (4, 4), (0, 0))  # padded to (8, 8): 4 windows
    assert mask.shape == (4, 16, 16)
    assert torch.isinf(mask[2:, :, 8:]).all() and (mask[:2] == 0).all() and (mask[2:, :, :8] == 0).all()
    block = _block((2, 0))
    x = torch.randn(1, 6 * 8, 16)

    def changed_times(t: int) -> set[int]:
        y = x.clone()
        y[0, t * 8] += 1.0
        with torch.no_grad():
            out_x, out_y = block(x, (6, 8)), block(y, (6, 8))
        assert torch.isfinite(out_x).all()
        return set(((out_x - out_y).abs().reshape(6, 8, 16).amax(-1) > 0).nonzero()[:, 0].tolist())

    # rolled by -2 and padded to 8: windows hold times (2, 3, 4, 5) and (0, 1, pad, pad)
    assert changed_times(5) == {2, 3, 4, 5}
    assert changed_times(0) == {0, 1}


def test_window_block_is_local():
    assert _changed_times(_block(), 5) == {4, 5, 6, 7}  # plain windows: time 4-7
    assert _changed_times(_block((2, 0)), 5) == {2, 3, 4, 5}  # shifted by 2: time 2-5
    # the roll brings time 0-1 next to 62-63, but the mask keeps them apart
    assert _changed_times(_block((2, 0)), 0) == {0, 1}
    assert _changed_times(_block((2, 0)), 63) == {62, 63}


def test_temperature_is_clamped_at_one_hundredth():
    block = _block()
    x = torch.randn(2, 64 * 8, 16)
    with torch.no_grad():
        block.attn.tau.fill_(0.01)
        a = block(x, GRID)
        block.attn.tau.fill_(1e-4)
        b = block(x, GRID)
    assert torch.equal(a, b)


def _decoder(**kw) -> tuple[AudioMAELocalDecoder, SpectrogramPatchTokenizer]:
    torch.manual_seed(0)
    tok = SpectrogramPatchTokenizer(24, input_size=(256, 32), patch_size=4)
    dec = AudioMAELocalDecoder(24, 16, tok.position_embedding, "audio", embed_dim=32, depth=2, num_heads=4, **kw).eval()
    return dec, tok


def test_decoder_ignores_prefix_and_predicts_masked_tokens():
    dec, tok = _decoder(predict="all")
    layout = tok.layout(2, torch.device("cpu"))
    mask = RandomMasker(0.8)(layout, torch.Generator().manual_seed(0))
    visible = torch.randn(2, mask.visible.shape[1], 24)
    with torch.no_grad():
        a = dec(DecoderContext.for_stream("audio", torch.randn(2, 1, 24), visible, mask, layout))
        b = dec(DecoderContext.for_stream("audio", torch.zeros(2, 0, 24), visible, mask, layout))
        dec.predict = "masked"
        c = dec(DecoderContext.for_stream("audio", torch.zeros(2, 0, 24), visible, mask, layout))
    assert torch.equal(a.full, b.full) and a.full.shape == (2, 512, 16)
    assert torch.equal(a.index, mask.masked)
    assert torch.equal(a.values, a.full.gather(1, mask.masked[..., None].expand(-1, -1, 16)))
    assert c.full is None
    torch.testing.assert_close(c.values, a.values, atol=1e-6, rtol=1e-6)


class _GridPositions(torch.nn.Module):
    """Positions for whatever grid the layout has (the tokenizer's table is fixed to one grid)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, layout: Layout) -> torch.Tensor:
        return spectrogram_position_table(self.dim, layout.grid)[None]


def test_one_decoder_serves_any_grid_with_the_same_parameters():
    torch.manual_seed(0)
    dec = AudioMAELocalDecoder(24, 16, _GridPositions, "audio", embed_dim=32, depth=2, num_heads=4).eval()
    names = [n for n, _ in dec.named_parameters()]
    assert "blocks.1.attn.meta_mlp.fc2.weight" in names and "blocks.1.attn.tau" in names
    for grid in ((32, 8), (64, 8), (2, 3)):  # (2, 3) is smaller than a window: it shrinks, the shift drops
        layout = Layout(batch_size=1, grid=grid)
        mask = RandomMasker(0.5)(layout, torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = dec(DecoderContext.for_stream("audio", torch.zeros(1, 0, 24), torch.randn(1, mask.visible.shape[1], 24), mask, layout))
        assert out.values.shape == (1, mask.masked.shape[1], 16) and torch.isfinite(out.values).all()

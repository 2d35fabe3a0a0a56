"""Tubelet tokenizer and the video position tables."""

from __future__ import annotations

import math

import pytest
import torch

from mmim.trunk.position import sincos_1d
from mmim.types import Layout
from mmim_video.position import VideoPositionTable, factorized_table, videomae_sinusoid_table
from mmim_video.tokenizer import TubeletTokenizer


def test_shapes_non_square_and_any_divisible_size():
    tok = TubeletTokenizer(32, num_frames=8, img_size=(16, 24), tubelet=(2, 4, 8))
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 8, 16, 24)
    out = tok(x)
    assert out.layout.grid == (4, 4, 3)
    assert out.embeddings.shape == (2, 48, 32) and out.pos.shape == (1, 48, 32)
    assert out.content.shape == (2, 48, 2 * 4 * 8 * 3) == (2, 48, tok.content_dim)
    longer = tok(torch.randn(1, 3, 12, 16, 24))  # another clip length works with the same module
    assert longer.layout.grid == (6, 4, 3)
    with pytest.raises(ValueError, match="not divisible"):
        tok(torch.randn(1, 3, 7, 16, 24))
    with pytest.raises(ValueError, match="expects clips"):
        tok(torch.randn(1, 3, 16, 24))


def test_int_tubelet_means_two_frames():
    assert TubeletTokenizer(8, tubelet=16).tubelet == (2, 16, 16)
    assert TubeletTokenizer(8).tubelet == (2, 16, 16)


def test_content_order_and_round_trip():
    tok = TubeletTokenizer(8, num_frames=4, img_size=(4, 6), tubelet=(2, 2, 3), in_chans=2)
    x = torch.randn(2, 2, 4, 4, 6)
    out = tok(x)
    # token n = (t*H' + h)*W' + w; feature ((dt*p + y)*q + x)*C + c
    t, h, w, dt, y, xx, c = 1, 1, 0, 1, 0, 2, 1
    n = (t * 2 + h) * 2 + w
    f = ((dt * 2 + y) * 3 + xx) * 2 + c
    assert out.content[1, n, f] == x[1, c, t * 2 + dt, h * 2 + y, w * 3 + xx]
    assert torch.equal(tok.content_to_raw(out.content, out.layout), x)


def test_token_order_matches_conv_flatten():
    tok = TubeletTokenizer(4, num_frames=4, img_size=8, tubelet=(2, 4, 4), in_chans=1)
    with torch.no_grad():
        tok.patch_embed.proj.weight.zero_()
        tok.patch_embed.proj.weight[:, 0, 0, 0, 0] = 1.0
        tok.patch_embed.proj.bias.zero_()
    x = torch.randn(1, 1, 4, 8, 8)
    out = tok(x)
    assert torch.equal(out.embeddings[0, :, 0], out.content[0, :, 0])  # the first pixel of each tubelet


def test_videomae_table_formula():
    table = videomae_sinusoid_table(10, 6)
    n, j = 7, 3
    angle = n / 10000 ** (2 * (j // 2) / 6)
    assert table.dtype == torch.float32
    assert math.isclose(float(table[n, j]), math.cos(angle), rel_tol=1e-6)
    assert math.isclose(float(table[n, 2]), math.sin(n / 10000 ** (2 / 6)), rel_tol=1e-6)


def test_factorized_table_separates_time_and_space():
    table = factorized_table((3, 2, 4), 32)
    assert table.shape == (24, 32)
    dim_time = 32 - 24
    grid = table.view(3, 8, 32)
    assert torch.equal(grid[0, :, dim_time:], grid[2, :, dim_time:])  # same spatial code in every slice
    assert torch.equal(grid[:, 0, :dim_time], grid[:, 5, :dim_time])  # same time code at every position
    assert torch.allclose(grid[:, 0, :dim_time], sincos_1d(dim_time, torch.arange(3)).float())
    tok = TubeletTokenizer(32, num_frames=6, img_size=(8, 16), tubelet=(2, 4, 4), pos_layout="factorized")
    assert torch.equal(tok(torch.randn(1, 3, 6, 8, 16)).pos[0], table)


def test_position_module_is_not_in_state_dict_and_rejects_unknown_layout():
    tok = TubeletTokenizer(16, num_frames=4, img_size=8, tubelet=(2, 4, 4))
    assert not any("pos" in k for k in tok.state_dict())
    assert tok.position_embedding(8)(Layout(1, grid=(2, 2, 2))).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="pos_layout"):
        TubeletTokenizer(16, pos_layout="learned")
    with pytest.raises(ValueError, match="layout"):
        VideoPositionTable(8, "bogus")

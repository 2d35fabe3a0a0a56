"""Spectrogram patch tokens: order, content, position-table layouts, inverse."""

from __future__ import annotations

import pytest
import torch

from mmim.trunk.position import sincos_1d
from mmim_audio.tokenizer import SpectrogramPatchTokenizer, spectrogram_position_table


def _tokenizer(**kw) -> SpectrogramPatchTokenizer:
    torch.manual_seed(0)
    return SpectrogramPatchTokenizer(embed_dim=kw.pop("embed_dim", 16), **kw)


def test_tokens_are_time_major_and_content_row_major():
    tok = _tokenizer(input_size=(8, 6), patch_size=2)
    x = torch.arange(48.0).reshape(1, 1, 8, 6)
    out = tok(x)
    assert tok.grid == (4, 3) and out.layout.grid == (4, 3) and out.embeddings.shape == (1, 12, 16)
    # token i = t * F' + f; patch (t=1, f=2) covers frames 2-3, bins 4-5, flattened (time, mel)
    assert torch.equal(out.content[0, 1 * 3 + 2], torch.tensor([16.0, 17.0, 22.0, 23.0]))
    assert torch.equal(out.content[0, 0], torch.tensor([0.0, 1.0, 6.0, 7.0]))
    assert torch.equal(tok.content_to_raw(out.content), x)


def test_embedding_is_a_linear_map_of_the_patch_content():
    tok = _tokenizer(input_size=(16, 8), patch_size=4)
    x = torch.randn(2, 1, 16, 8)
    out = tok(x)
    weight = tok.patch_embed.proj.weight.reshape(16, -1)  # (D, p*q) in (time, mel) order
    torch.testing.assert_close(out.embeddings, out.content @ weight.T + tok.patch_embed.proj.bias, atol=1e-5, rtol=1e-5)


def test_audiomae_position_layout_quirk():
    """Row i of the official table is [sincos(i mod T'), sincos(i div T')], not the token's (t, f)."""
    dim, grid = 16, (8, 4)
    table = spectrogram_position_table(dim, grid, "audiomae")
    i = torch.arange(32)
    expected = torch.cat([sincos_1d(dim // 2, i % 8), sincos_1d(dim // 2, i // 8)], 1).float()
    assert torch.equal(table, expected)
    own = spectrogram_position_table(dim, grid, "grid")
    t, f = i // 4, i % 4  # token i sits at (t, f) = divmod(i, F')
    assert torch.equal(own, torch.cat([sincos_1d(dim // 2, f), sincos_1d(dim // 2, t)], 1).float())
    assert not torch.equal(table, own)
    with pytest.raises(ValueError, match="unknown position layout"):
        spectrogram_position_table(dim, grid, "freq_first")


def test_decoder_positions_share_the_layout():
    for layout in ("audiomae", "grid"):
        tok = _tokenizer(input_size=(32, 16), patch_size=8, pos_layout=layout)
        out = tok(tok.example_input(2, torch.Generator().manual_seed(0)))
        assert torch.equal(out.pos[0], spectrogram_position_table(16, (4, 2), layout))
        assert torch.equal(tok.position_embedding(8)(out.layout)[0], spectrogram_position_table(8, (4, 2), layout))


def test_rectangular_patches_and_bad_input():
    tok = _tokenizer(input_size=(12, 8), patch_size=(3, 4))
    assert tok.grid == (4, 2) and tok.content_dim == 12
    x = torch.randn(1, 1, 12, 8)
    assert torch.equal(tok.content_to_raw(tok(x).content), x)
    with pytest.raises(ValueError, match=r"\(B, 1, 12, 8\)"):
        tok(torch.randn(1, 12, 8))
    with pytest.raises(ValueError, match="not divisible"):
        _tokenizer(input_size=(10, 8), patch_size=4)

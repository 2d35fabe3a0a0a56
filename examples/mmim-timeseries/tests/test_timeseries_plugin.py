"""Unit tests of the timeseries plugin's components, built directly (no registry needed)."""

from __future__ import annotations

import pytest
import torch
from mmim.types import Layout

from mmim_timeseries.datasets import SyntheticSignals
from mmim_timeseries.masker import SpanMasker
from mmim_timeseries.tokenizer import SeriesPatchTokenizer


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    runs, current = [], 0
    for v in row.tolist():
        if v:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs + ([current] if current else [])


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_shapes():
    tok = SeriesPatchTokenizer(embed_dim=32, seq_len=96, patch_len=8, in_chans=3)
    x = tok.example_input(4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 96)
    out = tok(x)
    assert out.embeddings.shape == (4, 12, 32)
    assert out.pos.shape == (1, 12, 32) and out.pos.dtype == torch.float32
    assert out.content.shape == (4, 12, tok.content_dim) and tok.content_dim == 24
    assert out.layout.grid == (12,) and out.layout.num_tokens == 12
    assert tok.position_embedding(16)(out.layout).shape == (1, 12, 16)
    assert tok.proj.weight.shape == (32, 24)


def test_tokenizer_content_order_and_round_trip():
    tok = SeriesPatchTokenizer(embed_dim=16, seq_len=12, patch_len=4, in_chans=2)
    x = torch.arange(2 * 2 * 12, dtype=torch.float32).reshape(2, 2, 12)
    out = tok(x)
    # token 1 of sample 0: time steps 4..7, channel fastest
    assert out.content[0, 1].tolist() == [4.0, 16.0, 5.0, 17.0, 6.0, 18.0, 7.0, 19.0]
    assert torch.equal(tok.content_to_raw(out.content, out.layout), x)
    # the embedding is the linear map of the content
    assert torch.allclose(out.embeddings, tok.proj(out.content))


def test_tokenizer_rejects_bad_lengths():
    with pytest.raises(ValueError, match="not divisible by patch_len"):
        SeriesPatchTokenizer(embed_dim=16, seq_len=100, patch_len=8)
    tok = SeriesPatchTokenizer(embed_dim=16, seq_len=96, patch_len=8, in_chans=3)
    with pytest.raises(ValueError, match="not divisible by patch_len"):
        tok(torch.randn(2, 3, 90))
    with pytest.raises(ValueError, match="seq_len=96"):
        tok(torch.randn(2, 3, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, T\)"):
        tok(torch.randn(2, 4, 96))


# --- span masker -----------------------------------------------------------------------------


@pytest.mark.parametrize("length,ratio", [(12, 0.4), (16, 0.75), (10, 0.05), (7, 0.5), (50, 0.9), (12, 0.0)])
def test_span_masker_counts(length, ratio):
    mask = SpanMasker(ratio=ratio, mean_span=3.0)(Layout(batch_size=8, grid=(length,)), torch.Generator().manual_seed(1))
    n_masked = round(length * ratio)
    assert mask.visible.shape == (8, length - n_masked) and mask.masked.shape == (8, n_masked)
    assert mask.visible.dtype == torch.int64 and mask.masked.dtype == torch.int64
    both = torch.sort(torch.cat([mask.visible, mask.masked], dim=1), dim=1).values
    assert torch.equal(both, torch.arange(length).expand(8, -1))  # a partition of the tokens


def test_span_masker_deterministic_and_generator_only():
    masker, layout = SpanMasker(ratio=0.4, mean_span=2.0), Layout(batch_size=16, grid=(24,))
    torch.manual_seed(0)
    a = masker(layout, torch.Generator().manual_seed(3))
    torch.manual_seed(1)  # the global RNG must not matter
    b = masker(layout, torch.Generator().manual_seed(3))
    c = masker(layout, torch.Generator().manual_seed(4))
    assert torch.equal(a.visible, b.visible) and torch.equal(a.masked, b.masked)
    assert not torch.equal(a.masked, c.masked)


def test_span_masker_contiguity():
    layout, gen = Layout(batch_size=64, grid=(48,)), torch.Generator().manual_seed(0)
    one_span = SpanMasker(ratio=0.5, mean_span=1000.0)(layout, gen).bool_mask()
    assert all(_runs(row) == [24] for row in one_span)  # a huge mean gives a single span
    spans = SpanMasker(ratio=0.5, mean_span=4.0)(layout, gen).bool_mask()
    singles = SpanMasker(ratio=0.5, mean_span=1.0)(layout, gen).bool_mask()
    mean_run = sum(sum(_runs(r)) for r in spans) / sum(len(_runs(r)) for r in spans)
    assert 2.5 < mean_run < 6.0
    assert all(max(_runs(row)) == 1 for row in singles)  # mean 1: isolated tokens


def test_span_masker_validation():
    with pytest.raises(ValueError):
        SpanMasker(ratio=1.0)
    with pytest.raises(ValueError):
        SpanMasker(mean_span=0.5)
    with pytest.raises(ValueError, match="no visible token"):
        SpanMasker(ratio=0.9)(Layout(batch_size=1, grid=(2,)), torch.Generator())


# --- dataset ---------------------------------------------------------------------------------


def test_dataset_items_and_determinism():
    ds = SyntheticSignals("train", augment=False, num_samples=30, channels=4, length=64)
    again = SyntheticSignals("train", augment=False, num_samples=30, channels=4, length=64)
    test = SyntheticSignals("test", augment=False, num_samples=30, channels=4, length=64)
    item = ds[7]
    assert set(item) == {"series", "label"}
    assert item["series"].shape == (4, 64) and item["series"].dtype == torch.float32
    assert isinstance(item["label"], int) and item["label"] == 7 % ds.num_classes
    assert len(ds) == 30 and ds.num_classes == len(ds.classes) == 6
    assert torch.isfinite(item["series"]).all()
    assert all(torch.equal(ds[i]["series"], again[i]["series"]) for i in range(30))
    assert not torch.equal(ds[7]["series"], test[7]["series"])
    assert not torch.equal(ds[7]["series"], SyntheticSignals("train", False, 30, 4, 64, seed=1)[7]["series"])
    assert sorted({ds[i]["label"] for i in range(30)}) == list(range(6))


def test_dataset_augment_uses_global_rng():
    ds = SyntheticSignals("train", augment=True, num_samples=10)
    torch.manual_seed(0)
    a = ds[3]["series"]
    torch.manual_seed(0)
    b = ds[3]["series"]
    c = ds[3]["series"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    clean = SyntheticSignals("train", augment=False, num_samples=10)[3]["series"]
    assert (a - clean).abs().max() < clean.abs().max()  # scaled and jittered, same signal


def test_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticSignals("validation", augment=False)
    with pytest.raises(IndexError):
        SyntheticSignals("train", augment=False, num_samples=5)[5]

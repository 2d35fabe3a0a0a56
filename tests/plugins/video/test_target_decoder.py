"""Per-tubelet pixel target and the VideoMAE decoder."""

from __future__ import annotations

import pytest
import torch

from mmim.components.content_target import ContentTarget
from mmim.interfaces import DecoderContext
from mmim.types import Layout, StreamMask
from mmim_video.decoder import VideoMAEDecoder, running_cell_loss
from mmim_video.maskers import TubeMasker, running_cell_maps
from mmim_video.position import VideoPositionTable
from mmim_video.target import IMAGENET_MEAN, IMAGENET_STD, TubeletPixelTarget
from mmim_video.tokenizer import TubeletTokenizer


def _tokens(x):
    return TubeletTokenizer(8, num_frames=x.shape[2], img_size=x.shape[3:], tubelet=(2, 4, 4))(x)


def test_target_normalises_per_channel_with_eps_on_std():
    raw = torch.rand(1, 3, 2, 4, 4)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    tokens = _tokens((raw - mean) / std)
    out = TubeletPixelTarget(eps=0.5)(raw, tokens).view(1, 1, 32, 3)
    pix = raw[0].flatten(1).T  # (32 pixels in (t y x) order, 3)
    expected = (pix - pix.mean(0)) / (pix.var(0, unbiased=True).sqrt() + 0.5)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=1e-5)
    plain = TubeletPixelTarget(normalize=False)(raw, tokens)
    torch.testing.assert_close(plain.view(32, 3), pix, atol=1e-6, rtol=1e-6)
    # not the core content target (that one normalises all channels together)
    core = ContentTarget()(raw, tokens)
    assert not torch.allclose(core, TubeletPixelTarget()(raw, tokens), atol=1e-3)


def test_target_without_input_normalisation():
    raw = torch.rand(2, 1, 2, 4, 4)
    tok = TubeletTokenizer(8, num_frames=2, img_size=4, tubelet=(2, 4, 4), in_chans=1)
    out = TubeletPixelTarget(mean=None, std=None)(raw, tok(raw))
    assert torch.allclose(out.mean(-1), torch.zeros(2, 1), atol=1e-5)
    with pytest.raises(ValueError):
        TubeletPixelTarget(mean=(0.5,), std=None)


def _decoder(**kw):
    return VideoMAEDecoder(16, 5, lambda d: VideoPositionTable(d), "video", embed_dim=8, depth=1, num_heads=2, **kw)


def _ctx(prefix, vis, mask, layout):
    return DecoderContext.for_stream("video", prefix, vis, mask, layout)


def test_decoder_predicts_masked_tokens_in_mask_order():
    dec = _decoder().eval()
    assert dec.embed.bias is None
    layout = Layout(batch_size=2, grid=(2, 4, 4))
    mask = TubeMasker(0.75)(layout, torch.Generator().manual_seed(1))
    pred = dec(_ctx(torch.zeros(2, 0, 16), torch.randn(2, 8, 16), mask, layout))
    assert torch.equal(pred.index, mask.masked) and pred.values.shape == (2, 24, 5)


def test_decoder_sequence_order_does_not_change_predictions():
    """Attention is permutation-equivariant: the official [visible, decoded] order equals a scattered grid."""
    dec = _decoder().eval()
    layout = Layout(batch_size=1, grid=(2, 2, 2))
    mask = StreamMask(torch.tensor([[5, 1]]), torch.tensor([[0, 2, 3, 4, 6, 7]]))
    vis = torch.randn(1, 2, 16)
    a = dec(_ctx(torch.zeros(1, 0, 16), vis, mask, layout))
    perm = StreamMask(torch.tensor([[1, 5]]), torch.tensor([[7, 6, 4, 3, 2, 0]]))
    b = dec(_ctx(torch.zeros(1, 0, 16), vis.flip(1), perm, layout))
    torch.testing.assert_close(a.values, b.values.flip(1), atol=1e-6, rtol=1e-6)


def test_running_cell_decoding_random_in_training_fixed_in_eval():
    dec = _decoder(decode="running_cell")
    layout = Layout(batch_size=8, grid=(2, 4, 4))
    mask = TubeMasker(0.75)(layout, torch.Generator().manual_seed(0))
    maps = running_cell_maps((2, 4, 4))
    index = dec.draw(layout, torch.Generator().manual_seed(0))  # from the step's generator, not the global RNG
    assert index.shape == (8, 16) and torch.equal(index, dec.draw(layout, torch.Generator().manual_seed(0)))
    assert torch.equal(dec.decode_index(mask, index), index)
    chosen = {int((StreamMask.from_bool(maps).visible == row).all(1).float().argmax()) for row in index}
    assert len(chosen) > 1
    dec.eval()
    assert torch.equal(dec.draw(layout, torch.Generator()), StreamMask.from_bool(maps[[0] * 8]).visible)
    with pytest.raises(ValueError, match="draw"):
        dec.decode_index(mask, None)
    with pytest.raises(ValueError):
        _decoder(decode="bogus")


def test_running_cell_loss_counts_only_encoder_masked_tokens():
    from mmim.types import Prediction

    mask = StreamMask(torch.tensor([[0, 1]]), torch.tensor([[2, 3]]))
    pred = Prediction(torch.tensor([[[1.0], [3.0], [0.0]]]), torch.tensor([[1, 2, 3]]))
    target = torch.zeros(1, 3, 1)
    assert float(running_cell_loss(pred, target, mask)) == pytest.approx(9.0 / 2)


def test_predict_all_decodes_the_masked_tokens_even_with_running_cell():
    dec = _decoder(decode="running_cell", predict="all").eval()
    layout = Layout(batch_size=2, grid=(2, 4, 4))
    mask = TubeMasker(0.75)(layout, torch.Generator().manual_seed(0))
    pred = dec(_ctx(torch.zeros(2, 0, 16), torch.randn(2, 8, 16), mask, layout))
    assert torch.equal(pred.index, mask.masked) and pred.full.shape == (2, 32, 5)
    with pytest.raises(ValueError, match="predict"):
        _decoder(predict="some")

"""The video components pass the conformance kit (as tests/test_conformance.py will run them once the
plugin is an installed entry point)."""

from __future__ import annotations

import pytest

from mmim.testing.conformance import CHECKS
from mmim_video import plugin

CASES = [(kind, name) for kind in CHECKS for name in plugin.components.get(kind, {})]


def test_plugin_declares_every_slot():
    assert {kind for kind, _ in CASES} == {"tokenizer", "masker", "target", "decoder"}


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_component_conforms(video_registry, kind, name):
    CHECKS[kind](f"video:{name}")


def test_running_cell_decoder_conforms_on_a_video_grid(video_registry):
    """The conformance decoder check uses a 2-D grid; run the running-cell mode by hand on a 3-D one."""
    import torch

    from mmim.interfaces import DecoderContext
    from mmim.types import Layout
    from mmim_video.decoder import VideoMAEDecoder
    from mmim_video.maskers import TubeMasker
    from mmim_video.position import VideoPositionTable

    dec = VideoMAEDecoder(16, 7, lambda d: VideoPositionTable(d), "video", embed_dim=8, depth=1, num_heads=2,
                          decode="running_cell").eval()
    layout = Layout(batch_size=2, grid=(2, 4, 4))
    mask = TubeMasker(0.75)(layout, torch.Generator().manual_seed(0))
    visible = torch.randn(2, mask.visible.shape[1], 16, requires_grad=True)
    context = DecoderContext.for_stream("video", torch.zeros(2, 0, 16), visible, mask, layout,
                                        draws=dec.draw(layout, torch.Generator()))
    pred = dec(context)
    assert pred.values.shape == (2, 16, 7) and pred.index.shape == (2, 16)
    assert torch.equal(dec(context).values, pred.values)
    pred.values.square().mean().backward()
    assert visible.grad.abs().sum() > 0

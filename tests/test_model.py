"""MaskedModel: streams, masks passed in or drawn, encoder-side mask tokens (SimMIM)."""

from __future__ import annotations

import copy

import torch

from mmim.config.recipe import recipe_from_dict
from mmim.model import build_model
from mmim.types import StreamMask


def _model(tiny, **stream):
    data = copy.deepcopy(tiny)
    data["model"]["streams"]["image"].update(stream)
    return build_model(recipe_from_dict(data).model)


def test_masks_from_generator_are_reproducible(tiny_recipe_dict):
    torch.manual_seed(0)
    model = _model(tiny_recipe_dict).eval()
    x = {"image": torch.randn(2, 1, 28, 28)}
    a = model(x, generator=torch.Generator().manual_seed(1))
    b = model(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.stream_mask("image").visible, b.stream_mask("image").visible) and torch.equal(a.loss, b.loss)
    assert a.predictions["image"].values.shape == (2, 12, 49)


def test_simmim_stream_encodes_mask_tokens_and_predicts_masked(tiny_recipe_dict):
    torch.manual_seed(0)
    model = _model(tiny_recipe_dict, mask_in_encoder=True, decoder={"name": "linear"}, loss={"name": "l1"},
                   target={"name": "content", "normalize": False})
    x = {"image": torch.randn(2, 1, 28, 28)}
    mask = StreamMask(torch.tensor([[0, 1, 2, 3]] * 2), torch.arange(4, 16).expand(2, -1))
    out = model(x, masks={"image": mask})
    assert out.predictions["image"].values.shape == (2, 12, 49)
    out.loss.backward()
    stream = model.streams["image"]
    assert stream.mask_token.grad is not None and stream.mask_token.grad.abs().sum() > 0
    # the mask token really replaces masked embeddings: changing a masked pixel patch changes nothing
    with torch.no_grad():
        y = {"image": x["image"].clone()}
        y["image"][:, :, 21:, 21:] += 5.0  # the last patch (index 15) is masked
        same = model(y, masks={"image": mask}).predictions["image"].values
        torch.testing.assert_close(same, out.predictions["image"].values)

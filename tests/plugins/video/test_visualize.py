"""Video visualisation: the decoder's ``predict='all'``, pixels back from the target, PNG strip and GIF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmim.model import build_model
from mmim.types import StreamMask
from mmim_video.converters.videomae import official_to_mmim
from mmim_video.visualize import VideoVisualizer, reconstruct

from .test_videomae_parity import TOL, fixture_model_config, load_fixture


@pytest.fixture
def fixture_model(video_registry):
    cfg, sd, inp, out = load_fixture("videomae")
    model_cfg = fixture_model_config(cfg)
    model_cfg.streams["video"].decoder["predict"] = "all"
    model = build_model(model_cfg).eval()
    model.load_state_dict(official_to_mmim(sd), strict=True)
    return model, inp, out


def test_predict_all_keeps_the_official_prediction(fixture_model):
    model, inp, out = fixture_model
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    with torch.no_grad():
        result = model({"video": inp["videos"]}, masks={"video": mask})
    pred = result.predictions["video"]
    torch.testing.assert_close(pred.values, out["decoder_pred"], **TOL)
    assert pred.full.shape == (2, 128, 96)
    torch.testing.assert_close(torch.gather(pred.full, 1, mask.masked.unsqueeze(-1).expand(-1, -1, 96)), pred.values)
    torch.testing.assert_close(result.loss, out["loss"], **TOL)


def test_target_to_pixels_inverts_the_target(fixture_model):
    model, inp, out = fixture_model
    s = model.streams["video"]
    tokens = s.tokenizer(inp["videos"])
    pixels = s.target.to_pixels(s.target(inp["videos"], tokens), tokens.content)
    torch.testing.assert_close(s.tokenizer.content_to_raw(pixels, tokens.layout), out["unnorm_videos"],
                               atol=1e-4, rtol=1e-4)


def test_render_png_strip_and_gif(fixture_model, tmp_path):
    model, inp, _ = fixture_model
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    with torch.no_grad():
        result = model({"video": inp["videos"]}, masks={"video": mask})
    panels = reconstruct(model, "video", result)
    assert [p.shape for p in panels] == [(2, 3, 16, 16, 16)] * 4
    hidden = torch.isnan(panels[1][0, 0])  # (T, H, W): a tube mask hides the same places in every frame
    assert hidden.any() and torch.equal(hidden, hidden[:1].expand_as(hidden))
    assert torch.equal(panels[3][0][:, ~hidden], panels[0][0][:, ~hidden])
    paths = VideoVisualizer().render(model, "video", inp["videos"], result, tmp_path, prefix="video", scale=1)
    assert [p.name for p in paths] == ["video_000.png", "video_000.gif", "video_001.png", "video_001.gif"]
    png = Image.open(paths[0])
    margin = png.size[0] - (16 * (16 + 2) + 2)  # frames across, panels down, titled on the left
    assert png.size[1] == 4 * (16 + 2) + 2 and margin > 20
    assert (np.asarray(png.convert("RGB"))[:, :margin] < 128).any(), "panel titles in the left margin"
    gif = Image.open(paths[1])
    band = gif.size[1] - (16 + 2 + 2)  # panels across, titled above
    assert gif.n_frames == 16 and gif.size[0] == 4 * (16 + 2) + 2 and band > 0
    assert (np.asarray(gif.convert("RGB"))[:band] < 128).any(), "panel titles above"


def test_needs_predict_all(video_registry):
    cfg, sd, inp, _ = load_fixture("videomae")
    model = build_model(fixture_model_config(cfg)).eval()
    with torch.no_grad():
        result = model({"video": inp["videos"]}, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="predict='all'"):
        reconstruct(model, "video", result)


def test_load_input_reads_a_clip(fixture_model, tmp_path):
    pytest.importorskip("av")
    from .test_reader_dataset import write_clip

    model, _, _ = fixture_model
    x = VideoVisualizer().load_input(write_clip(tmp_path / "c.mp4"), model, "video", {"sampling_rate": 1})
    assert x.shape == (1, 3, 16, 16, 16)

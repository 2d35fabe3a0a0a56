"""Parity with the official OpenGVLab/VideoMAEv2 pre-training model (running-cell decoder masking) on every
fixture set tests/fixtures/videomaev2* (fp32, <= 1e-5); sizes, ratios and mask types from each config.json."""

from __future__ import annotations

import re

import pytest
import torch

from mmim.model import build_model
from mmim.types import StreamMask
from mmim_video.converters.videomae import mmim_to_official, official_to_mmim
from mmim_video.decoder import running_cell_loss
from mmim_video.maskers import running_cell_maps

from .conftest import FIXTURES
from .test_videomae_parity import TOL, check_fixture_mask, fixture_model_config, load_fixture

SETS = sorted(p.name for p in FIXTURES.iterdir() if re.fullmatch(r"videomaev2(-.+)?", p.name))


@pytest.fixture(params=SETS)
def setup(request, video_registry):
    cfg, sd, inp, out = load_fixture(request.param)
    assert cfg["decoder_mask_type"] == "run_cell"
    model = build_model(fixture_model_config(cfg, decode="running_cell")).eval()
    model.load_state_dict(official_to_mmim(sd), strict=True)
    return cfg, sd, inp, out, model


def test_sets_differ_in_what_matters():
    cfgs = [load_fixture(s)[0] for s in SETS]
    for key in ("mask_type", "decoder_mask_ratio", "batch_size", "window_size"):
        assert len({str(c[key]) for c in cfgs}) > 1, key


def test_fixture_mask_is_what_the_masker_draws(setup):
    cfg, _, inp, _, model = setup
    check_fixture_mask(cfg, model, inp)


def _starts(decode_masked_pos: torch.Tensor, grid, ratio: float) -> torch.Tensor:
    """Which of the 4 running-cell maps each official decoder mask is (it must be one of them)."""
    maps = running_cell_maps(grid, ratio)
    hits = (decode_masked_pos[:, None, :] == maps[None]).all(-1)
    assert torch.equal(hits.sum(1), torch.ones(len(hits), dtype=torch.long)), "not a running-cell map"
    return hits.long().argmax(1)


def test_videomaev2_running_cell_matches_official(setup):
    cfg, _, inp, out, model = setup
    stream = model.streams["video"]
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    with torch.no_grad():
        tokens = stream.tokenizer(inp["videos"])
        prefix, encoded = model.encode({"video": tokens}, model.joint_mask({"video": mask}, {"video": tokens}))
        torch.testing.assert_close(encoded, out["encoder_out"], **TOL)
        starts = _starts(inp["decode_masked_pos"], tokens.layout.grid, cfg["decoder_mask_ratio"])
        decoded = stream.decoder.running_cell_index(tokens.layout, starts)
        assert torch.equal(decoded, StreamMask.from_bool(inp["decode_masked_pos"]).visible)
        pred = stream.decoder.forward_decode(prefix, encoded, mask, tokens.layout, decoded)
        target = stream.target(inp["videos"], tokens)
    assert pred.values.shape[1] == cfg["num_decoded"]
    torch.testing.assert_close(pred.values, out["decoder_pred"], **TOL)
    labels = torch.gather(target, 1, decoded.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
    torch.testing.assert_close(labels, out["target"], **TOL)
    counted = torch.gather(inp["bool_masked_pos"], 1, pred.index)
    assert torch.equal(counted, out["cal_loss_mask"])
    # what the code guarantees, whatever the per-sample counts of decoded-and-masked tokens happen
    # to be: each sample decodes num_decoded distinct tokens, and the loss is the mean over the
    # batch's counted tokens (not a mean of per-sample means)
    assert all(len(set(row)) == cfg["num_decoded"] for row in pred.index.tolist())
    per_token = (pred.values - labels).pow(2).mean(-1)
    torch.testing.assert_close(running_cell_loss(pred, labels, mask), (per_token * counted).sum() / counted.sum(), **TOL)
    torch.testing.assert_close((pred.values - labels).pow(2).mean(-1), out["loss_per_token"], **TOL)
    torch.testing.assert_close(running_cell_loss(pred, labels, mask), out["loss"], **TOL)
    stream.target.normalize = False
    with torch.no_grad():
        raw = stream.target(inp["videos"], tokens)
    raw_labels = torch.gather(raw, 1, decoded.unsqueeze(-1).expand(-1, -1, raw.shape[-1]))
    torch.testing.assert_close(raw_labels, out["target_nonorm"], **TOL)
    torch.testing.assert_close(running_cell_loss(pred, raw_labels, mask), out["loss_nonorm"], **TOL)


def test_videomaev2_without_decoder_mask_is_videomae_decoding(setup):
    """``decode_mask=None`` in the official V2 model == mmim's ``decode="masked"`` through the whole model."""
    _, _, inp, out, model = setup
    model.streams["video"].decoder.decode = "masked"
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    with torch.no_grad():
        result = model({"video": inp["videos"]}, masks={"video": mask})
    pred = result.predictions["video"]
    torch.testing.assert_close(pred.values, out["decoder_pred_nodecmask"], **TOL)
    torch.testing.assert_close(result.targets["video"], out["target_nodecmask"], **TOL)
    torch.testing.assert_close(result.loss, out["loss_nodecmask"], **TOL)
    torch.testing.assert_close(running_cell_loss(pred, result.targets["video"], mask), out["loss_nodecmask"], **TOL)


@pytest.mark.parametrize("normalize, key", [(True, "loss"), (False, "loss_nonorm")])
def test_videomaev2_training_loss_through_model_forward(setup, normalize, key):
    """``MaskedModel.forward`` with the fixture's decoder masks gives the official loss: the decoder's
    ``Prediction.weight`` is ``cal_loss_mask`` and the core ``mse`` loss averages over it."""
    _, _, inp, out, model = setup
    stream = model.streams["video"]
    stream.target.normalize = normalize
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    decoded = StreamMask.from_bool(inp["decode_masked_pos"]).visible
    stream.decoder.draw = lambda *args, **kwargs: decoded  # the official run's running-cell maps
    with torch.no_grad():
        result = model({"video": inp["videos"]}, masks={"video": mask})
    pred = result.predictions["video"]
    assert torch.equal(pred.index, decoded)
    assert torch.equal(pred.weight.bool(), out["cal_loss_mask"])
    torch.testing.assert_close(pred.values, out["decoder_pred"], **TOL)
    torch.testing.assert_close(result.loss, out[key], **TOL)
    unweighted = torch.nn.functional.mse_loss(pred.values, result.targets["video"])
    assert abs(float(unweighted) - float(out[key])) > 1e-4  # the weights matter in this fixture


def test_running_cell_model_forward_uses_decoded_tokens(setup):
    """Through ``MaskedModel.forward`` (eval: map 0) the decoder predicts every decoded token and
    weights the loss by the encoder's mask at them."""
    cfg, _, inp, _, model = setup
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    with torch.no_grad():
        result = model({"video": inp["videos"]}, masks={"video": mask})
    pred = result.predictions["video"]
    maps = running_cell_maps(tuple(cfg["window_size"]), cfg["decoder_mask_ratio"])
    expected = StreamMask.from_bool(maps[[0] * cfg["batch_size"]]).visible
    assert torch.equal(pred.index, expected)
    assert torch.equal(pred.weight.bool(), torch.gather(inp["bool_masked_pos"], 1, expected))
    torch.testing.assert_close(result.loss, running_cell_loss(pred, result.targets["video"], mask), **TOL)


def test_v2_state_dict_round_trip_with_compile_prefix(setup):
    _, sd, _, _, model = setup
    wrapped = {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}}
    assert set(official_to_mmim(wrapped)) == set(model.state_dict())
    back = mmim_to_official(model.state_dict())
    assert set(back) == set(sd) and all(torch.equal(back[k], v) for k, v in sd.items())

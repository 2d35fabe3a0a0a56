"""Parity with the official MCG-NJU/VideoMAE pre-training model on every fixture set tests/fixtures/videomae*
(fp32, <= 1e-5); every size, ratio and option is read from the set's config.json."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from mmim.config.recipe import ModelConfig, StreamConfig
from mmim.model import build_model
from mmim.trunk.encoder import EncoderConfig
from mmim.types import StreamMask
from mmim_video.converters.videomae import mmim_to_official, official_to_mmim
from mmim_video.position import videomae_sinusoid_table

from .conftest import FIXTURES

TOL = dict(atol=1e-5, rtol=1e-5)
SETS = sorted(p.name for p in FIXTURES.iterdir() if re.fullmatch(r"videomae(-.+)?", p.name))
MASKERS = {"tube": "video:tube", "random": "random"}  # the official mask_type -> the mmim masker


def load_fixture(name: str):
    root = FIXTURES / name
    return (json.loads((root / "config.json").read_text()), load_file(root / "official_state_dict.safetensors"),
            load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors"))


def fixture_model_config(cfg: dict, decode: str = "masked") -> ModelConfig:
    """The mmim equivalent of the fixture's ``PretrainVisionTransformer``."""
    kw = cfg["model_kwargs"]
    p, t = kw["patch_size"], kw["tubelet_size"]
    assert kw["qkv_bias"] and kw["qk_scale"] is None and kw["init_values"] == 0 and not kw["use_learnable_pos_emb"]
    assert kw["norm_layer"] == "LayerNorm" and cfg["loss"]["target_tubelet_p0"] == t
    return ModelConfig(
        encoder=EncoderConfig(embed_dim=kw["encoder_embed_dim"], depth=kw["encoder_depth"],
                              num_heads=kw["encoder_num_heads"], mlp_ratio=kw["mlp_ratio"],
                              norm_eps=kw["norm_layer_eps"], cls_token=False),
        streams={"video": StreamConfig(
            tokenizer={"name": "video:tubelet", "num_frames": cfg["window_size"][0] * t, "img_size": kw["img_size"],
                       "tubelet": [t, p, p], "in_chans": kw["encoder_in_chans"]},
            masker={"name": MASKERS[cfg["mask_type"]], "ratio": cfg["mask_ratio"]},
            target={"name": "video:tubelet_pixels", "normalize": cfg["loss"]["normlize_target"],
                    "eps": cfg["loss"]["target_norm_eps"], "mean": cfg["loss"]["mean"], "std": cfg["loss"]["std"]},
            loss={"name": "mse"},
            decoder={"name": "video:videomae", "embed_dim": kw["decoder_embed_dim"], "depth": kw["decoder_depth"],
                     "num_heads": kw["decoder_num_heads"], "mlp_ratio": kw["mlp_ratio"],
                     "norm_eps": kw["norm_layer_eps"], "decode": decode,
                     "decode_ratio": cfg.get("decoder_mask_ratio") or 0.5},
        )},
    )


def check_fixture_mask(cfg: dict, model, inp: dict) -> None:
    """The set's official mask has the shape and kind of what the configured mmim masker draws."""
    stream = model.streams["video"]
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    assert mask.visible.shape[1] == cfg["num_visible"]
    assert torch.equal(mask.bool_mask(), inp["bool_masked_pos"])
    layout = stream.tokenizer(inp["videos"]).layout
    drawn = stream.masker(layout, torch.Generator().manual_seed(0))
    assert drawn.visible.shape == mask.visible.shape
    t, h, w = cfg["window_size"]
    is_tube = lambda m: bool((m.view(-1, t, h * w) == m.view(-1, t, h * w)[:, :1]).all())  # noqa: E731
    assert is_tube(drawn.bool_mask()) == is_tube(inp["bool_masked_pos"]) == (cfg["mask_type"] == "tube")


@pytest.fixture(params=SETS)
def setup(request, video_registry):
    cfg, sd, inp, out = load_fixture(request.param)
    model = build_model(fixture_model_config(cfg)).eval()
    model.load_state_dict(official_to_mmim(sd), strict=True)
    return cfg, sd, inp, out, model


def test_sets_differ_in_what_matters():
    cfgs = [load_fixture(s)[0] for s in SETS]
    for key in ("encoder_embed_dim", "encoder_depth", "decoder_depth", "mlp_ratio", "patch_size"):
        assert len({c["model_kwargs"][key] for c in cfgs}) > 1, key
    assert len({c["mask_ratio"] for c in cfgs}) > 1


def test_tables_mask_and_sizes(setup):
    cfg, _, inp, out, model = setup
    stream = model.streams["video"]
    clip = inp["videos"]
    tokens = stream.tokenizer(clip)
    assert tokens.layout.grid == tuple(cfg["window_size"])
    assert stream.tokenizer.content_dim == cfg["model_kwargs"]["decoder_num_classes"]
    torch.testing.assert_close(tokens.pos, out["encoder_pos_embed"], atol=1e-7, rtol=0)
    torch.testing.assert_close(stream.decoder.position(tokens.layout), out["decoder_pos_embed"], atol=1e-7, rtol=0)
    table = videomae_sinusoid_table(cfg["num_patches"], cfg["model_kwargs"]["encoder_embed_dim"])[None]
    torch.testing.assert_close(table, out["encoder_pos_embed"], atol=1e-7, rtol=0)
    check_fixture_mask(cfg, model, inp)


def test_videomae_matches_official(setup):
    cfg, _, inp, out, model = setup
    mask = StreamMask.from_bool(inp["bool_masked_pos"])
    stream = model.streams["video"]
    captured = {}
    depth, dec_depth = cfg["model_kwargs"]["encoder_depth"], cfg["model_kwargs"]["decoder_depth"]
    hooks = [model.encoder.blocks[i].register_forward_hook(lambda m, a, o, i=i: captured.setdefault(f"enc{i}", o))
             for i in range(depth)]
    hooks += [stream.decoder.blocks[i].register_forward_hook(lambda m, a, o, i=i: captured.setdefault(f"dec{i}", o))
              for i in range(dec_depth)]
    try:
        with torch.no_grad():
            result = model({"video": inp["videos"]}, masks={"video": mask})
            encoded = result.encoded
            target_full = stream.target(inp["videos"], result.tokens["video"])
    finally:
        for h in hooks:
            h.remove()
    tokens = result.tokens["video"]
    torch.testing.assert_close(tokens.embeddings, out["patch_embed_out"], **TOL)
    for i in range(depth):
        torch.testing.assert_close(captured[f"enc{i}"], out[f"encoder_block{i}_out"], **TOL)
    torch.testing.assert_close(encoded, out["encoder_out"], **TOL)
    torch.testing.assert_close(stream.decoder.embed(encoded), out["encoder_to_decoder_out"], **TOL)
    for i in range(dec_depth):
        if f"decoder_block{i}_out" in out:
            torch.testing.assert_close(captured[f"dec{i}"], out[f"decoder_block{i}_out"], **TOL)
    pred = result.predictions["video"]
    assert torch.equal(pred.index, mask.masked)
    torch.testing.assert_close(pred.values, out["decoder_pred"], **TOL)
    torch.testing.assert_close(target_full, out["target_full"], **TOL)
    torch.testing.assert_close(result.targets["video"], out["target"], **TOL)
    torch.testing.assert_close(result.loss, out["loss"], **TOL)
    # normlize_target=False: the raw [0, 1] pixels in the same (t p q c) order
    stream.target.normalize = False
    with torch.no_grad():
        raw_target = stream.target(inp["videos"], tokens)
    torch.testing.assert_close(raw_target[inp["bool_masked_pos"]].view(len(raw_target), -1, raw_target.shape[-1]),
                               out["target_nonorm"], **TOL)
    torch.testing.assert_close(torch.nn.functional.mse_loss(pred.values, out["target_nonorm"]), out["loss_nonorm"], **TOL)
    torch.testing.assert_close(stream.tokenizer.content_to_raw(raw_target, tokens.layout), out["unnorm_videos"], **TOL)


def test_official_keys_round_trip(setup):
    cfg, sd, _, _, model = setup
    mapped = official_to_mmim(sd)
    assert set(mapped) == set(model.state_dict())
    back = mmim_to_official(model.state_dict())
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key
    dim = cfg["model_kwargs"]["encoder_embed_dim"]
    k_bias = model.state_dict()["encoder.blocks.0.attn.qkv.bias"][dim:2 * dim]
    assert torch.equal(k_bias, torch.zeros(dim))

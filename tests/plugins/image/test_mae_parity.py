"""Parity with the official facebookresearch/mae model on every fixture set tests/fixtures/mae*
(sizes, ratios and options read from each set's config.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmim.config.recipe import ModelConfig, StreamConfig
from mmim.model import build_model
from mmim.trunk.encoder import EncoderConfig
from mmim.types import StreamMask
from mmim_image.converters.mae import CheckpointFormatError, describe, load_mae_checkpoint, mae_to_mmim, mmim_to_mae

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SETS = sorted(p.name for p in FIXTURES.iterdir() if re.fullmatch(r"mae(-.+)?", p.name))


@pytest.fixture(scope="module", params=SETS)
def fixture(request):
    root = FIXTURES / request.param
    cfg = json.loads((root / "config.json").read_text())
    return cfg, load_file(root / "official_state_dict.safetensors"), load_file(root / "inputs.safetensors"), \
        load_file(root / "outputs.safetensors")


def test_sets_differ_in_what_matters():
    cfgs = [json.loads((FIXTURES / s / "config.json").read_text()) for s in SETS]
    for key in ("img_size", "embed_dim", "mlp_ratio", "norm_pix_loss", "mask_ratio", "batch_size"):
        assert len({c[key] for c in cfgs}) > 1, key


def _model(cfg) -> torch.nn.Module:
    model_cfg = ModelConfig(
        encoder=EncoderConfig(embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
                              mlp_ratio=cfg["mlp_ratio"], norm_eps=cfg["norm_layer_eps"]),
        streams={"image": StreamConfig(
            tokenizer={"name": "patch", "img_size": cfg["img_size"], "patch_size": cfg["patch_size"],
                       "in_chans": cfg["in_chans"]},
            masker={"name": "random", "ratio": cfg["mask_ratio"]},
            target={"name": "content", "normalize": cfg["norm_pix_loss"]},
            loss={"name": "mse"},
            decoder={"name": "mae", "embed_dim": cfg["decoder_embed_dim"], "depth": cfg["decoder_depth"],
                     "num_heads": cfg["decoder_num_heads"], "mlp_ratio": cfg["mlp_ratio"],
                     "norm_eps": cfg["norm_layer_eps"], "predict": "all"},
        )},
    )
    return build_model(model_cfg).eval()


def test_mae_matches_official(fixture):
    cfg, sd, inp, out = fixture
    model = _model(cfg)
    model.load_state_dict(mae_to_mmim(sd, model), strict=True)
    tok = model.streams["image"].tokenizer
    # fixed position tables equal the official ones (cls row is zero there)
    assert torch.equal(tok.pos.table, sd["pos_embed"][:, 1:])
    assert torch.equal(model.streams["image"].decoder.position.table, sd["decoder_pos_embed"][:, 1:])

    # the masker reproduces the official masking from the same noise source
    keep = cfg["len_keep"]
    mask = StreamMask(inp["ids_keep"], inp["ids_shuffle"][:, keep:])
    assert torch.equal(mask.restore_order(), inp["ids_restore"])
    assert torch.equal(mask.bool_mask().float(), inp["mask"])

    with torch.no_grad():
        result = model({"image": inp["imgs"]}, masks={"image": mask})
        prefix, encoded = result.prefix, result.encoded
    tol = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.tokens["image"].embeddings, out["patch_embed"], **tol)
    torch.testing.assert_close(torch.cat([prefix, encoded], 1), out["latent"], **tol)
    torch.testing.assert_close(result.tokens["image"].content, out["target_raw"], atol=0, rtol=0)
    target_all = model.streams["image"].target(inp["imgs"], result.tokens["image"])
    torch.testing.assert_close(target_all, out["target"], **tol)
    torch.testing.assert_close(result.predictions["image"].full, out["pred"], **tol)
    torch.testing.assert_close(result.loss, out["loss"], **tol)
    torch.testing.assert_close(tok.content_to_raw(out["pred"]), out["pred_unpatchified"], atol=0, rtol=0)


def test_random_masker_equals_official_noise_argsort(fixture):
    cfg, _, inp, _ = fixture
    from mmim.components.random_masker import RandomMasker
    from mmim.types import Layout

    side = cfg["img_size"] // cfg["patch_size"]
    n, keep = cfg["batch_size"], cfg["len_keep"]
    assert side * side == cfg["num_patches"] == inp["noise"].shape[1]
    g = torch.Generator().manual_seed(123)
    noise = torch.rand(n, cfg["num_patches"], generator=torch.Generator().manual_seed(123))
    mask = RandomMasker(cfg["mask_ratio"])(Layout(batch_size=n, grid=(side, side)), g)
    ids = torch.argsort(noise, dim=1)
    assert torch.equal(mask.visible, ids[:, :keep]) and torch.equal(mask.masked, ids[:, keep:])


def test_converter_round_trip_and_file_loading(fixture, tmp_path):
    cfg, sd, _, _ = fixture
    model = _model(cfg)
    model.load_state_dict(mae_to_mmim({"model": {f"module.{k}": v for k, v in sd.items()}}, model), strict=True)
    back = mmim_to_mae(model)
    assert set(back) == set(sd)
    for key in sd:
        assert torch.equal(back[key], sd[key]), key
    # encoder-only file (mae_pretrain_vit_*.pth layout): encoder loads, decoder reported missing
    encoder_only = {k: v for k, v in sd.items() if not k.startswith(("decoder", "mask_token"))}
    torch.save({"model": encoder_only}, tmp_path / "mae_pretrain.pth")
    fresh = _model(cfg)
    missing = load_mae_checkpoint(tmp_path / "mae_pretrain.pth", fresh)
    assert missing and all(".decoder." in k for k in missing)
    assert torch.equal(fresh.encoder.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])


def test_converter_rejects_wrong_layouts(fixture):
    cfg, sd, _, _ = fixture
    model = _model(cfg)
    with pytest.raises(CheckpointFormatError, match="not in the MAE layout: encoder.weird.*an mmim model state dict"):
        mae_to_mmim({**sd, "encoder.weird": torch.zeros(1)}, model)
    head = {f"module.{k}": v for k, v in sd.items() if not k.startswith(("decoder", "mask_token"))}
    head["head.weight"] = torch.zeros(10, cfg["embed_dim"])
    assert describe({"model": head}).startswith("a fine-tuned classifier (encoder + head) (wrapped in 'model', 'module.'-prefixed)")
    bad = dict(sd, pos_embed=torch.zeros(1, cfg["num_patches"] + 5, cfg["embed_dim"]))
    with pytest.raises(CheckpointFormatError, match="another image size"):
        mae_to_mmim(bad, model)


def test_loading_a_mismatched_file_says_what_it_is(fixture, tmp_path):
    cfg, sd, _, _ = fixture
    bigger = dict(cfg, embed_dim=2 * cfg["embed_dim"])
    model = _model(bigger)
    torch.save({"model": sd}, tmp_path / "full.pth")
    with pytest.raises(CheckpointFormatError, match=r"full.pth.*(full MAE pre-training model|another image size)"):
        load_mae_checkpoint(tmp_path / "full.pth", model)

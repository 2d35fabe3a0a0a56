"""The Audio-MAE checkpoint converter: round trips, fine-tuned checkpoints, checkpoint files, bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmim.model import build_model
from mmim_audio.converters.audiomae import (
    finetuned_to_mmim,
    load_official_checkpoint,
    load_official_into,
    mmim_to_official,
    official_to_mmim,
)

from .test_audiomae_parity import SETS, fixture_model_config, read_set


@pytest.fixture(scope="module", params=SETS)
def official(request):
    cfg, sd, _, _ = read_set(request.param)
    return cfg, sd


def _grid(cfg: dict) -> tuple[int, int]:
    return cfg["derived"]["grid_time"], cfg["derived"]["grid_freq"]


def test_round_trip_official_mmim_official(official):
    cfg, sd = official
    back = mmim_to_official(official_to_mmim(sd), grid=_grid(cfg))
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key  # the rebuilt position tables included


def test_round_trip_mmim_official_mmim(official):
    cfg, _ = official
    torch.manual_seed(0)
    model = build_model(fixture_model_config(cfg))
    state = model.state_dict()
    again = official_to_mmim(mmim_to_official(state, grid=_grid(cfg)))
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)
    other = build_model(fixture_model_config(cfg)).eval()
    load_official_into(other, mmim_to_official(state, grid=_grid(cfg)))  # strict, tables checked
    assert all(torch.equal(other.state_dict()[k], state[k]) for k in state)


def test_stream_name_and_unknown_keys(official):
    _, sd = official
    mapped = official_to_mmim(sd, stream="spec")
    assert "streams.spec.tokenizer.patch_embed.proj.weight" in mapped and "encoder.blocks.1.mlp.fc2.bias" in mapped
    with pytest.raises(KeyError, match="vit_extra"):
        official_to_mmim({**sd, "vit_extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="no official"):
        mmim_to_official({"streams.other.tokenizer.x": torch.zeros(1)})


def test_wrong_position_layout_is_refused(official):
    cfg, sd = official
    model_cfg = fixture_model_config(cfg)
    model_cfg.streams["audio"].tokenizer["pos_layout"] = "grid"
    model = build_model(model_cfg)
    with pytest.raises(ValueError, match="pos_embed differs .* pos_layout"):
        load_official_into(model, sd)


def test_finetuned_checkpoint_encoder(official):
    cfg, sd = official
    encoder_keys = [k for k in sd if not k.startswith(("decoder", "mask_token"))]
    finetuned = {("fc_norm." + k[5:] if k.startswith("norm.") else k): sd[k] for k in encoder_keys}
    finetuned["head.weight"], finetuned["head.bias"] = torch.randn(527, 48), torch.randn(527)
    encoder, head = finetuned_to_mmim(finetuned)
    assert set(head) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    model = build_model(fixture_model_config(cfg))
    result = model.load_state_dict(encoder, strict=False)
    assert not result.unexpected_keys
    assert {k for k in result.missing_keys if k.startswith("encoder.")} == {"encoder.norm.weight", "encoder.norm.bias"}
    assert all(k.startswith(("encoder.norm.", "streams.audio.decoder.")) for k in result.missing_keys)
    assert torch.equal(model.encoder.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    assert torch.equal(model.streams["audio"].tokenizer.patch_embed.proj.weight, sd["patch_embed.proj.weight"])


def test_load_checkpoint_files(official, tmp_path: Path):
    _, sd = official
    pth = tmp_path / "pretrained.pth"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 32, "args": argparse.Namespace(blr=2e-4)},
               pth)
    loaded = load_official_checkpoint(pth)
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    st = tmp_path / "weights.safetensors"
    save_file(sd, st)
    assert set(load_official_checkpoint(st)) == set(sd)
    evil = tmp_path / "evil.pth"
    torch.save({"model": sd, "hook": print}, evil)  # arbitrary objects are refused by weights_only loading
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_official_checkpoint(evil)


def test_registered_converter_loads_pretrained_and_finetuned_files(official, tmp_path: Path):
    from mmim import registry

    cfg, sd = official
    load = registry.resolve("converter", "audiomae")
    pretrained = tmp_path / "pretrained.pth"
    torch.save({"model": sd}, pretrained)
    model = build_model(fixture_model_config(cfg))
    assert load(pretrained, model) == []
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in official_to_mmim(sd).items())
    finetuned = {("fc_norm." + k[5:] if k.startswith("norm.") else k): v for k, v in sd.items()
                 if not k.startswith(("decoder", "mask_token"))}
    finetuned.update({"head.weight": torch.zeros(50, cfg["constructor"]["embed_dim"]), "head.bias": torch.zeros(50)})
    torch.save({"model": finetuned}, tmp_path / "finetuned.pth")
    missing = load(tmp_path / "finetuned.pth", build_model(fixture_model_config(cfg)))
    assert "encoder.norm.weight" in missing
    assert all(k.startswith(("encoder.norm.", "streams.audio.decoder.")) for k in missing)
    # a shorter input (ESC-50's 512 frames vs AudioSet's 1024): the fixed tables differ in length only
    short_cfg = fixture_model_config(cfg)
    frames, bins = cfg["constructor"]["img_size"]
    short_cfg.streams["audio"].tokenizer["input_size"] = [frames // 2, bins]
    assert load(pretrained, build_model(short_cfg)) == []
    torch.save({"model": {"conv1.weight": torch.zeros(3)}}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="resnet.pth: not an Audio-MAE checkpoint"):
        load(tmp_path / "resnet.pth", model)

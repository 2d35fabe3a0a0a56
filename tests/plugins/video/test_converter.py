"""VideoMAE converters: q/v bias fusion, wrappers and prefixes, fine-tuned files, file loading."""

from __future__ import annotations

import argparse

import pytest
import torch

from mmim.model import build_model
from mmim_video.converters.videomae import (
    finetuned_to_mmim,
    fuse_qkv_bias,
    load_videomae_checkpoint,
    split_qkv_bias,
    unwrap,
)

from .test_videomae_parity import fixture_model_config, load_fixture


def test_fused_bias_layout_and_k_bias_is_a_no_op():
    q, v = torch.randn(4), torch.randn(4)
    fused = fuse_qkv_bias({"a.attn.q_bias": q, "a.attn.v_bias": v, "a.attn.qkv.weight": torch.zeros(12, 4)})
    assert set(fused) == {"a.attn.qkv.bias", "a.attn.qkv.weight"}
    assert torch.equal(fused["a.attn.qkv.bias"], torch.cat([q, torch.zeros(4), v]))
    back = split_qkv_bias({"a.attn.qkv.bias": torch.cat([q, torch.ones(4), v])})
    assert torch.equal(back["a.attn.q_bias"], q) and torch.equal(back["a.attn.v_bias"], v)
    # a k bias shifts all logits of a query equally: softmax(q(k+b)^T) == softmax(qk^T)
    qs, ks, b = torch.randn(5, 4), torch.randn(7, 4), torch.randn(4)
    torch.testing.assert_close((qs @ (ks + b).T).softmax(-1), (qs @ ks.T).softmax(-1))
    with pytest.raises(KeyError, match="v_bias"):
        fuse_qkv_bias({"a.q_bias": q})


def test_unwrap_model_module_and_prefixes():
    sd = {"x": torch.zeros(1)}
    assert unwrap({"model": sd, "epoch": 3}) == sd
    assert unwrap({"module": {"module.x": sd["x"]}}) == sd
    assert unwrap({"model": {"_orig_mod.x": sd["x"]}}) == sd
    with pytest.raises(ValueError, match="no state dict"):
        unwrap({"epoch": 3})


@pytest.fixture
def model_and_sd(video_registry):
    cfg, sd, _, _ = load_fixture("videomae")
    return build_model(fixture_model_config(cfg)).eval(), sd


def test_load_pretraining_pth_with_args(tmp_path, model_and_sd):
    model, sd = model_and_sd
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": sd, "epoch": 799, "args": argparse.Namespace(mask_ratio=0.9)}, path)
    assert load_videomae_checkpoint(path, model) == []
    assert torch.equal(model.state_dict()["streams.video.decoder.mask_token"], sd["mask_token"])


def test_load_finetuned_deepspeed_module_file(tmp_path, model_and_sd):
    model, sd = model_and_sd
    finetuned = {k.removeprefix("encoder."): v for k, v in sd.items()
                 if k.startswith("encoder.") and not k.startswith("encoder.norm.")}
    finetuned.update({"fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64),
                      "head.weight": torch.zeros(400, 64), "head.bias": torch.zeros(400)})
    encoder, head = finetuned_to_mmim(finetuned)
    assert set(head) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert "encoder.blocks.1.attn.qkv.bias" in encoder
    path = tmp_path / "vit_b_k400_ft.pth"
    torch.save({"module": finetuned}, path)
    missing = load_videomae_checkpoint(path, model)
    assert set(missing) == {"encoder.norm.weight", "encoder.norm.bias"} | {
        k for k in model.state_dict() if k.startswith("streams.video.decoder.")}
    torch.testing.assert_close(model.state_dict()["encoder.blocks.0.attn.qkv.bias"][:64], sd["encoder.blocks.0.attn.q_bias"])


def test_load_rejects_foreign_files(tmp_path, model_and_sd):
    model, sd = model_and_sd
    path = tmp_path / "bad.pth"
    torch.save({"model": {**sd, "encoder.pos_embed": torch.zeros(1, 128, 64)}}, path)
    with pytest.raises(ValueError, match="no mmim counterpart"):
        load_videomae_checkpoint(path, model)
    small = {k: v[..., :8] if k == "encoder.norm.weight" else v for k, v in sd.items()}
    torch.save({"model": small}, path)
    with pytest.raises(ValueError, match="not a VideoMAE checkpoint"):
        load_videomae_checkpoint(path, model)

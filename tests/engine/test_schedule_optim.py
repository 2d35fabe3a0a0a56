import math

import pytest
import torch

from mmim.config.recipe import OptimConfig
from mmim.engine.optim import build_optimizer, no_weight_decay, param_groups
from mmim.engine.schedule import lr_at, scaled_lr


def test_lr_scaling_rule():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_warmup_then_cosine():
    peak, total, warm = 1.0, 100, 10
    assert lr_at(0, total, warm, peak) == 0.0
    assert lr_at(5, total, warm, peak) == pytest.approx(0.5)
    assert lr_at(10, total, warm, peak) == pytest.approx(1.0)
    assert lr_at(55, total, warm, peak) == pytest.approx(0.5)
    assert lr_at(100, total, warm, peak, min_lr=0.1) == pytest.approx(0.1)
    values = [lr_at(s, total, warm, peak) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert not math.isnan(lr_at(0, 1, 0, peak))


def test_no_decay_on_norms_biases_positions_tokens(tiny_recipe_dict):
    from mmim.config.recipe import recipe_from_dict
    from mmim.model import build_model

    model = build_model(recipe_from_dict(tiny_recipe_dict).model)
    names = {n: no_weight_decay(n, p) for n, p in model.named_parameters()}
    assert names["encoder.cls_token"] and names["streams.image.decoder.mask_token"]
    assert names["encoder.blocks.0.norm1.weight"] and names["encoder.blocks.0.attn.qkv.bias"]
    assert not names["encoder.blocks.0.attn.qkv.weight"] and not names["streams.image.tokenizer.patch_embed.proj.weight"]
    groups = param_groups(model, 0.05)
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(names)
    opt = build_optimizer(model, OptimConfig(), 1e-3, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)

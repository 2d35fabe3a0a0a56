"""Fine-tuning: layer-wise lr decay groups, classifier pooling, a short run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mmim.cli import main
from mmim.config.recipe import recipe_from_dict
from mmim.finetune.classifier import EncoderClassifier, set_drop_path
from mmim.finetune.layer_decay import layer_decay_groups, layer_id
from mmim.model import build_model


def test_layer_ids_and_decay_scales(tiny_recipe_dict):
    model = EncoderClassifier(build_model(recipe_from_dict(tiny_recipe_dict).model), num_classes=10)
    assert layer_id("backbone.streams.image.tokenizer.patch_embed.proj.weight", 2) == 0
    assert layer_id("backbone.encoder.cls_token", 2) == 0
    assert layer_id("backbone.encoder.blocks.1.attn.qkv.weight", 2) == 2
    assert layer_id("head.weight", 2) == 3
    groups = layer_decay_groups(model, 2, 0.05, 0.5)
    scales = {g["layer_id"]: g["lr_scale"] for g in groups}
    assert scales == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}
    assert all(g["weight_decay"] in (0.0, 0.05) for g in groups)
    named = dict(model.named_parameters())
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(named["backbone.encoder.cls_token"]) in no_decay and id(named["head.bias"]) in no_decay
    assert id(named["head.weight"]) not in no_decay
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_classifier_pools_and_drop_path(tiny_recipe_dict):
    backbone = build_model(recipe_from_dict(tiny_recipe_dict).model)
    set_drop_path(backbone, 0.2)
    assert type(backbone.encoder.blocks[-1].drop_path1).__name__ == "DropPath"
    clf = EncoderClassifier(backbone, num_classes=3, pool="mean")
    assert isinstance(backbone.encoder.norm, torch.nn.Identity)  # MAE global pool: fc_norm instead
    logits = clf({"image": torch.randn(4, 1, 28, 28)})
    assert logits.shape == (4, 3)
    with pytest.raises(ValueError, match="pool"):
        EncoderClassifier(build_model(recipe_from_dict(tiny_recipe_dict).model), 3, pool="max")


def test_finetune_from_pretraining_run_through_cli(tiny_recipe_dict, tmp_path, capsys):
    tiny_recipe_dict["schedule"]["max_steps"] = 2
    tiny_recipe_dict["eval"]["after_train"] = False
    tiny_recipe_dict["finetune"] = {"epochs": 2, "warmup_epochs": 0.5, "batch_size": 16, "mixup": 0.8, "cutmix": 1.0,
                                    "layer_decay": 0.65, "drop_path": 0.1, "out_dir": str(tmp_path / "ft")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    assert main(["finetune", str(tmp_path / "run"), "finetune.max_steps=6"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuned 6 steps" in out
    result = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert 0.0 <= result["top1"] <= 1.0 and result["init"] == str(tmp_path / "run")
    # the pretrained encoder was loaded, and the run resumes like any other (max_steps may change)
    assert main(["finetune", str(tmp_path / "run"), "--resume"]) == 0
    assert "fine-tuned 12 steps" in capsys.readouterr().out


def test_finetune_task_loads_mmim_and_official_weights(tiny_recipe_dict, tmp_path):
    from safetensors.torch import load_file

    from mmim.engine.checkpoint import load_checkpoint
    from mmim.engine.trainer import Trainer
    from mmim.finetune.task import FinetuneTask

    tiny_recipe_dict["schedule"]["max_steps"] = 1
    recipe = recipe_from_dict(tiny_recipe_dict)
    Trainer(recipe).fit()
    saved = load_checkpoint(tmp_path / "run")["model"]["encoder.blocks.0.attn.qkv.weight"]
    task = FinetuneTask(recipe, init=str(tmp_path / "run"))
    assert torch.equal(task.module.backbone.encoder.blocks[0].attn.qkv.weight, saved)

    # an official MAE checkpoint through the image plugin's "mae" converter
    sd = load_file(Path(__file__).parent / "fixtures" / "mae" / "official_state_dict.safetensors")
    torch.save({"model": sd}, tmp_path / "mae.pth")
    tiny_recipe_dict["model"]["encoder"] = {"embed_dim": 64, "depth": 2, "num_heads": 4}
    tiny_recipe_dict["model"]["streams"]["image"]["tokenizer"] = {"name": "patch", "img_size": 32, "patch_size": 4,
                                                                  "in_chans": 3}
    tiny_recipe_dict["model"]["streams"]["image"]["decoder"] = {"name": "mae", "embed_dim": 32, "depth": 2, "num_heads": 4}
    tiny_recipe_dict["finetune"] = {"num_classes": 10}
    task = FinetuneTask(recipe_from_dict(tiny_recipe_dict), init=f"mae:{tmp_path / 'mae.pth'}")
    assert torch.equal(task.module.backbone.encoder.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])



def test_cls_max_pool_and_threads_option(tiny_recipe_dict, tmp_path):
    backbone = build_model(recipe_from_dict(tiny_recipe_dict).model)
    clf = EncoderClassifier(backbone, num_classes=5, pool="cls_max")
    assert clf.head.in_features == 64 and clf({"image": torch.randn(2, 1, 28, 28)}).shape == (2, 5)
    from mmim.engine.runtime import setup_runtime

    before = torch.get_num_threads()
    try:
        setup_runtime("cpu", "fp32", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

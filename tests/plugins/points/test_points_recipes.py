"""The Point-MAE recipes against the paper's / official configs' values, and the default recipe's model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmim.config.recipe import load_recipe
from mmim.model import build_model
from mmim.recipes_catalog import default_recipe
from mmim_points.converters.pointmae import mmim_to_pointmae

RECIPES = Path(__file__).resolve().parents[3] / "recipes" / "points"
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "pointmae"

# cfgs/pretrain.yaml of Pang-Yatian/Point-MAE and the README's fine-tuned accuracies
PRETRAIN = {
    # max_epoch 300: runner_pretrain.py trains range(0, max_epoch + 1), the cosine spans 300 (t_initial)
    "epochs": 301, "cycle_epochs": 300, "warmup_epochs": 10, "lr": 1e-3, "weight_decay": 0.05, "batch": 128, "npoints": 1024,
    "num_group": 64, "group_size": 32, "mask_ratio": 0.6, "masker": "point_random", "loss": "chamfer_l2",
    "trans_dim": 384, "depth": 12, "num_heads": 6, "decoder_depth": 4, "decoder_num_heads": 6, "drop_path": 0.1,
}
REPORTED = {"pointmae_shapenet55": 93.8, "pointmae_shapenet55_scanobjectnn": 85.18}


@pytest.mark.parametrize("name", sorted(REPORTED))
def test_recipe_matches_paper(name):
    r = load_recipe(RECIPES / f"{name}.yaml")
    assert r.name == name and r.provenance.reported == REPORTED[name] and "Point-MAE" in r.provenance.paper
    enc, stream = r.model.encoder, r.model.streams["points"]
    got = {
        "epochs": r.schedule.epochs, "cycle_epochs": r.schedule.epoch_cosine.cycle_epochs,
        "warmup_epochs": r.schedule.warmup_epochs, "lr": r.optim.lr,
        "weight_decay": r.optim.weight_decay, "batch": r.train.effective_batch_size,
        "npoints": r.data.dataset["num_points"], "num_group": stream.tokenizer["num_group"],
        "group_size": stream.tokenizer["group_size"], "mask_ratio": stream.masker["ratio"],
        "masker": stream.masker["name"], "loss": stream.loss["name"], "trans_dim": enc.embed_dim, "depth": enc.depth,
        "num_heads": enc.num_heads, "decoder_depth": stream.decoder["depth"],
        "decoder_num_heads": stream.decoder["num_heads"], "drop_path": enc.drop_path,
    }
    assert got == PRETRAIN
    assert stream.decoder["drop_path"] == PRETRAIN["drop_path"] and stream.decoder["embed_dim"] == enc.embed_dim
    assert (enc.qkv_bias, enc.norm_eps, enc.cls_token, enc.pos_every_block) == (False, 1e-5, False, True)
    assert stream.target == {"name": "content", "normalize": False}
    assert r.data.dataset["name"] == "shapenet55" and r.optim.betas == (0.9, 0.999)


def _production_keys() -> set[str]:
    """``pretrain.pth['base_model']`` keys: the fixture's key families with 12 encoder and 4 decoder blocks."""
    keys = set()
    for key in load_file(FIXTURE / "official_state_dict.safetensors"):
        for prefix, depth in (("MAE_encoder.blocks.blocks.", 12), ("MAE_decoder.blocks.", 4)):
            if key.startswith(prefix):
                rest = key[len(prefix):].split(".", 1)[1]
                keys |= {f"{prefix}{i}.{rest}" for i in range(depth)}
                break
        else:
            keys.add(key)
    return keys


def test_pretrain_recipe_has_the_official_checkpoint_layout():
    """Its model converts to exactly the key set and shapes of Point-MAE's released pretrain.pth."""
    r = load_recipe(RECIPES / "pointmae_shapenet55.yaml")
    official = mmim_to_pointmae(build_model(r.model).state_dict())
    assert set(official) == _production_keys() and len(official) == 209
    assert official["MAE_encoder.blocks.blocks.11.attn.qkv.weight"].shape == (1152, 384)
    assert official["increase_dim.0.weight"].shape == (96, 384, 1) and official["mask_token"].shape == (1, 1, 384)
    assert official["MAE_encoder.encoder.second_conv.0.weight"].shape == (512, 512, 1)


def test_default_recipe_builds_and_trains_a_step():
    path = default_recipe("points")
    r = load_recipe(path, ["data.dataset.num_samples=20"])
    assert path.name == "pointmae_primitives.yaml" and r.eval.protocols == ["linear", "knn"]
    from mmim import registry

    ds = registry.build("dataset", r.data.dataset, split="train", augment=True)
    torch.manual_seed(0)
    batch = {"points": torch.stack([ds[i]["points"] for i in range(4)])}
    model = build_model(r.model)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.predictions["points"].values.shape == (4, 19, 48)


@pytest.mark.slow
def test_default_points_run_via_console_script(tmp_path):
    """``mmim train --modality points`` as a user runs it (shortened), then ``mmim visualize``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mmim", "train", "--modality", "points", f"train.out_dir={tmp_path}",
         "schedule.max_steps=3", "data.dataset.num_samples=200", "eval.linear_epochs=2"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trained 3 steps" in proc.stdout and "random_init" in proc.stdout
    vis = subprocess.run([sys.executable, "-m", "mmim", "visualize", str(tmp_path), "--num", "2"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert vis.returncode == 0, vis.stderr
    assert (tmp_path / "visualize" / "points_001.png").is_file()


# cfgs/finetune_modelnet.yaml / finetune_scan_hardest.yaml and tools/runner_finetune.py of Pang-Yatian/Point-MAE
FINETUNE_COMMON = {
    "epochs": 300, "warmup_epochs": 10, "lr": 5e-4, "min_lr": 1e-6, "weight_decay": 0.05, "betas": (0.9, 0.999),
    "batch": 32, "grad_clip": 10.0, "drop_path": 0.1, "layer_decay": 1.0, "label_smoothing": 0.0, "mixup": 0.0,
    "cutmix": 0.0, "pool": "cls_max", "head": "mlp", "head_hidden": 256, "head_dropout": 0.5, "multilabel": False,
    "trans_dim": 384, "depth": 12, "num_heads": 6, "group_size": 32,
}
FINETUNE = {
    "pointmae_modelnet40_finetune": {**FINETUNE_COMMON, "num_classes": 40, "num_group": 64, "npoints": 1024,
                                     "votes": 10, "reported": 93.8, "dataset": "modelnet40", "normalize": True},
    "pointmae_scanobjectnn_finetune": {**FINETUNE_COMMON, "num_classes": 15, "num_group": 128, "npoints": 2048,
                                       "votes": 1, "reported": 85.18, "dataset": "scanobjectnn", "normalize": False},
}


@pytest.mark.parametrize("name", sorted(FINETUNE))
def test_finetune_recipe_matches_official_config(name):
    r = load_recipe(RECIPES / f"{name}.yaml")
    ft, enc, stream = r.finetune, r.model.encoder, r.model.streams["points"]
    got = {
        "epochs": ft.epochs, "warmup_epochs": ft.warmup_epochs, "lr": ft.lr, "min_lr": ft.min_lr,
        "weight_decay": ft.weight_decay, "betas": tuple(ft.betas), "batch": ft.effective_batch_size,
        "grad_clip": ft.grad_clip, "drop_path": ft.drop_path, "layer_decay": ft.layer_decay,
        "label_smoothing": ft.label_smoothing, "mixup": ft.mixup, "cutmix": ft.cutmix, "pool": ft.pool, "head": ft.head,
        "head_hidden": ft.head_hidden, "head_dropout": ft.head_dropout, "multilabel": ft.multilabel,
        "trans_dim": enc.embed_dim, "depth": enc.depth, "num_heads": enc.num_heads,
        "group_size": stream.tokenizer["group_size"], "num_classes": ft.num_classes,
        "num_group": stream.tokenizer["num_group"], "npoints": ft.dataset["num_points"], "votes": ft.votes,
        "reported": ft.reported_top1, "dataset": ft.dataset["name"], "normalize": ft.dataset["normalize"],
    }
    assert got == FINETUNE[name]
    assert r.provenance.reported == ft.reported_top1 and "Point-MAE" in r.provenance.paper
    assert ft.batch_size == ft.effective_batch_size == 32
    # PointTransformer: the pre-training encoder plus a cls token with its own position
    assert (enc.qkv_bias, enc.norm_eps, enc.cls_token, enc.cls_pos, enc.pos_every_block) == (False, 1e-5, True, True, True)
    if ft.dataset["name"] == "scanobjectnn":
        assert ft.dataset["variant"] == "pb_t50_rs"
    # the model is pointmae_shapenet55's plus the cls token: its pre-training checkpoints fit
    pre = build_model(load_recipe(RECIPES / "pointmae_shapenet55.yaml").model).state_dict()
    fine = build_model(r.model).state_dict()
    assert set(fine) - set(pre) == {"encoder.cls_token", "encoder.cls_pos"} and set(pre) <= set(fine)
    assert all(fine[k].shape == pre[k].shape for k in pre)


def test_finetune_from_an_official_finetuned_file_loads_encoder_and_head(tmp_path):
    """``mmim finetune RECIPE --init pointmae:FILE`` path: encoder, cls token and the MLP head all load."""
    from mmim.finetune.task import FinetuneTask
    from mmim_points.converters.pointmae import mmim_to_pointtransformer

    overrides = ["data.dataset.num_samples=20", "data.dataset.num_points=64", "model.encoder.cls_token=true",
                 "model.encoder.cls_pos=true", "model.streams.points.tokenizer.num_group=8",
                 "model.streams.points.tokenizer.group_size=8", "finetune.pool=cls_max", "finetune.head=mlp",
                 "finetune.head_hidden=32"]
    r = load_recipe(default_recipe("points"), overrides)
    torch.manual_seed(1)
    source = FinetuneTask(r)  # a "fine-tuned" model with random weights everywhere
    for p in source.module.parameters():
        torch.nn.init.normal_(p)
    head_state = source.module.head.state_dict()
    official = mmim_to_pointtransformer(source.module.backbone.state_dict(), head_state)
    torch.save({"base_model": {f"module.{k}": v for k, v in official.items()}}, tmp_path / "ft.pth")
    task = FinetuneTask(r, init=f"pointmae:{tmp_path / 'ft.pth'}")
    for key, value in head_state.items():
        assert torch.equal(task.module.head.state_dict()[key], value), key
    assert torch.equal(task.module.backbone.encoder.cls_token, source.module.backbone.encoder.cls_token)
    assert torch.equal(task.module.backbone.encoder.blocks[0].attn.qkv.weight,
                       source.module.backbone.encoder.blocks[0].attn.qkv.weight)

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
    "epochs": 300, "warmup_epochs": 10, "lr": 1e-3, "weight_decay": 0.05, "batch": 128, "npoints": 1024,
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
        "epochs": r.schedule.epochs, "warmup_epochs": r.schedule.warmup_epochs, "lr": r.optim.lr,
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

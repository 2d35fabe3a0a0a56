"""``mmim export`` for every modality and for fused models, loaded back with ``mmim.load_encoder``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import mmim
from mmim import registry
from mmim.cli import main
from mmim.config import load_recipe
from mmim.export import export_encoder, is_encoder_key
from mmim.model import build_model
from mmim.recipes_catalog import default_recipe

SMALL = ["model.encoder.embed_dim=32", "model.encoder.depth=2", "model.encoder.num_heads=2"]
MODALITIES = sorted(p.modality for p in registry.plugins().values() if p.modality and p.default_recipe)


def _batch(recipe, n: int = 3) -> dict:
    spec = recipe.eval.dataset or recipe.data.dataset
    ds = registry.build("dataset", spec, split=recipe.eval.test_split, augment=False)
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}


def _perturbed(recipe):
    """A model whose every weight differs from a fresh build's, so loading must read the file."""
    torch.manual_seed(0)
    model = build_model(recipe.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("modality", MODALITIES)
def test_export_and_load_give_the_same_features(modality, tmp_path):
    """Every installed modality, the third-party example plugin's included (tests/conftest.py)."""
    _roundtrip(load_recipe(default_recipe(modality), SMALL), tmp_path)


def test_the_third_party_modality_is_covered(timeseries_plugin):
    assert timeseries_plugin.modality in MODALITIES


def test_fused_audio_visual_export(tmp_path):
    from mmim.recipes_catalog import find_recipe

    _roundtrip(load_recipe(find_recipe("multimae_video_audio"), SMALL), tmp_path)


def _roundtrip(recipe, tmp_path):
    model = _perturbed(recipe)
    batch = _batch(recipe)
    expected = model.features(batch, pool=recipe.model.pool)
    weights = export_encoder(model, recipe, tmp_path / "exp", step=7)
    saved = load_file(str(weights))
    assert saved and all(is_encoder_key(k) for k in saved)
    assert not any(".decoder." in k for k in saved), "decoder weights were exported"
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert config["hidden_size"] == recipe.model.encoder.resolved().embed_dim and config["step"] == 7
    assert config["recipe_name"] == recipe.name and config["fused"] == (recipe.model.fusion is not None)
    card = (tmp_path / "exp" / "README.md").read_text()
    assert recipe.name in card and "training step: 7" in card and recipe.data.dataset["name"] in card
    torch.manual_seed(123)  # a different init: only the file can make the features agree
    encoder = mmim.load_encoder(tmp_path / "exp")
    assert set(encoder.model.state_dict()) == set(saved), "the loaded module holds weights that are not in the file"
    assert set(encoder.input_keys) <= set(batch)
    torch.testing.assert_close(encoder(batch), expected, atol=1e-5, rtol=1e-5)


def test_load_encoder_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an mmim export"):
        mmim.load_encoder(tmp_path)
    recipe = load_recipe(default_recipe("image"), SMALL)
    export_encoder(_perturbed(recipe), recipe, tmp_path / "exp")
    other = load_recipe(default_recipe("image"), ["model.encoder.embed_dim=16", "model.encoder.depth=2", "model.encoder.num_heads=2"])
    export_encoder(build_model(other.model), other, tmp_path / "other")
    (tmp_path / "exp" / "config.json").write_text((tmp_path / "other" / "config.json").read_text())
    with pytest.raises(ValueError, match="model.safetensors: does not match"):
        mmim.load_encoder(tmp_path / "exp")


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["points", "multimodal"])
def test_export_through_cli(modality, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--modality", modality, *SMALL, "schedule.max_steps=2", "eval.after_train=false",
                 "data.batch_size=8", "train.tensorboard=false", "train.progress=false", f"train.out_dir={out}"]) == 0
    assert main(["export", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "export" / "model.safetensors") in printed
    config = json.loads((out / "export" / "config.json").read_text())
    assert config["step"] == 2 and config["data"] == load_recipe(out / "config.yaml").data.dataset
    assert mmim.load_encoder(out / "export").config["recipe_name"] == config["recipe_name"]

"""``mmim export`` for images: also a timm-loadable safetensors encoder and its model card (in ``timm/``)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from mmim.cli import main
from mmim.config.recipe import recipe_from_dict
from mmim.model import build_model
from mmim.timm_compat import import_timm
from mmim_image.export import export_timm


def _load_timm(out_dir):
    timm = import_timm()
    cfg = json.loads((out_dir / "timm_config.json").read_text())
    model = timm.create_model(cfg["model_name"], pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(out_dir / "model.safetensors")), **cfg["kwargs"])
    return model.eval()


def test_exported_encoder_loads_strictly_in_timm_and_gives_the_same_features(tiny_recipe_dict, tmp_path):
    recipe = recipe_from_dict(tiny_recipe_dict)
    torch.manual_seed(0)
    model = build_model(recipe.model).eval()
    export_timm(model, recipe, tmp_path / "exp", metrics={"trained": {"knn": 0.5}})
    ref = _load_timm(tmp_path / "exp")
    # strict: every key of timm's model came from the file and nothing was left over
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "exp" / "model.safetensors")
    assert set(saved) == set(ref.state_dict())
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(ref(x), model.features({"image": x}, pool="mean"), atol=1e-5, rtol=1e-5)
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "timm.create_model" in card and "knn" in card and recipe.provenance.paper in card


def test_export_through_cli(tiny_recipe_dict, tmp_path, capsys):
    tiny_recipe_dict["schedule"]["max_steps"] = 1
    tiny_recipe_dict["eval"]["after_train"] = False
    tiny_recipe_dict["model"]["pool"] = "cls"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path)]) == 0
    assert main(["export", str(tmp_path / "run")]) == 0
    model = _load_timm(tmp_path / "run" / "export" / "timm")  # the generic export is next to it (tests/test_encoder_export.py)
    assert model.global_pool == "token"
    x = torch.randn(2, 1, 28, 28)
    import mmim

    generic = mmim.load_encoder(tmp_path / "run" / "export")
    torch.testing.assert_close(model(x), generic({"image": x}), atol=1e-5, rtol=1e-5)
    assert "timm/" in (tmp_path / "run" / "export" / "README.md").read_text()


def test_export_refuses_more_than_one_prefix_token(tiny_recipe_dict, tmp_path):
    """timm's ViT has one cls token: an encoder with MultiMAE-style global tokens is not exported wrongly."""
    tiny_recipe_dict["model"]["encoder"]["num_prefix_tokens"] = 2
    recipe = recipe_from_dict(tiny_recipe_dict)
    model = build_model(recipe.model).eval()
    with pytest.raises(ValueError, match="2 prefix tokens"):
        export_timm(model, recipe, tmp_path / "exp")

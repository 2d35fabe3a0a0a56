"""Recipe loading: strict keys and types, overrides, component option checks."""

from __future__ import annotations

import pytest
import yaml

from mmim.config.recipe import apply_overrides, load_recipe, parse_override, recipe_from_dict
from mmim.config.typed import ConfigError
from mmim.recipes_catalog import catalog


def _write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tiny_recipe_loads_with_defaults(tiny_recipe_dict, tmp_path):
    recipe = load_recipe(_write(tmp_path, tiny_recipe_dict))
    assert recipe.model.encoder.embed_dim == 32
    assert recipe.optim.betas == (0.9, 0.95)
    assert recipe.source.endswith("r.yaml")


def test_unknown_key_names_key_file_and_choices(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["optim"]["weight_decy"] = 0.1
    path = _write(tmp_path, tiny_recipe_dict)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert str(path) in msg and "optim.weight_decy" in msg and "weight_decay" in msg and "base_lr" in msg


def test_wrong_type_and_bad_literal(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["data"]["batch_size"] = "lots"
    with pytest.raises(ConfigError, match=r"data.batch_size: expected an integer"):
        load_recipe(_write(tmp_path, tiny_recipe_dict))
    tiny_recipe_dict["data"]["batch_size"] = 4
    tiny_recipe_dict["train"]["precision"] = "fp8"
    with pytest.raises(ConfigError, match=r"train.precision: 'fp8' is not one of"):
        load_recipe(_write(tmp_path, tiny_recipe_dict))


def test_component_names_and_options_checked_at_load(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["model"]["streams"]["image"]["masker"] = {"name": "random", "ration": 0.5}
    path = _write(tmp_path, tiny_recipe_dict)
    with pytest.raises(ConfigError, match=r"model.streams.image.masker: unknown option 'ration'.*valid options: ratio"):
        load_recipe(path)
    tiny_recipe_dict["model"]["streams"]["image"]["masker"] = {"name": "zigzag"}
    with pytest.raises(ConfigError, match=r"unknown masker 'zigzag'.*core:random"):
        load_recipe(_write(tmp_path, tiny_recipe_dict))


def test_overrides_are_parsed_as_yaml_and_validated(tiny_recipe_dict, tmp_path):
    path = _write(tmp_path, tiny_recipe_dict)
    recipe = load_recipe(path, ["optim.lr=3e-4", "optim.betas=[0.9, 0.99]", "model.streams.image.masker.ratio=0.5"])
    assert recipe.optim.lr == pytest.approx(3e-4)
    assert recipe.optim.betas == (0.9, 0.99)
    assert recipe.model.streams["image"].masker["ratio"] == 0.5
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_recipe(path, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_yaml_is_safe_loaded(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(path)


def test_missing_required_key(tiny_recipe_dict):
    del tiny_recipe_dict["model"]
    with pytest.raises(ConfigError, match="missing required key 'model'"):
        recipe_from_dict(tiny_recipe_dict)


@pytest.mark.parametrize("entry", catalog(), ids=lambda e: e.name)
def test_every_shipped_recipe_validates(entry):
    recipe = load_recipe(entry.path)
    assert recipe.name == entry.name, "a recipe's name must equal its file name"
    assert recipe.provenance.paper, "every recipe names its paper"

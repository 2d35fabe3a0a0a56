"""The loader options act: persistent workers keep one loader for the run, prefetch_factor and
pin_memory reach the DataLoader (map-style and shards), and none of them changes what is trained."""

from __future__ import annotations

import copy
import json

import pytest

from mmim.config.recipe import recipe_from_dict
from mmim.engine import loader as trainer_module  # the trainer's loader side (make_loader)
from mmim.engine.trainer import Trainer

MAKE_LOADER = trainer_module.make_loader


def _fit(recipe: dict, tmp_path, name: str, monkeypatch, **data_options) -> tuple[list, list[float], Trainer]:
    """Train ``recipe`` with ``data_options``; the loaders it made and its logged losses."""
    recipe = copy.deepcopy(recipe)
    recipe["data"].update(data_options)
    recipe["train"]["out_dir"] = str(tmp_path / name)
    loaders = []

    def spy(*args, **kwargs):
        loaders.append(MAKE_LOADER(*args, **kwargs))
        return loaders[-1]

    monkeypatch.setattr(trainer_module, "make_loader", spy)
    trainer = Trainer(recipe_from_dict(recipe))
    trainer.fit()
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]
    return loaders, losses, trainer


def test_persistent_workers_keep_one_loader_for_the_run_and_train_the_same(tiny_recipe_dict, tmp_path, monkeypatch):
    epochs = tiny_recipe_dict["schedule"]["epochs"]
    assert epochs >= 2
    kept, kept_losses, _ = _fit(tiny_recipe_dict, tmp_path, "kept", monkeypatch, num_workers=1, persistent_workers=True)
    fresh, fresh_losses, _ = _fit(tiny_recipe_dict, tmp_path, "fresh", monkeypatch, num_workers=1,
                                  persistent_workers=False)
    assert len(kept) == 1 and kept[0].persistent_workers
    assert len(fresh) == epochs and not any(loader.persistent_workers for loader in fresh)
    assert kept_losses and kept_losses == fresh_losses  # every sample carries its seed: same items, same run


def test_prefetch_factor_and_pin_memory_reach_the_loader(tiny_recipe_dict, tmp_path, monkeypatch):
    recipe = copy.deepcopy(tiny_recipe_dict)
    recipe["schedule"]["max_steps"] = 1
    loaders, _, trainer = _fit(recipe, tmp_path, "a", monkeypatch, num_workers=1, prefetch_factor=3, pin_memory=True)
    assert loaders[0].prefetch_factor == 3 and loaders[0].pin_memory is True
    loaders, _, trainer = _fit(recipe, tmp_path, "b", monkeypatch, num_workers=1, prefetch_factor=5)
    assert loaders[0].prefetch_factor == 5
    assert loaders[0].pin_memory is (trainer.rt.device.type == "cuda")  # the default: pinned on CUDA only


def test_shard_loader_takes_prefetch_factor_and_pin_memory(tiny_recipe_dict, tmp_path, monkeypatch):
    from mmim.data import stream as stream_module
    from mmim.data.pack import pack

    spec = tiny_recipe_dict["data"]["dataset"]
    pack(spec, tmp_path / "shards", samples_per_shard=16, progress=False)
    seen = []
    real = stream_module.DataLoader  # patched once in this test

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(stream_module, "DataLoader", spy)
    recipe = copy.deepcopy(tiny_recipe_dict)
    recipe["schedule"]["max_steps"] = 1
    batch = recipe["data"]["batch_size"]
    for factor, pin in ((3, True), (1, False)):
        _fit(recipe, tmp_path, f"s{factor}", monkeypatch, shards=str(tmp_path / "shards"), num_workers=2,
             prefetch_factor=factor, pin_memory=pin)
        # the stream's loader yields single samples: prefetch_factor micro-batches per worker, in samples
        assert seen[-1]["prefetch_factor"] == max(2, factor * batch // 2) and seen[-1]["pin_memory"] is pin


@pytest.mark.parametrize("value", [0, -1])
def test_prefetch_factor_below_one_is_refused(tiny_recipe_dict, tmp_path, monkeypatch, value):
    with pytest.raises(ValueError, match="prefetch_factor must be at least 1"):
        _fit(tiny_recipe_dict, tmp_path, "bad", monkeypatch, num_workers=1, prefetch_factor=value)

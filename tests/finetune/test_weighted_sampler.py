"""finetune.sampler: weighted reads the training set's sample_weights()."""

from __future__ import annotations

import pytest

from mmim.config.recipe import recipe_from_dict
from mmim.finetune.task import FinetuneTask


def test_weighted_sampler_needs_sample_weights(tiny_recipe_dict):
    data = dict(tiny_recipe_dict)
    data["finetune"] = {**data.get("finetune", {}), "sampler": "weighted", "epoch_samples": 64}
    with pytest.raises(ValueError, match="sample_weights"):
        FinetuneTask(recipe_from_dict(data))


def test_weighted_sampler_settings_reach_the_loop(tiny_recipe_dict, monkeypatch):
    data = dict(tiny_recipe_dict)
    data["finetune"] = {**data.get("finetune", {}), "sampler": "weighted", "epoch_samples": 64}
    recipe = recipe_from_dict(data)
    from mmim import registry

    real_build = registry.build

    def with_weights(kind, spec, **kw):
        ds = real_build(kind, spec, **kw)
        if kind == "dataset":
            ds.sample_weights = lambda: [1.0 + (i % 3) for i in range(len(ds))]
        return ds

    monkeypatch.setattr(registry, "build", with_weights)
    task = FinetuneTask(recipe)
    assert task.settings.epoch_samples == 64 and task.settings.replacement is False
    assert task.settings.sample_weights.tolist()[:3] == [1.0, 2.0, 3.0]
    data["finetune"]["sampler"] = "uniform"
    with pytest.raises(ValueError, match="epoch_samples needs"):
        FinetuneTask(recipe_from_dict(data))

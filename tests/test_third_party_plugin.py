"""A modality added from outside mmim: the example package ``examples/mmim-timeseries``.

``tests/conftest.py`` builds and installs a copy into a temporary folder unless it is installed
already (the active environment is left as it was); then it must be discovered through its entry point, its recipe must build and train
a model, and ``mmim train --modality timeseries`` must run it, all without anything in mmim
knowing about time series.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from mmim import registry
from mmim.config import load_recipe
from mmim.interfaces import Masker, Tokenizer
from mmim.model import build_model


def test_plugin_is_discovered_and_components_resolve(timeseries_plugin):
    plugin = timeseries_plugin
    assert plugin.name == "timeseries" and plugin.modality == "timeseries"
    assert registry.modality_plugin("timeseries") is plugin
    for kind, names in plugin.components.items():
        for name in names:
            assert f"timeseries:{name}" in registry.available(kind)
            assert registry.qualified_name(kind, name) == f"timeseries:{name}"
            assert callable(registry.resolve(kind, f"timeseries:{name}"))
    assert issubclass(registry.resolve("tokenizer", "series_patch"), Tokenizer)
    assert issubclass(registry.resolve("masker", "span"), Masker)
    assert [p.name for p in plugin.recipe_files()] == [plugin.default_recipe] == ["mae_timeseries.yaml"]


def test_recipe_builds_and_trains_one_step(timeseries_plugin):
    path = timeseries_plugin.recipe_files()[0]
    recipe = load_recipe(path)
    assert recipe.modality == "timeseries" and recipe.provenance.reported is None
    torch.manual_seed(0)
    model = build_model(recipe.model)
    dataset = registry.build("dataset", recipe.data.dataset, split="train", augment=True)
    batch = next(iter(DataLoader(dataset, batch_size=8, shuffle=False)))
    assert batch["series"].shape == (8, 3, 96)

    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    mask = out.stream_mask("series")
    assert mask.masked.shape == (8, round(12 * 0.4)) and mask.visible.shape == (8, 12 - round(12 * 0.4))
    out.loss.backward()
    grad = model.streams["series"].tokenizer.proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.features(batch).shape == (8, recipe.model.encoder.embed_dim)


def test_core_random_masker_works_with_the_plugin(timeseries_plugin):
    """A recipe may mix plugin components with the core ones."""
    path = timeseries_plugin.recipe_files()[0]
    recipe = load_recipe(path, ["model.streams.series.masker={name: random, ratio: 0.5}"])
    model = build_model(recipe.model)
    series = model.streams["series"].tokenizer.example_input(4, torch.Generator().manual_seed(0))
    out = model({"series": series}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.stream_mask("series").masked.shape == (4, 6)


@pytest.mark.slow
def test_cli_trains_the_plugin_modality(timeseries_plugin, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "mmim", "train", "--modality", "timeseries", f"train.out_dir={tmp_path}",
         "schedule.max_steps=5", "eval.after_train=false"],
        check=True,
    )
    assert any(tmp_path.iterdir()), "the training run wrote nothing to its out_dir"

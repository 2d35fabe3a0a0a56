"""Fine-tuning from shards (finetune.train_shards / finetune.test_shards): the loop streams the
training split, and the test split read from shards scores exactly as from its files."""

from __future__ import annotations

import copy

import pytest
import torch

from mmim.config.recipe import recipe_from_dict
from mmim.data.pack import pack
from mmim.engine.trainer import Trainer
from mmim.finetune.task import FinetuneTask


def _recipe(tiny_recipe_dict, tmp_path, **finetune):
    data = copy.deepcopy(tiny_recipe_dict)
    data["finetune"] = {"epochs": 2, "warmup_epochs": 0.5, "batch_size": 16, "num_classes": 10,
                        "out_dir": str(tmp_path / "ft"), **finetune}
    return recipe_from_dict(data)


def _pack(recipe, root):
    spec = dict(recipe.finetune.dataset or recipe.eval.dataset or recipe.data.dataset)
    for split in (recipe.finetune.train_split, recipe.finetune.test_split):
        pack(spec, root / split, split=split, samples_per_shard=16, progress=False)
    return str(root / recipe.finetune.train_split), str(root / recipe.finetune.test_split)


def test_finetuning_streams_its_training_split_and_tests_from_shards(tiny_recipe_dict, tmp_path):
    files = _recipe(tiny_recipe_dict, tmp_path)
    train, test = _pack(files, tmp_path / "shards")
    recipe = _recipe(tiny_recipe_dict, tmp_path, train_shards=train, test_shards=test)
    torch.manual_seed(recipe.seed)
    task = FinetuneTask(recipe)
    trainer = Trainer(recipe, task=task, run_dir=tmp_path / "ft")
    assert trainer.stream is not None and trainer.stream.shards.urls[0].startswith(train)
    summary = trainer.fit()
    assert summary["steps"] == trainer.total_steps > 0
    model = trainer.unsharded_model()
    from_shards = task.evaluate(model)
    from_files = FinetuneTask(files).evaluate(model)  # the same classifier on the test split's files
    assert from_shards == from_files and 0.0 <= from_shards["top1"] <= 1.0


def test_weighted_sampling_cannot_read_shards(tiny_recipe_dict, tmp_path, monkeypatch):
    files = _recipe(tiny_recipe_dict, tmp_path)
    train, _ = _pack(files, tmp_path / "shards")
    recipe = _recipe(tiny_recipe_dict, tmp_path, train_shards=train, sampler="weighted", epoch_samples=32)
    from mmim_image.datasets.fashion_mnist import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "sample_weights", lambda self: [1.0] * 16, raising=False)
    with pytest.raises(ValueError, match="weighted sampling draws samples by index"):
        Trainer(recipe, task=FinetuneTask(recipe), run_dir=tmp_path / "ft")

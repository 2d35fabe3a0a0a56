"""Corrupt images during training: an error naming the file, or a counted skip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from mmim.config.recipe import recipe_from_dict
from mmim.data.errors import CorruptSampleError
from mmim.engine.metrics import read_metrics
from mmim.engine.trainer import Trainer


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / "train" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp_path / "imgs" / "train" / cls / f"{i}.png")
    bad = tmp_path / "imgs" / "train" / "b" / "9_truncated.png"
    bad.write_bytes((tmp_path / "imgs" / "train" / "a" / "0.png").read_bytes()[:60])
    return tmp_path / "imgs", bad


def _recipe(tiny, root, out, skip):
    data = copy.deepcopy(tiny)
    data["data"] = {"dataset": {"name": "image_folder", "root": str(root), "img_size": 28, "in_chans": 1,
                                "mean": [0.5], "std": [0.25]}, "batch_size": 17, "skip_corrupt": skip}
    data["schedule"] = {"epochs": 1}
    data["train"]["out_dir"] = str(out)
    return recipe_from_dict(data)


def test_corrupt_image_names_the_file(tiny_recipe_dict, folder, tmp_path):
    root, bad = folder
    with pytest.raises(CorruptSampleError, match=str(bad)):
        Trainer(_recipe(tiny_recipe_dict, root, tmp_path / "r1", skip=False)).fit()


def test_skip_corrupt_counts_and_logs(tiny_recipe_dict, folder, tmp_path):
    root, _ = folder
    summary = Trainer(_recipe(tiny_recipe_dict, root, tmp_path / "r2", skip=True)).fit()
    assert summary["skipped"] == 1 and summary["steps"] == 1
    assert read_metrics(tmp_path / "r2")[-1]["skipped"] == 1

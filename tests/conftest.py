"""Shared test fixtures: a tiny image recipe that trains in seconds."""

from __future__ import annotations

import copy
from typing import Any

import pytest

TINY_RECIPE: dict[str, Any] = {
    "name": "tiny",
    "modality": "image",
    "seed": 0,
    "model": {
        "encoder": {"embed_dim": 32, "depth": 2, "num_heads": 2},
        "streams": {
            "image": {
                "tokenizer": {"name": "patch", "img_size": 28, "patch_size": 7, "in_chans": 1},
                "masker": {"name": "random", "ratio": 0.75},
                "target": {"name": "content", "normalize": True},
                "loss": {"name": "mse"},
                "decoder": {"name": "mae", "embed_dim": 16, "depth": 1, "num_heads": 2},
            }
        },
    },
    "data": {"dataset": {"name": "fashion_mnist", "max_samples": 96}, "batch_size": 16},
    "optim": {"lr": 1e-3},
    "schedule": {"epochs": 2, "warmup_epochs": 0.5},
    "train": {"log_every": 1, "tensorboard": False, "progress": False},
    "eval": {"linear_epochs": 5, "knn_k": 5, "batch_size": 64},
}


@pytest.fixture
def tiny_recipe_dict(tmp_path) -> dict[str, Any]:
    """A fresh copy of the tiny recipe, writing into ``tmp_path/run``."""
    data = copy.deepcopy(TINY_RECIPE)
    data["train"]["out_dir"] = str(tmp_path / "run")
    return data

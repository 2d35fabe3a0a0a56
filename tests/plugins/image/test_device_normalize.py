"""``normalize: device``: image datasets hand over uint8 pixels and the device scales and
normalises them to exactly the values the host path gives, in training, evaluation and fine-tuning."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from unusual_images import png16

from mmim import registry
from mmim.data.device import device_transforms, to_device
from mmim.data.loading import SeededDataset, collate_skipping
from mmim_image.datasets.examples import image_folder_example


def _specs(tmp_path) -> list[dict]:
    return [{"name": "fashion_mnist", "max_samples": 20},
            {"name": "image_folder", **image_folder_example(tmp_path / "folder")}]


def _batch(spec: dict, augment: bool, normalize: str, teacher_view: bool) -> tuple[dict, object]:
    ds = registry.build("dataset", {**spec, "normalize": normalize, "teacher_view": teacher_view}, split="train",
                        augment=augment)
    seeded = SeededDataset(ds)
    return collate_skipping([seeded[(i, 1000 + i)] for i in range(len(ds))]), ds


@pytest.mark.parametrize("augment", [True, False])
@pytest.mark.parametrize("teacher_view", [False, True])
def test_device_normalisation_gives_the_host_values_exactly(tmp_path, augment, teacher_view):
    for spec in _specs(tmp_path):
        host, host_ds = _batch(spec, augment, "host", teacher_view)
        raw, ds = _batch(spec, augment, "device", teacher_view)
        keys = ["image"] + (["image_teacher"] if teacher_view else [])
        assert device_transforms(host_ds) == {} and sorted(device_transforms(ds)) == sorted(keys)
        for key in keys:
            assert raw[key].dtype == torch.uint8 and host[key].dtype == torch.float32
            assert raw[key].element_size() * 4 == host[key].element_size()
        finished = to_device(raw, "cpu", device_transforms(ds))
        for key in keys:
            assert torch.equal(finished[key], host[key]), (spec["name"], key)


def test_training_and_features_are_the_same_with_device_normalisation(tiny_recipe_dict, tmp_path):
    from mmim.config.recipe import recipe_from_dict
    from mmim.engine.trainer import Trainer
    from mmim.eval.features import extract_features

    losses, features = {}, {}
    for normalize in ("host", "device"):
        recipe = copy.deepcopy(tiny_recipe_dict)
        recipe["data"]["dataset"]["normalize"] = normalize
        recipe["train"]["out_dir"] = str(tmp_path / normalize)
        recipe["schedule"]["max_steps"] = 3
        trainer = Trainer(recipe_from_dict(recipe))
        first = trainer.dataset[0]["image"]
        assert first.dtype == (torch.uint8 if normalize == "device" else torch.float32)  # the switch acts
        trainer.fit()
        lines = (tmp_path / normalize / "metrics.jsonl").read_text().splitlines()
        losses[normalize] = [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]
        test = registry.build("dataset", recipe["data"]["dataset"], split="test", augment=False)
        features[normalize] = extract_features(trainer.model, test, batch_size=32)[0]
    assert losses["host"] and losses["host"] == losses["device"]
    assert torch.equal(features["host"], features["device"])


def test_high_bit_depth_images_are_refused_naming_the_file(tmp_path):
    root = tmp_path / "deep"
    (root / "a").mkdir(parents=True)
    path = png16(root / "a" / "ramp.png", np.arange(400, dtype=np.uint16).reshape(20, 20) * 150)
    ds = registry.build("dataset", {"name": "image_folder", "root": str(root), "in_chans": 1, "img_size": 16,
                                    "mean": 0.5, "std": 0.25, "normalize": "device"}, split="train", augment=False)
    with pytest.raises(ValueError, match=r"more than 8 bits.*normalize: host.*ramp\.png"):
        SeededDataset(ds)[(0, 0)]
    with pytest.raises(registry.RegistryError, match="normalize must be one of"):
        registry.build("dataset", {"name": "fashion_mnist", "normalize": "gpu"}, split="train", augment=False)
    assert path.exists()


def test_derived_modalities_need_host_normalised_images():
    with pytest.raises(registry.RegistryError, match="image_derived.*normalize: host"):
        registry.build("dataset", {"name": "image_derived", "image": {"name": "fashion_mnist", "max_samples": 10,
                                                                      "normalize": "device"}},
                       split="train", augment=True)

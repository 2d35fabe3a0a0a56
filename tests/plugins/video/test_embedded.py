"""The embedded Moving Fashion-MNIST clips, their dataset and the video plugin's default recipe."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
import torch

from mmim.config.recipe import load_recipe
from mmim_video.embedded import CLASSES, MEAN, MOTIONS, STD, MovingFashion, embedded_root


def _index() -> list[dict[str, str]]:
    with open(embedded_root() / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_index_counts_and_balanced_labels():
    rows = _index()
    assert list(rows[0]) == ["file", "class", "motion", "split", "source_index"]
    for split, n in (("train", 600), ("test", 200)):
        part = [r for r in rows if r["split"] == split]
        assert len(part) == n and all(r["file"].startswith(f"{split}/") for r in part)
        assert all((embedded_root() / r["file"]).is_file() for r in part)
        pairs = Counter((int(r["class"]), int(r["motion"])) for r in part)
        assert set(pairs) == {(c, m) for c in range(len(CLASSES)) for m in range(len(MOTIONS))}
        assert set(pairs.values()) == {n // (len(CLASSES) * len(MOTIONS))}
    assert sum(p.stat().st_size for p in embedded_root().rglob("*.mp4")) < 4_000_000


@pytest.mark.parametrize("label, num_classes", [("class", 10), ("motion", 4)])
def test_dataset_labels_follow_the_index(label, num_classes):
    ds = MovingFashion("test", augment=False, label=label)
    rows = [r for r in _index() if r["split"] == "test"]
    assert len(ds) == 200 and ds.num_classes == len(ds.classes) == num_classes
    assert [ds[i]["label"] for i in (0, 57, 199)] == [int(rows[i][label]) for i in (0, 57, 199)]
    assert MovingFashion("val", augment=False).split == "test"


@pytest.mark.parametrize("index", [0, 1, 2, 3, 150])
def test_clip_decodes_to_a_garment_moving_as_indexed(index):
    video = MovingFashion("train", augment=False)[index]["video"]
    assert video.shape == (1, 16, 32, 32) and video.dtype == torch.float32
    raw = video * STD + MEAN  # undo the normalisation: a black background and one moving garment
    assert raw.min() >= -1e-4 and raw.max() <= 1 + 1e-4
    assert raw[0, 0].flatten().kthvalue(64).values.abs() < 0.02  # a background border around the garment
    frames = raw[0].clamp_min(0)
    grid = torch.arange(32.0)
    x = torch.stack([(f.sum(0) * grid).sum() / f.sum() for f in frames])  # centre of mass per frame
    y = torch.stack([(f.sum(1) * grid).sum() / f.sum() for f in frames])
    along, across = {"right": (x, y), "left": (-x, y), "down": (y, x), "up": (-y, x)}[MOTIONS[int(_index()[index]["motion"])]]
    assert 5.5 < float(along[-1] - along[0]) < 9.5  # 0.4-0.6 px per frame over 15 steps
    assert float((across - across[0]).abs().max()) < 0.5
    assert (along[1:] - along[:-1]).min() > -0.2  # steady, one direction


def test_clip_in_rgb_and_at_another_size():
    rgb = MovingFashion("train", augment=False, in_chans=3, img_size=16)[3]["video"]
    assert rgb.shape == (3, 16, 16, 16) and torch.allclose(rgb[0], rgb[2])


def test_repeated_augmentation_keeps_one_grey_channel():
    video = MovingFashion("train", augment=True, num_sample=3)[0]["video"]
    assert video.shape == (3, 1, 16, 32, 32)


def test_items_are_deterministic_under_the_global_seed():
    ds = MovingFashion("train", augment=True, img_size=32)
    torch.manual_seed(7)
    a = [ds[i]["video"] for i in (0, 1)]
    torch.manual_seed(7)
    b = [ds[i]["video"] for i in (0, 1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and a[0].shape == (1, 16, 32, 32)
    torch.manual_seed(8)
    assert not all(torch.equal(x, ds[i]["video"]) for i, x in zip((0, 1), a, strict=True))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="hflip"):
        MovingFashion("train", augment=True, label="motion", hflip=True)
    with pytest.raises(ValueError, match="splits"):
        MovingFashion("extra", augment=False)
    with pytest.raises(ValueError, match="label"):
        MovingFashion("train", augment=False, label="colour")


def test_default_recipe_validates_and_trains_one_step(video_registry, tmp_path):
    from mmim.engine.metrics import read_metrics
    from mmim.engine.trainer import Trainer
    from mmim.recipes_catalog import default_recipe

    path = default_recipe("video")
    assert path.name == "videomae_moving_fashion.yaml"
    recipe = load_recipe(path, [f"train.out_dir={tmp_path}", "schedule.max_steps=1", "train.tensorboard=false"])
    assert recipe.provenance.reported is None and recipe.eval.protocols == ["linear", "knn"]
    stream, ds = recipe.model.streams["video"], recipe.data.dataset
    assert ds["name"] == "moving_fashion" and recipe.eval.test_split == "test"
    assert stream.target["mean"] == [ds["mean"]] and stream.target["std"] == [ds["std"]]  # target undoes the data's norm
    assert stream.tokenizer["in_chans"] == ds["in_chans"] and stream.tokenizer["img_size"] == ds["img_size"]
    summary = Trainer(recipe).fit()
    assert summary["steps"] == 1
    losses = [r["loss"] for r in read_metrics(tmp_path) if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))

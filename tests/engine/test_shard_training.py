"""Training from shards (data.shards): exact resume from the stored stream position, and the corrupt-sample cap."""

from __future__ import annotations

import copy
import json
import os
import random

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmim.config.recipe import recipe_from_dict
from mmim.data.pack import pack
from mmim.data.skips import TooManySkippedError
from mmim.engine.checkpoint import load_checkpoint
from mmim.engine.metrics import read_metrics
from mmim.engine.trainer import Trainer


@pytest.fixture
def shard_recipe(tiny_recipe_dict, tmp_path):
    """The tiny recipe reading its dataset from shards packed into ``tmp_path/shards``."""
    samples = tiny_recipe_dict["data"]["dataset"]["max_samples"]
    pack(tiny_recipe_dict["data"]["dataset"], tmp_path / "shards", samples_per_shard=samples // 6, progress=False)
    data = copy.deepcopy(tiny_recipe_dict)
    data["data"].update(shards=str(tmp_path / "shards"), shuffle_buffer=10)
    data["eval"]["after_train"] = False
    return data


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def test_trains_from_shards_and_resumes_exactly(shard_recipe, tmp_path):
    ref = Trainer(recipe_from_dict({**shard_recipe, "train": {**shard_recipe["train"], "out_dir": str(tmp_path / "ref")}}))
    summary = ref.fit()
    steps = shard_recipe["data"]["dataset"]["max_samples"] // shard_recipe["data"]["batch_size"]
    assert summary["steps"] == steps * shard_recipe["schedule"]["epochs"]
    reference = _losses(tmp_path / "ref")
    cut = steps + steps // 2  # mid-way through the second epoch
    part = copy.deepcopy(shard_recipe)
    part["train"].update(out_dir=str(tmp_path / "cut"), checkpoint_every=1)
    part["schedule"]["max_steps"] = cut
    Trainer(recipe_from_dict(part)).fit()
    stream = load_checkpoint(tmp_path / "cut")["data"]["stream"]
    assert stream["ranks"][0]["epoch"] == 1 and sum(stream["ranks"][0]["consumed"]) == \
        (cut - steps) * shard_recipe["data"]["batch_size"]
    part["schedule"]["max_steps"] = None
    Trainer(recipe_from_dict(part), resume=True).fit()
    assert _losses(tmp_path / "cut") == reference


def test_shards_and_files_give_the_same_training_with_one_shard_and_no_buffer(tiny_recipe_dict, tmp_path):
    """With one reader, no buffer and the shards in sample order, the stream is the file order: same losses."""
    spec = tiny_recipe_dict["data"]["dataset"]
    pack(spec, tmp_path / "one", samples_per_shard=spec["max_samples"], progress=False)
    a, b = copy.deepcopy(tiny_recipe_dict), copy.deepcopy(tiny_recipe_dict)
    a["train"]["out_dir"], b["train"]["out_dir"] = str(tmp_path / "a"), str(tmp_path / "b")
    b["data"].update(shards=str(tmp_path / "one"), shuffle_buffer=0)
    for d in (a, b):
        d["eval"]["after_train"] = False
        d["schedule"]["max_steps"] = 2
    # the files' sampler permutes, the stream keeps shard order: compare the loss of the same first batch
    ta, tb = Trainer(recipe_from_dict(a)), Trainer(recipe_from_dict(b))
    ta.sampler.shuffle = False
    ta.fit(), tb.fit()
    assert _losses(tmp_path / "a") == pytest.approx(_losses(tmp_path / "b"), abs=1e-6)


@pytest.fixture
def folder_with_corrupt(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs" / "train"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(root / cls / f"{i}.png")
    bad = root / "b" / "99_truncated.png"
    bad.write_bytes((root / "a" / "0.png").read_bytes()[:60])
    return tmp_path / "imgs", bad


def _folder_recipe(tiny, root, out, cap, shards=None):
    data = copy.deepcopy(tiny)
    data["data"] = {"dataset": {"name": "image_folder", "root": str(root), "img_size": 28, "in_chans": 1,
                                "mean": [0.5], "std": [0.25]}, "batch_size": 5, "skip_corrupt": True,
                    "max_skip_fraction": cap, **({"shards": str(shards), "shuffle_buffer": 0} if shards else {})}
    data["schedule"] = {"epochs": 1}
    data["train"]["out_dir"] = str(out)
    data["eval"]["after_train"] = False
    return recipe_from_dict(data)


def test_max_skip_fraction_stops_a_map_style_run_naming_the_file(tiny_recipe_dict, folder_with_corrupt, tmp_path):
    root, bad = folder_with_corrupt
    with pytest.raises(TooManySkippedError, match=f"max_skip_fraction=0.01; last: {bad}"):
        Trainer(_folder_recipe(tiny_recipe_dict, root, tmp_path / "r1", 0.01)).fit()
    summary = Trainer(_folder_recipe(tiny_recipe_dict, root, tmp_path / "r2", 0.5)).fit()
    assert summary["skipped"] == 1


def test_max_skip_fraction_stops_a_shard_run_naming_shard_and_member(tiny_recipe_dict, folder_with_corrupt, tmp_path):
    root, bad = folder_with_corrupt
    spec = _folder_recipe(tiny_recipe_dict, root, tmp_path / "x", None).data.dataset
    pack(spec, tmp_path / "shards", samples_per_shard=5, progress=False)  # pack keeps the bytes, decoding fails
    member = f"{24:09d}"  # the corrupt file is the last of the sorted list
    with pytest.raises(TooManySkippedError, match=rf"train-000004\.tar \({member}\.json, {member}\.png, packed from {bad}\): cannot decode"):
        Trainer(_folder_recipe(tiny_recipe_dict, root, tmp_path / "s1", 0.01, tmp_path / "shards")).fit()
    summary = Trainer(_folder_recipe(tiny_recipe_dict, root, tmp_path / "s2", 0.5, tmp_path / "shards")).fit()
    assert summary["skipped"] == 1


def test_shard_training_needs_no_source_files(tiny_recipe_dict, folder_with_corrupt, tmp_path):
    """An image folder's shards train on a node without the folder: the decoder skips the scan."""
    import shutil

    root, bad = folder_with_corrupt
    bad.unlink()
    recipe = _folder_recipe(tiny_recipe_dict, root, tmp_path / "x", None)
    pack(recipe.data.dataset, tmp_path / "shards", samples_per_shard=4, progress=False)
    shutil.rmtree(root)
    summary = Trainer(_folder_recipe(tiny_recipe_dict, root, tmp_path / "run", None, tmp_path / "shards")).fit()
    assert summary["steps"] == 24 // 5 and torch.isfinite(torch.tensor(summary["final_loss"]))


@pytest.mark.slow
def test_sigkill_then_resume_from_shards_matches_uninterrupted_run(shard_recipe, tmp_path, train_process):
    shard_recipe["train"].update(checkpoint_every=1, keep_checkpoints=3)
    shard_recipe["data"]["num_workers"] = 2
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(shard_recipe))
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    assert train_process.start([str(path), f"train.out_dir={ref_dir}"]).wait(timeout=600) == 0
    reference = {r["step"]: r["loss"] for r in map(json.loads, (ref_dir / "metrics.jsonl").read_text().splitlines())}
    kill_after = random.Random(os.getpid()).randint(2, len(reference) - 3)
    train_process.kill_after_checkpoint([str(path), f"train.out_dir={run_dir}"], run_dir, kill_after)
    assert train_process.start(["--resume", str(run_dir)]).wait(timeout=600) == 0
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        losses[rec["step"]] = rec["loss"]
    assert losses == reference



def _ddp_worker(rank: int, world: int, port: int, data: dict, resume: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    Trainer(recipe_from_dict(data), resume=resume).fit()
    torch.distributed.barrier()  # no rank tears gloo down while another still talks to it
    torch.distributed.destroy_process_group()


def _ddp(data: dict, resume: bool = False) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, data, resume), nprocs=2, join=True, start_method="spawn")


@pytest.mark.slow
def test_two_processes_from_shards_store_both_positions_and_resume_exactly(shard_recipe, tmp_path):
    shard_recipe["data"].update(batch_size=4, num_workers=2)
    shard_recipe["train"].update(checkpoint_every=1)
    per_step = 2 * shard_recipe["data"]["batch_size"]
    steps = shard_recipe["data"]["dataset"]["max_samples"] // per_step - 1  # the smaller process's share bounds it
    full = copy.deepcopy(shard_recipe)
    full["train"]["out_dir"] = str(tmp_path / "full")
    full["schedule"]["max_steps"] = steps + 2
    _ddp(full)
    cut = copy.deepcopy(full)
    cut["train"]["out_dir"] = str(tmp_path / "cut")
    cut["schedule"]["max_steps"] = steps // 2
    _ddp(cut)
    ranks = load_checkpoint(tmp_path / "cut")["data"]["stream"]["ranks"]
    assert len(ranks) == 2 and [sum(r["consumed"]) for r in ranks] == [steps // 2 * per_step // 2] * 2
    cut["schedule"]["max_steps"] = steps + 2
    _ddp(cut, resume=True)
    a, b = load_checkpoint(tmp_path / "full")["model"], load_checkpoint(tmp_path / "cut")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)

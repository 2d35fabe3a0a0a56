"""Resume on another process count (gloo on CPU): 2 -> 1, 1 -> 2, 2 -> 4, from sharded (DCP) checkpoints,
under DDP and FSDP2. The model and optimizer are resharded, and within the epoch no sample is
skipped and none is seen twice (the test records every index the samplers hand out)."""

from __future__ import annotations

import copy
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mmim.config.recipe import recipe_from_dict
from mmim.engine.checkpoint import list_checkpoints
from mmim.engine.metrics import read_metrics
from mmim.engine.trainer import Trainer

EFFECTIVE_BATCH = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_samples(path: str) -> None:
    """Make this process's sampler append every index it hands out to ``path`` (one per line), and its
    shard stream every sample key it decodes (loaders without workers: both run in this process, lazily)."""
    from mmim.data import loading, stream

    original = loading.ResumableSampler.__iter__

    def recording(self):
        for idx, seed in original(self):
            with open(path, "a") as f:
                f.write(json.dumps(idx) + "\n")
            yield idx, seed

    loading.ResumableSampler.__iter__ = recording
    decode = stream.ShardStream.decode

    def decoding(self, url, key, members):
        with open(path, "a") as f:
            f.write(json.dumps(key) + "\n")
        return decode(self, url, key, members)

    stream.ShardStream.decode = decoding


def _worker(rank: int, world: int, port: int, data: dict, resume: bool, record: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _record_samples(os.path.join(record, f"phase{int(resume)}-rank{rank}.jsonl"))
    Trainer(recipe_from_dict(data), resume=resume).fit()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _run(data: dict, world: int, resume: bool, record) -> None:
    if world == 1 and data["train"]["distributed"] == "ddp":
        _worker(0, 1, 0, data, resume, str(record))
        return
    mp.start_processes(_worker, args=(world, _free_port(), data, resume, str(record)), nprocs=world, join=True,
                       start_method="spawn")


def _recipe(tiny, out_dir, steps, world, distributed, shards=None):
    data = copy.deepcopy(tiny)
    if shards is not None:
        data["data"].update(shards=str(shards), shuffle_buffer=10)
    data["data"].update(batch_size=4, num_workers=0)
    data["schedule"].update(epochs=1, max_steps=steps)
    data["eval"]["after_train"] = False
    data["train"].update(effective_batch_size=EFFECTIVE_BATCH, out_dir=str(out_dir), distributed=distributed,
                         checkpoint_format="sharded", checkpoint_every=1, keep_checkpoints=2, threads=1)
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_recipe_data):
    """Per-step losses of an uninterrupted one-process run of the whole epoch."""
    TINY_RECIPE = tiny_recipe_data

    folder = tmp_path_factory.mktemp("reference")
    steps = TINY_RECIPE["data"]["dataset"]["max_samples"] // EFFECTIVE_BATCH
    torch.set_num_threads(1)
    Trainer(recipe_from_dict(_recipe(TINY_RECIPE, folder / "run", steps, 1, "ddp"))).fit()
    return {r["step"]: r["loss"] for r in read_metrics(folder / "run")}


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after", "distributed"), [(2, 1, "fsdp2"), (1, 2, "fsdp2"), (2, 4, "ddp")],
                         ids=["2to1_fsdp2", "1to2_fsdp2", "2to4_ddp"])
def test_resume_on_another_world_size(tiny_recipe_dict, tmp_path, reference, before, after, distributed):
    samples = tiny_recipe_dict["data"]["dataset"]["max_samples"]
    steps = samples // EFFECTIVE_BATCH
    stop = steps // 2  # mid-epoch
    record = tmp_path / "samples"
    record.mkdir()
    _run(_recipe(tiny_recipe_dict, tmp_path / "run", stop, before, "ddp" if before == 1 else distributed), before,
         False, record)
    assert list_checkpoints(tmp_path / "run")[-1][0] == stop
    _run(_recipe(tiny_recipe_dict, tmp_path / "run", steps, after, distributed), after, True, record)

    seen = [json.loads(line) for f in sorted(record.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(seen) == steps * EFFECTIVE_BATCH, "every step of the epoch drew one effective batch"
    assert len(set(seen)) == len(seen), "no sample seen twice within the epoch"
    first = [json.loads(line) for f in record.glob("phase0-*.jsonl") for line in f.read_text().splitlines()]
    assert len(first) == stop * EFFECTIVE_BATCH
    # the resharded model and optimizer continue the one-process trajectory
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run")}
    assert sorted(losses) == sorted(reference)
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-6), step


@pytest.fixture
def shards(tiny_recipe_dict, tmp_path):
    """The tiny data set in 8 equal shards: every layout below reads the same steps per epoch."""
    from mmim.data.pack import pack

    samples = tiny_recipe_dict["data"]["dataset"]["max_samples"]
    pack(tiny_recipe_dict["data"]["dataset"], tmp_path / "shards", samples_per_shard=samples // 8, progress=False)
    return tmp_path / "shards"


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)], ids=["2to1", "1to2"])
def test_shards_resume_on_another_world_size_reads_each_sample_once(tiny_recipe_dict, tmp_path, shards, before,
                                                                     after):
    """Mid-epoch, the rest of the epoch begun by ``before`` processes is dealt out to ``after`` processes:
    every sample of the epoch is decoded exactly once; the next epoch is read whole in the new layout."""
    samples = tiny_recipe_dict["data"]["dataset"]["max_samples"]
    steps = samples // EFFECTIVE_BATCH
    stop = steps // 2 + 1  # mid-epoch, not at a half
    record = tmp_path / "samples"
    record.mkdir()
    epochs = 2
    first = _recipe(tiny_recipe_dict, tmp_path / "run", stop, before, "ddp", shards)
    first["schedule"]["epochs"] = epochs
    _run(first, before, False, record)
    second = _recipe(tiny_recipe_dict, tmp_path / "run", None, after, "ddp", shards)
    second["schedule"]["epochs"] = epochs
    _run(second, after, True, record)
    keys = [json.loads(line) for f in sorted(record.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(keys) == epochs * steps * EFFECTIVE_BATCH
    assert len(set(keys)) == samples, "every sample read"
    from collections import Counter

    assert set(Counter(keys).values()) == {epochs}, "each sample once per epoch"
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "run")}
    assert sorted(losses) == list(range(1, epochs * steps + 1))

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
    """Make this process's sampler append every index it hands out to ``path`` (one JSON list per step)."""
    from mmim.data import loading

    original = loading.ResumableSampler.__iter__

    def recording(self):
        for idx, seed in original(self):
            with open(path, "a") as f:
                f.write(json.dumps(idx) + "\n")
            yield idx, seed

    loading.ResumableSampler.__iter__ = recording


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


def _recipe(tiny, out_dir, steps, world, distributed):
    data = copy.deepcopy(tiny)
    data["data"].update(batch_size=4, num_workers=0)
    data["schedule"].update(epochs=1, max_steps=steps)
    data["eval"]["after_train"] = False
    data["train"].update(effective_batch_size=EFFECTIVE_BATCH, out_dir=str(out_dir), distributed=distributed,
                         checkpoint_format="sharded", checkpoint_every=1, keep_checkpoints=2, threads=1)
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Per-step losses of an uninterrupted one-process run of the whole epoch."""
    from conftest import TINY_RECIPE

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

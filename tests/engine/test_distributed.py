"""torchrun-style DDP on CPU (gloo): 2 processes x 1 micro-batch == 1 process x 2 accumulation steps."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mmim.config.recipe import recipe_from_dict
from mmim.engine.checkpoint import load_checkpoint
from mmim.engine.trainer import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(recipe_from_dict(data))
    trainer.fit()
    torch.distributed.barrier()  # no rank tears gloo down while another still talks to it
    torch.distributed.destroy_process_group()


def _recipe(tiny, out_dir, steps):
    data = copy.deepcopy(tiny)
    data["data"]["batch_size"] = 8
    data["train"].update(effective_batch_size=16, out_dir=str(out_dir))
    data["schedule"]["max_steps"] = steps
    data["model"]["encoder"]["drop_path"] = 0.1  # exercises the per-micro-batch global seeds too
    return data


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_accumulation(tiny_recipe_dict, tmp_path):
    single = _recipe(tiny_recipe_dict, tmp_path / "single", steps=2)
    torch.set_num_threads(1)
    Trainer(recipe_from_dict(single)).fit()
    ddp = _recipe(tiny_recipe_dict, tmp_path / "ddp", steps=2)
    mp.start_processes(_worker, args=(2, _free_port(), ddp), nprocs=2, join=True, start_method="spawn")
    a, b = load_checkpoint(tmp_path / "single")["model"], load_checkpoint(tmp_path / "ddp")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)
    # and the 2-process run resumes on 1 process, continuing the same trajectory
    single4 = _recipe(tiny_recipe_dict, tmp_path / "single", steps=4)
    Trainer(recipe_from_dict(single4), resume=True).fit()
    ddp4 = _recipe(tiny_recipe_dict, tmp_path / "ddp", steps=4)
    Trainer(recipe_from_dict(ddp4), resume=True).fit()
    a, b = load_checkpoint(tmp_path / "single")["model"], load_checkpoint(tmp_path / "ddp")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)

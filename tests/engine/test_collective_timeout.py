"""``train.collective_timeout``: a rank that hangs makes the others' collective time out with an error
naming the step and the rank that is behind (gloo, 2 processes)."""

from __future__ import annotations

import copy
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from mmim.config.recipe import recipe_from_dict
from mmim.engine.trainer import CollectiveTimeoutError, Trainer

HANG_STEP = 3  # 1-based


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: dict, out: str, hang_s: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(recipe_from_dict(data))
    if rank == 1:  # rank 1 hangs in the forward of step HANG_STEP
        step = trainer.task.step

        def hanging(*args, **kwargs):
            if trainer.step == HANG_STEP - 1:
                time.sleep(hang_s)
            return step(*args, **kwargs)

        trainer.task.step = hanging
    try:
        trainer.fit()
        result = "finished"
    except CollectiveTimeoutError as err:
        result = f"CollectiveTimeoutError: {err}"
    except Exception as err:  # noqa: BLE001 - the hung rank fails once its peer is gone
        result = f"{type(err).__name__}: {err}"
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(result)
    os._exit(0)  # the process group is broken: do not wait on it at exit


@pytest.mark.slow
def test_hung_rank_times_out_naming_rank_and_step(tiny_recipe_dict, tmp_path):
    data = copy.deepcopy(tiny_recipe_dict)
    data["data"]["batch_size"] = 8
    data["schedule"]["max_steps"] = HANG_STEP + 2
    data["eval"]["after_train"] = False
    # long enough that start-up skew between the ranks (DDP's first broadcast) never trips it on a busy machine
    timeout = 6.0
    data["train"].update(effective_batch_size=16, collective_timeout=timeout, threads=1)
    # rank 1 wakes after rank 0 has timed out and waited (up to 5 s) for other ranks to report a timeout
    mp.start_processes(_worker, args=(2, _free_port(), data, str(tmp_path), timeout + 8), nprocs=2, join=True,
                       start_method="spawn")
    message = (tmp_path / "rank0.txt").read_text()
    assert message.startswith("CollectiveTimeoutError"), message
    assert f"rank 0 of 2 at step {HANG_STEP}" in message, message
    assert f"rank 1 never reached it (hung or much slower; last seen at step {HANG_STEP}, loading data" in message
    assert f"collective_timeout={timeout:g}s" in message
    assert (tmp_path / "rank1.txt").read_text() != "finished"

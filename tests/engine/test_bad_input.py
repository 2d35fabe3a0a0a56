"""Bad input to the engine: an effective batch the process count cannot reach, resuming another
recipe's checkpoint, and a non-finite loss on one of several processes."""

from __future__ import annotations

import copy
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from mmim.config.recipe import recipe_from_dict
from mmim.engine.checkpoint import list_checkpoints
from mmim.engine.run import RecipeMismatchError
from mmim.engine.runtime import Runtime
from mmim.engine.trainer import NonFiniteLossError, Trainer


def _recipe(tiny, out_dir, **train):
    data = copy.deepcopy(tiny)
    data["train"].update(out_dir=str(out_dir), **train)
    return data


def test_effective_batch_unreachable_with_the_process_count(tiny_recipe_dict, tmp_path):
    # 16 per process x 2 processes = 32 > 16, and 48 is not a multiple of 32
    two = Runtime(torch.device("cpu"), "fp32", rank=0, world_size=2)
    for effective in (16, 48):
        data = _recipe(tiny_recipe_dict, tmp_path / f"e{effective}", effective_batch_size=effective)
        with pytest.raises(ValueError, match=rf"effective batch size {effective} .* batch size \(16\) x processes \(2\)"):
            Trainer(recipe_from_dict(data), runtime=two)


def test_resume_from_another_recipe_names_the_differing_fields(tiny_recipe_dict, tmp_path):
    data = _recipe(tiny_recipe_dict, tmp_path / "run")
    data["schedule"]["max_steps"] = 1
    Trainer(recipe_from_dict(data)).fit()
    # run-control fields may change on resume
    same = copy.deepcopy(data)
    same["schedule"]["max_steps"] = 2
    same["train"].update(log_every=5, keep_checkpoints=4, threads=1)
    assert Trainer(recipe_from_dict(same), resume=True).step == 1
    other = copy.deepcopy(data)
    other["optim"]["lr"] = 5e-4
    other["model"]["encoder"]["depth"] = 3
    other["train"]["log_every"] = 7
    with pytest.raises(RecipeMismatchError) as err:
        Trainer(recipe_from_dict(other), resume=True)
    message = str(err.value)
    assert "optim.lr: 0.001 -> 0.0005" in message and "model.encoder.depth: 2 -> 3" in message
    assert "log_every" not in message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nan_worker(rank: int, world: int, port: int, data: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from mmim.components import regression_loss

    original, calls = regression_loss.MSELoss.distance, {"n": 0}

    def flaky(self, pred, target):  # only process 1 sees a NaN, in its 3rd micro-batch (step 3)
        calls["n"] += torch.is_grad_enabled()  # the FLOP count's forward (no grad) is not a training step
        out = original(self, pred, target)
        return out * float("nan") if rank == 1 and calls["n"] == 3 else out

    regression_loss.MSELoss.distance = flaky
    trainer = Trainer(recipe_from_dict(data))
    try:
        trainer.fit()
        outcome = "finished"
    except NonFiniteLossError as err:
        outcome = str(err)
    torch.distributed.barrier()  # no rank tears gloo down while another still talks to it
    torch.distributed.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(outcome)


@pytest.mark.slow
@pytest.mark.parametrize("distributed", ["ddp", "fsdp2"])
def test_non_finite_loss_on_one_process_stops_every_process(tiny_recipe_dict, tmp_path, distributed):
    data = _recipe(tiny_recipe_dict, tmp_path / "run", checkpoint_every=2, distributed=distributed,
                   effective_batch_size=16)
    data["data"]["batch_size"] = 8
    ctx = mp.start_processes(_nan_worker, args=(2, _free_port(), data, str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 600
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # a process waiting forever for the stopped one
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("a process did not stop after the non-finite loss on the other one")
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    for text in outcomes:
        assert "non-finite loss" in text and "on process 1 of 2 at step 3" in text, text
        assert "ckpt-00000002.pt" in text
    assert "(nan)" in outcomes[1]
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]

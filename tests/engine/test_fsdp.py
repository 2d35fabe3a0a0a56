"""FSDP2 (``train.distributed: fsdp2``) on CPU with gloo, 2 processes started like torchrun.

One step of 2-process FSDP2 equals one process with 2 accumulation steps (to 1e-6), with grad
clipping and drop-path; its checkpoint is in the one-process format and resumes on one process
onto the same trajectory; an EMA teacher trains under it; without torchrun it is a clear error.
"""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mmim.config.recipe import recipe_from_dict
from mmim.engine.checkpoint import load_checkpoint
from mmim.engine.metrics import read_metrics
from mmim.engine.trainer import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: dict, resume: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(recipe_from_dict(data), resume=resume)
    trainer.fit()
    model = trainer.unsharded_model()  # every rank gathers; rank 0 then evaluates alone
    if rank == 0:
        with torch.no_grad():
            model.eval()
            features = model.features({"image": torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))})
        torch.save({"model": model.state_dict(), "features": features}, os.path.join(data["train"]["out_dir"], "plain.pt"))
    torch.distributed.barrier()  # no rank tears gloo down while another still talks to it
    torch.distributed.destroy_process_group()


def _spawn(data: dict, resume: bool = False, world: int = 2) -> None:
    mp.start_processes(_worker, args=(world, _free_port(), data, resume), nprocs=world, join=True, start_method="spawn")


def _assert_same_trajectory(run_a, run_b) -> None:
    """Same losses, and parameters equal to 1e-4 after resumed steps: the gradient of the attention key
    bias is zero up to rounding (softmax ignores it), and AdamW turns rounding noise of 1e-8 into
    lr-sized steps of either sign, so only those parameters may drift beyond 1e-6."""
    losses = [{r["step"]: r["loss"] for r in read_metrics(run)} for run in (run_a, run_b)]
    assert losses[0].keys() == losses[1].keys()
    for step in losses[0]:
        assert losses[1][step] == pytest.approx(losses[0][step], rel=1e-5, abs=1e-7), step
    _assert_same_state(load_checkpoint(run_a), load_checkpoint(run_b), atol=1e-4)


def _recipe(tiny, out_dir, steps, distributed="ddp", teacher=False):
    data = copy.deepcopy(tiny)
    data["data"]["batch_size"] = 8
    data["train"].update(effective_batch_size=16, out_dir=str(out_dir), distributed=distributed, grad_clip=0.5)
    data["schedule"]["max_steps"] = steps
    data["model"]["encoder"]["drop_path"] = 0.1
    if teacher:  # data2vec-style: EMA teacher features as targets
        stream = data["model"]["streams"]["image"]
        stream.update(mask_in_encoder=True, teacher_input_key="image_teacher", decoder={"name": "linear"},
                      target={"name": "teacher_features", "top_k": 2}, loss={"name": "smooth_l1"})
        data["model"]["teacher"] = {"ema": True, "momentum": 0.9, "momentum_end": 0.99}
        data["data"]["dataset"]["teacher_view"] = True
    return data


def _assert_same_state(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=atol, rtol=1e-5, msg=key)
    if "optimizer" not in a or atol > 1e-6:
        return
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for name in oa["state"][i]:
            torch.testing.assert_close(oa["state"][i][name], ob["state"][i][name], atol=1e-6, rtol=1e-5,
                                       msg=f"optimizer state {i}.{name}")


@pytest.mark.slow
@pytest.mark.parametrize("teacher", [False, True], ids=["mae", "ema_teacher"])
def test_two_process_fsdp2_equals_one_process_with_accumulation(tiny_recipe_dict, tmp_path, teacher):
    torch.set_num_threads(1)
    Trainer(recipe_from_dict(_recipe(tiny_recipe_dict, tmp_path / "single", 2, teacher=teacher))).fit()
    _spawn(_recipe(tiny_recipe_dict, tmp_path / "fsdp", 2, "fsdp2", teacher=teacher))
    single, sharded = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "fsdp")
    _assert_same_state(single, sharded)  # model, teacher and optimizer state, in the one-process format
    plain = torch.load(tmp_path / "fsdp" / "plain.pt")
    _assert_same_state({"model": plain["model"]}, sharded, atol=0.0)
    assert plain["features"].shape == (2, 32) and torch.isfinite(plain["features"]).all()
    if teacher:
        return
    # the FSDP2 checkpoint resumes on one process (train.distributed=ddp there) onto the same trajectory
    Trainer(recipe_from_dict(_recipe(tiny_recipe_dict, tmp_path / "single", 4)), resume=True).fit()
    Trainer(recipe_from_dict(_recipe(tiny_recipe_dict, tmp_path / "fsdp", 4)), resume=True).fit()
    _assert_same_trajectory(tmp_path / "single", tmp_path / "fsdp")


@pytest.mark.slow
def test_fsdp2_resumes_a_one_process_checkpoint(tiny_recipe_dict, tmp_path):
    torch.set_num_threads(1)
    Trainer(recipe_from_dict(_recipe(tiny_recipe_dict, tmp_path / "single", 1))).fit()
    Trainer(recipe_from_dict(_recipe(tiny_recipe_dict, tmp_path / "mixed", 1))).fit()
    Trainer(recipe_from_dict(_recipe(tiny_recipe_dict, tmp_path / "single", 2)), resume=True).fit()
    _spawn(_recipe(tiny_recipe_dict, tmp_path / "mixed", 2, "fsdp2"), resume=True)
    _assert_same_trajectory(tmp_path / "single", tmp_path / "mixed")


def test_fsdp2_without_torchrun_runs_as_one_process(tiny_recipe_dict, tmp_path):
    """No torchrun: a one-process group, the model sharded over it (see test_speed_options for the
    bf16 compute copies this gives)."""
    from torch.distributed.tensor import DTensor

    data = _recipe(tiny_recipe_dict, tmp_path / "one", 1, "fsdp2")
    try:
        trainer = Trainer(recipe_from_dict(data))
        assert all(isinstance(p, DTensor) for p in trainer.model.parameters())
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

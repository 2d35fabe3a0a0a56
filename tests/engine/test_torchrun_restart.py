"""torchrun --max-restarts with gloo: a worker killed with SIGKILL mid-run, the group restarted, the
run resumed from its newest complete checkpoint (``--resume auto``), the losses those of an
uninterrupted 2-process run, with file and with sharded checkpoints."""

from __future__ import annotations

import copy
import os
import random
import re
import time

import pytest
import yaml

from mmim.engine import elastic
from mmim.engine.checkpoint import list_checkpoints
from mmim.engine.metrics import read_metrics

EPOCHS, EFFECTIVE_BATCH, CHECKPOINT_EVERY = 8, 16, 4


def losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}  # a re-run step overwrites the killed one's


def recipe_file(tiny, folder, **train) -> str:
    data = copy.deepcopy(tiny)
    data["data"]["batch_size"] = EFFECTIVE_BATCH // 2
    data["schedule"]["epochs"] = EPOCHS
    data["eval"]["after_train"] = False
    data["train"].update(effective_batch_size=EFFECTIVE_BATCH, checkpoint_every=CHECKPOINT_EVERY, keep_checkpoints=2,
                         threads=1, **train)
    path = folder / f"tiny-{len(list(folder.glob('tiny-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def total_steps(tiny) -> int:
    return tiny["data"]["dataset"]["max_samples"] // EFFECTIVE_BATCH * EPOCHS


def run(recipe: str, run_dir, log, **options) -> None:
    proc = elastic.launch([recipe, f"train.out_dir={run_dir}", "--resume", "auto"], log=log, **options)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def kill_one_worker_after(proc, run_dir, step: int, rng: random.Random, nproc: int = 2) -> None:
    """SIGKILL a random worker of torchrun ``proc`` once the checkpoint of ``step`` (or later) exists."""
    victim = rng.choice(elastic.workers(proc, nproc))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = list_checkpoints(run_dir)
        if done and done[-1][0] >= step:
            elastic.kill_worker(victim)
            return
        time.sleep(0.01)
    raise AssertionError("the run ended before a worker could be killed")


def resumed_steps(log_text: str) -> list[int]:
    return [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", log_text)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_recipe_data):
    """Losses of an uninterrupted 2-process torchrun run (file checkpoints)."""
    TINY_RECIPE = tiny_recipe_data

    folder = tmp_path_factory.mktemp("reference")
    run(recipe_file(TINY_RECIPE, folder), folder / "ref", folder / "ref.log", nproc=2)
    return losses(folder / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["file", "sharded"])
def test_sigkill_one_worker_torchrun_restarts_and_resumes(tiny_recipe_dict, tmp_path, reference, fmt):
    steps = total_steps(tiny_recipe_dict)
    assert sorted(reference) == list(range(1, steps + 1))
    recipe = recipe_file(tiny_recipe_dict, tmp_path, checkpoint_format=fmt)
    run_dir, log = tmp_path / "killed", tmp_path / "killed.log"
    rng = random.Random(os.getpid())
    kill_after = rng.choice(range(2 * CHECKPOINT_EVERY, steps // 2, CHECKPOINT_EVERY))
    # file: torchrun's default shared store (mmim keeps each attempt's keys apart); sharded: a fresh store per attempt
    proc = elastic.launch([recipe, f"train.out_dir={run_dir}", "--resume", "auto"], log=log, nproc=2, max_restarts=1,
                          fresh_store=fmt == "sharded")
    kill_one_worker_after(proc, run_dir, kill_after, rng)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "exitcode: -9" in text, text[-3000:]
    resumed = resumed_steps(text)
    assert resumed and kill_after <= resumed[0] < steps, (resumed, kill_after)  # resumed mid-run, by both ranks
    assert losses(run_dir) == reference


@pytest.mark.slow
def test_two_nodes_on_one_machine_restart_and_resume(tiny_recipe_dict, tmp_path, reference):
    """Two ``torchrun --nnodes 2 --node-rank {0,1}`` launches (one process each, c10d rendezvous on
    127.0.0.1) train together; a worker of node 1 killed mid-run makes both restart and resume."""
    steps = total_steps(tiny_recipe_dict)
    recipe = recipe_file(tiny_recipe_dict, tmp_path)
    run_dir, port = tmp_path / "nodes", elastic.free_port()
    args = [recipe, f"train.out_dir={run_dir}", "--resume", "auto"]
    nodes = [elastic.launch(args, log=tmp_path / f"node{n}.log", nproc=1, nnodes=2, node_rank=n, port=port,
                            max_restarts=1) for n in (0, 1)]
    try:
        kill_one_worker_after(nodes[1], run_dir, steps // 2, random.Random(0), nproc=1)
        for n, node in enumerate(nodes):
            assert node.wait(timeout=300) == 0, (tmp_path / f"node{n}.log").read_text()[-3000:]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    text = "".join((tmp_path / f"node{n}.log").read_text() for n in (0, 1))
    resumed = resumed_steps(text)  # rank 0 reports it (the other ranks log warnings only); the losses show both did
    assert len(resumed) == 1 and steps // 2 <= resumed[0] < steps, resumed
    assert losses(run_dir) == reference

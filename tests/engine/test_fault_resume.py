"""A training process killed with SIGKILL at a random step resumes onto the uninterrupted trajectory."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

from mmim.engine.checkpoint import list_checkpoints


def _losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]  # a re-run step after resume overwrites the killed run's entry
    return out


def _train(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mmim", "train", *args], env=env, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["train"].update(checkpoint_every=1, keep_checkpoints=3)
    tiny_recipe_dict["schedule"]["epochs"] = 3
    tiny_recipe_dict["eval"]["after_train"] = False
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    assert _train([str(path), f"train.out_dir={ref_dir}"]).wait(timeout=600) == 0
    reference = _losses(ref_dir)
    assert sorted(reference) == list(range(1, 19))

    kill_after = random.Random(os.getpid()).randint(3, 14)
    proc = _train([str(path), f"train.out_dir={run_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        done = list_checkpoints(run_dir) if run_dir.exists() else []
        if done and done[-1][0] >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    # a half-written checkpoint from the crash must never be picked up
    (run_dir / "ckpt-00000099.pt.tmp").write_bytes(b"\x80half")
    assert _train(["--resume", str(run_dir)]).wait(timeout=600) == 0
    assert _losses(run_dir) == reference

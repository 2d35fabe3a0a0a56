"""A training process killed with SIGKILL at a random step resumes onto the uninterrupted trajectory."""

from __future__ import annotations

import json
import os
import random

import pytest
import yaml


def _losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]  # a re-run step after resume overwrites the killed run's entry
    return out


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_recipe_dict, tmp_path, train_process):
    tiny_recipe_dict["train"].update(checkpoint_every=1, keep_checkpoints=3)
    tiny_recipe_dict["schedule"]["epochs"] = 3
    tiny_recipe_dict["eval"]["after_train"] = False
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    assert train_process.start([str(path), f"train.out_dir={ref_dir}"]).wait(timeout=600) == 0
    reference = _losses(ref_dir)
    assert sorted(reference) == list(range(1, 19))

    kill_after = random.Random(os.getpid()).randint(3, 14)
    train_process.kill_after_checkpoint([str(path), f"train.out_dir={run_dir}"], run_dir, kill_after)
    # a half-written checkpoint from the crash must never be picked up
    (run_dir / "ckpt-00000099.pt.tmp").write_bytes(b"\x80half")
    assert train_process.start(["--resume", str(run_dir)]).wait(timeout=600) == 0
    assert _losses(run_dir) == reference

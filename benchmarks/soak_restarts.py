"""Soak test of elastic restarts: a torchrun run (gloo, CPU) whose workers are killed with SIGKILL again and
again at random times under ``--max-restarts``; it must end on the losses of an uninterrupted run.

    python benchmarks/soak_restarts.py                      # 2 processes, 1000 steps, checkpoint every 20, 10 kills
    python benchmarks/soak_restarts.py --format sharded --async-checkpoint --kills 10 --steps 1000

Prints, for each kill: the step it hit, the newest complete checkpoint then, how long torchrun took to
restart the group and resume (kill -> "resumed from" in the log), and how long until the run was back at
the step it had reached (the lost steps re-run). Exits 1 if any loss differs from the reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mmim.engine import elastic
from mmim.engine.checkpoint import latest_checkpoint

RECIPE = {
    "name": "soak", "modality": "image", "seed": 0,
    "model": {"encoder": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "streams": {"image": {
        "tokenizer": {"name": "patch", "img_size": 28, "patch_size": 7, "in_chans": 1},
        "masker": {"name": "random", "ratio": 0.75}, "target": {"name": "content", "normalize": True},
        "loss": {"name": "mse"}, "decoder": {"name": "mae", "embed_dim": 16, "depth": 1, "num_heads": 2}}}},
    "data": {"dataset": {"name": "fashion_mnist"}, "batch_size": 8},
    "optim": {"lr": 1e-3},
    "schedule": {"epochs": 1, "warmup_epochs": 0.1},
    "train": {"log_every": 1, "tensorboard": False, "progress": False, "threads": 1},
    "eval": {"after_train": False},
}


def losses(run_dir: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[rec["step"]] = rec["loss"]
    return out


def last_step(run_dir: Path) -> int:
    """The newest step in metrics.jsonl (read from its end)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        tail = f.read().decode(errors="replace").splitlines()
    for line in reversed(tail):
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError):
            continue
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--format", choices=["file", "sharded"], default="file")
    p.add_argument("--async-checkpoint", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times and victims")
    p.add_argument("--out", help="work folder (default: a temporary one)")
    args = p.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="mmim-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    effective = RECIPE["data"]["batch_size"] * args.nproc
    recipe = copy.deepcopy(RECIPE)
    per_epoch = min(args.steps, 100)  # epochs of 100 steps: epoch ends (each checkpointed) and the data order change
    recipe["data"]["dataset"]["max_samples"] = effective * per_epoch
    recipe["schedule"].update(epochs=-(-args.steps // per_epoch), max_steps=args.steps)
    recipe["train"].update(checkpoint_every=args.checkpoint_every, keep_checkpoints=2, effective_batch_size=effective,
                           checkpoint_format=args.format, async_checkpoint=args.async_checkpoint)
    path = out / "soak.yaml"
    path.write_text(yaml.safe_dump(recipe))
    print(f"soak: {args.nproc} processes, {args.steps} steps, checkpoint every {args.checkpoint_every} "
          f"({args.format}{', async' if args.async_checkpoint else ''}), {args.kills} kills; work folder {out}")

    t0 = time.perf_counter()
    ref_dir = out / "reference"
    proc = elastic.launch([str(path), f"train.out_dir={ref_dir}", "--resume", "auto"], log=out / "reference.log",
                          nproc=args.nproc)
    if proc.wait() != 0:
        print(f"the reference run failed; see {out / 'reference.log'}")
        return 1
    reference = losses(ref_dir)
    print(f"reference: {len(reference)} steps in {time.perf_counter() - t0:.1f}s, final loss {reference[args.steps]:.6f}")

    rng = random.Random(args.seed)
    targets = sorted(rng.sample(range(args.checkpoint_every, args.steps - 5), args.kills))
    run_dir, log = out / "soak", out / "soak.log"
    proc = elastic.launch([str(path), f"train.out_dir={run_dir}", "--resume", "auto"], log=log, nproc=args.nproc,
                          max_restarts=args.kills + 1)
    restarts, catchups = [], []
    for i, target in enumerate(targets, 1):
        while proc.poll() is None and last_step(run_dir) < target:
            time.sleep(0.005)
        if proc.poll() is not None:
            print(f"the run ended before kill {i} (step {target})")
            break
        time.sleep(rng.uniform(0, 0.05))  # a random moment within the step (maybe inside a checkpoint write)
        victim_rank = rng.randrange(args.nproc)
        try:
            victim = elastic.workers(proc, args.nproc)[victim_rank]
        except (RuntimeError, TimeoutError) as err:
            print(f"kill {i}: {err}")
            break
        reached, ckpt = last_step(run_dir), latest_checkpoint(run_dir)
        resumes_before = len(re.findall(r"resumed from", log.read_text(errors="replace")))
        killed_at = time.perf_counter()
        elastic.kill_worker(victim)
        while proc.poll() is None and len(re.findall(r"resumed from", log.read_text(errors="replace"))) <= resumes_before:
            time.sleep(0.02)
        restart = time.perf_counter() - killed_at
        while proc.poll() is None and last_step(run_dir) <= reached:
            time.sleep(0.01)
        caught_up = time.perf_counter() - killed_at
        restarts.append(restart)
        catchups.append(caught_up)
        print(f"kill {i:2d}: worker {victim_rank} (pid {victim}) at step {reached}, newest checkpoint "
              f"{ckpt.name if ckpt else 'none'}; resumed after {restart:.1f}s, back past step {reached} after "
              f"{caught_up:.1f}s")
    code = proc.wait()
    if code != 0:
        print(f"torchrun exited with {code}; see {log}")
        return 1
    got = losses(run_dir)
    differ = [s for s in reference if got.get(s) != reference[s]]
    if restarts:
        print(f"recovery over {len(restarts)} kills: resume {statistics.mean(restarts):.1f}s mean "
              f"(max {max(restarts):.1f}s), back at the killed step {statistics.mean(catchups):.1f}s mean "
              f"(max {max(catchups):.1f}s)")
    print(f"final loss {got.get(args.steps, float('nan')):.6f} vs reference {reference[args.steps]:.6f}; "
          f"{len(reference) - len(differ)}/{len(reference)} step losses identical")
    if differ or len(restarts) < args.kills:
        print(f"FAIL: {len(differ)} steps differ (first: {differ[:5]}), {len(restarts)} of {args.kills} kills done")
        return 1
    print(f"PASS in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

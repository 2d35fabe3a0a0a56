"""How long a checkpoint stalls training: one file from rank 0 (``torch.save``), a sharded DCP save,
and an async sharded save (``train.async_checkpoint``: the state is staged in host memory in the
step, then written by a background thread).

    python benchmarks/bench_checkpoint.py --params 100e6 --repeats 3 [--dir /fast/disk]

Prints per format: the stall (time the training loop is blocked in ``save``), the time until the
checkpoint is complete on disk, its size, and the peak resident memory of the process; and the step
time of a small training loop while a background write is running, against none.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mmim.engine.checkpoint import save_atomic
from mmim.engine.sharded import ShardedSaver


def model_of(params: float, width: int = 2048) -> nn.Module:
    layers = max(1, round(params / (width * width + width)))
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    model(x).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=float, default=100e6, help="model parameters (AdamW doubles the state)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dir", help="where to write (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="mmim-ckpt-bench-", dir=args.dir))
    model = model_of(args.params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(8, model[0].in_features)
    train_step(model, optimizer, x)  # optimizer state exists
    n = sum(p.numel() for p in model.parameters())
    print(f"model {n / 1e6:.0f}M parameters + AdamW state ({3 * n * 4 / 2**30:.2f} GiB), {args.threads} thread(s), "
          f"writing to {root}")

    results = {}
    for fmt in ("file", "sharded", "sharded-async"):
        stalls, totals = [], []
        run_dir = root / fmt
        run_dir.mkdir()
        # one saver for all saves, as in a run (the async stager keeps its host buffers from save to save)
        saver = ShardedSaver(run_dir, True, async_save=fmt.endswith("async")) if fmt != "file" else None
        for r in range(args.repeats):
            t0 = time.perf_counter()
            if saver is None:
                save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": r},
                            run_dir / f"ckpt-{r:08d}.pt")
                stall = total = time.perf_counter() - t0
            else:
                saver.save(model, optimizer, {"step": r}, r)
                stall = time.perf_counter() - t0
                saver.wait()
                total = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file())
            stalls.append(stall)
            totals.append(total)
            for old in list(run_dir.iterdir()):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        results[fmt] = (statistics.median(stalls), statistics.median(totals))
        print(f"{fmt:>14}: stall {results[fmt][0]:6.2f}s (each: {', '.join(f'{x:.2f}' for x in stalls)}), complete "
              f"after {results[fmt][1]:6.2f}s, {size / 2**30:.2f} GiB, peak RSS so far {peak_rss_gib():.2f} GiB")

    # training while a background write runs: how much slower are the steps?
    steps = 5
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, x)
    quiet = (time.perf_counter() - t0) / steps
    run_dir = root / "overlap"
    run_dir.mkdir()
    saver = ShardedSaver(run_dir, True, async_save=True)
    saver.save(model, optimizer, {"step": 0}, 0)
    t0, done = time.perf_counter(), 0
    while saver.pending is not None and not saver.pending[0].done() or done < steps:
        train_step(model, optimizer, x)
        done += 1
    busy = (time.perf_counter() - t0) / done
    saver.wait()
    print(f"step time {quiet * 1e3:.0f} ms alone, {busy * 1e3:.0f} ms while the background write runs "
          f"({done} steps)")
    sync, asyn = results["sharded"][0], results["sharded-async"][0]
    print(f"async save stalls training {asyn:.2f}s instead of {sync:.2f}s (sharded sync) and "
          f"{results['file'][0]:.2f}s (one file): {sync - asyn:.2f}s saved per checkpoint")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()

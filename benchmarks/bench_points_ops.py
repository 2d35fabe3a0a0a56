"""Time and peak memory of the points plugin's ops against naive O(N^2) versions.

    python benchmarks/bench_points_ops.py                       # 1k-16k points, batch 32 (slow on CPU)
    python benchmarks/bench_points_ops.py --sizes 1024 2048 --batch 8 --device cuda

Each case runs in a fresh subprocess, so its peak memory is measurable: peak RSS growth over the
interpreter's baseline on CPU (glibc told to ``mmap`` large blocks, so freed memory is returned), ``torch.cuda.max_memory_allocated`` on GPU. Ops (``S = N / 16``
samples, ``k = 32`` neighbours, Chamfer between two clouds of ``N`` points):

* ``fps``: mmim's FPS (kernel semantics, O(B*N) memory) vs naive FPS on a precomputed ``(B, N, N)``
  distance matrix;
* ``knn``: mmim's chunked kNN (packed-key top-k) vs ``(B, S, N, 3)`` differences + a full sort;
* ``chamfer``: mmim's chunked nearest search + gathered distances vs the full ``(B, N, N)`` matrix.

Naive cases whose ``(B, N, N)`` matrix (``(B, S, N, 3)`` for kNN) would exceed ``--naive-limit-gb`` are skipped.
pytorch3d's ops are timed too when it imports (it does not install on CPU-only Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

OPS = ("fps", "knn", "chamfer")


def naive_fps(points: torch.Tensor, s: int) -> torch.Tensor:
    dist = torch.cdist(points, points).square()  # (B, N, N): the O(N^2) part
    out = torch.zeros(points.shape[0], s, dtype=torch.long, device=points.device)
    best = dist[:, 0].clone()
    rows = torch.arange(points.shape[0], device=points.device)
    for j in range(1, s):
        out[:, j] = best.argmax(1)
        best = torch.minimum(best, dist[rows, out[:, j]])
    return out


def naive_knn(ref: torch.Tensor, query: torch.Tensor, k: int) -> torch.Tensor:
    d = (query[:, :, None] - ref[:, None]).square().sum(-1)
    return torch.sort(d, dim=-1, stable=True).indices[..., :k]


def naive_chamfer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = (x[:, :, None] - y[:, None]).square().sum(-1)
    return d.min(2).values.mean() + d.min(1).values.mean()


def _make(op: str, impl: str, batch: int, n: int, device: str):
    from mmim_points.ops import chamfer_l2, farthest_point_sample, knn

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n, 3, generator=g).to(device)
    y = torch.randn(batch, n, 3, generator=g).to(device)
    s = max(n // 16, 1)
    if impl == "pytorch3d":
        from pytorch3d import ops as p3d  # noqa: PLC0415
        from pytorch3d.loss import chamfer_distance  # noqa: PLC0415

        return {"fps": lambda: p3d.sample_farthest_points(x, K=s)[1],
                "knn": lambda: p3d.knn_points(x[:, :s], x, K=32).idx,
                "chamfer": lambda: chamfer_distance(x, y)[0]}[op]
    if impl == "naive":
        return {"fps": lambda: naive_fps(x, s), "knn": lambda: naive_knn(x, x[:, :s], 32),
                "chamfer": lambda: naive_chamfer(x, y)}[op]
    return {"fps": lambda: farthest_point_sample(x, s), "knn": lambda: knn(x, x[:, :s], 32),
            "chamfer": lambda: chamfer_l2(x, y)}[op]


def run_case(op: str, impl: str, batch: int, n: int, device: str, repeats: int) -> dict:
    """Runs in the child process: one op, timed, with its peak memory."""
    fn = _make(op, impl, batch, n, device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_mem = torch.cuda.memory_allocated()
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - start_mem) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB -> MiB (Linux)
    return {"op": op, "impl": impl, "n": n, "batch": batch, "seconds": min(times), "peak_mib": round(peak, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--naive-limit-gb", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--child", nargs=4, metavar=("OP", "IMPL", "BATCH", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        op, impl, batch, n = args.child
        print(json.dumps(run_case(op, impl, int(batch), int(n), args.device, args.repeats)))
        return
    impls = ["mmim", "naive"]
    try:
        import pytorch3d  # noqa: F401

        impls.append("pytorch3d")
    except ImportError:
        pass
    # large blocks straight from mmap, so freed chunks leave the process and peak RSS is the real peak
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"device {args.device}, batch {args.batch}, threads {args.threads or torch.get_num_threads()}; "
          f"S = N/16 samples, k = 32")
    print(f"{'op':<8}{'impl':<10}{'N':>7}{'seconds':>10}{'peak MiB':>10}")
    for op in args.ops:
        for n in args.sizes:
            for impl in impls:
                naive_gb = args.batch * n * (n * 4 if op != "knn" else max(n // 16, 1) * 12) / 2**30
                if impl == "naive" and naive_gb > args.naive_limit_gb:
                    print(f"{op:<8}{impl:<10}{n:>7}{'skipped':>10}  (needs a {naive_gb:.0f} GiB tensor)")
                    continue
                cmd = [sys.executable, __file__, "--child", op, impl, str(args.batch), str(n), "--device", args.device,
                       "--repeats", str(args.repeats), "--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    print(f"{op:<8}{impl:<10}{n:>7}{'failed':>10}  {done.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{op:<8}{impl:<10}{n:>7}{r['seconds']:>10.4f}{r['peak_mib']:>10.1f}")


if __name__ == "__main__":
    main()

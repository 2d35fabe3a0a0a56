"""Video decoding throughput: clips/s per backend for 16-frame random clips, and the loader's clips/s.

Three figures, in clips per second, on generated H.264 videos (``--videos`` files of ``--frames`` frames at
``--size`` W x H, 25 fps, GOP 250, written with PyAV into a temporary folder):

1. ``backend``: ``mmim_video.reader.read_clip`` (one open: count, then read) per installed backend (decord, torchcodec, PyAV) for a
   16-frame clip at a random start with ``--rate`` stride (VideoMAE's pre-training sampling), including
   opening the file and counting its frames, as the dataset does for every item;
2. ``plain decord``: the same clips read as VideoMAE reads them (``decord.VideoReader(path, num_threads=1,
   ctx=cpu(0))``, ``len``, ``get_batch(indices).asnumpy()``), without mmim;
3. ``loader``: a ``video_list`` dataset (decode, multi-scale crop to ``--img-size``, flip, normalisation)
   through mmim's ``DataLoader`` with each ``--workers`` count, batch ``--batch``.

    python benchmarks/bench_video_decode.py                               # 8 videos of 300 frames at 320x240
    python benchmarks/bench_video_decode.py --clips 64 --workers 0 1 2 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmim.data.loading import ResumableSampler, make_loader
from mmim_video.dataset import VideoList, sample_indices
from mmim_video.reader import available_backends, frame_count, read_clip, read_frames


def write_video(path: Path, frames: int, width: int, height: int, seed: int) -> None:
    """A textured, moving H.264 video (yuv420p, CRF 23, GOP 250 like typical web video)."""
    import av

    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height + 64, width + 64, 3), dtype=np.uint8)
    texture = (texture.astype(np.float32) * 0.5 + 64).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "g": "250"}
        for t in range(frames):
            dy, dx = (t * 2) % 64, (t * 3) % 64
            img = np.ascontiguousarray(texture[dy:dy + height, dx:dx + width])
            img[20:60, (4 * t) % (width - 40):(4 * t) % (width - 40) + 40] = (240, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def clip_plan(videos: list[Path], clips: int, num_frames: int, rate: int, seed: int) -> list[tuple[Path, list[int]]]:
    """``clips`` (video, 16 indices) pairs drawn as VideoMAE draws a pre-training clip."""
    torch.manual_seed(seed)
    total = frame_count(videos[0], "pyav")
    return [(videos[i % len(videos)], sample_indices(total, num_frames, rate, True)) for i in range(clips)]


def bench_backend(plan: list[tuple[Path, list[int]]], backend: str) -> float:
    read_frames(plan[0][0], plan[0][1], backend)  # warm-up (imports, first open)
    start = time.perf_counter()
    for path, idx in plan:
        read_clip(path, lambda total, _idx=idx: [min(i, total - 1) for i in _idx], backend)  # one open: count + read
    return len(plan) / (time.perf_counter() - start)


def bench_plain_decord(plan: list[tuple[Path, list[int]]]) -> float:
    import decord

    start = time.perf_counter()
    for path, idx in plan:
        vr = decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
        len(vr)
        vr.get_batch(idx).asnumpy()
    return len(plan) / (time.perf_counter() - start)


def bench_loader(root: Path, list_file: Path, clips: int, workers: int, args: argparse.Namespace) -> float:
    ds = VideoList("train", True, root=str(root), list_file=str(list_file), num_frames=args.num_frames,
                   sampling_rate=args.rate, img_size=args.img_size)
    sampler = ResumableSampler(len(ds), seed=0, batch_size=args.batch)
    loader = make_loader(ds, sampler, batch_size=args.batch, num_workers=workers)
    seen, start = 0, None
    for batch in loader:
        if start is None:  # the first batch pays for starting the workers
            start = time.perf_counter()
            continue
        seen += batch["video"].shape[0]
        if seen >= clips:
            break
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=300, help="frames per video (12 s at 25 fps)")
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    parser.add_argument("--clips", type=int, default=48, help="clips timed per backend / loader setting")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--rate", type=int, default=4, help="sampling rate (frame stride)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        videos = [root / f"v{i}.mp4" for i in range(args.videos)]
        for i, path in enumerate(videos):
            write_video(path, args.frames, *args.size, seed=i)
        size = sum(p.stat().st_size for p in videos) / len(videos)
        print(f"{args.videos} H.264 videos of {args.frames} frames at {args.size[0]}x{args.size[1]} "
              f"({size / 1e3:.0f} kB each); {args.num_frames}-frame clips, stride {args.rate}, random start; "
              f"torch threads {args.threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        plan = clip_plan(videos, args.clips, args.num_frames, args.rate, seed=0)
        for backend in available_backends():
            results[f"backend/{backend}"] = bench_backend(plan, backend)
            print(f"  read_frames  {backend:<11s} {results[f'backend/{backend}']:7.1f} clips/s")
        if "decord" in available_backends():
            results["plain_decord"] = bench_plain_decord(plan)
            print(f"  plain decord loop (VideoMAE)  {results['plain_decord']:7.1f} clips/s")
        list_file = root / "train.txt"
        lines = args.clips + 2 * args.batch  # one epoch covers the warm-up batch and the timed clips
        list_file.write_text("".join(f"{videos[i % len(videos)].name} 0\n" for i in range(lines)))
        for workers in args.workers:
            key = f"loader/workers={workers}"
            results[key] = bench_loader(root, list_file, args.clips, workers, args)
            print(f"  video_list loader, {workers} workers, crop to {args.img_size}: {results[key]:7.1f} clips/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

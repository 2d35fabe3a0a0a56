"""Video training clips decoded on the host vs on the device (``decode: device``, :mod:`mmim_video.gpu`).

On generated K400-like clips (``--size``, keyframe every ``--keyint``, 10 s at 30 fps), the ``videomae_vit_b_k400``
recipe's dataset is read three ways, one batch of ``--batch`` clips at a time, for ``--batches`` batches:

1. ``host``: the loader path in this process (PyAV decode, uint8 crops, ``normalize: device``), then the device
   normalisation (what one loader core does for the GPU);
2. ``device``: ``decode: device``: plans drawn from file headers (what a loader core still does), then
   :class:`~mmim_video.gpu.DeviceClips` on ``--device``: NVDEC through torchcodec where it imports on CUDA,
   else PyAV decoding with the crops on the device (the line says which);
3. ``plans only``: the worker's share of ``device`` alone (header read and draws): the loader cores it needs.

Prints clips/s for each and the decoder used; ``--json`` writes them. The GPU machine has neither PyAV nor
torchcodec installed: ``benchmarks/gpu.sh`` adds ``$GPU_DEPS`` (a folder made with ``pip install --target``,
carried along) to ``PYTHONPATH`` when it exists, and otherwise reports this measurement as skipped.

    python benchmarks/bench_gpu_decode.py --device cuda --batches 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="340x256")
    p.add_argument("--keyint", type=int, default=250)
    p.add_argument("--clips", type=int, default=8, help="generated videos")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--data-dir", default="/tmp/mmim-gpu-decode")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import official_loaders as off
    from bench_loaders import mmim_video_dataset

    from mmim.data.device import to_device
    from mmim.data.loading import collate_skipping
    from mmim_video.gpu import torchcodec_cuda

    width, height = (int(v) for v in args.size.split("x"))
    list_file = off.make_videos(Path(args.data_dir) / f"{width}x{height}_g{args.keyint}", args.clips, width, height,
                                args.keyint, seconds=args.seconds)
    device = torch.device(args.device)
    host = mmim_video_dataset(list_file, 1, normalize="device")
    planned = mmim_video_dataset(list_file, 1, normalize="device")
    planned.decode = "device"
    decoder = "NVDEC (torchcodec)" if device.type == "cuda" and torchcodec_cuda() else "PyAV on the host, crops on " \
        f"{device.type}"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(dataset, finish: bool) -> float:
        n, start = 0, time.perf_counter()
        for b in range(args.batches):
            items = []
            for k in range(args.batch):
                torch.default_generator.manual_seed(b * args.batch + k)
                items.append(dataset[(b * args.batch + k) % len(dataset)])
            batch = collate_skipping(items)
            if finish:
                to_device(batch, device, dataset.device_transforms)
                sync()
            n += len(items)
        return n / (time.perf_counter() - start)

    timed(planned, True)  # warm-up: imports, CUDA context, first decoder
    rows = {"host": timed(host, True), "device": timed(planned, True), "plans only": timed(planned, False)}
    print(f"{width}x{height}, keyframe every {args.keyint}, batch {args.batch}, device {device} ({decoder})")
    for name, rate in rows.items():
        print(f"  {name:<12}{rate:9.1f} clips/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"clips_per_s": rows, "decoder": decoder, "device": str(device),
                                               "size": args.size, "keyint": args.keyint}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

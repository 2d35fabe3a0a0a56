"""Throughput of the audio front end and of the audio data loader on 10 s clips (CPU).

Three figures, in clips per second:

1. ``fbank``: the Kaldi log-mel filterbank alone (Audio-MAE settings: 16 kHz, 128 mel bins, 25/10 ms)
   on 10 s waveforms already in memory, one clip at a time and as a batch;
2. ``frontend``: Audio-MAE's full input pipeline on one waveform (clip mean, fbank, pad to 1024 frames,
   normalisation);
3. ``loader``: an ``audio_list`` dataset (AudioSet-style JSON) over generated 10 s FLAC files at
   44.1 kHz stereo - decoding, mixdown, resampling to 16 kHz and the front end - through a
   ``DataLoader`` with ``--workers`` processes, as training reads it.

    python benchmarks/bench_audio_frontend.py                      # default: 32 clips, 0 and 2 workers
    python benchmarks/bench_audio_frontend.py --clips 64 --workers 0 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader

from mmim.data.loading import collate_skipping
from mmim_audio.datasets import AudioList
from mmim_audio.fbank import kaldi_fbank
from mmim_audio.frontend import AudioMAEFrontend

SECONDS, RATE = 10.0, 16000


def rate(fn, count: int, repeat: int) -> float:
    """``count`` clips per call of ``fn``: clips/s, best of ``repeat`` timed calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def write_clips(folder: Path, count: int, file_rate: int = 44100) -> Path:
    """``count`` 10 s stereo FLAC clips (noise + a tone) and their AudioSet-style JSON list."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(count):
        t = np.arange(int(SECONDS * file_rate)) / file_rate
        left = 0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        right = 0.05 * rng.standard_normal(t.shape)
        name = f"clip{i:03d}.flac"
        soundfile.write(folder / name, np.stack([left, right], 1).astype(np.float32), file_rate, subtype="PCM_16")
        entries.append({"wav": name, "labels": str(i % 2)})
    (folder / "train.json").write_text(json.dumps({"data": entries}))
    return folder / "train.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=32, help="clips per measurement")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to try")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.clips
    waves = torch.randn(n, int(SECONDS * RATE)) * 0.1
    front = AudioMAEFrontend(backend="torch")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} clips of {SECONDS:.0f} s, "
          f"{os.cpu_count()} CPUs, load average {load} (other jobs slow every figure)")
    one = rate(lambda: [kaldi_fbank(w) for w in waves], n, args.repeat)
    batched = rate(lambda: kaldi_fbank(waves), n, args.repeat)
    full = rate(lambda: [front(w) for w in waves], n, args.repeat)
    print(f"fbank     one at a time {one:8.1f} clips/s | batched {batched:8.1f} clips/s")
    print(f"frontend  one at a time {full:8.1f} clips/s (mean, fbank, pad to 1024, normalise)")
    with tempfile.TemporaryDirectory() as tmp:
        data_file = write_clips(Path(tmp), n)
        dataset = AudioList("train", False, data_file=str(data_file), classes=["0", "1"], backend="torch")
        for workers in args.workers:
            def load(workers: int = workers) -> None:
                for _ in DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate_skipping):
                    pass

            print(f"loader    {workers} workers        {rate(load, n, args.repeat):8.1f} clips/s "
                  f"(44.1 kHz stereo FLAC -> mono 16 kHz -> fbank)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

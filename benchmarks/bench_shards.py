"""Samples/s per core, decode and augmentation included: files vs shards (local disk and loopback HTTP).

For every modality's default training dataset: pack it to shards in a temporary folder, then
read ``--samples`` training items in one process with one torch thread (so the figure is per
core) three ways: the map-style dataset from its files, the shard stream from local disk, and
the shard stream from an HTTP server on 127.0.0.1 that the script starts.

    python benchmarks/bench_shards.py [--samples 300] [--modalities image video ...]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import itertools
import tempfile
import threading
import time
from pathlib import Path

import torch

from mmim import registry
from mmim.config.recipe import read_yaml
from mmim.data.loading import SeededDataset, mix_seed
from mmim.data.pack import pack
from mmim.data.records import build_decoder
from mmim.data.shards import resolve
from mmim.data.stream import END, ShardStream
from mmim.recipes_catalog import default_recipe

MODALITIES = ["image", "video", "points", "audio", "multimodal"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def rate(items, n: int) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in itertools.islice(items, n))
    return count / (time.perf_counter() - start)


def stream_items(source: str, decoder, buffer: int):
    stream = ShardStream(resolve(source), decoder, seed=0, shuffle_buffer=buffer)
    stream.set_position(0, [0])
    return (item for _, item in stream if not (isinstance(item, str) and item == END))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--modalities", nargs="+", default=MODALITIES)
    p.add_argument("--buffer", type=int, default=100)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'modality':<11} {'dataset':<15} {'files':>9} {'shards':>9} {'shards/http':>12}   samples/s per core")
    for modality in args.modalities:
        spec = read_yaml(default_recipe(modality))["data"]["dataset"]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "shards"
            pack(spec, out, samples_per_shard=max(1, args.samples // 4), progress=False)
            files = SeededDataset(registry.build("dataset", spec, split="train", augment=True))
            n = min(args.samples, len(files))
            by_file = rate((files[(i, mix_seed(0, 0, i, 1))] for i in range(n)), n)
            decoder = build_decoder(spec, "train", augment=True)
            local = rate(stream_items(str(out), decoder, args.buffer), n)
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(out)))
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                url = f"http://127.0.0.1:{server.server_address[1]}/index.json"
                remote = rate(stream_items(url, decoder, args.buffer), n)
            finally:
                server.shutdown()
                server.server_close()
        print(f"{modality:<11} {spec['name']:<15} {by_file:>9.1f} {local:>9.1f} {remote:>12.1f}")


if __name__ == "__main__":
    main()

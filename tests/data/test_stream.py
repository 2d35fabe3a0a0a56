"""Streaming shards: every sample once per epoch over processes x workers, seeded order, exact position, HTTP."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections import Counter

import pytest
from torch.utils.data import DataLoader

from mmim.data.errors import CorruptSampleError, DataError
from mmim.data.pack import pack
from mmim.data.shards import resolve
from mmim.data.skips import Skipped
from mmim.data.stream import END, ShardStream, ShardTrainingData, _identity, simulate_counts


class Numbers:
    """A dataset of its indices that implements the shard protocol; index ``bad`` is corrupt when decoded."""

    def __init__(self, split="train", augment=False, n=53, bad=-1):
        self.n, self.bad = n, bad

    def __len__(self):
        return self.n

    def shard_record(self, index):
        return {"txt": str(index).encode(), "json": {"label": index % 3}}

    def decode_record(self, record, where):
        value = int(record["txt"])
        if value == self.bad:
            raise CorruptSampleError(where, "bad number")
        return {"index": value}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("numbers") / "shards"
    from mmim import registry

    registry.plugins()  # discovered before the patch below
    import mmim.data.pack as pack_module

    original = pack_module.build_dataset
    pack_module.build_dataset = lambda spec, split: Numbers(n=spec["n"])
    try:
        pack({"name": "numbers", "n": 53}, out, samples_per_shard=4, progress=False)
    finally:
        pack_module.build_dataset = original
    return out


def read_epoch(shards, epoch, world=2, workers=3, seed=0, buffer=8, dataset=None):
    """Every index read by ``world`` processes x ``workers`` loader workers in ``epoch``, per process."""
    got = []
    for rank in range(world):
        stream = ShardStream(resolve(str(shards)), dataset or Numbers(), seed, rank, world, buffer)
        stream.set_position(epoch, [0] * workers)
        loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_identity)
        got.append([item["index"] for _, item in loader if not (isinstance(item, str) and item == END)])
    return got


def test_every_sample_once_per_epoch_over_two_processes_and_three_workers(shards):
    for epoch in (0, 1):
        per_rank = read_epoch(shards, epoch)
        counts = Counter(i for rank in per_rank for i in rank)
        assert counts == Counter(range(53)), epoch
        assert all(per_rank), "each process reads some shards"


def test_order_is_drawn_from_seed_and_epoch(shards):
    a, b = read_epoch(shards, 0, world=1, workers=1), read_epoch(shards, 0, world=1, workers=1)
    assert a == b
    assert read_epoch(shards, 1, world=1, workers=1) != a
    assert read_epoch(shards, 0, world=1, workers=1, seed=1) != a
    plain = read_epoch(shards, 0, world=1, workers=1, buffer=0)[0]
    assert plain != a[0] and sorted(plain) == sorted(a[0])  # the buffer shuffles beyond the shard order


def test_too_few_shards_for_the_readers_is_a_clear_error(shards):
    with pytest.raises(DataError, match="14 shards cannot feed 4 processes x 4 loader workers"):
        ShardTrainingData(resolve(str(shards)), Numbers(), 0, 0, 4, 2, 1, 1, num_workers=4)


def _batches(data, start, count):
    out = []
    for _, batch in data.micro_batches(start):
        out.append(batch["index"].tolist())
        if len(out) == count:
            return out
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_position_resumes_mid_epoch_exactly(shards, workers):
    make = lambda: ShardTrainingData(resolve(str(shards)), Numbers(), 3, 0, 1, 4, 2, 3, num_workers=workers)  # noqa: E731
    full = make()
    steps = full.steps_per_epoch
    assert steps == 53 // 8
    reference = _batches(full, 0, 2 * steps * 2)  # two epochs of micro-batches
    assert Counter(i for b in reference[: steps * 2] for i in b) <= Counter(range(53))
    first = make()
    it = first.micro_batches(0)
    for _ in range(5):  # stop after 2.5 optimizer steps' micro-batches: resume from step 2 (after 4)
        next(it)
    saved = json.loads(json.dumps(first.state()))
    assert saved["ranks"][0]["consumed"] != [0] * max(1, workers)
    second = make()
    second.load_state(saved)
    # the checkpoint is written after an optimizer step: resume where step 2 (4 micro-batches) had read to
    again = make()
    it2 = again.micro_batches(0)
    for _ in range(4):
        next(it2)
    state = again.state()
    resumed = make()
    resumed.load_state(state)
    assert _batches(resumed, 2, len(reference) - 4) == reference[4:]
    # without a stored position the counts are reconstructed from the index
    assert _batches(make(), 2, 3) == reference[4:7]


def test_simulated_counts_follow_the_merge_order():
    assert simulate_counts([3, 1, 2], 5) == [2, 1, 2]
    assert simulate_counts([1, 1], 9) == [1, 1]


def test_corrupt_member_is_named_or_skipped(shards):
    with pytest.raises((CorruptSampleError, RuntimeError), match=r"train-\d{6}\.tar \(000000017\.json, 000000017\.txt\): bad number"):
        read_epoch(shards, 0, world=1, workers=1, dataset=Numbers(bad=17))
    stream = ShardStream(resolve(str(shards)), Numbers(bad=17), 0, skip_corrupt=True)
    items = [item for _, item in stream]
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert len(skipped) == 1 and "000000017" in skipped[0].reason and len(items) == 54


def test_broken_shard_names_the_shard(shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    victim = copy / "train-000003.tar"
    victim.write_bytes(victim.read_bytes()[:700])
    with pytest.raises((DataError, RuntimeError), match="train-000003.tar: broken shard"):
        read_epoch(copy, 0, world=1, workers=1)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(shards):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(shards)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_streams_over_http_and_brace_patterns_and_pipes(shards, http_server):
    local = read_epoch(shards, 0, world=1, workers=2)
    for source in (f"{http_server}/index.json", f"{http_server}/train-{{000000..000013}}.tar"):
        shard_set = resolve(source)
        assert shard_set.urls[0].startswith("http://127.0.0.1") and shard_set.num_samples == 53
        stream = ShardStream(shard_set, Numbers(), 0, 0, 1, 8)
        stream.set_position(0, [0, 0])
        loader = DataLoader(stream, batch_size=None, num_workers=2, collate_fn=_identity)
        assert [[i["index"] for _, i in loader if not isinstance(i, str)]] == local
    piped = [f"pipe:cat {shards}/train-{i:06d}.tar" for i in range(14)]
    shard_set = resolve(piped, str(shards / "index.json"))
    stream = ShardStream(shard_set, Numbers(), 0, 0, 1, 8)
    stream.set_position(0, [0])
    assert sorted(i["index"] for _, i in stream if not isinstance(i, str)) == list(range(53))


def test_a_shard_missing_from_the_index_is_named(shards):
    with pytest.raises(DataError, match="train-000014.tar.* is not in the index"):
        resolve(f"{shards}/train-{{000000..000099}}.tar")


def test_data_shards_index_is_where_a_recipe_finds_the_index(shards, tmp_path, tiny_recipe_dict):
    """``data.shards_index``: piped shards have no folder to find ``index.json`` in; the recipe names it,
    and the training loop reads the shards through it."""
    import shutil

    from mmim.config.recipe import recipe_from_dict
    from mmim.engine.task import PretrainTask

    index = tmp_path / "elsewhere" / "index.json"
    index.parent.mkdir()
    shutil.copy(shards / "index.json", index)
    piped = [f"pipe:cat {shards}/train-{i:06d}.tar" for i in range(14)]
    with pytest.raises(DataError, match="shards_index"):
        resolve(piped, None)
    tiny_recipe_dict["data"].update(shards=piped, shards_index=str(index))
    settings = PretrainTask(recipe_from_dict(tiny_recipe_dict)).settings
    assert (settings.shards, settings.shards_index) == (piped, str(index))
    stream = ShardTrainingData(resolve(settings.shards, settings.shards_index), Numbers(), 0, 0, 1, 4, 1, 1)
    assert stream.shards.num_samples == 53

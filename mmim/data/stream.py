"""Training from shards: per-epoch shard order, reader slots, a shuffle buffer, and an exact stream position.

Epoch ``e`` permutes the shards with ``(seed, e)``. With ``P`` processes and ``W`` loader workers
there are ``S = P W`` reader slots; slot ``r W + w`` (process ``r``, worker ``w``) reads shards
``order[slot::S]``, so every sample is read exactly once per epoch. A slot passes its samples
through a shuffle buffer seeded by ``(seed, e, slot)`` and decodes each with the dataset's own
``decode_record`` under the map-style loader's per-sample seed (the sample's index is its key).

The main process merges its workers in a fixed order (next: the worker that has given the fewest
samples, ties to the lower id), so a process's sample sequence is a pure function of ``(seed,
epoch, P, W)``. The position is ``(epoch, samples given by each worker)``; a resumed worker
replays its shards and buffer without decoding up to its count and goes on from there.

Resuming mid-epoch with another layout (``P' W'`` slots instead of ``P W``): what is left of the
epoch is the rest of every old slot's sequence (its shards and buffer replayed past its count),
old slot after old slot; process ``r'`` takes every ``P'``-th of these samples (from the ``r'``-th),
and its workers deal them out in turn. So no sample of the epoch is skipped and none is repeated;
every reader replays all the old slots' shards (reading, not decoding, the samples of the others)
for the rest of that epoch only. The next epoch is read in the new layout.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmim.data.errors import CorruptSampleError, DataError
from mmim.data.loading import collate_skipping, mix_seed, sourced
from mmim.data.records import build_decoder, require_protocol
from mmim.data.shards import ShardSet, iter_samples, resolve
from mmim.data.skips import Skipped

log = logging.getLogger(__name__)
END = "__mmim_end_of_worker__"


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 5))
    return torch.randperm(num_shards, generator=g).tolist()


def slot_shards(num_shards: int, seed: int, epoch: int, slot: int, slots: int) -> list[int]:
    """The shards reader slot ``slot`` of ``slots`` reads in epoch ``epoch``, in order."""
    return shard_order(num_shards, seed, epoch)[slot::slots]


def name_member(err: CorruptSampleError, url: str, key: str, members: dict[str, bytes]) -> CorruptSampleError:
    """``err`` (raised by a reader, naming maybe a temporary file) as an error naming the shard, the
    sample's members and the file it was packed from."""
    exts = ", ".join(f"{key}.{e}" for e in sorted(members))
    try:
        source = f", packed from {json.loads(members['json'])['source']}"
    except (KeyError, ValueError, TypeError):
        source = ""
    return CorruptSampleError(f"{url} ({exts}{source})", err.reason)


def _identity(x: Any) -> Any:
    return x


class ShardStream(IterableDataset):
    """The samples of ``shards`` for one process, decoded by ``dataset.decode_record``.

    Items are ``(worker id, item)``; ``item`` is a decoded sample, a :class:`Skipped` for a corrupt
    one (with ``skip_corrupt``) or :data:`END` once the worker has no more.

    Args:
        shards: resolved shards.
        dataset: implements the shard protocol (see :mod:`mmim.data.records`).
        seed: run seed.
        rank, world_size: this process's place.
        shuffle_buffer: samples held for shuffling (``<= 1``: shard order only).
        skip_corrupt: skip and count corrupt samples instead of stopping.
    """

    def __init__(self, shards: ShardSet, dataset: Any, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 1000, skip_corrupt: bool = False) -> None:
        require_protocol(dataset, "data.shards")
        self.shards, self.dataset, self.seed = shards, dataset, seed
        self.rank, self.world_size, self.buffer = rank, world_size, shuffle_buffer
        self.skip_corrupt = skip_corrupt
        self.lazy = frozenset(getattr(dataset, "lazy_members", ()))  # members it reads ranges of (iter_samples)
        self.epoch, self.skip = 0, [0]
        self.carry: dict[str, Any] | None = None  # the rest of an epoch begun in another layout (see the module)

    def set_position(self, epoch: int, skip: list[int]) -> None:
        """Read epoch ``epoch``; worker ``w`` first passes over ``skip[w]`` samples without decoding."""
        self.epoch, self.skip = epoch, list(skip)

    def raw(self, shard_ids: list[int]) -> Iterator[tuple[str, str, dict[str, bytes]]]:
        """``(shard url, key, members)`` of the given shards in order; a broken shard ends early
        (skipped and counted once with ``skip_corrupt``)."""
        for s in shard_ids:
            url = self.shards.urls[s]
            try:
                for key, members in iter_samples(url, self.lazy):
                    yield url, key, members
            except DataError as err:
                if not self.skip_corrupt:
                    raise
                yield url, "", {"__error__": str(err).encode()}

    def shuffled(self, records: Iterator[Any], rng: random.Random) -> Iterator[Any]:
        if self.buffer <= 1:
            yield from records
            return
        buf: list[Any] = []
        for rec in records:
            if len(buf) < self.buffer:
                buf.append(rec)
                continue
            j = rng.randrange(len(buf))
            buf[j], rec = rec, buf[j]
            yield rec
        rng.shuffle(buf)
        yield from buf

    def decode(self, url: str, key: str, members: dict[str, bytes]) -> Any:
        where = f"{url} member {key}"
        if "__error__" in members:
            return Skipped(members["__error__"].decode())
        try:
            index = int(key.rsplit("/", 1)[-1])
        except ValueError:
            index = int.from_bytes(key.encode()[-8:], "little")
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(self.seed, self.epoch, index, 1))  # CPU RNG (loading.py)
            try:
                return sourced(self.dataset.decode_record(members, where), where)
            except CorruptSampleError as err:
                named = name_member(err, url, key, members)
                if not self.skip_corrupt:
                    raise named from None
                log.warning("skipping corrupt sample %s", named)
                return Skipped(str(named))

    def carried(self, w: int, workers: int) -> Iterator[tuple[str, str, dict[str, bytes]]]:
        """Worker ``w``'s share of the rest of an epoch begun in another layout (:attr:`carry`)."""
        carry = self.carry
        old_slots = carry["world_size"] * carry["workers"]
        consumed = [c for rank in carry["ranks"] for c in rank["consumed"]]
        mine = 0
        g = 0  # index in the rest of the epoch, over the old slots in order
        for slot in range(old_slots):
            ids = slot_shards(len(self.shards.urls), self.seed, self.epoch, slot, old_slots)
            rng = random.Random(mix_seed(self.seed, self.epoch, slot, 6))
            for n, record in enumerate(self.shuffled(self.raw(ids), rng)):
                if n < consumed[slot]:
                    continue
                if g % self.world_size == self.rank:
                    if mine % workers == w:
                        yield record
                    mine += 1
                g += 1

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        info = get_worker_info()
        w, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = self.skip[w] if w < len(self.skip) else 0
        if self.carry is not None and self.carry["epoch"] == self.epoch:
            for n, (url, key, members) in enumerate(self.carried(w, workers)):
                if n >= skip:
                    yield w, self.decode(url, key, members)
            yield w, END
            return
        slot, slots = self.rank * workers + w, self.world_size * workers
        ids = slot_shards(len(self.shards.urls), self.seed, self.epoch, slot, slots)
        rng = random.Random(mix_seed(self.seed, self.epoch, slot, 6))
        for n, (url, key, members) in enumerate(self.shuffled(self.raw(ids), rng)):
            if n >= skip:
                yield w, self.decode(url, key, members)
        yield w, END


def merge(items: Iterator[tuple[int, Any]], counts: list[int]) -> Iterator[Any]:
    """The workers' items in the fixed order (fewest given first, ties to the lower id); updates ``counts``."""
    pending: dict[int, deque] = {w: deque() for w in range(len(counts))}
    active = set(pending)
    while active:
        w = min(active, key=lambda k: (counts[k], k))
        while not pending[w]:
            try:
                k, item = next(items)
            except StopIteration:
                raise RuntimeError(f"shard loader worker {w} stopped without finishing") from None
            pending[k].append(item)
        item = pending[w].popleft()
        if isinstance(item, str) and item == END:
            active.discard(w)
            continue
        counts[w] += 1
        yield item


def simulate_counts(lengths: list[int], consumed: int) -> list[int]:
    """Per-worker counts after ``consumed`` samples under :func:`merge`'s order with these worker lengths."""
    counts = [0] * len(lengths)
    for _ in range(consumed):
        active = [w for w in range(len(lengths)) if counts[w] < lengths[w]]
        if not active:
            break
        counts[min(active, key=lambda k: (counts[k], k))] += 1
    return counts


class ShardTrainingData:
    """What the trainer needs from shards: steps per epoch, micro-batches from a step, the position.

    Args:
        shards: resolved shards.
        dataset: the decoding dataset (shard protocol).
        seed, rank, world_size: the run's.
        batch_size, accum: micro-batch size and micro-batches per optimizer step.
        epochs: epochs of the schedule (steps per epoch is the smallest over them and the processes).
        num_workers, shuffle_buffer, skip_corrupt, pin_memory: loader settings.
        prefetch_factor: micro-batches each loader worker decodes ahead (as ``DataLoader``'s, in batches).
    """

    @classmethod
    def for_loop(cls, settings: Any, dataset: Any, seed: int, rank: int, world_size: int, accum: int,
                 pin_memory: bool) -> ShardTrainingData:
        """The shards of a training loop's settings (``LoopSettings`` with ``shards``)."""
        if settings.sample_weights is not None:
            raise ValueError("weighted sampling draws samples by index; shards are read in sequence: use the "
                             "uniform sampler when training from shards")
        return cls(resolve(settings.shards, settings.shards_index), dataset, seed, rank, world_size,
                   settings.batch_size, accum, settings.epochs, settings.num_workers, settings.shuffle_buffer,
                   settings.skip_corrupt, pin_memory, settings.prefetch_factor)

    def __init__(self, shards: ShardSet, dataset: Any, seed: int, rank: int, world_size: int, batch_size: int,
                 accum: int, epochs: int, num_workers: int = 0, shuffle_buffer: int = 1000,
                 skip_corrupt: bool = False, pin_memory: bool = False, prefetch_factor: int = 2) -> None:
        self.stream = ShardStream(shards, dataset, seed, rank, world_size, shuffle_buffer, skip_corrupt)
        self.shards, self.seed, self.rank, self.world = shards, seed, rank, world_size
        self.batch_size, self.accum, self.num_workers, self.pin_memory = batch_size, accum, num_workers, pin_memory
        self.workers = max(1, num_workers)
        if prefetch_factor < 1:
            raise ValueError(f"data.prefetch_factor must be at least 1, got {prefetch_factor}")
        # the stream's loader yields single samples: ahead by prefetch_factor micro-batches per worker
        self.prefetch = max(2, prefetch_factor * batch_size // self.workers)
        slots = world_size * self.workers
        if len(shards.urls) < slots:
            raise DataError(f"data.shards: {len(shards.urls)} shards cannot feed {world_size} processes x "
                            f"{self.workers} loader workers = {slots} readers; pack into more shards "
                            f"(mmim pack --samples-per-shard) or use fewer workers")
        per_step = batch_size * accum
        self.steps_per_epoch = min(sum(self.worker_lengths(e, r)) // per_step
                                   for e in range(max(1, epochs)) for r in range(world_size))
        self.position: dict[str, Any] = {"epoch": 0, "consumed": [0] * self.workers}
        self.restored: dict[str, Any] | None = None

    def worker_lengths(self, epoch: int, rank: int | None = None) -> list[int]:
        """Samples each worker of process ``rank`` reads in ``epoch`` (from the index)."""
        rank = self.rank if rank is None else rank
        slots = self.world * self.workers
        return [sum(self.shards.counts[s] for s in slot_shards(len(self.shards.urls), self.seed, epoch,
                                                                rank * self.workers + w, slots))
                for w in range(self.workers)]

    def state(self) -> dict[str, Any]:
        """The stream position of every process (a collective under torch.distributed)."""
        mine = {"epoch": self.position["epoch"], "consumed": list(self.position["consumed"])}
        ranks = [mine]
        if self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * self.world
            torch.distributed.all_gather_object(ranks, mine)
        carry = self.stream.carry
        if carry is not None and carry["epoch"] == self.position["epoch"]:
            return {"world_size": self.world, "workers": self.workers, "ranks": ranks, "carry": carry}
        return {"world_size": self.world, "workers": self.workers, "ranks": ranks}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        if state.get("world_size") == self.world and state.get("workers") == self.workers:
            self.restored = state["ranks"][self.rank]
            self.stream.carry = state.get("carry")
            return
        epochs = {r["epoch"] for r in state["ranks"]}
        if not any(c for r in state["ranks"] for c in r["consumed"]):
            return  # at the start of an epoch: nothing to carry over
        if state.get("carry") is not None:
            raise DataError(
                f"data.shards: epoch {state['carry']['epoch']} was begun with {state['carry']['world_size']} processes x "
                f"{state['carry']['workers']} workers and continued with {state['world_size']} x {state['workers']}; a "
                f"second change within one epoch is not supported: resume with {state['world_size']} processes x "
                f"{state['workers']} loader workers until the epoch ends")
        if len(epochs) != 1:
            raise DataError(f"data.shards: the checkpoint's processes are in different epochs ({sorted(epochs)})")
        (epoch,) = epochs
        log.info("the checkpoint's stream was read by %s processes x %s workers, this run has %d x %d: the rest of "
                 "epoch %d is dealt out to the new readers (no sample skipped or repeated)", state["world_size"],
                 state["workers"], self.world, self.workers, epoch)
        self.stream.carry = {"epoch": epoch, "world_size": state["world_size"], "workers": state["workers"],
                             "ranks": [{"epoch": r["epoch"], "consumed": list(r["consumed"])} for r in state["ranks"]]}

    def start_counts(self, epoch: int, offset: int) -> list[int]:
        if offset == 0:
            return [0] * self.workers
        if self.restored is not None and self.restored["epoch"] == epoch:
            return list(self.restored["consumed"])
        if self.stream.carry is not None and self.stream.carry["epoch"] == epoch:
            return [0] * self.workers  # the carried rest of the epoch starts now
        return simulate_counts(self.worker_lengths(epoch), offset * self.accum * self.batch_size)

    def micro_batches(self, start_step: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(epoch, collated micro-batch)`` from optimizer step ``start_step`` on."""
        epoch, offset = divmod(start_step, self.steps_per_epoch)
        while True:
            counts = self.start_counts(epoch, offset)
            self.position = {"epoch": epoch, "consumed": counts}
            self.stream.set_position(epoch, counts)
            loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
                                pin_memory=self.pin_memory, prefetch_factor=self.prefetch if self.num_workers else None)
            items = merge(iter(loader), counts)
            left = (self.steps_per_epoch - offset) * self.accum
            for _ in range(left):
                chunk = list(itertools.islice(items, self.batch_size))
                if len(chunk) < self.batch_size:
                    raise DataError(f"the shards of process {self.rank} ran out in epoch {epoch}: fewer samples than "
                                    f"the index lists (a shard was cut short or skipped as broken)")
                yield epoch, collate_skipping(chunk)
            del items, loader
            epoch, offset = epoch + 1, 0


class ShardSequence(IterableDataset):
    """Every sample of ``shards`` once, in index order (shard by shard, member by member), decoded by
    ``dataset.decode_record``: evaluation from shards (``eval.train_shards`` / ``eval.test_shards``,
    ``finetune.test_shards``).

    No shuffling and no skipping: a corrupt member stops the pass with an error naming the shard
    and member, and a pass that yields another number of samples than the index lists is an error.
    Read by one process (evaluation's loader has no workers), so the order is the packed order,
    the order of the files the shards were packed from.
    """

    def __init__(self, shards: ShardSet, dataset: Any) -> None:
        require_protocol(dataset, "eval shards")
        self.shards, self.dataset = shards, dataset
        self.num_classes = getattr(dataset, "num_classes", None)
        vote = getattr(dataset, "vote_augment", None)  # fine-tuning's test-time voting, when the dataset has it
        if callable(vote):
            self.vote_augment = vote

    @classmethod
    def of(cls, spec: dict[str, Any], split: str, shards: str | list[str], index: str | None) -> ShardSequence:
        """The ``split`` of dataset ``spec`` read from ``shards`` (their index: ``index`` or beside them)."""
        return cls(resolve(shards, index), build_decoder(spec, split, augment=False))

    def __len__(self) -> int:
        return self.shards.num_samples

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            raise DataError("eval shards are read in order by one process: use no loader workers")
        count = 0
        for url in self.shards.urls:
            for key, members in iter_samples(url):
                if "__error__" in members:
                    raise CorruptSampleError(f"{url} member {key}", members["__error__"].decode())
                where = f"{url} member {key}"
                try:
                    item = self.dataset.decode_record(members, where)
                except CorruptSampleError as err:
                    raise name_member(err, url, key, members) from None
                yield sourced(item, where)
                count += 1
        if count != len(self):
            raise DataError(f"eval shards gave {count} samples, their index lists {len(self)}: a shard was cut short "
                            f"or replaced (check with mmim pack --verify)")

    def __repr__(self) -> str:
        return f"ShardSequence({len(self.shards.urls)} shards, n={len(self)}, {self.dataset!r})"

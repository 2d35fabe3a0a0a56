"""Seeded, resumable, distributed sampling and collation with counted skips.

Every sample's augmentation randomness comes from a seed derived from ``(run seed, epoch,
index)``: the sampler yields ``(index, sample_seed)`` pairs and :class:`SeededDataset` runs the
underlying ``__getitem__`` under that seed. The same sample therefore gets the same crop on
any number of workers or processes, and a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mmim.data.errors import CorruptSampleError, DataError
from mmim.data.skips import SKIPPED_WHERE_KEY, Skipped
from mmim.data.sources import name_sample_in_error, sample_source

log = logging.getLogger(__name__)
_MASK63 = (1 << 63) - 1
SKIPPED_KEY = "_skipped"


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit mix of integers (splitmix64 steps)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & _MASK63


class ResumableSampler(Sampler[tuple[int, int]]):
    """Per-epoch permutation cut into optimizer steps, shared out over ranks and micro-batches,
    that can start at any step.

    Step ``s`` of an epoch consumes ``order[s*E:(s+1)*E]`` with ``E = batch_size * accum *
    world_size``; micro-batch ``m`` of rank ``r`` gets the chunk ``m * world_size + r`` of it. So the
    samples (and, with step-seeded masks, the whole computation) of an optimizer step do not depend
    on how the effective batch is split into processes and accumulation steps, and a run can resume
    on another process count. The epoch's remainder (``< E`` samples) is dropped.

    Yields ``(index, sample_seed)``.

    Args:
        num_samples: dataset size.
        seed: run seed.
        batch_size: per-process micro-batch size ``B``.
        accum: micro-batches per optimizer step.
        rank, world_size: this process's place.
        shuffle: permute per epoch (else keep order).
        weights: per-sample weights: each epoch draws ``epoch_samples`` indices in proportion to them
            (AudioSet's class-balanced sampling) instead of permuting; the draw is a pure function of
            ``(seed, epoch)`` like the permutation, so resuming stays exact.
        epoch_samples: samples per epoch with ``weights`` (default: ``num_samples``).
        replacement: draw with replacement (``torch.utils.data.WeightedRandomSampler``'s option).
    """

    def __init__(self, num_samples: int, seed: int, batch_size: int = 1, accum: int = 1, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, weights: torch.Tensor | None = None,
                 epoch_samples: int | None = None, replacement: bool = True) -> None:
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.batch_size, self.accum, self.rank, self.world_size = batch_size, accum, rank, world_size
        self.weights, self.replacement = None, replacement
        length = num_samples
        if weights is not None:
            w = torch.as_tensor(weights, dtype=torch.float64)
            if w.shape != (num_samples,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"sample weights must be {num_samples} finite non-negative numbers, not all zero")
            length = epoch_samples or num_samples
            if not replacement and length > int((w > 0).sum()):
                raise ValueError(f"cannot draw {length} distinct samples without replacement from "
                                 f"{int((w > 0).sum())} samples of non-zero weight")
            self.weights = w
        self.epoch_length = length
        self.step_size = batch_size * accum * world_size
        self.steps_per_epoch = length // self.step_size
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch and skip its first ``start_step`` optimizer steps."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.epoch_length, self.replacement, generator=g)
        elif self.shuffle:
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        b = self.batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.step_size
            for micro in range(self.accum):
                chunk = micro * self.world_size + self.rank
                start = base + chunk * b
                for pos, idx in enumerate(order[start : start + b].tolist(), start):
                    # drawn samples may repeat: their augmentation seed follows the draw's position
                    sample_seed = mix_seed(self.seed, self.epoch, pos, 2) if self.weights is not None else \
                        mix_seed(self.seed, self.epoch, idx, 1)
                    yield idx, sample_seed


class SourcedItem(dict):
    """An item that remembers where it was read from (``source``), so that a batch that cannot be
    collated names the samples that differ. Collated, it is an ordinary mapping."""

    source: str = "?"


def sourced(item: Any, source: str) -> Any:
    """``item`` (a dict) as a :class:`SourcedItem` naming ``source``; anything else unchanged."""
    if type(item) is dict:
        item = SourcedItem(item)
        item.source = source
    return item


class SeededDataset(Dataset):
    """Wraps a dataset: ``ds[(index, seed)]`` runs ``ds.dataset[index]`` under ``torch.manual_seed(seed)``.

    A :class:`CorruptSampleError` becomes a :class:`~mmim.data.skips.Skipped` naming the file (later
    counted by :func:`collate_skipping`) when ``skip_corrupt`` is set and propagates otherwise.
    """

    def __init__(self, dataset: Dataset, skip_corrupt: bool = False) -> None:
        self.dataset, self.skip_corrupt = dataset, skip_corrupt

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU RNG only: torch.manual_seed would also queue
            # a lazy CUDA seeding with a formatted stack trace (1.2 ms a sample, a quarter of an image's time)
            try:
                item = self.dataset[index]
            except CorruptSampleError as err:
                if not self.skip_corrupt:
                    raise
                log.warning("skipping corrupt sample %s", err)
                return Skipped(str(err))
            except Exception as err:  # any other failure: say which sample and file
                name_sample_in_error(err, self.dataset, index)
                raise
        return sourced(item, sample_source(self.dataset, index) or f"sample {index}")


def collate_skipping(samples: Sequence[Any]) -> dict[str, Any]:
    """Collate dict samples, dropping skipped ones (``None`` or :class:`Skipped`); ``batch["_skipped"]``
    counts them and ``batch["_skipped_where"]`` (present when some were skipped) names them."""
    kept = [s for s in samples if s is not None and not isinstance(s, Skipped)]
    if kept and isinstance(kept[0], dict) and any(set(s) != set(kept[0]) for s in kept[1:]):
        raise DataError(f"cannot batch these samples: {mismatch(kept)}")  # default_collate would drop keys
    raw = [k for k, v in kept[0].items() if isinstance(v, (bytes, bytearray))] if kept and isinstance(kept[0], dict) \
        else []  # encoded bytes (a shard member decoded on the device) collate to a list, as strings do
    try:
        batch = default_collate([{k: v for k, v in s.items() if k not in raw} for s in kept] if raw else kept) \
            if kept else {}
    except (RuntimeError, TypeError, KeyError) as err:
        raise DataError(f"cannot batch these samples: {mismatch(kept) or err}") from err
    batch = dict(batch)
    for key in raw:
        batch[key] = [s[key] for s in kept]
    batch[SKIPPED_KEY] = len(samples) - len(kept)
    where = [s.reason for s in samples if isinstance(s, Skipped)]
    if where:
        batch[SKIPPED_WHERE_KEY] = where
    return batch


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
    return type(value).__name__


def mismatch(items: Sequence[Any]) -> str | None:
    """Which key differs between which samples (shape, dtype, type or presence), naming their sources."""
    first = items[0]
    name0 = getattr(first, "source", "sample 0")
    for pos, item in enumerate(items[1:], 1):
        name = getattr(item, "source", f"sample {pos}")
        if not isinstance(item, dict) or not isinstance(first, dict):
            continue
        if set(item) != set(first):
            return (f"{name} has the keys {sorted(item)} but {name0} has {sorted(first)}")
        for key in first:
            a, b = first[key], item[key]
            if _describe(a) != _describe(b):
                return f"{key!r} is {_describe(b)} in {name} but {_describe(a)} in {name0}"
    return None


def make_loader(dataset: Dataset, sampler: ResumableSampler, batch_size: int, num_workers: int = 0,
                skip_corrupt: bool = False, pin_memory: bool = False, persistent_workers: bool = False,
                prefetch_factor: int = 4) -> DataLoader:
    """A DataLoader over ``SeededDataset(dataset)`` driven by ``sampler``.

    ``persistent_workers`` and ``prefetch_factor`` act with ``num_workers > 0`` only. Every sample
    carries its own seed (from the sampler), so a kept worker gives the same items as a fresh one.
    """
    if prefetch_factor < 1:
        raise ValueError(f"data.prefetch_factor must be at least 1, got {prefetch_factor}")
    workers = num_workers > 0
    return DataLoader(
        SeededDataset(dataset, skip_corrupt), batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=collate_skipping, pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers, prefetch_factor=prefetch_factor if workers else None,
    )

"""Paired multimodal data from the datasets of several plugins, joined on a shared key.

``paired`` builds one dataset per part (any registered dataset of any plugin) and pairs every
sample of the first part (the anchor) with a sample of each other part that has the same label:
a video of class *k* with a spoken clip of class *k*, an image with a time series of its class.
With ``augment`` the partner is drawn again every epoch (reproducibly: the loader seeds each
sample's augmentation); without it the pairing is fixed.

Packed to shards (``mmim pack``), a paired sample holds every part's own members under the part's
name (``<key>.video.mp4``, ``<key>.audio.flac``, one ``.json`` with each part's metadata), with the
partner of the fixed pairing: a shard is read sequentially, so the partner cannot be drawn again
every epoch from a stream; each part still decodes and augments through its own reader.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from mmim.data.errors import CorruptSampleError, DataError
from mmim.data.records import META, build_decoder, meta_of, require_protocol

log = logging.getLogger(__name__)


def sample_labels(dataset: Dataset, key: str = "label") -> list[int]:
    """Every sample's label without loading the samples where the dataset says them.

    Tried in order: ``dataset.sample_labels()``; a ``labels`` sequence/tensor with one int per
    sample; ``samples`` as ``[(path, label), ...]`` (ImageFolder-style); otherwise every item is
    read once and its ``key`` taken.
    """
    n = len(dataset)
    if callable(getattr(dataset, "sample_labels", None)):
        labels = list(dataset.sample_labels())
    else:
        labels = None
        own = getattr(dataset, "labels", None)
        if isinstance(own, torch.Tensor) and own.dim() == 1:
            labels = own.tolist()
        elif isinstance(own, Sequence) and not isinstance(own, str) and len(own) == n and \
                all(isinstance(v, int) for v in own[:8]):
            labels = list(own)
        samples = getattr(dataset, "samples", None)
        if labels is None and isinstance(samples, Sequence) and len(samples) == n and n and \
                isinstance(samples[0], tuple) and len(samples[0]) >= 2 and isinstance(samples[0][1], int):
            labels = [s[1] for s in samples]
        if labels is None:
            log.info("reading all %d samples of %s once for their %r", n, type(dataset).__name__, key)
            labels = [int(dataset[i][key]) for i in range(n)]
    if len(labels) != n:
        raise DataError(f"{type(dataset).__name__}: {len(labels)} labels for {n} samples")
    return [int(v) for v in labels]


class PairedDataset(Dataset):
    """Samples of several datasets joined on their labels.

    Args:
        split, augment: passed to every part.
        parts: ``{part name: dataset spec}`` (``{"name": registered dataset, **options}``); the
            first part is the anchor: the paired set has its length, order and labels.
        pair_by: the item key holding the label (kept once in the output).
        seed: salt of the fixed (non-augmenting) pairing.

    Items: the union of the parts' items; keys other than ``pair_by`` must not collide.
    """

    @staticmethod
    def example_options(root: Any) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin core``): procedural point
        primitives paired by class with embedded Fashion-MNIST images (no files)."""
        return {"parts": {"points": {"name": "primitives", "num_samples": 24, "num_points": 64},
                          "image": {"name": "fashion_mnist", "max_samples": 60}}}

    def __init__(self, split: str, augment: bool, parts: dict[str, dict[str, Any]], pair_by: str = "label",
                 seed: int = 0) -> None:
        from mmim import registry

        if len(parts) < 2:
            raise DataError(f"paired: give at least two parts, got {list(parts)}")
        self.parts = {name: registry.build("dataset", spec, where=f"data.dataset.parts.{name}", split=split,
                                           augment=augment) for name, spec in parts.items()}
        self.names = list(self.parts)
        self.pair_by, self.augment, self.seed = pair_by, augment, seed
        anchor = self.parts[self.names[0]]
        self.labels = sample_labels(anchor, pair_by)
        self.num_classes = getattr(anchor, "num_classes", None)
        self.classes = getattr(anchor, "classes", None)
        self.by_label: dict[str, dict[int, list[int]]] = {}
        for name in self.names[1:]:
            groups: dict[int, list[int]] = {}
            for i, label in enumerate(sample_labels(self.parts[name], pair_by)):
                groups.setdefault(label, []).append(i)
            lacking = sorted(set(self.labels) - set(groups))
            if lacking:
                raise DataError(f"paired: part {name!r} ({split}) has no sample with {pair_by} {lacking[:10]} that part "
                                f"{self.names[0]!r} has, so those samples cannot be paired")
            self.by_label[name] = groups

    def __len__(self) -> int:
        return len(self.labels)

    def partner(self, name: str, index: int, fixed: bool = False) -> int:
        """The index in part ``name`` paired with anchor sample ``index`` (``fixed``: the
        non-augmenting pairing, whatever ``augment`` says)."""
        group = self.by_label[name][self.labels[index]]
        if self.augment and not fixed:  # the loader seeds each sample's augmentation: reproducible, new every epoch
            return group[int(torch.randint(len(group), ()))]
        return group[zlib.crc32(f"{self.seed}:{name}:{index}".encode()) % len(group)]

    def _join(self, items: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """One item from the parts' items (the anchor's first), checking labels and key clashes."""
        out = dict(items[self.names[0]])
        for name in self.names[1:]:
            for key, value in items[name].items():
                if key == self.pair_by:
                    if int(value) != int(out[key]):
                        raise DataError(f"paired: part {name!r} gave {key} {int(value)} for anchor {key} {int(out[key])}")
                    continue
                if key in out:
                    raise DataError(f"paired: parts {self.names[0]!r} and {name!r} both give the item key {key!r}; "
                                    f"rename one (e.g. the dataset's output key option)")
                out[key] = value
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        items = {self.names[0]: self.parts[self.names[0]][index]}
        for name in self.names[1:]:
            items[name] = self.parts[name][self.partner(name, index)]
        return self._join(items)

    @property
    def device_transforms(self) -> dict[str, Any]:
        """Every part's finishing steps on the device (its items keep their keys in the joined item)."""
        from mmim.data.device import device_transforms

        out: dict[str, Any] = {}
        for part in self.parts.values():
            out.update(device_transforms(part))
        return out

    # -- the shard protocol -------------------------------------------------------------------

    def _check_part_names(self) -> None:
        for name in self.names:
            if not name or "." in name or name != name.lower():
                raise DataError(f"paired: part name {name!r} cannot name shard members: use lower case without dots")

    def shard_record(self, index: int) -> dict[str, Any]:
        """Every part's members as ``<part>.<ext>`` (the partner of the fixed pairing) and one
        ``.json`` holding the label and each part's metadata."""
        self._check_part_names()
        record: dict[str, Any] = {}
        meta: dict[str, Any] = {self.pair_by: self.labels[index], "parts": {}}
        for name in self.names:
            part = self.parts[name]
            require_protocol(part, f"paired part {name!r}")
            sub = part.shard_record(index if name == self.names[0] else self.partner(name, index, fixed=True))
            for ext, value in sub.items():
                if ext == META:
                    meta["parts"][name] = json.loads(value) if isinstance(value, (bytes, bytearray)) else value
                else:
                    record[f"{name}.{ext}"] = value
        record[META] = meta
        return record

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        """The paired item: each part decodes its own members with its own reader."""
        meta = meta_of(record, where)
        metas = meta.get("parts")
        if not isinstance(metas, dict):
            raise CorruptSampleError(where, "the .json member has no per-part metadata ('parts'): not a paired record")
        items = {}
        for name in self.names:
            sub = {ext[len(name) + 1:]: value for ext, value in record.items() if ext.startswith(f"{name}.")}
            if not sub or name not in metas:
                raise CorruptSampleError(where, f"no members of part {name!r} (found {sorted(record)})")
            sub[META] = metas[name]
            items[name] = self.parts[name].decode_record(sub, f"{where} (part {name!r})")
        return self._join(items)

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, parts: dict[str, dict[str, Any]], pair_by: str = "label",
                      seed: int = 0) -> PairedDataset:
        """A paired dataset that only decodes shard records: each part is built as its own shard
        decoder (no files needed where the part offers one), no pairing table."""
        if len(parts) < 2:
            raise DataError(f"paired: give at least two parts, got {list(parts)}")
        self = cls.__new__(cls)
        self.parts = {name: build_decoder(spec, split, augment) for name, spec in parts.items()}
        self.names = list(self.parts)
        self.pair_by, self.augment, self.seed = pair_by, augment, seed
        anchor = self.parts[self.names[0]]
        self.num_classes = getattr(anchor, "num_classes", None)
        self.classes = getattr(anchor, "classes", None)
        self.labels, self.by_label = [], {}
        self._check_part_names()
        return self

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={type(p).__name__}({len(p)})" for n, p in self.parts.items())
        return f"PairedDataset({parts}, pair_by={self.pair_by!r}, n={len(self)})"

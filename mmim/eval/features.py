"""Extract frozen, pooled encoder features of a labelled dataset."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mmim.data.device import device_transforms, to_device
from mmim.data.loading import collate_skipping
from mmim.data.sources import SourceNaming
from mmim.model import MaskedModel

_LABEL_KEY = "label"


@torch.no_grad()
def extract_features(model: MaskedModel, dataset: Dataset, batch_size: int = 256, pool: str = "mean",
                     device: torch.device | str = "cpu", num_workers: int = 0,
                     progress: str | None = None) -> tuple[Tensor, Tensor]:
    """Features ``(N, D)`` float32 and labels ``(N,)`` int64, in dataset order, every token visible.
    ``progress``: the label of a progress bar over the samples (shown on a terminal)."""
    was_training = model.training
    model.eval()
    ordered = isinstance(dataset, IterableDataset)  # shards read in order: their errors name shard and member
    loader = DataLoader(dataset if ordered else SourceNaming(dataset), batch_size=batch_size, shuffle=False,
                        num_workers=0 if ordered else num_workers, collate_fn=collate_skipping)
    feats, labels = [], []
    finish = device_transforms(dataset)
    bar = progress_bar(None, progress, "sample", len(dataset) if hasattr(dataset, "__len__") else None)
    for batch in loader:
        if _LABEL_KEY not in batch:
            raise KeyError(f"evaluation needs labelled samples (a {_LABEL_KEY!r} key); the dataset gives {sorted(batch)}")
        inputs = to_device(batch, device, finish, tensors_only=True)
        feats.append(model.features(inputs, pool=pool).float().cpu())
        labels.append(torch.as_tensor(batch[_LABEL_KEY]).long().reshape(-1))
        if bar is not None:
            bar.update(labels[-1].numel())
    if bar is not None:
        bar.close()
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def progress_bar(items: Iterable[Any] | None, label: str | None, unit: str, total: int | None) -> Any:
    """A tqdm bar labelled ``label`` on stderr when that is a terminal (``items`` wrapped, or a bar to
    ``update`` when ``items`` is None); otherwise ``items`` itself (``None`` for a bar)."""
    if label is None or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, unit=unit, total=total, leave=False, dynamic_ncols=True, file=sys.stderr)

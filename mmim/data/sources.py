"""Naming the file behind a sample, so an error raised while reading a dataset says which file failed.

A dataset can say where sample ``index`` comes from with a ``sample_source(index) -> str`` method; otherwise
the first path found in ``dataset.samples[index]`` / ``files[index]`` / ``paths[index]`` (a path, a tuple
starting with one, or a dict of them) is used, through ``torch.utils.data.Subset`` wrappers.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset, Subset

from mmim.data.errors import CorruptSampleError


def _as_path(entry: Any) -> str | None:
    if isinstance(entry, (str, os.PathLike)):
        return str(entry)
    if isinstance(entry, (tuple, list)) and entry:
        return _as_path(entry[0])
    if isinstance(entry, dict):
        paths = [p for p in (_as_path(v) for v in entry.values()) if p]
        return ", ".join(paths) or None
    return None


def sample_source(dataset: Dataset, index: int) -> str | None:
    """The file (or files) sample ``index`` of ``dataset`` is read from, or None if it cannot tell."""
    hook = getattr(dataset, "sample_source", None)
    if callable(hook):
        return str(hook(index))
    if isinstance(dataset, Subset):
        return sample_source(dataset.dataset, dataset.indices[index])
    for attr in ("samples", "files", "paths"):
        items = getattr(dataset, attr, None)
        if isinstance(items, (list, tuple)) and -len(items) <= index < len(items):
            return _as_path(items[index])
    return None


def name_sample_in_error(err: BaseException, dataset: Dataset, index: int) -> None:
    """Make ``err``'s message name sample ``index`` and its file (in place; the type is kept).

    A :class:`~mmim.data.CorruptSampleError`, or a message that already contains the file, is left as it
    is. The first string argument gets `` (while reading sample 3 of ImageFolder: /data/x.png)``; an
    exception without one (``OSError(errno, ...)``) gets the same text as a note (Python 3.11+).
    """
    if isinstance(err, CorruptSampleError):
        return
    source = sample_source(dataset, index)
    if source and source in str(err):
        return
    where = f"while reading sample {index} of {type(dataset).__name__}" + (f": {source}" if source else "")
    if err.args and isinstance(err.args[0], str) and not isinstance(err, KeyError):
        err.args = (f"{err.args[0]} ({where})", *err.args[1:])
    elif hasattr(err, "add_note"):
        err.add_note(where)


class SourceNaming(Dataset):
    """``dataset`` whose reading errors name the sample's file (:func:`name_sample_in_error`)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as err:
            name_sample_in_error(err, self.dataset, index)
            raise

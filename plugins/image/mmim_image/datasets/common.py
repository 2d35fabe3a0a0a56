"""Helpers shared by the image datasets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def subset_indices(n: int, max_samples: int | None) -> Tensor:
    """Indices of at most ``max_samples`` of ``n`` samples, evenly spread and deterministic.

    Spreading (rather than taking the first ``max_samples``) keeps every class of a class-sorted
    list such as an image folder.

    Args:
        n: number of samples available.
        max_samples: how many to keep; ``None`` keeps all.

    Returns:
        ``(min(n, max_samples),)`` ``int64`` strictly increasing indices.

    Raises:
        ValueError: ``max_samples`` is not a positive int.
    """
    if max_samples is None:
        return torch.arange(n)
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples <= 0:
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")
    if max_samples >= n:
        return torch.arange(n)
    return torch.arange(max_samples) * n // max_samples


def check_split(split: str) -> str:
    """``split`` if it is a non-empty string without path separators, else ValueError."""
    if not isinstance(split, str) or not split or "/" in split or "\\" in split or split in (".", ".."):
        raise ValueError(f"split must be a plain name such as 'train' or 'val', got {split!r}")
    return split


NORMALIZE = ("host", "device")


def on_device(normalize: str) -> bool:
    """``normalize`` (``"host"``: float32 normalised items; ``"device"``: ``uint8`` items, normalised
    on the device by the dataset's ``device_transforms``) as a flag; ValueError otherwise."""
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    return normalize == "device"


def image_device_transforms(transform: Any, teacher_view: bool) -> dict[str, Any]:
    """The ``device_transforms`` of an image dataset whose ``transform`` may leave normalisation to the device."""
    if not getattr(transform, "on_device", False):
        return {}
    finish = transform.device_transform()
    return {"image": finish, **({"image_teacher": finish} if teacher_view else {})}

"""Host to device: one path for every batch (training, evaluation, fine-tuning, visualization).

A dataset may hand its batches over in a compact form and finish them on the device: 8-bit
pixels travel as ``uint8`` (a quarter of the bytes of ``float32`` through worker shared memory,
pinned memory and the PCIe copy) and are scaled and normalised by the accelerator, where that
costs nothing next to the step. Such a dataset lists the finishing steps as ``device_transforms``,
``{item key: callable(batched tensor on the device) -> tensor}``; :func:`to_device` moves a
batch and applies them. A finishing step with ``takes_batch = True`` is handed the whole moved batch
instead (it may read other keys: a video plan's source file for decoding on the GPU,
:mod:`mmim_video.gpu`). Datasets without the attribute are moved unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mmim.data.errors import DataError

DeviceTransforms = Mapping[str, Callable[[Tensor], Tensor]]


class DeviceNormalize:
    """``uint8`` pixels -> ``float32`` ``(x / 255 - mean) / std`` per channel, on the batch's device.

    The same float32 operations as the host path (``to_dtype(scale=True)`` then ``Normalize``), so
    the values are identical (elementwise IEEE operations) wherever it runs.

    Args:
        mean, std: one value per channel, of ``[0, 1]`` pixels.
        channel_dim: the channel axis of one *item* (``0`` for ``(C, H, W)``); the batch adds one.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channel_dim: int = 0) -> None:
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"DeviceNormalize: mean {tuple(mean)} and std {tuple(std)} must have one (positive) "
                             f"std per mean")
        self.mean, self.std, self.channel_dim = tuple(float(m) for m in mean), tuple(float(s) for s in std), channel_dim

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8:
            raise DataError(f"device normalisation expects uint8 pixels, got {x.dtype} {tuple(x.shape)}")
        shape = [1] * x.dim()
        shape[self.channel_dim + 1] = len(self.mean)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        # torchvision's operations (to_dtype(scale=True), then Normalize), in its order: equal values
        return x.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"DeviceNormalize(mean={self.mean}, std={self.std})"


def device_transforms(dataset: Any) -> DeviceTransforms:
    """The finishing steps ``dataset`` (or a dataset it wraps, as ``.dataset``) asks for; ``{}`` if none."""
    seen = 0
    while dataset is not None and seen < 8:
        found = getattr(dataset, "device_transforms", None)
        if found:
            return dict(found)
        dataset, seen = getattr(dataset, "dataset", None), seen + 1
    return {}


def to_device(batch: Mapping[str, Any], device: torch.device | str, transforms: DeviceTransforms | None = None,
              tensors_only: bool = False) -> dict[str, Any]:
    """``batch`` with its tensors on ``device`` (asynchronous copies from pinned memory), then each
    key's device transform applied; ``tensors_only`` drops the other entries."""
    out = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
           if not tensors_only or isinstance(v, Tensor)}
    for key, finish in (transforms or {}).items():
        if key in out:
            out[key] = finish(out) if getattr(finish, "takes_batch", False) else finish(out[key])
    return out

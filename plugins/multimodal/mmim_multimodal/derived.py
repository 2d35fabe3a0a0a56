"""Image + derived modalities, as MultiMAE's pseudo-labelled setup: every image comes with a
depth-like map and a semantic map computed from it by fixed "labellers" (MultiMAE used DPT
depth and Mask2Former segmentation on ImageNet; here they are computed in torch, offline).

- ``depth``: how deep inside the object each pixel lies — the number of 3x3 erosions of the
  object silhouette it survives (a chessboard distance transform), blurred, then standardised per
  image as MultiMAE's pre-training does (mean/std of the central 80% of the sorted values).
- ``semseg``: class-agnostic segments: 0 = background, 1..``bands`` = intensity bands of the
  object's pixels (per-image quantiles), at ``1/semseg_stride`` resolution.

Both are computed after the image's augmentation, so the three stay aligned.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mmim import registry


def erosion_depth(silhouette: Tensor, steps: int) -> Tensor:
    """``(H, W)`` bool -> float: how many 3x3 erosions each pixel survives (0 outside)."""
    x = silhouette.float()[None, None]
    total = torch.zeros_like(x)
    for _ in range(steps):
        total = total + x
        x = -F.max_pool2d(-x, 3, stride=1, padding=1)  # erosion; the image border counts as background
        if not x.any():
            break
    return total[0, 0]


def truncated_standardize(x: Tensor, low: float = 0.1, high: float = 0.9, eps: float = 1e-6) -> Tensor:
    """MultiMAE's depth standardisation: mean and (unbiased) variance of the central sorted values."""
    flat = x.flatten().sort().values
    n = flat.numel()
    kept = flat[int(low * n): int(high * n)]
    var = kept.var() if kept.numel() > 1 else torch.zeros(())
    return (x - kept.mean()) / torch.sqrt(var + eps)


def intensity_segments(raw: Tensor, silhouette: Tensor, bands: int) -> Tensor:
    """``(H, W)`` int64: 0 background, ``1..bands`` per-image intensity quantile bands of the object."""
    out = torch.zeros(raw.shape, dtype=torch.long)
    values = raw[silhouette]
    if values.numel() == 0:
        return out
    edges = torch.quantile(values, torch.linspace(0, 1, bands + 1)[1:-1])
    out[silhouette] = torch.bucketize(values, edges) + 1
    return out


class ImageDerived(Dataset):
    """An image dataset (any plugin's; default: the embedded Fashion-MNIST) with derived ``depth``
    and ``semseg`` maps.

    Args:
        split, augment: passed to the image dataset.
        image: the image dataset spec; its items must hold ``image`` ``(1 or 3, H, W)``, normalised
            with ``mean``/``std`` (undone to find the object).
        mean, std: the image normalisation (Fashion-MNIST's by default).
        threshold: ``[0, 1]`` intensity above which a pixel belongs to the object.
        depth_steps: erosion steps (the largest depth value).
        bands: intensity bands of the semantic map (classes ``0..bands``).
        semseg_stride: the semantic map's resolution divisor (MultiMAE: 4; 1 keeps the image size).

    Items: ``{"image", "depth": (1, H, W), "semseg": (H/s, W/s) int64, "label"}``.
    """

    def __init__(self, split: str, augment: bool, image: dict[str, Any] | None = None, mean: float = 0.2860,
                 std: float = 0.3530, threshold: float = 0.05, depth_steps: int = 8, bands: int = 3,
                 semseg_stride: int = 1) -> None:
        spec = image or {"name": "fashion_mnist"}
        self.images = self._host_normalised(
            registry.build("dataset", spec, where="data.dataset.image", split=split, augment=augment))
        self.mean, self.std, self.threshold = mean, std, threshold
        self.depth_steps, self.bands, self.semseg_stride = depth_steps, bands, semseg_stride
        self.num_semseg_classes = bands + 1
        self.num_classes = getattr(self.images, "num_classes", None)
        self.classes = getattr(self.images, "classes", None)
        self.labels = getattr(self.images, "labels", None)

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def _host_normalised(images: Any) -> Any:
        """``images``, unless it leaves normalisation to the device: depth and segments are derived
        on the host from normalised pixels."""
        if getattr(images, "device_transforms", None):
            raise ValueError("image_derived derives depth and segments from normalised pixels in the loader: its "
                             "image dataset must use normalize: host")
        return images

    def derive(self, image: Tensor) -> tuple[Tensor, Tensor]:
        raw = (image * self.std + self.mean).mean(0)  # grey [0, 1]
        silhouette = raw > self.threshold
        depth = erosion_depth(silhouette, self.depth_steps)
        depth = F.avg_pool2d(depth[None, None], 3, stride=1, padding=1, count_include_pad=False)[0]
        depth = truncated_standardize(depth)
        s = self.semseg_stride
        small = F.avg_pool2d(raw[None, None], s)[0, 0] if s > 1 else raw
        semseg = intensity_segments(small, small > self.threshold, self.bands)
        return depth, semseg

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.images[index])
        item["depth"], item["semseg"] = self.derive(item["image"])
        return item

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, image: dict[str, Any] | None = None, **options: Any) -> ImageDerived:
        """Decodes shard records with the image dataset's own decoder (its files are not needed)."""
        from mmim.data.records import build_decoder

        self = cls(split, augment, {"name": "fashion_mnist", "max_samples": 1}, **options)
        self.images = self._host_normalised(build_decoder(image or {"name": "fashion_mnist"}, split, augment))
        return self

    # the shard protocol (mmim.data.records): the image's record; depth and semseg are derived again
    def shard_record(self, index: int) -> dict[str, Any]:
        return self.images.shard_record(index)

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        item = dict(self.images.decode_record(record, where))
        item["depth"], item["semseg"] = self.derive(item["image"])
        return item

    def __repr__(self) -> str:
        return f"ImageDerived({self.images!r}, bands={self.bands}, semseg_stride={self.semseg_stride})"

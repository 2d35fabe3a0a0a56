"""What every point-cloud dataset does to a raw cloud: check it, sample N points, normalise, augment.

Items are ``{"points": (N, 3) float32, "label": int}``. Augmentation draws from torch's global
RNG only (the engine seeds it per sample), so it is reproducible and resumable.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmim.data import CorruptSampleError, DataError
from mmim.data.records import file_record, main_member, meta_of, npy_bytes, read_npy, spilled
from mmim_points.ops.fps import farthest_point_sample

SAMPLING = ("fps", "random", "first")


def check_cloud(points: Any, where: str, min_points: int = 1) -> Tensor:
    """``points`` (array-like ``(N, >=3)``) -> ``(N, 3)`` float32 tensor, or CorruptSampleError naming ``where``."""
    try:
        pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise CorruptSampleError(where, f"not a numeric point array ({err})") from None
    if pts.dim() != 2 or pts.shape[1] < 3:
        raise CorruptSampleError(where, f"expected points with at least 3 columns (x, y, z), got shape {tuple(pts.shape)}")
    pts = pts[:, :3]
    if pts.shape[0] == 0:
        raise CorruptSampleError(where, "no points")
    bad = ~torch.isfinite(pts).all(dim=1)
    if bad.any():
        raise CorruptSampleError(where, f"{int(bad.sum())} points with NaN/inf coordinates (first at row {int(bad.nonzero()[0, 0])})")
    if pts.shape[0] < min_points:
        raise CorruptSampleError(where, f"{pts.shape[0]} points, fewer than min_points={min_points}")
    return pts.contiguous()


def sample_points(points: Tensor, num_points: int, method: str = "fps") -> Tensor:
    """``points`` ``(M, 3)`` -> ``(num_points, 3)``.

    ``fps``: farthest-point sampling from index 0 (deterministic; Point-MAE's uniform sampling);
    ``first``: the first ``num_points``; ``random``: a random subset (torch's global RNG). Clouds
    with fewer points are padded by repeating them in order (deterministic).
    """
    if method not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {method!r}")
    have = points.shape[0]
    if have < num_points:
        return points[torch.arange(num_points) % have]
    if have == num_points:
        return points
    if method == "first":
        return points[:num_points]
    if method == "random":
        return points[torch.randperm(have)[:num_points]]
    return points[farthest_point_sample(points[None], num_points, skip_near_origin=False)[0]]


def normalize_unit_sphere(points: Tensor) -> Tensor:
    """Point-MAE's ``pc_norm``: subtract the centroid, divide by the largest norm (skipped if 0)."""
    centred = points - points.mean(dim=0, keepdim=True)
    scale = centred.norm(dim=1).max()
    return centred / scale if scale > 0 else centred


def scale_translate(points: Tensor, scale: tuple[float, float] = (2 / 3, 3 / 2), translate: float = 0.2) -> Tensor:
    """Point-MAE's ``PointcloudScaleAndTranslate``: per-axis scale ``U(scale)`` then shift ``U(-t, t)``."""
    low, high = scale
    s = low + (high - low) * torch.rand(3)
    t = (torch.rand(3) * 2 - 1) * translate
    return points * s + t


def vote_views(points: Tensor, generator: torch.Generator, scale: tuple[float, float] = (2 / 3, 3 / 2),
               translate: float = 0.2) -> Tensor:
    """One test-time-voting copy of a batch ``(B, N, 3)``: per cloud, :func:`scale_translate` and a
    random point order (Point-MAE's grouping starts FPS at index 0, so the patches move too).
    All randomness from ``generator``."""
    b, n, _ = points.shape
    low, high = scale
    s = low + (high - low) * torch.rand(b, 1, 3, generator=generator)
    t = (torch.rand(b, 1, 3, generator=generator) * 2 - 1) * translate
    order = torch.rand(b, n, generator=generator).argsort(dim=1)
    shuffled = points.gather(1, order[..., None].expand(b, n, points.shape[-1]).to(points.device))
    return shuffled * s.to(points) + t.to(points)


class PointCloudDataset(Dataset):
    """Base class: subclasses fill ``self.labels``/``self.classes`` and implement :meth:`load_raw`.

    Args:
        split: split name.
        augment: apply :func:`scale_translate` and shuffle the point order.
        num_points: points per returned cloud.
        sampling: ``fps``, ``random`` or ``first`` (see :func:`sample_points`).
        normalize: centre and scale into the unit sphere.
        min_points: clouds with fewer raw points are corrupt (Point-MAE needs at least group_size).
        scale, translate: augmentation ranges.
    """

    classes: list[str]
    labels: list[int]

    def __init__(self, split: str, augment: bool, num_points: int = 1024, sampling: str = "fps", normalize: bool = True,
                 min_points: int = 32, scale: tuple[float, float] = (2 / 3, 3 / 2), translate: float = 0.2) -> None:
        if not isinstance(split, str) or not split or "/" in split or "\\" in split or split in (".", ".."):
            raise ValueError(f"split must be a plain name such as 'train' or 'test', got {split!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if num_points < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.split, self.augment, self.num_points, self.sampling = split, augment, num_points, sampling
        self.normalize, self.min_points = normalize, min_points
        self.scale, self.translate = (float(scale[0]), float(scale[1])), float(translate)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def load_raw(self, index: int) -> tuple[Any, str]:
        """The raw cloud of sample ``index`` (array-like ``(M, >=3)``) and a name for errors (its file)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw, where = self.load_raw(index)
        points = sample_points(check_cloud(raw, where, self.min_points), self.num_points, self.sampling)
        if self.normalize:
            points = normalize_unit_sphere(points)
        if self.augment:
            points = scale_translate(points, self.scale, self.translate)[torch.randperm(points.shape[0])]
        # a copy: the raw cloud may be a view of data held in memory (HDF5 arrays, the primitives cache)
        return {"points": points.to(torch.float32, copy=True), "label": int(self.labels[index])}

    def source_file(self, index: int) -> Path | None:
        """The file sample ``index`` alone is read from, when it has one (shards then keep that file's
        original bytes, decoded by :meth:`read_source`); ``None`` when samples share a file (HDF5)
        or are generated: shards then hold the raw cloud as ``.npy``."""
        return None

    def read_source(self, path: Path, source: Path) -> Any:
        """Read a sample's file at ``path``, a copy of the original ``source`` (as :meth:`load_raw` does)."""
        raise NotImplementedError

    # the shard protocol (mmim.data.records): the sample's own file, original bytes (PLY, OFF, OBJ,
    # PCD, TXT, NPY, ...), decoded by the same reader; or, without one, the raw cloud as .npy
    def shard_record(self, index: int) -> dict[str, Any]:
        source = self.source_file(index)
        if source is not None:
            return file_record(source, {"label": int(self.labels[index]), "original": True})
        raw, where = self.load_raw(index)
        return {"npy": npy_bytes(raw), "json": {"label": int(self.labels[index]), "source": where}}

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        ext, data = main_member(record, where)
        meta = meta_of(record, where)
        if meta.get("original"):
            with spilled(ext, data) as path:
                raw = self.read_source(Path(path), Path(str(meta.get("source", where))))
        else:
            raw = read_npy(data, where)
        view = copy.copy(self)
        view.labels = [int(meta["label"])]
        view.load_raw = lambda _index: (raw, where)
        return view[0]

    def vote_augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """The fine-tuning voting hook (``finetune.votes``): a copy of a collated test batch with every
        cloud scaled, translated (this dataset's ranges) and reordered (:func:`vote_views`).

        Point-MAE's ``test_vote`` draws 1,024 of 1,200 FPS points per vote, then scales and
        translates; here test clouds already have ``num_points``, so the order changes instead,
        which moves the FPS patch centers.
        """
        return {**batch, "points": vote_views(batch["points"], generator, self.scale, self.translate)}


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-empty stripped lines of a list file with their 1-based line numbers; DataError if unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read {what} ({err})") from None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def check_root(root: str | Path | None, what: str) -> Path:
    """``root`` as an existing directory, or DataError naming it."""
    if root is None:
        raise DataError(f"{what}: give data.dataset.root, the folder holding the data")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: {what} root folder does not exist")
    return path

"""The embedded default: procedural point clouds of ten primitive shapes, made at construction.

Each sample is one of ten classes (sphere, box, cylinder, cone, torus, capsule, pyramid, bowl,
dumbbell, tetrahedron), sampled on its analytic surface (uniform in the canonical shape's
parameters), stretched per axis by ``U(1 - aspect, 1 + aspect)``, rotated uniformly at random,
optionally jittered, and normalised to the unit sphere. Everything comes from a
``torch.Generator`` seeded by ``(seed, split)``: the same arguments always give the same clouds,
with no file shipped and no dependency beyond torch. (The trimesh primitives of the same names
would do; analytic sampling is faster and keeps the default run free of optional packages.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from mmim_points.datasets.common import PointCloudDataset, normalize_unit_sphere

Sampler = Callable[[int, torch.Generator], Tensor]


def _u(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g)


def _sphere(n: int, g: torch.Generator) -> Tensor:
    v = torch.randn(n, 3, generator=g)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _box(n: int, g: torch.Generator) -> Tensor:
    p = _u(n * 3, g).reshape(n, 3) * 2 - 1
    axis = torch.randint(0, 3, (n,), generator=g)
    side = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    p[torch.arange(n), axis] = side
    return p


def _disk(n: int, g: torch.Generator, r: float, z: float) -> Tensor:
    rad, th = r * _u(n, g).sqrt(), 2 * math.pi * _u(n, g)
    return torch.stack([rad * th.cos(), rad * th.sin(), torch.full((n,), z)], 1)


def _mix(parts: list[tuple[float, Sampler]], n: int, g: torch.Generator) -> Tensor:
    """Points from several surface parts, in proportion to their (given) areas."""
    weights = torch.tensor([a for a, _ in parts])
    which = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=g)
    out = torch.empty(n, 3)
    for i, (_, fn) in enumerate(parts):
        idx = (which == i).nonzero().flatten()
        if len(idx):
            out[idx] = fn(len(idx), g)
    return out


def _cylinder(n: int, g: torch.Generator) -> Tensor:
    def side(k, g):
        th = 2 * math.pi * _u(k, g)
        return torch.stack([0.5 * th.cos(), 0.5 * th.sin(), _u(k, g) * 2 - 1], 1)
    return _mix([(2 * math.pi * 0.5 * 2, side), (math.pi * 0.25, lambda k, g: _disk(k, g, 0.5, 1.0)),
                 (math.pi * 0.25, lambda k, g: _disk(k, g, 0.5, -1.0))], n, g)


def _cone(n: int, g: torch.Generator) -> Tensor:
    def side(k, g):
        t, th = _u(k, g).sqrt(), 2 * math.pi * _u(k, g)  # t: distance from the apex, area-uniform
        return torch.stack([0.7 * t * th.cos(), 0.7 * t * th.sin(), 1 - 2 * t], 1)
    return _mix([(math.pi * 0.7 * math.hypot(0.7, 2.0), side), (math.pi * 0.49, lambda k, g: _disk(k, g, 0.7, -1.0))], n, g)


def _torus(n: int, g: torch.Generator, big: float = 0.7, small: float = 0.25) -> Tensor:
    u, v = 2 * math.pi * _u(n, g), 2 * math.pi * _u(n, g)
    ring = big + small * v.cos()
    return torch.stack([ring * u.cos(), ring * u.sin(), small * v.sin()], 1)


def _capsule(n: int, g: torch.Generator) -> Tensor:
    def side(k, g):
        th = 2 * math.pi * _u(k, g)
        return torch.stack([0.4 * th.cos(), 0.4 * th.sin(), _u(k, g) * 1.2 - 0.6], 1)
    def cap(sign):
        def fn(k, g):
            s = _sphere(k, g) * 0.4
            s[:, 2] = s[:, 2].abs() * sign + 0.6 * sign
            return s
        return fn
    return _mix([(2 * math.pi * 0.4 * 1.2, side), (2 * math.pi * 0.16, cap(1.0)), (2 * math.pi * 0.16, cap(-1.0))], n, g)


def _triangles(corners: Tensor, n: int, g: torch.Generator) -> Tensor:
    """Area-weighted points on triangles ``corners`` ``(T, 3, 3)``."""
    area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=1)
    which = torch.multinomial(area / area.sum(), n, replacement=True, generator=g)
    a, b = _u(n, g)[:, None], _u(n, g)[:, None]
    flip = (a + b) > 1
    a, b = torch.where(flip, 1 - a, a), torch.where(flip, 1 - b, b)
    t = corners[which]
    return t[:, 0] + a * (t[:, 1] - t[:, 0]) + b * (t[:, 2] - t[:, 0])


def _pyramid(n: int, g: torch.Generator) -> Tensor:
    b = torch.tensor([[-1.0, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]])
    apex = torch.tensor([0.0, 0, 1])
    tris = [torch.stack([b[i], b[(i + 1) % 4], apex]) for i in range(4)] + [b[[0, 1, 2]], b[[0, 2, 3]]]
    return _triangles(torch.stack(tris), n, g)


def _tetrahedron(n: int, g: torch.Generator) -> Tensor:
    v = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    return _triangles(torch.stack([v[[0, 1, 2]], v[[0, 1, 3]], v[[0, 2, 3]], v[[1, 2, 3]]]), n, g)


def _bowl(n: int, g: torch.Generator) -> Tensor:
    s = _sphere(n, g)
    s[:, 2] = -s[:, 2].abs()  # open lower hemisphere
    return s


def _dumbbell(n: int, g: torch.Generator) -> Tensor:
    def ball(z):
        def fn(k, g):
            return _sphere(k, g) * 0.35 + torch.tensor([0.0, 0, z])
        return fn
    def rod(k, g):
        th = 2 * math.pi * _u(k, g)
        return torch.stack([0.1 * th.cos(), 0.1 * th.sin(), _u(k, g) * 1.3 - 0.65], 1)
    return _mix([(4 * math.pi * 0.1225, ball(0.65)), (4 * math.pi * 0.1225, ball(-0.65)), (2 * math.pi * 0.1 * 1.3, rod)], n, g)


SHAPES: dict[str, Sampler] = {
    "sphere": _sphere, "box": _box, "cylinder": _cylinder, "cone": _cone, "torus": _torus, "capsule": _capsule,
    "pyramid": _pyramid, "bowl": _bowl, "dumbbell": _dumbbell, "tetrahedron": _tetrahedron,
}
SPLIT_IDS = {"train": 0, "test": 1, "val": 2}


def random_rotation(g: torch.Generator) -> Tensor:
    """A rotation matrix ``(3, 3)`` uniform on SO(3) (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


@lru_cache(maxsize=8)
def make_primitives(split: str, num_samples: int, num_points: int, seed: int, aspect: float,
                    jitter: float) -> tuple[Tensor, Tensor]:
    """Clouds ``(num_samples, num_points, 3)`` and labels ``(num_samples,)``, balanced over :data:`SHAPES`."""
    split_id = SPLIT_IDS.get(split, sum(split.encode()) + 3)
    g = torch.Generator().manual_seed(seed * 1009 + split_id)
    samplers = list(SHAPES.values())
    labels = torch.arange(num_samples) % len(samplers)
    labels = labels[torch.randperm(num_samples, generator=g)]
    clouds = torch.empty(num_samples, num_points, 3)
    for i, label in enumerate(labels.tolist()):
        pts = samplers[label](num_points, g)
        stretch = 1 + aspect * (torch.rand(3, generator=g) * 2 - 1)
        pts = (pts * stretch) @ random_rotation(g).T
        if jitter:
            pts = pts + jitter * torch.randn(pts.shape, generator=g)
        clouds[i] = normalize_unit_sphere(pts)
    return clouds, labels


class Primitives(PointCloudDataset):
    """Procedural primitive shapes (10 classes), the points plugin's embedded default.

    Args:
        split: ``"train"``, ``"test"`` or ``"val"`` (any other name gives its own clouds too).
        augment: scale/translate augmentation and point shuffling.
        num_samples: clouds in the split (balanced classes).
        num_points: points per cloud.
        seed: generation seed (train and test differ by split).
        aspect: per-axis stretch ``U(1 - aspect, 1 + aspect)``.
        jitter: Gaussian noise std added to every point.
        **options: ``scale``, ``translate`` (see :class:`~mmim_points.datasets.common.PointCloudDataset`).
    """

    classes = list(SHAPES)

    def __init__(self, split: str, augment: bool, num_samples: int | None = None, num_points: int = 1024, seed: int = 0,
                 aspect: float = 0.4, jitter: float = 0.01, **options: Any) -> None:
        super().__init__(split, augment, num_points=num_points, sampling="first", normalize=False, min_points=1, **options)
        if num_samples is None:
            num_samples = 2000 if split == "train" else 500
        if not 0 <= aspect < 1:
            raise ValueError(f"aspect must be in [0, 1), got {aspect}")
        self.classes = list(SHAPES)
        self.clouds, labels = make_primitives(split, int(num_samples), int(num_points), int(seed), float(aspect), float(jitter))
        self.labels = labels.tolist()

    def load_raw(self, index: int) -> tuple[Any, str]:
        return self.clouds[index], f"primitives[{self.split}][{index}]"

"""Chamfer distances in plain batched torch, as Point-MAE's ``extensions/chamfer_dist`` defines them.

The official ``chamfer`` kernel returns, for two batched point sets ``x`` ``(B, N, 3)`` and ``y``
``(B, M, 3)``, ``dist1[b, i] = min_j |x_i - y_j|^2`` and ``dist2[b, j] = min_i |x_i - y_j|^2``
(squared, fp32, ``dx*dx + dy*dy + dz*dz``) with the argmin indices (first on ties); its backward
sends gradients through the nearest pairs. On top of it:

* ``ChamferDistanceL2`` = ``mean(dist1) + mean(dist2)`` (squared distances, no 1/2);
* ``ChamferDistanceL1`` = ``(mean(sqrt(dist1)) + mean(sqrt(dist2))) / 2``.

Here the nearest neighbours are searched without autograd in chunks of ``x`` (memory
``O(B·chunk·M)``), then the distances to the chosen neighbours are recomputed with autograd
(memory ``O(B·(N+M))``), which gives the kernel's values and gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmim_points.ops.knn import CHUNK_ELEMENTS, squared_distances


def nearest_neighbors(x: Tensor, y: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[Tensor, Tensor]:
    """Nearest point of ``y`` for every point of ``x`` and of ``x`` for every point of ``y``, in one pass.

    Args:
        x: ``(B, N, D)``.
        y: ``(B, M, D)``.
        chunk_elements: at most this many pairwise distances are held at once (rows of ``x`` chunked).

    Returns:
        ``idx1`` ``(B, N)`` indices into ``y`` and ``idx2`` ``(B, M)`` indices into ``x``, int64, the
        first (lowest) index on exact ties.
    """
    batch, n, _ = x.shape
    step = max(1, min(n, chunk_elements // max(1, batch * y.shape[1])))
    with torch.no_grad():
        xd, yd = x.detach(), y.detach()
        idx1 = []
        best2 = idx2 = None
        for s in range(0, n, step):
            d = squared_distances(xd[:, s : s + step], yd)  # (B, c, M)
            idx1.append(d.argmin(dim=2))
            val, arg = d.min(dim=1)  # first row on ties within the chunk
            if best2 is None:
                best2, idx2 = val, arg + s
            else:  # strictly smaller only: earlier chunks (lower indices) win ties
                better = val < best2
                best2, idx2 = torch.where(better, val, best2), torch.where(better, arg + s, idx2)
    assert idx2 is not None
    return torch.cat(idx1, dim=1), idx2


def _pair_distances(x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
    """``|x_i - y_idx[i]|^2`` ``(B, N)`` with autograd, summed over coordinates in order."""
    nearest = torch.gather(y, 1, idx.unsqueeze(-1).expand(-1, -1, y.shape[-1]))
    diff = x - nearest
    sq = diff * diff
    out = sq[..., 0]
    for c in range(1, sq.shape[-1]):
        out = out + sq[..., c]
    return out


def chamfer_distances(x: Tensor, y: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The chamfer kernel's outputs: ``dist1`` ``(B, N)``, ``dist2`` ``(B, M)``, ``idx1``, ``idx2``.

    Args:
        x: ``(B, N, D)`` (differentiable).
        y: ``(B, M, D)`` (differentiable).
        chunk_elements: memory bound for the nearest-neighbour search.

    Returns:
        squared nearest distances from ``x`` to ``y`` and from ``y`` to ``x``, and the int64
        indices of those nearest points.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"chamfer expects (B, N, D) and (B, M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError("chamfer distance of an empty point set is undefined")
    idx1, idx2 = nearest_neighbors(x, y, chunk_elements)
    return _pair_distances(x, y, idx1), _pair_distances(y, x, idx2), idx1, idx2


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` with a zero (not infinite) gradient where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def chamfer_l2(x: Tensor, y: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """Point-MAE's ``ChamferDistanceL2``: ``mean(dist1) + mean(dist2)`` over all points and clouds.

    Args:
        x: ``(B, N, D)`` predicted sets; y: ``(B, M, D)`` target sets.

    Returns:
        scalar.
    """
    d1, d2, _, _ = chamfer_distances(x, y, chunk_elements)
    return d1.mean() + d2.mean()


def chamfer_l1(x: Tensor, y: Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """Point-MAE's ``ChamferDistanceL1``: ``(mean(sqrt(dist1)) + mean(sqrt(dist2))) / 2``.

    Args:
        x: ``(B, N, D)`` predicted sets; y: ``(B, M, D)`` target sets.

    Returns:
        scalar.
    """
    d1, d2, _, _ = chamfer_distances(x, y, chunk_elements)
    return (safe_sqrt(d1).mean() + safe_sqrt(d2).mean()) / 2

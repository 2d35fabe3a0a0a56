"""Ball query in plain batched torch, with ``pointnet2_ops.ball_query``'s semantics.

For each query point the kernel scans reference points in index order and keeps the first
``nsample`` whose squared distance is strictly below ``radius**2``; the remaining slots repeat the
first point found, and a query with no point in its ball gets index 0 everywhere. The number of
points found is returned as well, so callers can tell padding from real neighbours (pytorch3d's
``ball_query`` marks padding with -1 instead).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmim_points.ops.knn import CHUNK_ELEMENTS, squared_distances


def ball_query(ref: Tensor, query: Tensor, radius: float, nsample: int,
               chunk_elements: int = CHUNK_ELEMENTS) -> tuple[Tensor, Tensor]:
    """The first ``nsample`` reference points (in index order) within ``radius`` of each query.

    Args:
        ref: ``(B, N, D)`` reference points.
        query: ``(B, S, D)`` query points.
        radius: ball radius; a point is inside when ``|q - p|^2 < radius**2``.
        nsample: slots per query.
        chunk_elements: at most this many distances are held at once (queries are chunked).

    Returns:
        ``idx`` ``(B, S, nsample)`` int64 (padded with the first index found, or 0 when none) and
        ``count`` ``(B, S)`` int64 number of real neighbours (``<= nsample``).
    """
    if ref.dim() != 3 or query.dim() != 3 or ref.shape[0] != query.shape[0] or ref.shape[2] != query.shape[2]:
        raise ValueError(f"ball_query expects ref (B, N, D) and query (B, S, D), got {tuple(ref.shape)} and {tuple(query.shape)}")
    if nsample < 1 or radius <= 0:
        raise ValueError(f"ball_query needs nsample >= 1 and radius > 0, got {nsample}, {radius}")
    batch, num_ref, _ = ref.shape
    dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    ref, query = ref.detach().to(dtype), query.detach().to(dtype)
    r2 = torch.tensor(radius, dtype=torch.float32).to(dtype) ** 2  # the kernel squares an fp32 radius
    step = max(1, min(query.shape[1], chunk_elements // max(1, batch * num_ref)))
    take = min(nsample, num_ref)
    index = torch.arange(num_ref, device=ref.device, dtype=torch.int64)
    idxs, counts = [], []
    with torch.no_grad():
        for start in range(0, query.shape[1], step):
            inside = squared_distances(query[:, start : start + step], ref) < r2  # (B, s, N)
            cand = torch.where(inside, index, num_ref)  # outside -> sentinel N
            first = torch.topk(cand, take, dim=-1, largest=False, sorted=True).values  # (B, s, take)
            count = inside.sum(-1).clamp_max(nsample)
            if take < nsample:
                first = torch.cat([first, first.new_full((*first.shape[:2], nsample - take), num_ref)], dim=-1)
            pad = torch.where(first[..., :1] == num_ref, 0, first[..., :1])  # first found, or 0
            idxs.append(torch.where(first == num_ref, pad, first))
            counts.append(count)
    return torch.cat(idxs, dim=1), torch.cat(counts, dim=1)

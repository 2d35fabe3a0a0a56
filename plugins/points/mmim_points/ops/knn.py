"""k-nearest neighbours in plain batched torch, with ``knn_cuda.KNN``'s exact order.

The official kernel computes squared distances as ``dx*dx + dy*dy + dz*dz`` in fp32 and sorts them
with a stable insertion sort: ascending distance, equal distances in increasing reference index.
A query point that is also a reference point is its own first neighbour (distance 0).

Exact ties matter (duplicated points, quantised coordinates), so the distances are computed from
coordinate differences (not the ``|a|^2 - 2ab + |b|^2`` expansion, which rounds differently) and
the stable order comes from one ``topk`` over a packed int64 key ``(float bits << 32) | index``:
for non-negative floats the bit pattern is monotone, so the key orders by distance then index.
Memory is ``O(B·S·N)`` per call, bounded further by processing queries in chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 22  # ~4M distances (~50 MB with the int64 key) per chunk of queries


def squared_distances(query: Tensor, ref: Tensor) -> Tensor:
    """Pairwise squared distances ``(B, S, N)`` from ``query`` ``(B, S, D)`` to ``ref`` ``(B, N, D)``.

    Summed over coordinates in order (``dx*dx + dy*dy + dz*dz`` for ``D = 3``), exactly as the
    CUDA kernels do, without forming a ``(B, S, N, D)`` tensor.
    """
    out = None
    for c in range(query.shape[-1]):
        diff = query[:, :, c, None] - ref[:, None, :, c]
        sq = diff * diff
        out = sq if out is None else out + sq
    assert out is not None
    return out


def _query_chunks(batch: int, num_query: int, num_ref: int, chunk_elements: int) -> int:
    return max(1, min(num_query, chunk_elements // max(1, batch * num_ref)))


def knn(ref: Tensor, query: Tensor, k: int, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest reference points of every query point.

    Args:
        ref: ``(B, N, D)`` reference points.
        query: ``(B, S, D)`` query points.
        k: neighbours per query, ``1 <= k <= N``.
        chunk_elements: at most this many distances are held at once (queries are chunked).

    Returns:
        ``dist2`` ``(B, S, k)`` squared distances (ascending) and ``idx`` ``(B, S, k)`` int64
        indices into ``ref``; equal distances come in increasing index order. ``knn_cuda`` returns
        ``sqrt(dist2)``.
    """
    if ref.dim() != 3 or query.dim() != 3 or ref.shape[0] != query.shape[0] or ref.shape[2] != query.shape[2]:
        raise ValueError(f"knn expects ref (B, N, D) and query (B, S, D), got {tuple(ref.shape)} and {tuple(query.shape)}")
    batch, num_ref, _ = ref.shape
    if not 1 <= k <= num_ref:
        raise ValueError(f"knn: k={k} must be between 1 and the number of reference points ({num_ref})")
    dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    ref, query = ref.detach().to(dtype), query.detach().to(dtype)
    step = _query_chunks(batch, query.shape[1], num_ref, chunk_elements)
    index = torch.arange(num_ref, device=ref.device, dtype=torch.int64)
    dists, idxs = [], []
    with torch.no_grad():
        for start in range(0, query.shape[1], step):
            d = squared_distances(query[:, start : start + step], ref)  # (B, s, N)
            if dtype == torch.float64:
                # fp64 bit patterns need all 64 bits: fall back to a stable sort
                vals, idx = torch.sort(d, dim=-1, stable=True)
                dists.append(vals[..., :k])
                idxs.append(idx[..., :k])
                continue
            key = (d.view(torch.int32).to(torch.int64) << 32) | index
            key = torch.topk(key, k, dim=-1, largest=False, sorted=True).values
            idx = key & 0xFFFFFFFF
            idxs.append(idx)
            dists.append(torch.gather(d, -1, idx))
    return torch.cat(dists, dim=1), torch.cat(idxs, dim=1)

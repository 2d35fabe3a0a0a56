"""Farthest-point sampling in plain batched torch, with the official CUDA kernel's exact semantics.

Point-MAE samples patch centers with ``pointnet2_ops.furthest_point_sample``. Its kernel:

* always returns index 0 first (no random start);
* keeps ``temp[k]``, the squared distance of point ``k`` to the nearest chosen point, starting at
  ``1e10``; after each pick ``temp[k] = min(temp[k], |p_k - p_old|^2)`` computed in fp32 as
  ``dx*dx + dy*dy + dz*dz`` (left to right);
* skips every point whose fp32 squared norm ``x*x + y*y + z*z`` is ``<= 1e-3``: such points are
  never updated and never chosen (the forced start, index 0, is the one exception);
* picks the argmax of ``temp``; when no point is selectable it picks 0;
* breaks ties like its thread layout: with ``bs = max(min(2**floor(log2(n)), 512), 1)`` threads,
  thread ``t`` scans ``k = t, t + bs, ...`` keeping the first ``k`` on ties, and the shared-memory
  tree reduction keeps the lower slot unless the upper one is strictly larger, so among threads
  holding the maximum the one with the smallest bit-reversed ``t`` (``log2(bs)`` bits) wins.

Here the tie-break is folded into a one-off permutation of the points: sorted by
``(bitreverse(k % bs), k // bs)`` the kernel's winner is simply the *first* maximum, which is
what ``torch.argmax`` returns. Every iteration is then one fused min/argmax over ``(B, N)``: time
``O(B·N·S)``, memory ``O(B·N)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NEAR_ORIGIN = 1e-3  # the kernel's ``mag <= 1e-3`` skip threshold (compared in double)
_INIT = 1e10  # the kernel's initial ``temp``


def kernel_block_size(n: int) -> int:
    """Threads per block the kernel launches for ``n`` points: ``max(min(2**floor(log2 n), 512), 1)``."""
    if n < 1:
        return 1
    return max(min(1 << int(math.log(n) / math.log(2)), 512), 1)


def _bit_reverse(values: Tensor, bits: int) -> Tensor:
    out = torch.zeros_like(values)
    for b in range(bits):
        out |= ((values >> b) & 1) << (bits - 1 - b)
    return out


def kernel_order(n: int, device: torch.device | str = "cpu") -> Tensor:
    """Permutation ``(n,)`` listing point indices in the kernel's tie-break priority (best first).

    Point ``k`` is scanned by thread ``k % bs`` as its ``k // bs``-th candidate; ties go to the
    thread with the smallest bit-reversed id, then to the earlier candidate of that thread.
    """
    bs = kernel_block_size(n)
    bits = bs.bit_length() - 1  # bs is a power of two
    k = torch.arange(n, device=device)
    key = _bit_reverse(k % bs, bits) * ((n + bs - 1) // bs) + k // bs
    return torch.argsort(key)


def farthest_point_sample(points: Tensor, num_samples: int, skip_near_origin: bool = True) -> Tensor:
    """Indices of ``num_samples`` farthest points, as ``pointnet2_ops.furthest_point_sample``.

    Args:
        points: ``(B, N, 3)`` coordinates (computed in fp32, or fp64 if given fp64).
        num_samples: ``S`` points to pick per cloud, ``1 <= S``; ``S > N`` repeats as the kernel does.
        skip_near_origin: apply the kernel's rule that points with squared norm ``<= 1e-3`` are never
            picked (except the forced start). ``False`` gives textbook FPS from index 0.

    Returns:
        ``(B, S)`` int64 indices; ``[:, 0]`` is always 0.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"farthest_point_sample expects points (B, N, 3), got {tuple(points.shape)}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    batch, n, _ = points.shape
    if n == 0:
        raise ValueError("farthest_point_sample needs at least one point per cloud")
    dtype = torch.float64 if points.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        order = kernel_order(n, points.device)
        pts = points.detach().to(dtype)[:, order]  # (B, N, 3) in priority order
        x, y, z = pts.unbind(-1)
        if skip_near_origin:
            valid = (x * x + y * y + z * z).to(torch.float64) > NEAR_ORIGIN  # (B, N)
        else:
            valid = torch.ones(batch, n, dtype=torch.bool, device=points.device)
        temp = torch.full((batch, n), _INIT, dtype=dtype, device=points.device)
        # -1 marks points that can never be chosen; all-invalid clouds then pick position 0 = point 0
        temp = torch.where(valid, temp, torch.full_like(temp, -1.0))
        out = torch.zeros(batch, num_samples, dtype=torch.long, device=points.device)
        old = torch.zeros(batch, 1, dtype=torch.long, device=points.device)  # position of point 0
        for j in range(1, num_samples):
            x1, y1, z1 = x.gather(1, old), y.gather(1, old), z.gather(1, old)  # (B, 1) each
            dx, dy, dz = x - x1, y - y1, z - z1
            d = dx * dx + dy * dy + dz * dz
            temp = torch.where(valid, torch.minimum(d, temp), temp)
            old = temp.argmax(dim=1, keepdim=True)  # first maximum = the kernel's winner
            out[:, j] = old[:, 0]
    return order[out]  # positions in the priority order -> point indices


def gather_points(points: Tensor, index: Tensor) -> Tensor:
    """``points`` ``(B, N, C)`` at ``index`` ``(B, ...)`` -> ``(B, ..., C)`` (``gather_operation``)."""
    batch = points.shape[0]
    flat = index.reshape(batch, -1)
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return out.reshape(*index.shape, points.shape[-1])

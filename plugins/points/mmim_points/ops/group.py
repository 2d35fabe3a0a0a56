"""Point-MAE's grouping: FPS centers, their kNN neighbourhoods, made relative to the centers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from mmim_points.ops.fps import farthest_point_sample, gather_points
from mmim_points.ops.knn import knn


@dataclass
class PointGroups:
    """The patches of a batch of clouds.

    Attributes:
        centers: ``(B, G, 3)`` patch centers, in FPS order.
        neighborhoods: ``(B, G, M, 3)`` the ``M`` nearest points of each center minus the center.
        center_index: ``(B, G)`` int64 indices of the centers in the input cloud.
        neighbor_index: ``(B, G, M)`` int64 indices of the neighbours (ascending distance).
    """

    centers: Tensor
    neighborhoods: Tensor
    center_index: Tensor
    neighbor_index: Tensor


def group_points(points: Tensor, num_group: int, group_size: int, skip_near_origin: bool = True) -> PointGroups:
    """Point-MAE's ``Group``: FPS picks ``num_group`` centers, kNN takes ``group_size`` neighbours each.

    Args:
        points: ``(B, N, 3)`` clouds, ``N >= group_size``.
        num_group: ``G`` patches per cloud.
        group_size: ``M`` points per patch (the center itself is its first neighbour).
        skip_near_origin: the FPS kernel's near-origin rule (see :func:`farthest_point_sample`).

    Returns:
        the groups; ``neighborhoods`` carry gradients to ``points`` (the indices do not).
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"group_points expects points (B, N, 3), got {tuple(points.shape)}")
    if points.shape[1] < group_size:
        raise ValueError(f"a cloud has {points.shape[1]} points, fewer than group_size={group_size}")
    center_index = farthest_point_sample(points, num_group, skip_near_origin)
    centers = gather_points(points, center_index)
    _, neighbor_index = knn(points, centers, group_size)
    neighborhoods = gather_points(points, neighbor_index) - centers.unsqueeze(2)
    return PointGroups(centers, neighborhoods, center_index, neighbor_index)

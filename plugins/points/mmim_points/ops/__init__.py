"""Point-cloud operations in plain, batched, vectorised torch (CPU or GPU, no compiled extensions).

They reproduce the CUDA kernels Point-MAE builds (``pointnet2_ops``, ``knn_cuda``, ``chamfer``)
exactly, tie-breaks included, and keep memory at ``O(B·N·S)`` (chunked where needed).
"""

from mmim_points.ops.ball_query import ball_query
from mmim_points.ops.chamfer import chamfer_distances, chamfer_l1, chamfer_l2
from mmim_points.ops.fps import farthest_point_sample, gather_points
from mmim_points.ops.group import PointGroups, group_points
from mmim_points.ops.knn import knn, squared_distances

__all__ = [
    "PointGroups", "ball_query", "chamfer_distances", "chamfer_l1", "chamfer_l2", "farthest_point_sample",
    "gather_points", "group_points", "knn", "squared_distances",
]

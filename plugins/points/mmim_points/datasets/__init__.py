"""The points plugin's datasets: ModelNet40 (.txt and HDF5), ShapeNet-55, ScanObjectNN, folders of
point/mesh files, and the procedural ``primitives`` default.

All are map-style datasets built as ``Dataset(split=..., augment=..., **options)`` whose items are
``{"points": (N, 3) float32, "label": int}``, with ``classes`` and ``num_classes``.
"""

from mmim_points.datasets.common import PointCloudDataset, normalize_unit_sphere, sample_points, scale_translate
from mmim_points.datasets.folder import PointFolder
from mmim_points.datasets.formats import read_point_file
from mmim_points.datasets.modelnet import ModelNet40, ModelNet40H5
from mmim_points.datasets.primitives import Primitives
from mmim_points.datasets.scanobjectnn import ScanObjectNN
from mmim_points.datasets.shapenet import ShapeNet55

__all__ = [
    "ModelNet40", "ModelNet40H5", "PointCloudDataset", "PointFolder", "Primitives", "ScanObjectNN", "ShapeNet55",
    "normalize_unit_sphere", "read_point_file", "sample_points", "scale_translate",
]

"""ModelNet40 (Wu et al. 2015) in its two common distributions.

* ``modelnet40_normal_resampled`` (PointNet++; what Point-MAE reads): ``modelnet40_shape_names.txt``,
  ``modelnet40_{train,test}.txt`` listing shape ids such as ``airplane_0001``, and one file per
  shape ``<class>/<id>.txt`` with 10,000 lines ``x,y,z,nx,ny,nz``. ``categories=10`` reads the
  ``modelnet10_*`` lists of the same folder.
* ``modelnet40_ply_hdf5_2048`` (PointNet): ``ply_data_{train,test}N.h5`` files with ``data``
  ``(n, 2048, 3)`` and ``label`` ``(n, 1)``, listed by ``{train,test}_files.txt``, and ``shape_names.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmim.data import DataError
from mmim_points.datasets.common import PointCloudDataset, check_root, read_lines
from mmim_points.datasets.formats import read_table
from mmim_points.datasets.hdf5 import read_h5_arrays

MODELNET40_CLASSES = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table",
    "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
]


class ModelNet40(PointCloudDataset):
    """ModelNet40 / ModelNet10 from ``modelnet40_normal_resampled`` (xyz used, normals dropped).

    Args:
        split: ``"train"`` or ``"test"``.
        augment: scale/translate augmentation and point shuffling.
        root: the ``modelnet40_normal_resampled`` folder.
        categories: 40 or 10.
        **options: see :class:`~mmim_points.datasets.common.PointCloudDataset` (``num_points`` ...).
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_points.datasets.examples import modelnet40_example

        return modelnet40_example(root)

    def __init__(self, split: str, augment: bool, root: str | None = None, categories: int = 40, **options: Any) -> None:
        super().__init__(split, augment, **options)
        if categories not in (10, 40):
            raise ValueError(f"categories must be 10 or 40, got {categories}")
        self.root = check_root(root, "ModelNet40")
        prefix = f"modelnet{categories}"
        names = self.root / f"{prefix}_shape_names.txt"
        self.classes = [name for _, name in read_lines(names, "shape-name list")]
        index = {c: i for i, c in enumerate(self.classes)}
        listing = self.root / f"{prefix}_{split}.txt"
        self.files: list[Path] = []
        self.labels = []
        for line, shape_id in read_lines(listing, f"'{split}' split list"):
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in index:
                raise DataError(f"{listing}:{line}: shape {shape_id!r} has class {cls!r}, not one of {names.name}")
            path = self.root / cls / f"{shape_id}.txt"
            if not path.is_file():
                raise DataError(f"{listing}:{line}: listed file {path} does not exist")
            self.files.append(path)
            self.labels.append(index[cls])
        if not self.files:
            raise DataError(f"{listing}: lists no shapes")

    def load_raw(self, index: int) -> tuple[Any, str]:
        return read_table(self.files[index]), str(self.files[index])

    def source_file(self, index: int) -> Path:
        return self.files[index]

    def read_source(self, path: Path, source: Path) -> Any:
        return read_table(path)


class ModelNet40H5(PointCloudDataset):
    """ModelNet40 from the ``modelnet40_ply_hdf5_2048`` HDF5 files (2,048 points per shape), held in memory.

    Args:
        split: ``"train"`` or ``"test"``.
        augment: scale/translate augmentation and point shuffling.
        root: the ``modelnet40_ply_hdf5_2048`` folder.
        **options: see :class:`~mmim_points.datasets.common.PointCloudDataset`.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_points.datasets.examples import modelnet40_h5_example

        return modelnet40_h5_example(root)

    def __init__(self, split: str, augment: bool, root: str | None = None, **options: Any) -> None:
        options.setdefault("num_points", 1024)
        options.setdefault("sampling", "first")
        super().__init__(split, augment, **options)
        self.root = check_root(root, "ModelNet40 HDF5")
        listing = self.root / f"{split}_files.txt"
        if listing.is_file():
            files = []
            for line, entry in read_lines(listing, "HDF5 file list"):
                path = self.root / Path(entry).name
                if not path.is_file():
                    raise DataError(f"{listing}:{line}: listed file {path} does not exist")
                files.append(path)
        else:
            files = sorted(self.root.glob(f"ply_data_{split}*.h5"))
        if not files:
            raise DataError(f"{self.root}: no {listing.name} and no ply_data_{split}*.h5 files")
        names = self.root / "shape_names.txt"
        self.classes = [n for _, n in read_lines(names, "shape-name list")] if names.is_file() else list(MODELNET40_CLASSES)
        data, labels, self.sources = [], [], []
        for path in files:
            points, label = read_h5_arrays(path, len(self.classes))
            data.append(points)
            labels.append(label)
            self.sources.extend(f"{path}[{i}]" for i in range(len(label)))
        self.data = np.concatenate(data)
        self.labels = np.concatenate(labels).tolist()

    def load_raw(self, index: int) -> tuple[Any, str]:
        return self.data[index], self.sources[index]

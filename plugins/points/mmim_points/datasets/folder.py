"""A folder of point-cloud or mesh files, one sub-folder per class (ModelNet's raw ``.off`` layout).

::

    root/<class>/<split>/*.off|ply|obj|pcd|...     (ModelNet40/airplane/train/airplane_0001.off)
    root/<class>/*.off|...                         (no split folders: every file is in every split)

Meshes are sampled on their surface (``mesh_points`` points, seeded per file so a file always
gives the same cloud); point files give their vertices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_points.datasets.common import PointCloudDataset, check_root
from mmim_points.datasets.formats import EXTENSIONS, read_point_file


def _file_seed(path: Path) -> int:
    """A stable seed from a file name (``hash()`` is salted per process)."""
    value = 0
    for ch in path.name.encode():
        value = (value * 131 + ch) % (1 << 31)
    return value


class PointFolder(PointCloudDataset):
    """Point clouds or meshes in class sub-folders.

    Args:
        split: the split sub-folder name (``train``/``test``), if class folders have them.
        augment: scale/translate augmentation and point shuffling.
        root: the folder of class folders.
        mesh_points: points sampled on each mesh's surface before ``num_points`` are chosen.
        extensions: file suffixes to read (default: every supported format).
        reader: ``"builtin"`` parsers or ``"open3d"`` (PLY/PCD/OBJ/OFF through open3d, the ``open3d`` extra).
        **options: see :class:`~mmim_points.datasets.common.PointCloudDataset`.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_points.datasets.examples import point_folder_example

        return point_folder_example(root)

    def __init__(self, split: str, augment: bool, root: str | None = None, mesh_points: int = 8192,
                 extensions: tuple[str, ...] | list[str] | None = None, reader: str = "builtin", **options: Any) -> None:
        from mmim_points.datasets.open3d_io import check_backend

        super().__init__(split, augment, **options)
        self.reader = check_backend(reader)
        self.root = check_root(root, "point folder")
        self.mesh_points = mesh_points
        exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in (extensions or EXTENSIONS)}
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise DataError(f"{self.root}: no class sub-folders")
        self.files: list[Path] = []
        self.labels = []
        for label, cls in enumerate(self.classes):
            folder = self.root / cls / split if (self.root / cls / split).is_dir() else self.root / cls
            found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
            self.files.extend(found)
            self.labels.extend([label] * len(found))
        if not self.files:
            raise DataError(f"{self.root}: no {', '.join(sorted(exts))} files in <class>/{split}/ or <class>/")

    def load_raw(self, index: int) -> tuple[Any, str]:
        path = self.files[index]
        return read_point_file(path, self.mesh_points, _file_seed(path), self.reader), str(path)

    def source_file(self, index: int) -> Path:
        return self.files[index]

    def read_source(self, path: Path, source: Path) -> Any:
        # the mesh sampling seed comes from the original file's name, so shards give the file's points
        return read_point_file(path, self.mesh_points, _file_seed(source), self.reader)

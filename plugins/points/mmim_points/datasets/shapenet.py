"""ShapeNet-55 as Point-BERT / Point-MAE distribute it: ``.npy`` clouds and split list files.

Layout (``data/ShapeNet55-34`` in the official repos)::

    root/ShapeNet-55/train.txt       lines "02691156-1a04e3eab45ca15dd86060f189eb133.npy"
    root/ShapeNet-55/test.txt
    root/shapenet_pc/<taxonomy>-<model>.npy     (8192, 3) float

Labels index the sorted taxonomy (synset) ids found in both list files, so train and test agree;
``classes`` lists those ids. Point-MAE pre-trains on the train list with 1,024 randomly chosen
points per cloud (``sampling="random"``), normalised to the unit sphere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_points.datasets.common import PointCloudDataset, check_root, read_lines
from mmim_points.datasets.formats import read_point_file


class ShapeNet55(PointCloudDataset):
    """ShapeNet-55 clouds with their taxonomy-id class.

    Args:
        split: ``"train"`` or ``"test"`` (a list file ``<list_dir>/<split>.txt``).
        augment: scale/translate augmentation and point shuffling.
        root: the ``ShapeNet55-34`` folder.
        list_dir: folder of the split lists inside ``root``.
        points_dir: folder of the ``.npy`` clouds inside ``root``.
        **options: see :class:`~mmim_points.datasets.common.PointCloudDataset`.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_points.datasets.examples import shapenet55_example

        return shapenet55_example(root)

    def __init__(self, split: str, augment: bool, root: str | None = None, list_dir: str = "ShapeNet-55",
                 points_dir: str = "shapenet_pc", **options: Any) -> None:
        super().__init__(split, augment, **options)
        self.root = check_root(root, "ShapeNet-55")
        lists = self.root / list_dir
        clouds = self.root / points_dir
        if not clouds.is_dir():
            raise DataError(f"{clouds}: ShapeNet-55 point folder does not exist")
        listing = lists / f"{split}.txt"
        entries = read_lines(listing, f"'{split}' split list")
        taxonomies = {self._taxonomy(listing, line, name) for line, name in entries}
        for other in sorted(lists.glob("*.txt")):
            if other != listing:
                taxonomies |= {self._taxonomy(other, line, name) for line, name in read_lines(other, "split list")}
        self.classes = sorted(taxonomies)
        index = {t: i for i, t in enumerate(self.classes)}
        self.files: list[Path] = []
        self.labels = []
        for line, name in entries:
            path = clouds / name
            if not path.is_file():
                raise DataError(f"{listing}:{line}: listed file {path} does not exist")
            self.files.append(path)
            self.labels.append(index[self._taxonomy(listing, line, name)])
        if not self.files:
            raise DataError(f"{listing}: lists no clouds")

    @staticmethod
    def _taxonomy(listing: Path, line: int, name: str) -> str:
        taxonomy, sep, model = name.partition("-")
        if not sep or not taxonomy or not model.endswith(".npy"):
            raise DataError(f"{listing}:{line}: expected '<taxonomy>-<model>.npy', got {name!r}")
        return taxonomy

    def load_raw(self, index: int) -> tuple[Any, str]:
        return read_point_file(self.files[index]), str(self.files[index])

    def source_file(self, index: int) -> Path:
        return self.files[index]

    def read_source(self, path: Path, source: Path) -> Any:
        return read_point_file(path)

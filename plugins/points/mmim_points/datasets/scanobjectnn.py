"""ScanObjectNN (Uy et al. 2019) from its HDF5 files: real scanned objects of 15 classes.

Variants and files (``h5_files`` of the official release)::

    pb_t50_rs   main_split/{training,test}_objectdataset_augmentedrot_scale75.h5   (the "hardest")
    obj_bg      main_split/{training,test}_objectdataset.h5
    obj_only    main_split_nobg/{training,test}_objectdataset.h5

``root`` may be the release folder (holding ``main_split``/``main_split_nobg``) or the variant's
folder itself. Point-MAE feeds all 2,048 points without normalisation (``normalize=False``,
``num_points=2048``), shuffling the point order in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_points.datasets.common import PointCloudDataset, check_root
from mmim_points.datasets.hdf5 import read_h5_arrays

SCANOBJECTNN_CLASSES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
                        "pillow", "sink", "sofa", "toilet"]
VARIANTS = {
    "pb_t50_rs": ("main_split", "objectdataset_augmentedrot_scale75.h5"),
    "obj_bg": ("main_split", "objectdataset.h5"),
    "obj_only": ("main_split_nobg", "objectdataset.h5"),
}
SPLITS = {"train": "training", "test": "test"}


class ScanObjectNN(PointCloudDataset):
    """One ScanObjectNN variant, held in memory.

    Args:
        split: ``"train"`` or ``"test"``.
        augment: scale/translate augmentation and point shuffling.
        root: release folder or the variant's folder.
        variant: ``pb_t50_rs``, ``obj_bg`` or ``obj_only``.
        **options: see :class:`~mmim_points.datasets.common.PointCloudDataset`; defaults here are
            Point-MAE's (2,048 points, no normalisation).
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_points.datasets.examples import scanobjectnn_example

        return scanobjectnn_example(root)

    classes = SCANOBJECTNN_CLASSES

    def __init__(self, split: str, augment: bool, root: str | None = None, variant: str = "pb_t50_rs",
                 **options: Any) -> None:
        options.setdefault("num_points", 2048)
        options.setdefault("normalize", False)
        options.setdefault("sampling", "first")
        super().__init__(split, augment, **options)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if split not in SPLITS:
            raise ValueError(f"ScanObjectNN has splits 'train' and 'test', got {split!r}")
        base = check_root(root, "ScanObjectNN")
        folder, suffix = VARIANTS[variant]
        name = f"{SPLITS[split]}_{suffix}"
        candidates = [base / folder / name, base / name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"{base}: no ScanObjectNN {variant} file {name} (looked in {', '.join(map(str, candidates))})")
        self.path, self.variant = path, variant
        self.classes = list(SCANOBJECTNN_CLASSES)
        self.data, labels = read_h5_arrays(path, len(self.classes))
        self.labels = labels.tolist()

    def load_raw(self, index: int) -> tuple[Any, str]:
        return self.data[index], f"{self.path}[{index}]"

"""Tiny on-disk datasets for the conformance kit (``example_options`` hooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def point_folder_example(root: Path) -> dict[str, Any]:
    """Two classes of two 96-point clouds as ``.xyz`` text under ``root``; options of a ``point_folder``."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("ball", "box")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            pts = rng.normal(size=(96, 3))
            pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) if c == 0 else rng.uniform(-1, 1, (96, 3))
            np.savetxt(root / cls / f"{c}{i}.xyz", pts, fmt="%.6f")
    return {"root": str(root), "num_points": 64, "min_points": 32}


def modelnet40_example(root: Path) -> dict[str, Any]:
    """A two-class ``modelnet40_normal_resampled`` layout (shape names, split lists, ``x,y,z,nx,ny,nz``
    files of 96 points); options of a ``modelnet40``."""
    rng = np.random.default_rng(0)
    classes = ["airplane", "bathtub"]
    (root / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    ids = [f"{c}_{i:04d}" for c in classes for i in (1, 2)]
    for split in ("train", "test"):
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    for shape_id in ids:
        folder = root / shape_id.rsplit("_", 1)[0]
        folder.mkdir(exist_ok=True)
        pts = rng.uniform(-1, 1, (96, 3))
        normals = pts / np.linalg.norm(pts, axis=1, keepdims=True)
        np.savetxt(folder / f"{shape_id}.txt", np.hstack([pts, normals]), fmt="%.6f", delimiter=",")
    return {"root": str(root), "num_points": 64, "min_points": 32}


def modelnet40_h5_example(root: Path) -> dict[str, Any]:
    """A ``modelnet40_ply_hdf5_2048`` layout with one HDF5 file per split (4 clouds of 96 points,
    2 classes), its file lists and ``shape_names.txt``; options of a ``modelnet40_h5`` (needs h5py)."""
    import h5py

    rng = np.random.default_rng(0)
    (root / "shape_names.txt").write_text("airplane\nbathtub\n")
    for split in ("train", "test"):
        with h5py.File(root / f"ply_data_{split}0.h5", "w") as f:
            f["data"] = rng.uniform(-1, 1, (4, 96, 3)).astype(np.float32)
            f["label"] = np.array([[0], [1], [0], [1]], dtype=np.uint8)
        (root / f"{split}_files.txt").write_text(f"data/modelnet40_ply_hdf5_2048/ply_data_{split}0.h5\n")
    return {"root": str(root), "num_points": 64, "min_points": 32}


def shapenet55_example(root: Path) -> dict[str, Any]:
    """A ``ShapeNet55-34`` layout: split lists of ``<taxonomy>-<model>.npy`` names and four 96-point
    clouds in ``shapenet_pc/``; options of a ``shapenet55``."""
    rng = np.random.default_rng(0)
    (root / "ShapeNet-55").mkdir()
    (root / "shapenet_pc").mkdir()
    names = [f"{taxonomy}-model{i}.npy" for taxonomy in ("02691156", "02747177") for i in (1, 2)]
    for name in names:
        np.save(root / "shapenet_pc" / name, rng.uniform(-1, 1, (96, 3)).astype(np.float32))
    for split in ("train", "test"):
        (root / "ShapeNet-55" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return {"root": str(root), "num_points": 64, "min_points": 32}


def scanobjectnn_example(root: Path) -> dict[str, Any]:
    """The release layout for variant ``pb_t50_rs``: ``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``
    with 4 clouds of 96 points each; options of a ``scanobjectnn`` (needs h5py)."""
    import h5py

    rng = np.random.default_rng(0)
    (root / "main_split").mkdir()
    for split in ("training", "test"):
        with h5py.File(root / "main_split" / f"{split}_objectdataset_augmentedrot_scale75.h5", "w") as f:
            f["data"] = rng.uniform(-1, 1, (4, 96, 3)).astype(np.float32)
            f["label"] = np.array([0, 3, 7, 14], dtype=np.int64)
    return {"root": str(root), "num_points": 64, "min_points": 32}

"""Reading the ``data`` / ``label`` arrays of point-cloud HDF5 files (ModelNet40 ply_hdf5_2048, ScanObjectNN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmim.data import DataError


def read_h5_arrays(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``data`` ``(n, P, >=3)`` float32 (xyz kept) and ``label`` ``(n,)`` int64 of one HDF5 file.

    Raises:
        DataError: naming the file when it cannot be opened, lacks a dataset, or the shapes or labels
            are wrong. (Per-sample problems such as NaN are reported when the sample is read.)
    """
    try:
        import h5py
    except ImportError as err:
        raise ImportError("reading HDF5 point clouds needs h5py (pip install 'mmim[points]')") from err
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "label") if k not in f]
            if missing:
                raise DataError(f"{path}: HDF5 file lacks dataset(s) {missing}; has {sorted(f.keys())}")
            data = np.asarray(f["data"][...], dtype=np.float32)
            label = np.asarray(f["label"][...])
    except OSError as err:
        raise DataError(f"{path}: cannot read HDF5 file ({err})") from None
    if data.ndim != 3 or data.shape[2] < 3:
        raise DataError(f"{path}: 'data' must be (n, points, >=3), got {data.shape}")
    label = label.reshape(-1).astype(np.int64)
    if label.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} clouds but {label.shape[0]} labels")
    bad = (label < 0) | (label >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: label {int(label[i])} of sample {i} is not in 0..{num_classes - 1}")
    return data[:, :, :3], label

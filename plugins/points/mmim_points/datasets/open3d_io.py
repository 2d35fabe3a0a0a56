"""open3d as an optional reader of PLY, PCD, OBJ and OFF files (``pip install "mmim[open3d]"``).

The built-in parsers (:mod:`mmim_points.datasets.formats`) stay the default and work everywhere;
``read_point_file(path, reader="open3d")`` (or ``point_folder``'s ``reader: open3d``) reads through
open3d instead and gives the same vertices and faces (``tests/plugins/points/test_open3d_io.py``).
open3d needs the system library libusb-1.0 (``apt-get install libusb-1.0-0``); its offscreen
renderer is not used (it kills headless processes).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from mmim.data import CorruptSampleError

FORMATS = (".ply", ".pcd", ".obj", ".off")
BACKENDS = ("builtin", "open3d")


@functools.cache
def open3d_available() -> bool:
    """Whether ``import open3d`` works (installed, and its system libraries present)."""
    if importlib.util.find_spec("open3d") is None:
        return False
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown point-file reader {backend!r}; choices: {', '.join(BACKENDS)}")
    if backend == "open3d" and not open3d_available():
        raise ImportError('the open3d reader needs open3d: pip install "mmim[open3d]" '
                          "(and apt-get install libusb-1.0-0 on a bare machine)")
    return backend


def read_open3d(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices ``(V, 3)`` float32 and triangle faces ``(F, 3)`` int64 (None for a point cloud) read by open3d."""
    import open3d as o3d

    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise CorruptSampleError(str(path), f"open3d reader: unsupported format {ext!r}; it reads {', '.join(FORMATS)}")
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        if ext in (".obj", ".off", ".ply"):
            mesh = o3d.io.read_triangle_mesh(str(path))
            if len(mesh.triangles):
                return (np.asarray(mesh.vertices, dtype=np.float32),
                        np.asarray(mesh.triangles, dtype=np.int64))
            if ext != ".ply":
                verts = np.asarray(mesh.vertices, dtype=np.float32)
                if not len(verts):
                    raise CorruptSampleError(str(path), "open3d read no vertices (empty or not a valid file)")
                return verts, None
        cloud = o3d.io.read_point_cloud(str(path))
    verts = np.asarray(cloud.points, dtype=np.float32)
    if not len(verts):
        raise CorruptSampleError(str(path), "open3d read no points (empty or not a valid file)")
    return verts, None


def write_colored_cloud(path: Path, parts: list[tuple[np.ndarray, tuple[float, float, float]]]) -> Path:
    """Write point sets ``(N_i, 3)`` with one RGB colour each as one PLY (for open3d's viewer)."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(np.concatenate([p for p, _ in parts]).astype(np.float64))
    cloud.colors = o3d.utility.Vector3dVector(np.concatenate([np.tile(c, (len(p), 1)) for p, c in parts]))
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"{path}: open3d could not write the point cloud")
    return path

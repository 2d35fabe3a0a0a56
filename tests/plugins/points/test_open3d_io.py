"""open3d as an optional point-file reader: the same points as the built-in parsers (where installed)."""

from __future__ import annotations

import numpy as np
import pytest

from mmim.data import DataError
from mmim_points.datasets import open3d_io
from mmim_points.datasets.formats import read_point_file

needs_open3d = pytest.mark.skipif(not open3d_io.open3d_available(), reason='open3d not installed (pip install "mmim[open3d]")')


def _cloud(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3)).astype(np.float32)


def _mesh():
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh.create_box(1.0, 2.0, 0.5)  # 8 vertices, 12 triangles
    mesh.translate((-0.5, -1.0, -0.25))
    return mesh


@needs_open3d
@pytest.mark.parametrize("name,kwargs", [("ascii.ply", {"write_ascii": True}), ("binary.ply", {}),
                                         ("ascii.pcd", {"write_ascii": True}), ("binary.pcd", {}),
                                         ("lzf.pcd", {"compressed": True})])
def test_point_clouds_read_the_same(tmp_path, name, kwargs):
    import open3d as o3d

    pts = _cloud()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
    assert o3d.io.write_point_cloud(str(tmp_path / name), cloud, **kwargs)
    builtin = read_point_file(tmp_path / name)
    through = read_point_file(tmp_path / name, reader="open3d")
    assert builtin.shape == through.shape == pts.shape
    np.testing.assert_allclose(through, builtin, atol=1e-6)
    np.testing.assert_allclose(through, pts, atol=1e-5)


@needs_open3d
@pytest.mark.parametrize("suffix", [".ply", ".obj", ".off"])
def test_meshes_read_the_same(tmp_path, suffix):
    """Same triangles (as sets of corner coordinates); the same surface sampling when vertex order agrees."""
    import open3d as o3d

    path = tmp_path / f"box{suffix}"
    assert o3d.io.write_triangle_mesh(str(path), _mesh(), write_ascii=True)
    verts, faces = open3d_io.read_open3d(path)
    assert faces is not None and faces.shape == (12, 3)
    from mmim_points.datasets.formats import read_off, read_trimesh
    from mmim_points.datasets.ply import read_ply

    bverts, bfaces = {".ply": read_ply, ".off": read_off, ".obj": read_trimesh}[suffix](path)

    def triangles(v, f):
        return sorted(tuple(sorted(map(tuple, np.round(v[tri], 6)))) for tri in f)

    assert triangles(np.asarray(bverts)[:, :3], bfaces) == triangles(verts, faces)
    builtin = read_point_file(path, mesh_points=256, seed=3)
    through = read_point_file(path, mesh_points=256, seed=3, reader="open3d")
    assert builtin.shape == through.shape == (256, 3)
    if np.array_equal(np.asarray(bverts)[:, :3], verts) and np.array_equal(bfaces, faces):
        np.testing.assert_allclose(through, builtin, atol=1e-6)


@needs_open3d
def test_point_folder_reads_through_open3d(tmp_path):
    import open3d as o3d

    from mmim_points.datasets.folder import PointFolder

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_cloud(128, seed=ord(c)).astype(np.float64)))
        o3d.io.write_point_cloud(str(tmp_path / c / "x.pcd"), cloud)
    opts = dict(root=str(tmp_path), num_points=64, normalize=False)
    a = PointFolder("train", False, reader="open3d", **opts)
    b = PointFolder("train", False, **opts)
    for i in range(len(a)):
        np.testing.assert_allclose(np.asarray(a[i]["points"]), np.asarray(b[i]["points"]), atol=1e-6)


@needs_open3d
def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.pcd"
    path.write_bytes(b"garbage\x00\xff")
    with pytest.raises(DataError, match="broken.pcd"):
        read_point_file(path, reader="open3d")


def test_missing_open3d_is_one_clear_error(tmp_path, monkeypatch):
    from mmim_points.datasets.folder import PointFolder

    monkeypatch.setattr(open3d_io, "open3d_available", lambda: False)
    with pytest.raises(ImportError, match=r'pip install "mmim\[open3d\]"'):
        PointFolder("train", False, root=str(tmp_path), reader="open3d")
    with pytest.raises(ValueError, match="unknown point-file reader 'o3d'"):
        PointFolder("train", False, root=str(tmp_path), reader="o3d")


@needs_open3d
def test_visualizer_also_writes_a_coloured_ply(tmp_path):
    import open3d as o3d
    import torch

    from mmim import registry
    from mmim.config import load_recipe
    from mmim.model import build_model
    from mmim.recipes_catalog import default_recipe

    pytest.importorskip("matplotlib")
    recipe = load_recipe(default_recipe("points"), ["model.encoder.embed_dim=32", "model.encoder.depth=1",
                                                    "model.encoder.num_heads=2"])
    model = build_model(recipe.model).eval()
    x = model.streams["points"].tokenizer.example_input(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model({"points": x}, generator=torch.Generator().manual_seed(0))
    paths = registry.companion("visualizer", "point_patch")().render(model, "points", x, out, tmp_path, prefix="p")
    ply = [p for p in paths if p.suffix == ".ply"]
    assert [p.name for p in ply] == ["p_000.ply"]
    cloud = o3d.io.read_point_cloud(str(ply[0]))
    assert len(cloud.points) > 0 and cloud.has_colors()

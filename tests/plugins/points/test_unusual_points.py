"""Point and mesh files as many tools write them, generated here: PLY (ASCII, binary little/big endian,
doubles, colours and normals, faces with uchar/int counts, extra elements), PCD (ascii, binary, extra fields
in any order, organised clouds), OFF variants (COFF/NOFF, fused header, polygons, comments), OBJ variants
(quads, ``f v/vt/vn``, negative indices, points only), STL, XYZ/CSV/NPY; broken files give a clear error
naming the file."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from mmim.data import CorruptSampleError
from mmim_points.datasets.common import check_cloud
from mmim_points.datasets.formats import read_point_file

CUBE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.float64)
QUADS = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]
CLOUD = np.random.default_rng(0).normal(size=(50, 3))


def _ply(path, fmt, verts, faces=None, count_type="uchar", coord="float", extra_element=False):
    order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
    lines = ["ply", f"format {fmt} 1.0", "comment written by a test", "obj_info generator test"]
    lines += [f"element vertex {len(verts)}", f"property {coord} x", f"property {coord} y", f"property {coord} z",
              "property float nx", "property float ny", "property float nz",
              "property uchar red", "property uchar green", "property uchar blue"]
    if faces is not None:
        lines += [f"element face {len(faces)}", f"property list {count_type} int vertex_indices"]
    if extra_element:
        lines += ["element edge 1", "property int vertex1", "property int vertex2"]
    lines.append("end_header")
    head = ("\n".join(lines) + "\n").encode()
    if order is None:
        body = "".join(f"{x} {y} {z} 0 0 1 255 0 0\n" for x, y, z in verts)
        if faces is not None:
            body += "".join(f"{len(f)} {' '.join(map(str, f))}\n" for f in faces)
        if extra_element:
            body += "0 1\n"
        path.write_bytes(head + body.encode())
        return path
    c = "f" if coord == "float" else "d"
    body = b"".join(struct.pack(f"{order}{c}{c}{c}fffBBB", *v, 0, 0, 1, 255, 0, 0) for v in verts)
    if faces is not None:
        ct = {"uchar": "B", "int": "i", "ushort": "H"}[count_type]
        body += b"".join(struct.pack(f"{order}{ct}{len(f)}i", len(f), *f) for f in faces)
    if extra_element:
        body += struct.pack(f"{order}ii", 0, 1)
    path.write_bytes(head + body)
    return path


def _on_cube_surface(pts: np.ndarray) -> bool:
    inside = (pts >= -1e-5).all() and (pts <= 1 + 1e-5).all()
    on_face = (np.minimum(np.abs(pts), np.abs(pts - 1)).min(axis=1) < 1e-4).all()
    return bool(inside and on_face)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("coord", ["float", "double"])
def test_ply_point_clouds(tmp_path, fmt, coord):
    pts = read_point_file(_ply(tmp_path / "c.ply", fmt, CLOUD, coord=coord))
    assert pts.shape == (50, 3) and np.allclose(pts, CLOUD, atol=1e-5)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("count_type", ["uchar", "int"])
def test_ply_meshes_with_quads_and_extra_elements(tmp_path, fmt, count_type):
    path = _ply(tmp_path / "m.ply", fmt, CUBE, QUADS, count_type=count_type, extra_element=True)
    pts = read_point_file(path, mesh_points=400)
    assert pts.shape == (400, 3) and _on_cube_surface(pts)
    assert np.array_equal(pts, read_point_file(path, mesh_points=400))  # seeded surface sampling


def _pcd(path, data_kind, fields=("x", "y", "z", "rgb"), points=CLOUD, width=None, height=1):
    n = len(points)
    table = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "rgb": np.full(n, 4.2e-39),
             "intensity": np.arange(n, dtype=np.float64), "label": np.arange(n) % 3}
    types = {"label": ("U", 4)}
    head = ["# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7", f"FIELDS {' '.join(fields)}",
            "SIZE " + " ".join(str(types.get(f, ("F", 4))[1]) for f in fields),
            "TYPE " + " ".join(types.get(f, ("F", 4))[0] for f in fields),
            "COUNT " + " ".join("1" for _ in fields), f"WIDTH {width or n}", f"HEIGHT {height}",
            "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {n}", f"DATA {data_kind}"]
    raw = ("\n".join(head) + "\n").encode()
    if data_kind == "ascii":
        raw += "".join(" ".join(str(table[f][i]) for f in fields) + "\n" for i in range(n)).encode()
    else:
        dtype = np.dtype([(f, "<u4" if f == "label" else "<f4") for f in fields])
        rec = np.zeros(n, dtype)
        for f in fields:
            rec[f] = table[f]
        raw += rec.tobytes()
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("kind", ["ascii", "binary"])
@pytest.mark.parametrize("fields", [("x", "y", "z"), ("x", "y", "z", "rgb"), ("intensity", "label", "z", "x", "y")])
def test_pcd_fields_in_any_order(tmp_path, kind, fields):
    pts = read_point_file(_pcd(tmp_path / "c.pcd", kind, fields))
    assert np.allclose(pts, CLOUD, atol=1e-5)


def test_pcd_organised_cloud(tmp_path):
    pts = read_point_file(_pcd(tmp_path / "o.pcd", "binary", width=10, height=5))
    assert pts.shape == (50, 3) and np.allclose(pts, CLOUD, atol=1e-5)


@pytest.mark.parametrize("text", [
    "OFF\n8 6 0\n{v}\n{f}",
    "OFF 8 6 0\n{v}\n{f}",
    "OFF8 6 0\n{v}\n{f}",                            # ModelNet's fused header
    "# made by a tool\nOFF\n# counts\n8 6 12\n{v}\n{f}",
    "COFF\n8 6 0\n{vc}\n{f}",
    "NOFF\n8 6 0\n{vn}\n{f}",
])
def test_off_variants(tmp_path, text):
    v = "\n".join(" ".join(map(str, p)) for p in CUBE)
    vc = "\n".join(" ".join(map(str, p)) + " 255 0 0 255" for p in CUBE)
    vn = "\n".join(" ".join(map(str, p)) + " 0 0 1" for p in CUBE)
    f = "\n".join(f"4 {' '.join(map(str, q))}" for q in QUADS)
    (tmp_path / "m.off").write_text(text.format(v=v, vc=vc, vn=vn, f=f) + "\n")
    pts = read_point_file(tmp_path / "m.off", mesh_points=300)
    assert pts.shape == (300, 3) and _on_cube_surface(pts)


@pytest.mark.parametrize("faces", [
    "\n".join("f " + " ".join(str(i + 1) for i in q) for q in QUADS),                     # quads
    "\n".join("f " + " ".join(f"{i + 1}/1/1" for i in q) for q in QUADS),                 # v/vt/vn
    "\n".join("f " + " ".join(f"{i + 1}//1" for i in q) for q in QUADS),                  # v//vn
    "\n".join("f " + " ".join(str(i - 8) for i in q) for q in QUADS),                     # negative (relative)
])
def test_obj_variants(tmp_path, faces):
    pytest.importorskip("trimesh")
    v = "\n".join("v " + " ".join(map(str, p)) for p in CUBE)
    (tmp_path / "m.obj").write_text(f"# test\nmtllib none.mtl\no cube\n{v}\nvt 0 0\nvn 0 0 1\ng side\n{faces}\n")
    pts = read_point_file(tmp_path / "m.obj", mesh_points=300)
    assert pts.shape == (300, 3) and _on_cube_surface(pts)


def test_obj_points_only_and_stl(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    (tmp_path / "p.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in CLOUD))
    pts = check_cloud(read_point_file(tmp_path / "p.obj"), "p.obj")
    assert pts.shape == (50, 3) and torch.allclose(pts, torch.from_numpy(CLOUD).float(), atol=1e-5)
    mesh = trimesh.Trimesh(CUBE, [[q[0], q[1], q[2]] for q in QUADS] + [[q[0], q[2], q[3]] for q in QUADS])
    for ascii_ in (False, True):
        path = tmp_path / f"m{int(ascii_)}.stl"
        path.write_bytes(trimesh.exchange.stl.export_stl_ascii(mesh).encode() if ascii_ else
                         trimesh.exchange.stl.export_stl(mesh))
        assert _on_cube_surface(read_point_file(path, mesh_points=200))


@pytest.mark.parametrize("name, text", [("p.xyz", "{s}"), ("p.csv", "x,y,z\n{c}"), ("p.txt", "{c6}"),
                                        ("p.pts", "{s}")])
def test_tables(tmp_path, name, text):
    s = "\n".join(" ".join(map(str, p)) for p in CLOUD)
    c = "\n".join(",".join(map(str, p)) for p in CLOUD)
    c6 = "\n".join(",".join(map(str, p)) + ",0,0,1" for p in CLOUD)
    (tmp_path / name).write_text(text.format(s=s, c=c, c6=c6) + "\n")
    pts = check_cloud(read_point_file(tmp_path / name), name)
    assert torch.allclose(pts, torch.from_numpy(CLOUD).float(), atol=1e-5)


def test_npy_float64_and_extra_columns(tmp_path):
    np.save(tmp_path / "p.npy", np.concatenate([CLOUD, np.ones((50, 3))], axis=1))
    pts = check_cloud(read_point_file(tmp_path / "p.npy"), "p.npy")
    assert pts.dtype == torch.float32 and torch.allclose(pts, torch.from_numpy(CLOUD).float())


@pytest.mark.parametrize("case, reason", [
    ("nan.ply", "NaN/inf"), ("nan.pcd", "NaN/inf"), ("nan.xyz", "NaN/inf"), ("empty.ply", "not a PLY"),
    ("short.ply", "malformed|PLY"), ("garbage.pcd", "PCD header"), ("bad.off", "OFF"), ("noverts.off", "malformed OFF"),
    ("ragged.xyz", "same column count"), ("two_cols.xyz", "at least 3 columns"), ("missing.ply", "not found"),
    ("unknown.abc", "unknown point-cloud format"), ("obj.npy", "numpy"), ("empty.xyz", "no points"),
])
def test_broken_files_name_the_file(tmp_path, case, reason):
    path = tmp_path / case
    bad = CLOUD.copy()
    bad[7, 1] = np.nan
    writers = {
        "nan.ply": lambda: _ply(path, "binary_little_endian", bad),
        "nan.pcd": lambda: _pcd(path, "binary", points=bad),
        "nan.xyz": lambda: path.write_text("\n".join(" ".join(map(str, p)) for p in bad)),
        "empty.ply": lambda: path.write_bytes(b""),
        "short.ply": lambda: path.write_bytes(_ply(tmp_path / "full.ply", "binary_big_endian", CLOUD).read_bytes()[:-40]),
        "garbage.pcd": lambda: path.write_bytes(b"\x00\x01garbage" * 30),
        "bad.off": lambda: path.write_text("NOT OFF\n1 2 3\n"),
        "noverts.off": lambda: path.write_text("OFF\n8 6 0\n0 0 0\n"),
        "ragged.xyz": lambda: path.write_text("1 2 3\n4 5\n"),
        "two_cols.xyz": lambda: path.write_text("1 2\n3 4\n"),
        "missing.ply": lambda: None,
        "unknown.abc": lambda: path.write_text("1 2 3\n"),
        "obj.npy": lambda: path.write_bytes(b"\x93NUMPY garbage"),
        "empty.xyz": lambda: path.write_text("# nothing\n"),
    }
    writers[case]()
    with pytest.raises(CorruptSampleError, match=reason) as info:
        check_cloud(read_point_file(path), str(path))
    assert case in str(info.value)

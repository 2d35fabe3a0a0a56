"""Binary point formats read by plain parsers: LZF-compressed PCD, binary PLY, KiCad VRML; bad files named."""

from __future__ import annotations

import numpy as np
import pytest

from mmim.data import CorruptSampleError
from mmim_points.datasets.formats import read_point_file
from mmim_points.datasets.lzf import LZFError, lzf_decompress
from mmim_points.datasets.ply import read_ply
from mmim_points.datasets.vrml import read_vrml


def lzf_compress(data: bytes) -> bytes:
    """A small greedy LZF compressor (liblzf's format) to write test files: 3-byte hash matches,
    back-references up to 264 bytes and 8 KiB back, literal runs up to 32 bytes."""
    out, literal, table, i, n = bytearray(), bytearray(), {}, 0, len(data)

    def flush() -> None:
        for k in range(0, len(literal), 32):
            chunk = literal[k : k + 32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        literal.clear()

    while i < n:
        key = data[i : i + 3]
        ref = table.get(key) if len(key) == 3 else None
        table[key] = i
        if ref is not None and 0 < i - ref <= 8192:
            length = 3
            while i + length < n and length < 264 and data[ref + length] == data[i + length]:
                length += 1
            flush()
            off, code = i - ref - 1, length - 2
            if code < 7:
                out.append((code << 5) | (off >> 8))
            else:
                out.extend([(7 << 5) | (off >> 8), code - 7])
            out.append(off & 0xFF)
            i += length
        else:
            literal.append(data[i])
            i += 1
    flush()
    return bytes(out)


def test_lzf_decompress_known_stream_and_errors():
    # literal "abc", then a back-reference of 9 bytes at distance 3 (overlapping: repeats "abc")
    stream = bytes([2]) + b"abc" + bytes([0xE0, 0, 2])
    assert lzf_decompress(stream, 12) == b"abcabcabcabc"
    # short back-reference (length 3 at distance 1): "a" then "aaa"
    assert lzf_decompress(bytes([0, ord("a"), 0x20, 0]), 4) == b"aaaa"
    with pytest.raises(LZFError, match="announces 13"):
        lzf_decompress(stream, 13)
    with pytest.raises(LZFError, match="before the start"):
        lzf_decompress(bytes([0x20, 5]), 3)
    with pytest.raises(LZFError, match="passes the end"):
        lzf_decompress(bytes([5]) + b"ab", 6)


def test_lzf_round_trip_on_float_data():
    rng = np.random.default_rng(0)
    data = np.repeat(rng.normal(size=(200, 3)).astype("<f4"), 3, axis=0).tobytes() + bytes(500) + b"xyz" * 100
    packed = lzf_compress(data)
    assert len(packed) < len(data) and lzf_decompress(packed, len(data)) == data


def _pcd_compressed(pts: np.ndarray, extra: np.ndarray) -> bytes:
    """PCL's binary_compressed layout: each field for all points in turn, LZF, sizes first."""
    n = len(pts)
    header = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH {n}\n"
              f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA binary_compressed\n").encode()
    plain = b"".join(pts[:, i].astype("<f4").tobytes() for i in range(3)) + extra.astype("<u4").tobytes()
    packed = lzf_compress(plain)
    return header + np.array([len(packed), len(plain)], "<u4").tobytes() + packed


def test_pcd_binary_compressed(tmp_path):
    rng = np.random.default_rng(1)
    pts = np.round(rng.normal(size=(64, 3)), 2).astype(np.float32)
    (tmp_path / "c.pcd").write_bytes(_pcd_compressed(pts, np.full(64, 0xFF8000)))
    np.testing.assert_array_equal(read_point_file(tmp_path / "c.pcd"), pts)
    raw = _pcd_compressed(pts, np.zeros(64))
    (tmp_path / "truncated.pcd").write_bytes(raw[:-10])
    with pytest.raises(CorruptSampleError, match=r"truncated\.pcd.*binary_compressed"):
        read_point_file(tmp_path / "truncated.pcd")
    (tmp_path / "size.pcd").write_bytes(raw.replace(b"POINTS 64", b"POINTS 65"))
    with pytest.raises(CorruptSampleError, match=r"size\.pcd.*65 points"):
        read_point_file(tmp_path / "size.pcd")


def _ply(fmt: str, verts: np.ndarray, faces: list[list[int]]) -> bytes:
    header = (f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex {len(verts)}\nproperty float x\n"
              f"property float y\nproperty float z\nproperty uchar red\nelement face {len(faces)}\n"
              "property list uchar int vertex_indices\nend_header\n").encode()
    if fmt == "ascii":
        body = "".join(f"{x} {y} {z} 7\n" for x, y, z in verts) + "".join(f"{len(f)} {' '.join(map(str, f))}\n" for f in faces)
        return header + body.encode()
    order = "<" if fmt == "binary_little_endian" else ">"
    vdt = np.dtype([("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4"), ("red", "u1")])
    v = np.zeros(len(verts), vdt)
    for i, c in enumerate("xyz"):
        v[c] = verts[:, i]
    body = v.tobytes() + b"".join(np.array([len(f)], "u1").tobytes() + np.array(f, order + "i4").tobytes() for f in faces)
    return header + body


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_formats_with_triangles_and_polygons(tmp_path, fmt):
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    for name, faces, expect in (
        ("tri", [[0, 1, 2], [0, 2, 3]], [[0, 1, 2], [0, 2, 3]]),
        ("quad", [[0, 1, 2, 3], [0, 1, 4]], [[0, 1, 2], [0, 2, 3], [0, 1, 4]]),  # a quad is fanned
    ):
        path = tmp_path / f"{name}.ply"
        path.write_bytes(_ply(fmt, verts, faces))
        v, f = read_ply(path)
        np.testing.assert_array_equal(v, verts)
        np.testing.assert_array_equal(f, np.array(expect))
    cloud = read_point_file(tmp_path / "tri.ply", mesh_points=500)  # a mesh: sampled on its surface
    assert cloud.shape == (500, 3) and np.allclose(cloud[:, 2], 0) and (cloud[:, :2] >= -1e-6).all()


def test_ply_point_cloud_matches_trimesh_and_bad_files(tmp_path):
    pts = np.random.default_rng(2).normal(size=(30, 3)).astype(np.float32)
    trimesh = pytest.importorskip("trimesh")
    trimesh.PointCloud(pts).export(tmp_path / "p.ply")  # trimesh writes binary_little_endian
    assert b"binary_little_endian" in (tmp_path / "p.ply").read_bytes()[:200]
    np.testing.assert_array_equal(read_point_file(tmp_path / "p.ply"), pts)
    good = _ply("binary_little_endian", pts[:4], [[0, 1, 2]])
    for name, data, message in (
        ("short.ply", good[:-30], "malformed binary_little_endian PLY"),
        ("noxyz.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n", "malformed ascii PLY"),
        ("range.ply", _ply("ascii", pts[:3], [[0, 1, 5]]), "face index out of range"),
        ("magic.ply", b"PLX\n", "not a PLY file"),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CorruptSampleError, match=rf"{name}.*{message}"):
            read_point_file(tmp_path / name)


WRL = """#VRML V2.0 utf8
#kicad StepUp wrl exported
Shape {
    appearance Appearance {material DEF PIN-01 Material { diffuseColor 0.8 0.8 0.8 } }
}
Shape { geometry IndexedFaceSet
{ creaseAngle 0.50 coordIndex [0,1,2,-1,0,2,3,-1]
coord Coordinate { point [0 0 0,1 0 0,1 1 0,0 1 0]
}}
appearance Appearance{material USE PIN-01 }
}
Shape { geometry IndexedFaceSet
{ coord Coordinate { point [0 0 1, 1 0 1, 1 1 1, 0 1 1] }
coordIndex [0,1,2,3,-1]
}}
"""


def test_kicad_vrml(tmp_path):
    (tmp_path / "part.wrl").write_text(WRL)
    v, f = read_vrml(tmp_path / "part.wrl")
    assert v.shape == (8, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]]
    cloud = read_point_file(tmp_path / "part.wrl", mesh_points=400)
    assert cloud.shape == (400, 3) and set(np.unique(cloud[:, 2])) <= {0.0, 1.0}
    (tmp_path / "bad.wrl").write_text(WRL.replace("1 1 0,0 1 0]", "1 1 0,0 1]"))
    with pytest.raises(CorruptSampleError, match=r"bad\.wrl.*not a list of triples"):
        read_point_file(tmp_path / "bad.wrl")
    (tmp_path / "index.wrl").write_text(WRL.replace("0,2,3,-1]", "0,2,9,-1]"))
    with pytest.raises(CorruptSampleError, match=r"index\.wrl.*out of range"):
        read_point_file(tmp_path / "index.wrl")
    (tmp_path / "plain.wrl").write_text("not vrml")
    with pytest.raises(CorruptSampleError, match=r"plain\.wrl.*VRML"):
        read_point_file(tmp_path / "plain.wrl")

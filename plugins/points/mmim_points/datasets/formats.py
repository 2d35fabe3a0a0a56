"""Single point-cloud / mesh files: OFF, PCD, PLY, WRL, XYZ/TXT/CSV, NPY (plain parsers) and OBJ/STL/GLB (trimesh).

:func:`read_point_file` returns a cloud ``(N, 3)`` float32: a file's vertices, or for a mesh
(faces present) points sampled uniformly on its surface (area-weighted, from a seeded generator,
so the same file always gives the same cloud). Unreadable or malformed files raise
:class:`~mmim.data.CorruptSampleError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmim.data import CorruptSampleError
from mmim_points.datasets.lzf import LZFError, lzf_decompress
from mmim_points.datasets.ply import read_ply
from mmim_points.datasets.vrml import read_vrml

PLAIN = (".off", ".pcd", ".ply", ".wrl", ".xyz", ".txt", ".csv", ".pts", ".npy")
TRIMESH = (".obj", ".stl", ".glb", ".gltf")
EXTENSIONS = PLAIN + TRIMESH


def _tokens(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="strict")
    except UnicodeDecodeError:
        raise CorruptSampleError(str(path), "not an ASCII file (binary OFF is not supported)") from None
    return [line.split("#", 1)[0] for line in text.splitlines()]


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """ASCII OFF -> vertices ``(V, 3)`` and triangle faces ``(F, 3)`` (polygons fanned), or None."""
    lines = [ln.split() for ln in _tokens(path) if ln.strip()]
    tag = lines[0][0].upper() if lines else ""
    if tag in ("OFF", "COFF", "NOFF", "CNOFF"):
        header, body = (lines[0][1:], lines[1:]) if len(lines[0]) > 1 else ((lines[1] if len(lines) > 1 else []), lines[2:])
    elif tag.startswith("OFF"):  # some ModelNet files fuse the header: "OFF490 518 0"
        header, body = [tag[3:], *lines[0][1:]], lines[1:]
    else:
        raise CorruptSampleError(str(path), "no OFF header")
    try:
        nv, nf = int(header[0]), int(header[1])
        if nv <= 0 or len(body) < nv + nf:
            raise ValueError(f"header announces {nv} vertices and {nf} faces, the file has {len(body)} data lines")
        verts = np.array([row[:3] for row in body[:nv]], dtype=np.float32)
        rows = body[nv : nv + nf]
        if all(len(r) == 4 and r[0] == "3" for r in rows):  # all triangles: the common case, vectorised
            faces = np.array([r[1:] for r in rows], dtype=np.int64).reshape(-1, 3)
        else:
            fan = []
            for row in rows:
                k, idx = int(row[0]), [int(v) for v in row[1 : int(row[0]) + 1]]
                fan.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, k - 1))
            faces = np.array(fan, dtype=np.int64).reshape(-1, 3)
    except (IndexError, ValueError) as err:
        raise CorruptSampleError(str(path), f"malformed OFF ({err})") from None
    if verts.shape != (nv, 3):
        raise CorruptSampleError(str(path), f"malformed OFF: vertex rows need 3 coordinates, got shape {verts.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= nv):
        raise CorruptSampleError(str(path), "face index out of range")
    return verts, (faces if len(faces) else None)


_PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "<i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
              ("U", 1): "<u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}


def _pcd_header(raw: bytes, path: Path) -> tuple[dict[str, list[str]], int]:
    header: dict[str, list[str]] = {}
    offset = 0
    for line in raw.split(b"\n"):
        offset += len(line) + 1
        text = line.decode("ascii", errors="replace").split("#", 1)[0].strip()
        if not text:
            continue
        key, *values = text.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            break
    fields = header.get("FIELDS", [])
    if "DATA" not in header or not all(f in fields for f in ("x", "y", "z")):
        raise CorruptSampleError(str(path), "PCD header lacks DATA or the x, y, z fields")
    return header, offset


def read_pcd(path: Path) -> np.ndarray:
    """PCD (``DATA ascii``, ``binary`` or ``binary_compressed``) -> the ``x, y, z`` fields ``(N, 3)``.

    ``binary`` stores points one after another (array of structs); ``binary_compressed`` stores
    ``uint32 compressed size, uint32 size`` then LZF data that holds each field for all points in
    turn (struct of arrays), as PCL writes it.
    """
    raw = path.read_bytes()
    header, offset = _pcd_header(raw, path)
    fields = header["FIELDS"]
    counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
    kind = header["DATA"][0].lower() if header["DATA"] else ""
    if kind == "ascii":
        rows = [r.split() for r in raw[offset:].decode("ascii", errors="replace").splitlines() if r.strip()]
        try:
            table = np.array(rows, dtype=np.float64)
        except ValueError as err:
            raise CorruptSampleError(str(path), f"malformed PCD ascii data ({err})") from None
        columns = np.cumsum([0, *counts])
        return np.stack([table[:, columns[fields.index(c)]] for c in "xyz"], axis=1).astype(np.float32)
    if kind not in ("binary", "binary_compressed"):
        raise CorruptSampleError(str(path), f"PCD DATA {kind!r} is not supported (ascii, binary, binary_compressed)")
    try:
        types = [np.dtype(_PCD_TYPES[(t.upper(), int(s))]) for t, s in zip(header["TYPE"], header["SIZE"], strict=True)]
        n = int(header.get("POINTS", header.get("WIDTH", ["0"]))[0])
        if len(types) != len(fields) or len(counts) != len(fields):
            raise ValueError(f"{len(fields)} FIELDS but {len(types)} TYPE/SIZE and {len(counts)} COUNT entries")
        if kind == "binary":
            dtype = np.dtype([(f, t, (c,)) for f, t, c in zip(fields, types, counts)])
            data = np.frombuffer(raw, dtype=dtype, count=n, offset=offset)
            columns = {c: data[c].reshape(n, -1)[:, 0] for c in "xyz"}
        else:
            compressed, size = np.frombuffer(raw, dtype="<u4", count=2, offset=offset)
            expected = n * sum(t.itemsize * c for t, c in zip(types, counts))
            if size != expected:
                raise ValueError(f"the header announces {n} points ({expected} bytes), the data {size} bytes")
            if offset + 8 + int(compressed) > len(raw):
                raise ValueError(f"compressed data of {int(compressed)} bytes passes the end of the file")
            plain = lzf_decompress(raw[offset + 8 : offset + 8 + int(compressed)], int(size))
            columns, at = {}, 0
            for f, t, c in zip(fields, types, counts):
                if f in "xyz":
                    columns[f] = np.frombuffer(plain, dtype=t, count=n * c, offset=at).reshape(n, c)[:, 0]
                at += n * c * t.itemsize
    except (KeyError, ValueError, TypeError, LZFError) as err:
        raise CorruptSampleError(str(path), f"malformed PCD {kind} data ({type(err).__name__}: {err})") from None
    return np.stack([columns[c] for c in "xyz"], axis=1).astype(np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: Path) -> np.ndarray:
    """Whitespace- or comma-separated numbers, one point per line (ModelNet ``.txt``: ``x,y,z,nx,ny,nz``); a
    first line of column names (``x,y,z`` as CSV exports write) is skipped."""
    try:
        text = path.read_text()
        rows = [ln.replace(",", " ").split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if rows and not any(_is_number(cell) for cell in rows[0]):
            rows = rows[1:]  # a header row
        return np.array(rows, dtype=np.float32) if rows else np.zeros((0, 3), np.float32)
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptSampleError(str(path), f"not a table of numbers with the same column count on every line ({err})") from None


def read_trimesh(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Any format trimesh reads -> vertices and faces (None for point clouds)."""
    try:
        import trimesh
    except ImportError as err:
        raise ImportError(f"reading {path.suffix} files needs trimesh (pip install 'mmim[points]')") from err
    try:
        obj = trimesh.load(str(path), process=False)
        if isinstance(obj, trimesh.Scene):
            parts = list(obj.geometry.values())
            if any(len(getattr(p, "faces", ())) for p in parts):
                obj = obj.to_mesh()
            else:
                verts = [np.asarray(p.vertices) for p in parts if hasattr(p, "vertices")]
                obj = trimesh.PointCloud(np.concatenate(verts) if verts else np.zeros((0, 3)))
    except Exception as err:  # trimesh raises many types for bad files
        raise CorruptSampleError(str(path), f"trimesh cannot read it ({type(err).__name__}: {err})") from None
    verts = np.asarray(getattr(obj, "vertices", np.zeros((0, 3))), dtype=np.float32)
    faces = getattr(obj, "faces", None)
    faces = np.asarray(faces, dtype=np.int64) if faces is not None and len(faces) else None
    return verts, faces


def sample_surface(vertices: Tensor, faces: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` points uniform on a triangle mesh's surface (area-weighted), ``(count, 3)``."""
    tri = vertices[faces]  # (F, 3, 3)
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1)
    if not torch.isfinite(area).all() or area.sum() <= 0:
        return vertices[torch.arange(count) % vertices.shape[0]]
    which = torch.multinomial(area / area.sum(), count, replacement=True, generator=generator)
    u, v = torch.rand(count, 1, generator=generator), torch.rand(count, 1, generator=generator)
    flip = (u + v) > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    t = tri[which]
    return t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0])


def read_point_file(path: str | Path, mesh_points: int = 8192, seed: int = 0, reader: str = "builtin") -> np.ndarray:
    """Read one file as a cloud ``(N, 3)`` float32 (``N = mesh_points`` for meshes).

    Args:
        path: a file with one of :data:`EXTENSIONS`.
        mesh_points: points sampled on a mesh's surface.
        seed: seed of the surface sampling.
        reader: ``"builtin"`` parsers, or ``"open3d"`` for PLY/PCD/OBJ/OFF (``mmim_points.datasets.open3d_io``).
    """
    from mmim_points.datasets.open3d_io import FORMATS as OPEN3D_FORMATS
    from mmim_points.datasets.open3d_io import check_backend, read_open3d

    path = Path(path)
    ext = path.suffix.lower()
    if not path.is_file():
        raise CorruptSampleError(str(path), "file not found")
    faces = None
    if check_backend(reader) == "open3d" and ext in OPEN3D_FORMATS:
        verts, faces = read_open3d(path)
    elif ext == ".off":
        verts, faces = read_off(path)
    elif ext == ".pcd":
        verts = read_pcd(path)
    elif ext == ".ply":
        verts, faces = read_ply(path)
    elif ext == ".wrl":
        verts, faces = read_vrml(path)
    elif ext == ".npy":
        try:
            verts = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise CorruptSampleError(str(path), f"not a numpy array file ({err})") from None
    elif ext in PLAIN:
        verts = read_table(path)
    elif ext in TRIMESH:
        verts, faces = read_trimesh(path)
    else:
        raise CorruptSampleError(str(path), f"unknown point-cloud format {ext!r}; supported: {', '.join(EXTENSIONS)}")
    verts = np.asarray(verts)
    if faces is None or verts.ndim != 2 or verts.shape[0] == 0:
        return verts
    if verts.shape[1] < 3 or not np.isfinite(verts[:, :3]).all():
        return verts  # let the dataset's checks name the problem
    g = torch.Generator().manual_seed(seed)
    pts = sample_surface(torch.from_numpy(verts[:, :3].astype(np.float32)), torch.from_numpy(faces), mesh_points, g)
    return pts.numpy()

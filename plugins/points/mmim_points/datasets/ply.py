"""A plain PLY reader (``ascii``, ``binary_little_endian``, ``binary_big_endian``): vertices and faces.

Needs nothing beyond numpy, so PLY files read the same with or without trimesh. Reads the
``vertex`` element's ``x, y, z`` and, when present, the ``face`` element's vertex-index list
(polygons fanned into triangles). Other elements are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmim.data import CorruptSampleError

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
    "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}


def _header(raw: bytes, where: str) -> tuple[str, list[tuple[str, int, list[tuple[str, ...]]]], int]:
    """(format, [(element, count, [property...])], offset of the body)."""
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise CorruptSampleError(where, "not a PLY file (no 'ply' magic or no end_header)")
    body = raw.index(b"\n", end) + 1 if b"\n" in raw[end:] else len(raw)
    fmt, elements = "", []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1] if len(parts) > 1 else ""
        elif parts[0] == "element" and len(parts) == 3:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            elements[-1][2].append(tuple(parts[1:]))
        else:
            raise CorruptSampleError(where, f"malformed PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise CorruptSampleError(where, f"unknown PLY format {fmt!r}")
    return fmt, elements, body


def _scalar_dtype(props: list[tuple[str, ...]], order: str, where: str) -> np.dtype:
    try:
        return np.dtype([(p[1], order + _TYPES[p[0]]) for p in props])
    except (KeyError, IndexError):
        raise CorruptSampleError(where, f"unsupported PLY property types {props}") from None


def _fan(faces: list[np.ndarray]) -> np.ndarray:
    tris = [np.stack([f[0].repeat(len(f) - 2), f[1:-1], f[2:]], axis=1) for f in faces if len(f) >= 3]
    return np.concatenate(tris).astype(np.int64) if tris else np.zeros((0, 3), np.int64)


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """PLY -> vertices ``(V, 3)`` float32 and triangle faces ``(F, 3)`` int64 (or None)."""
    where = str(path)
    raw = path.read_bytes()
    fmt, elements, offset = _header(raw, where)
    order = ">" if fmt == "binary_big_endian" else "<"
    verts, faces = None, None
    try:
        if fmt == "ascii":
            lines = iter(raw[offset:].decode("ascii").splitlines())
            for name, count, props in elements:
                rows = [next(lines).split() for _ in range(count)]
                if name == "vertex":
                    cols = [p[-1] for p in props]
                    table = np.array(rows, dtype=np.float64)
                    verts = table[:, [cols.index(c) for c in "xyz"]]
                elif name == "face":
                    faces = _fan([np.array(r[1 : 1 + int(r[0])], dtype=np.int64) for r in rows])
        else:
            for name, count, props in elements:
                if all(p[0] != "list" for p in props):
                    dtype = _scalar_dtype(props, order, where)
                    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
                    offset += dtype.itemsize * count
                    if name == "vertex":
                        verts = np.stack([data[c].astype(np.float64) for c in "xyz"], axis=1)
                    continue
                if len(props) != 1 or name != "face":
                    raise CorruptSampleError(where, f"PLY element {name!r} with list properties is not supported")
                _, count_type, index_type, _ = props[0]
                ct, it = np.dtype(order + _TYPES[count_type]), np.dtype(order + _TYPES[index_type])
                tri = np.dtype([("n", ct), ("v", it, (3,))])
                data = np.frombuffer(raw, dtype=tri, count=count, offset=offset) if len(raw) >= offset + tri.itemsize * count else None
                if data is not None and (data["n"] == 3).all():  # all triangles: the common case, vectorised
                    faces = data["v"].astype(np.int64)
                    offset += tri.itemsize * count
                else:
                    polys = []
                    for _ in range(count):
                        k = int(np.frombuffer(raw, dtype=ct, count=1, offset=offset)[0])
                        polys.append(np.frombuffer(raw, dtype=it, count=k, offset=offset + ct.itemsize).astype(np.int64))
                        offset += ct.itemsize + k * it.itemsize
                    faces = _fan(polys)
    except CorruptSampleError:
        raise
    except (ValueError, KeyError, IndexError, StopIteration, UnicodeDecodeError) as err:
        raise CorruptSampleError(where, f"malformed {fmt} PLY data ({type(err).__name__}: {err})") from None
    if verts is None:
        raise CorruptSampleError(where, "PLY file has no vertex element with x, y, z")
    if faces is not None and len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise CorruptSampleError(where, "PLY face index out of range")
    return verts.astype(np.float32), (faces if faces is not None and len(faces) else None)

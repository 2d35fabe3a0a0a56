"""VRML 2.0 (``.wrl``) meshes as KiCad exports them: a flat list of ``Shape``s, each an
``IndexedFaceSet`` with ``coord Coordinate { point [...] }`` and ``coordIndex [...]``.

Only what such files use is read: every ``IndexedFaceSet``'s points and polygons (``-1``
terminated, fanned into triangles), concatenated. ``Transform`` nodes, ``USE``-shared geometry and
other node types are not interpreted (KiCad's models have none of them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mmim.data import CorruptSampleError

_POINT = re.compile(r"\bpoint\s*\[([^\]]*)\]")
_INDEX = re.compile(r"\bcoordIndex\s*\[([^\]]*)\]")


def _numbers(text: str, dtype: type) -> np.ndarray:
    return np.array(text.replace(",", " ").split(), dtype=dtype)


def read_vrml(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``.wrl`` -> vertices ``(V, 3)`` float32 and triangles ``(F, 3)`` int64 (None when there are none)."""
    where = str(path)
    try:
        text = path.read_text(errors="strict")
    except UnicodeDecodeError:
        raise CorruptSampleError(where, "not a text VRML file (gzipped .wrl is not supported)") from None
    if not text.lstrip().startswith("#VRML"):
        raise CorruptSampleError(where, "no '#VRML' header")
    verts, tris, base = [], [], 0
    try:
        for chunk in text.split("IndexedFaceSet")[1:]:
            points, index = _POINT.search(chunk), _INDEX.search(chunk)
            if points is None:
                continue
            v = _numbers(points.group(1), np.float64)
            if v.size % 3:
                raise ValueError(f"a point list of {v.size} numbers is not a list of triples")
            v = v.reshape(-1, 3)
            if index is not None:
                idx = _numbers(index.group(1), np.int64)
                if len(idx) % 4 == 0 and (idx[3::4] == -1).all():  # all triangles: the common case
                    tris.append(idx.reshape(-1, 4)[:, :3] + base)
                    verts.append(v)
                    base += len(v)
                    continue
                stops = np.flatnonzero(idx == -1)
                for poly in np.split(idx, stops + 1):
                    poly = poly[poly >= 0]
                    if len(poly) >= 3:
                        tris.append(np.stack([poly[0].repeat(len(poly) - 2), poly[1:-1], poly[2:]], axis=1) + base)
            verts.append(v)
            base += len(v)
    except ValueError as err:
        raise CorruptSampleError(where, f"malformed IndexedFaceSet ({err})") from None
    if not verts:
        raise CorruptSampleError(where, "no IndexedFaceSet with points")
    vertices = np.concatenate(verts).astype(np.float32)
    faces = np.concatenate(tris) if tris else None
    if faces is not None and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise CorruptSampleError(where, "coordIndex out of range")
    return vertices, faces

"""Writers for the unusual-image corpus (Pillow where it writes the format; a minimal PNG and TIFF writer for
what Pillow cannot write: 16-bit RGB, unsigned 32-bit and float RGB TIFF, big-endian TIFF)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit PNG of ``(H, W)`` grey or ``(H, W, 3|4)`` RGB(A) ``uint16`` values."""
    arr = np.asarray(arr, np.uint16)
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def tiff(path: Path, arr: np.ndarray, byteorder: str = "<") -> Path:
    """An uncompressed single-strip TIFF of ``(H, W)`` or ``(H, W, C)`` values of ``arr``'s dtype
    (SampleFormat 1 unsigned, 2 signed, 3 float, from the dtype)."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    bo = byteorder
    data = arr.astype(arr.dtype.newbyteorder(bo)).tobytes()
    bits, fmt = arr.dtype.itemsize * 8, {"u": 1, "i": 2, "f": 3}[arr.dtype.kind]
    extra_at = 8 + len(data)
    extra = struct.pack(bo + "H" * c, *[bits] * c) + struct.pack(bo + "H" * c, *[fmt] * c) if c > 1 else b""
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, bits if c == 1 else extra_at), (259, 3, 1, 1),
            (262, 3, 1, 2 if c >= 3 else 1), (273, 4, 1, 8), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)),
            (284, 3, 1, 1), (339, 3, c, fmt if c == 1 else extra_at + 2 * c)]
    ifd = struct.pack(bo + "H", len(tags))
    for tag, kind, count, value in tags:
        if kind == 3 and count == 1:
            ifd += struct.pack(bo + "HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack(bo + "HHII", tag, kind, count, value)
    ifd += struct.pack(bo + "I", 0)
    head = (b"II" if bo == "<" else b"MM") + struct.pack(bo + "HI", 42, extra_at + len(extra))
    path.write_bytes(head + data + extra + ifd)
    return path


def pattern(h: int = 12, w: int = 20) -> np.ndarray:
    """An RGB ``uint8`` image with no symmetry: a red top-left block, a green bottom bar, a blue right column."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[: h // 3, : w // 4] = (230, 20, 20)
    img[-2:, :] = (20, 220, 20)
    img[:, -3:] = (20, 20, 230)
    return img


# The stored (raw) image for each EXIF orientation, such that turning it upright gives ``pattern()``:
# the inverse of ImageOps.exif_transpose's transposition.
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}

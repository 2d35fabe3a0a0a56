"""A small, strict reader and writer for the IDX format of (Fashion-)MNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
``uint32`` dimensions, then ``prod(dims)`` big-endian values of ``<type>``, nothing more. Files
may be gzip-compressed (``*.gz``). Every defect raises :class:`~mmim.data.DataError` naming the
file: a wrong magic number, an unknown type code, an unexpected rank or type, a header or payload
shorter than announced, trailing bytes, or a broken gzip stream.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mmim.data import DataError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# IDX type code -> big-endian numpy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TORCH_TO_CODE = {torch.uint8: 0x08, torch.int8: 0x09, torch.int16: 0x0B, torch.int32: 0x0C,
                  torch.float32: 0x0D, torch.float64: 0x0E}


def _read_bytes(source: Path | Traversable) -> bytes:
    """Raw (decompressed when the name ends in ``.gz``) content of ``source``."""
    if not source.is_file():
        raise DataError(f"{source}: IDX file not found")
    try:
        data = source.read_bytes()
    except OSError as err:
        raise DataError(f"{source}: cannot read IDX file ({type(err).__name__}: {err})") from err
    if source.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; truncation is EOFError
            raise DataError(f"{source}: broken gzip stream ({type(err).__name__}: {err})") from err
    return data


def parse_idx(data: bytes, name: str = "<bytes>", ndim: int | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Parse the bytes of one (uncompressed) IDX file.

    Args:
        data: the file content.
        name: the file name used in error messages.
        ndim: required rank, if any (3 for image files, 1 for label files).
        dtype: required element type, if any.

    Returns:
        a tensor of shape ``dims`` (e.g. ``(N, H, W)`` for images, ``(N,)`` for labels), native byte order.

    Raises:
        DataError: the bytes are not a well-formed IDX file of the required rank and type.
    """
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header (need at least 4)")
    zero0, zero1, code, rank = data[:4]
    if zero0 or zero1:
        raise DataError(f"{name}: bad IDX magic number 0x{data[:4].hex()} (must start with two zero bytes)")
    if code not in IDX_TYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x} (known: {', '.join(f'0x{c:02x}' for c in IDX_TYPES)})")
    if rank == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    if ndim is not None and rank != ndim:
        raise DataError(f"{name}: expected an IDX file with {ndim} dimensions, header declares {rank}")
    np_dtype = IDX_TYPES[code]
    if dtype is not None and _TORCH_TO_CODE.get(dtype) != code:
        raise DataError(f"{name}: expected IDX element type {dtype}, header declares type code 0x{code:02x} ({np_dtype})")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header: {rank} dimensions need {header} bytes, file has {len(data)}")
    dims = struct.unpack(f">{rank}I", data[4:header])
    expected = math.prod(dims) * np_dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise DataError(f"{name}: truncated IDX data: header {dims} announces {expected} bytes, file has {got}")
    if got > expected:
        raise DataError(f"{name}: {got - expected} unexpected trailing bytes after the IDX data of shape {dims}")
    array = np.frombuffer(data, dtype=np_dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(np_dtype.newbyteorder("="), copy=True))


def read_idx(source: Path | Traversable, ndim: int | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Read an IDX file (gzip-compressed if its name ends in ``.gz``); see :func:`parse_idx`.

    Args:
        source: a path, or a :mod:`importlib.resources` traversable inside a package.
        ndim: required rank, if any.
        dtype: required element type, if any.

    Returns:
        the array as a tensor of the header's shape.
    """
    return parse_idx(_read_bytes(source), str(source), ndim=ndim, dtype=dtype)


def encode_idx(array: Tensor) -> bytes:
    """The uncompressed IDX bytes of ``array`` (any shape of rank >= 1, a dtype IDX supports)."""
    if array.dtype not in _TORCH_TO_CODE:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; supported: {', '.join(map(str, _TORCH_TO_CODE))}")
    if array.dim() == 0 or array.dim() > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.dim()}")
    code = _TORCH_TO_CODE[array.dtype]
    header = bytes([0, 0, code, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    return header + array.contiguous().numpy().astype(IDX_TYPES[code]).tobytes()


def write_idx(path: Path, array: Tensor) -> None:
    """Write ``array`` as an IDX file, gzip-compressed (level 9, ``mtime=0``: reproducible) if ``path`` ends in ``.gz``."""
    data = encode_idx(array)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)

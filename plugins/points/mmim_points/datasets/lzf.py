"""LZF decompression (liblzf's format), as used by PCL's ``DATA binary_compressed`` PCD files.

A stream is a sequence of runs, each led by a control byte ``c``:

* ``c < 32``: a literal run, the next ``c + 1`` bytes are copied as they are;
* otherwise a back-reference: length ``(c >> 5) + 2`` (when ``c >> 5 == 7`` one more byte is added
  to the length), offset ``((c & 31) << 8) + next_byte + 1`` bytes back in the output. The copy may
  overlap its own output (a run of repeated bytes).
"""

from __future__ import annotations


class LZFError(ValueError):
    """Malformed LZF data."""


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """Decompress ``data`` into exactly ``expected_size`` bytes, or raise :class:`LZFError`."""
    out = bytearray()
    ip, n = 0, len(data)
    while ip < n:
        ctrl = data[ip]
        ip += 1
        if ctrl < 32:  # literal run
            length = ctrl + 1
            if ip + length > n:
                raise LZFError(f"literal run of {length} bytes at input offset {ip - 1} passes the end of the data")
            out += data[ip : ip + length]
            ip += length
            continue
        length = ctrl >> 5
        if length == 7:
            if ip >= n:
                raise LZFError("truncated back-reference length")
            length += data[ip]
            ip += 1
        if ip >= n:
            raise LZFError("truncated back-reference offset")
        start = len(out) - ((ctrl & 0x1F) << 8) - data[ip] - 1
        ip += 1
        length += 2
        if start < 0:
            raise LZFError(f"back-reference before the start of the output (at output offset {len(out)})")
        if start + length <= len(out):
            out += out[start : start + length]
        else:  # overlapping copy: repeat the period
            period = out[start:]
            out += (period * (length // len(period) + 1))[:length]
        if len(out) > expected_size:
            raise LZFError(f"output exceeds the announced {expected_size} bytes")
    if len(out) != expected_size:
        raise LZFError(f"decompressed {len(out)} bytes, the header announces {expected_size}")
    return bytes(out)

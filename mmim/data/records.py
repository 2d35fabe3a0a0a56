"""One sample as a shard record: its encoded members (the original file bytes, a PNG, an NPY) and JSON metadata.

A dataset that can be packed and streamed implements two methods (the shard protocol):

- ``shard_record(index) -> dict[str, bytes | dict]``: the members of sample ``index`` keyed by
  extension (``{"jpg": b"...", "json": {"label": 3, "source": "/data/x.jpg"}}``); keep the
  original encoded bytes where the sample is a file.
- ``decode_record(record, where) -> item``: the item ``dataset[index]`` gives, decoded from those
  bytes through the dataset's own reader and transform (``where`` names the shard and member
  for errors). The engine runs it under the same per-sample seed as the map-style loader, so a
  sample read from a shard equals the one read from its file.

A dataset may also name, in a ``lazy_members`` attribute, member extensions it reads only parts of; the shard
stream then hands those as :class:`~mmim.data.shards.MemberRange` (the member's place in the local shard: slices read
just those bytes) instead of bytes
(:func:`mmim.data.shards.iter_samples`). The video datasets do, for frames stored as images.

The helpers here serve those methods: :func:`file_record` / :func:`spilled` let a reader that
takes a path decode shard bytes unchanged (one decode path per modality).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmim.data.errors import CorruptSampleError, DataError

META = "json"


def file_record(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The members of a file-backed sample: ``{suffix: file bytes, "json": meta + source}``.

    Raises:
        CorruptSampleError: the file cannot be read (names it).
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".") or "bin"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorruptSampleError(str(path), f"cannot read ({type(err).__name__}: {err})") from None
    return {ext: data, META: {**meta, "source": str(path)}}


def main_member(record: dict[str, Any], where: str) -> tuple[str, bytes]:
    """The one encoded (non-JSON) member of ``record`` as ``(ext, bytes)``."""
    found = [(k, v) for k, v in record.items() if k != META and not k.startswith("__")]
    if len(found) != 1:
        raise CorruptSampleError(where, f"expected one data member next to the JSON, found {sorted(k for k, _ in found)}")
    return found[0]


def meta_of(record: dict[str, Any], where: str) -> dict[str, Any]:
    """The record's JSON metadata (decoded if still bytes)."""
    value = record.get(META)
    if value is None:
        raise CorruptSampleError(where, "no .json member (labels and metadata)")
    if isinstance(value, (bytes, bytearray)):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise CorruptSampleError(where, f"the .json member is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise CorruptSampleError(where, "the .json member is not a JSON object")
    return value


def spill_dir() -> str:
    """Where :func:`spilled` writes: ``/dev/shm`` (memory) when it exists, else the temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


@contextlib.contextmanager
def spilled(ext: str, data: bytes) -> Iterator[str]:
    """A temporary file holding ``data`` with suffix ``.ext`` (in memory where possible), removed after.

    Lets a reader that opens paths (PIL, decord/PyAV, soundfile) decode shard bytes exactly as it
    decodes the original file. A :class:`CorruptSampleError` raised inside names "the .ext member"
    instead of the temporary file (the shard reader adds the shard and key).
    """
    fd, name = tempfile.mkstemp(suffix=f".{ext}", prefix="mmim-", dir=spill_dir())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield name
    except CorruptSampleError as err:  # the reader named the temporary file: name the member instead
        member = f"the .{ext} member"
        raise CorruptSampleError(member if err.path == name else err.path, err.reason.replace(name, member),
                                 err.line) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def npy_bytes(array: Any) -> bytes:
    """``array`` in NumPy's ``.npy`` format."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def read_npy(data: bytes, where: str) -> np.ndarray:
    """Parse ``.npy`` bytes (no pickles), or CorruptSampleError naming ``where``."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # ValueError, EOFError, OSError on truncated or foreign bytes
        raise CorruptSampleError(where, f"not a valid .npy member ({type(err).__name__}: {err})") from None


def require_protocol(dataset: Any, what: str) -> None:
    """DataError unless ``dataset`` implements the shard protocol (``shard_record`` and ``decode_record``)."""
    missing = [m for m in ("shard_record", "decode_record") if not callable(getattr(dataset, m, None))]
    if missing:
        raise DataError(
            f"{what}: {type(dataset).__module__}.{type(dataset).__name__} cannot be written to or read from shards: "
            f"it lacks {' and '.join(missing)} (the shard protocol, see docs/data.md)"
        )


def build_decoder(spec: dict[str, Any], split: str, augment: bool) -> Any:
    """The dataset that decodes shard records of ``spec`` (``data.dataset``) when training from shards.

    A dataset class whose constructor needs its files (it scans a folder or reads a list) can
    offer ``shard_decoder(split, augment, **options)``, a classmethod building it without them; then
    the shards are all a training node needs. Otherwise the dataset is built as usual.
    """
    from mmim import registry

    cls = registry.check_options("dataset", spec, ("split", "augment"), where="data.dataset")
    options = {k: v for k, v in spec.items() if k != "name"}
    make = getattr(cls, "shard_decoder", None)
    dataset = make(split=split, augment=augment, **options) if callable(make) else \
        registry.build("dataset", spec, where="data.dataset", split=split, augment=augment)
    require_protocol(dataset, f"data.dataset {spec.get('name')!r}")
    return dataset

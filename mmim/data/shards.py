"""Tar shards (the WebDataset layout): where they are, their index, and reading their samples.

A shard is a tar file whose members ``<key>.<ext>`` group into samples by key, in order
(``000000042.png`` + ``000000042.json``). ``mmim pack`` writes shards ``<split>-NNNNNN.tar`` and an
``index.json`` next to them (samples and SHA-256 of every shard). ``data.shards`` names them as a
directory, a list, a brace pattern (``train-{000000..000099}.tar``), ``http(s)://`` URLs or
``pipe:`` commands; opening and brace expansion go through ``webdataset``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmim.data.errors import DataError

INDEX = "index.json"
FORMAT = "mmim-shards"


@dataclass
class ShardSet:
    """Resolved shards: ``urls[i]`` holds ``counts[i]`` samples; ``index`` is the parsed index.json."""

    urls: list[str]
    counts: list[int]
    index: dict[str, Any]

    @property
    def num_samples(self) -> int:
        return sum(self.counts)


def expand(pattern: str) -> list[str]:
    """Brace-expand ``pattern`` (``a-{000..003}.tar`` -> four names), as webdataset does."""
    import braceexpand

    return list(braceexpand.braceexpand(pattern))


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "pipe:")) or "://" in url and not url.startswith("file://")


def open_url(url: str):
    """A binary stream of ``url``: a local path, ``file://``, ``http(s)://`` or ``pipe:CMD`` (webdataset's gopen).

    Raises:
        DataError: the source cannot be opened (names it).
    """
    from webdataset.gopen import gopen

    try:
        if not is_remote(url):
            return open(url.removeprefix("file://"), "rb")
        return gopen(url, "rb")
    except Exception as err:
        raise DataError(f"{url}: cannot open shard ({type(err).__name__}: {err})") from None


def read_index(location: str) -> dict[str, Any]:
    """Parse an ``index.json`` (local path or URL)."""
    try:
        with open_url(location) as f:
            data = f.read()
        index = json.loads(data)
    except DataError:
        raise DataError(f"{location}: shard index not found; give data.shards_index (written by mmim pack)") from None
    except ValueError as err:
        raise DataError(f"{location}: shard index is not valid JSON ({err})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("shards"), list):
        raise DataError(f"{location}: not an mmim shard index (expected format {FORMAT!r} and a 'shards' list)")
    return index


def _sibling(url: str, name: str) -> str:
    if url.startswith("pipe:"):
        raise DataError(f"{url}: cannot guess where the index of pipe: shards is; give data.shards_index")
    head = url.rsplit("/", 1)[0] if "/" in url else "."
    return f"{head}/{name}"


def resolve(shards: str | list[str], index: str | None = None) -> ShardSet:
    """Shard URLs and their sample counts from ``data.shards`` (and ``data.shards_index``).

    Raises:
        DataError: no shards, an index that does not list a shard, or a missing directory.
    """
    entries = [shards] if isinstance(shards, str) else list(shards)
    if not entries:
        raise DataError("data.shards: no shards given")
    urls: list[str] = []
    for entry in entries:
        local = entry.removeprefix("file://")
        if not is_remote(entry) and Path(local).is_dir():
            found = read_index(str(Path(local) / INDEX)) if index is None else read_index(index)
            urls += [str(Path(local) / s["name"]) for s in found["shards"]]
            index = index or str(Path(local) / INDEX)
        elif entry.endswith("/" + INDEX) or entry == INDEX:
            found = read_index(entry)
            urls += [_sibling(entry, s["name"]) for s in found["shards"]]
            index = index or entry
        else:
            urls += expand(entry)
    if not urls:
        raise DataError(f"data.shards: {shards!r} names no shard")
    parsed = read_index(index or _sibling(urls[0], INDEX))
    by_name = {s["name"]: int(s["samples"]) for s in parsed["shards"]}
    counts = []
    for url in urls:
        name = url.rsplit("/", 1)[-1].split()[-1] if url.startswith("pipe:") else url.rsplit("/", 1)[-1]
        if name not in by_name:
            raise DataError(f"{url}: shard {name!r} is not in the index {index or _sibling(urls[0], INDEX)}")
        counts.append(by_name[name])
    return ShardSet(urls, counts, parsed)


def split_key(name: str) -> tuple[str, str]:
    """``dir/000000042.flac`` -> ``("dir/000000042", "flac")`` (the key ends at the first dot of the base name)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


READ_CHUNK = 1 << 20  # remote tar stream reads: 1 MiB at a time (tarfile's default 10 KiB: a 13 MB member, 60k reads)


class MemberRange:
    """A member of a local shard left in the file: ``len()`` is its size, a slice reads those bytes (``bytes()``
    the whole member). Nothing stays open between reads, however many such members a shuffle buffer holds.

    Raises:
        DataError: on reading, the shard has become shorter or unreadable (names it and the member's range).
    """

    __slots__ = ("path", "offset", "size")

    def __init__(self, path: str, offset: int, size: int) -> None:
        self.path, self.offset, self.size = path, offset, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a shard member range reads contiguous slices only")
        start, stop, _ = index.indices(self.size)
        if stop <= start:
            return b""
        try:
            with open(self.path, "rb", buffering=0) as f:
                data = os.pread(f.fileno(), stop - start, self.offset + start)
        except OSError as err:
            raise DataError(f"{self.path}: cannot read bytes {self.offset + start}-{self.offset + stop} "
                            f"({type(err).__name__}: {err})") from None
        if len(data) != stop - start:
            raise DataError(f"{self.path}: shard ends inside a member (bytes {self.offset + start}-{self.offset + stop})")
        return data

    def __bytes__(self) -> bytes:
        return self[:]

    def __repr__(self) -> str:
        return f"MemberRange({self.path!r}, offset={self.offset}, size={self.size})"


def iter_samples(url: str, lazy: Collection[str] = ()) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` for every sample of one shard, streamed in order.

    Members whose extension is in ``lazy`` are not read from a local shard: they come as :class:`MemberRange`
    (where they lie in the file), so a decoder that needs a few ranges of a large member (the frames of one clip
    out of a video's ``.mjpeg``) reads only those. A dataset asks for this with a ``lazy_members`` attribute
    (the shard protocol, ``mmim/data/records.py``); remote shards are read as usual.

    Raises:
        DataError: the shard cannot be opened or its tar data is broken (names the shard and the
            last member read).
    """
    stream = open_url(url)
    key, members, last = None, {}, "(start)"
    size = None
    try:
        # a local file is read in place (seekable: each member read once, straight from the file); a remote
        # stream through tarfile's stream mode, in large chunks
        mode = "r|*" if is_remote(url) else "r:*"
        if lazy and not is_remote(url):
            size = os.fstat(stream.fileno()).st_size
        with tarfile.open(fileobj=stream, mode=mode, bufsize=READ_CHUNK) as tar:
            for info in tar:
                if not info.isfile():
                    continue
                k, ext = split_key(info.name)
                if size is not None and ext in lazy and not info.issparse():
                    if info.offset_data + info.size > size:
                        raise EOFError(f"member {info.name} ends at byte {info.offset_data + info.size}, "
                                       f"the file has {size}")
                    data = MemberRange(url.removeprefix("file://"), info.offset_data, info.size)
                else:
                    f = tar.extractfile(info)
                    data = f.read() if f is not None else b""
                last = info.name
                if k != key:
                    if key is not None:
                        yield key, members
                    key, members = k, {}
                if ext in members:
                    raise DataError(f"{url}: member {info.name} appears twice in one sample")
                members[ext] = data
        if key is not None:
            yield key, members
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{url}: broken shard after member {last} ({type(err).__name__}: {err})") from None
    finally:
        stream.close()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(directory: str | Path) -> list[str]:
    """Check every shard of a packed directory against its index (size and SHA-256); the problems found."""
    directory = Path(directory)
    index = read_index(str(directory / INDEX))
    problems = []
    for shard in index["shards"]:
        path = directory / shard["name"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif os.path.getsize(path) != shard["bytes"]:
            problems.append(f"{path}: {os.path.getsize(path)} bytes, the index says {shard['bytes']}")
        elif sha256_file(path) != shard["sha256"]:
            problems.append(f"{path}: SHA-256 differs from the index")
    return problems

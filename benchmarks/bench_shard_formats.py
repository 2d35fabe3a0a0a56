"""Shard formats on the same records: webdataset tar (what mmim uses), MosaicML MDS and LitData chunks.

A registered dataset's shard records (``shard_record(i)`` encoded by ``mmim.data.pack.encode_members``:
the original encoded bytes plus ``.json`` metadata) are written three ways into a temporary folder:
tar shards by ``mmim.data.pack.pack``, MDS shards by ``streaming.MDSWriter`` (every member a
``bytes`` column) and LitData chunks by ``litdata.optimize`` (one item per sample, a dict of bytes),
each aiming at ``--shard-bytes`` per shard. Write time includes building the dataset and encoding
its records, the same work for every format. Then, in this one process, every reader makes one full
sequential pass over the raw records (bytes only, no decode) from the local folder (just written, so
from the page cache), the readers alternated over ``--rounds``:

- webdataset tar: ``mmim.data.shards.iter_samples`` over the shard paths, and ``webdataset.WebDataset``
- MDS: ``streaming.StreamingDataset(local=..., batch_size=--batch-size)`` (it needs a batch size and
  reads ahead 8 batches; at ``batch_size=1`` its 7 ms polling caps it near 1,000 samples/s)
- LitData: ``litdata.StreamingDataset(input_dir=...)``, its members as it gives them (``memoryview``
  into the chunk) and copied to ``bytes`` (what the other readers give)

A pass counts samples and member bytes (times include building the reader); a pass that does not
give every sample and byte written is flagged ``MISCOUNT``. Printed: write seconds, size and files
per format, the median samples/s per reader, and what each installed library says about itself:
whether its shard files are tar archives (checked on the files just written, so their members
are listable with plain ``tar``), which URL schemes its reader registers (http(s), ``pipe:``), and
whether it has mid-epoch resume state (``state_dict`` on its dataset or loader). A library that is
not installed gives a ``not installed`` row. mosaicml-streaming and litdata are not mmim
dependencies (``pip install mosaicml-streaming litdata``)::

    python benchmarks/bench_shard_formats.py                         # image default: fashion_mnist
    python benchmarks/bench_shard_formats.py --modality audio --rounds 5
    python benchmarks/bench_shard_formats.py --dataset fashion_mnist --samples 1000 --json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mmim.config.recipe import read_yaml
from mmim.data.pack import build_dataset, pack, record_of
from mmim.data.shards import iter_samples
from mmim.recipes_catalog import default_recipe

# pip distribution -> import name
LIBRARIES = {"webdataset": "webdataset", "mosaicml-streaming": "streaming", "litdata": "litdata"}
FORMATS = {"webdataset": "tar", "mosaicml-streaming": "MDS", "litdata": "LitData chunks"}
Pass = tuple[int, int]  # samples, member bytes


@dataclass
class Row:
    """One reader of one format (or one library that could not be measured)."""

    library: str
    reader: str
    status: str  # "ok", "not installed", "MISCOUNT ..." or the error that stopped it
    version: str | None = None
    format: str = ""
    write_s: float | None = None
    disk_bytes: int | None = None
    files: int | None = None
    samples: int | None = None  # given by the last pass
    member_bytes: int | None = None
    rates: list[float] = field(default_factory=list)  # samples/s, one per round

    @property
    def rate(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


@dataclass
class Settings:
    """How the formats are written and read."""

    split: str = "train"
    shard_bytes: int = 1 << 20  # target shard size of every writer
    batch_size: int = 256  # streaming's per-device batch size: it reads ahead 8 batches (predownload)


@dataclass
class Written:
    """One format written: where, how long it took, what it holds, and its readers (name -> one pass)."""

    folder: Path
    seconds: float
    samples: int
    member_bytes: int
    readers: dict[str, Callable[[], Pass]]


def installed_version(dist: str) -> str | None:
    """The installed version of pip distribution ``dist``, or None."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def import_library(dist: str) -> Any:
    """Import ``dist``'s module (through mmim's torchvision workaround: both optional libraries import it)."""
    from mmim.timm_compat import import_torchvision

    import_torchvision()
    return importlib.import_module(LIBRARIES[dist])


def cut(spec: dict[str, Any], samples: int | None) -> dict[str, Any]:
    """``spec`` limited to its first ``samples`` (the option each dataset takes for it)."""
    spec = dict(spec)
    if samples is None:
        return spec
    if spec["name"] == "image_derived":
        spec["image"] = {**spec["image"], "max_samples": samples}
    elif spec["name"] in ("primitives", "synthetic_signals"):
        spec["num_samples"] = samples
    else:
        spec["max_samples"] = samples
    return spec


@contextlib.contextmanager
def temp_root(folder: Path) -> Iterator[None]:
    """``tempfile.gettempdir()`` is ``folder`` for the block (streaming leaves its file locks there)."""
    old = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = old


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def nbytes(members: dict[str, Any]) -> int:
    """Bytes of a sample's members (``bytes`` or ``memoryview``; webdataset's ``__key__``-style fields left out)."""
    return sum(memoryview(v).nbytes for k, v in members.items() if not k.startswith("__"))


def folder_size(folder: Path) -> tuple[int, int]:
    """Bytes and number of the files under ``folder``."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def data_files(folder: Path) -> list[Path]:
    """The shard files of a written format (its index and other JSON left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".json")


# --- writers: each builds the dataset and writes every record -------------------------------------

def write_webdataset(spec: dict[str, Any], out: Path, settings: Settings) -> Written:
    start = time.perf_counter()
    index = pack(spec, out, split=settings.split, shard_bytes=settings.shard_bytes, progress=False)
    seconds = time.perf_counter() - start
    urls = [str(out / s["name"]) for s in index["shards"]]
    member_bytes = 0
    for url in urls:
        with tarfile.open(url) as tar:
            member_bytes += sum(m.size for m in tar.getmembers() if m.isfile())
    return Written(out, seconds, index["num_samples"], member_bytes,
                   {"mmim iter_samples": functools.partial(read_mmim, urls),
                    "webdataset.WebDataset": functools.partial(read_webdataset, urls)})


def write_mds(spec: dict[str, Any], out: Path, settings: Settings) -> Written:
    from streaming import MDSWriter

    start = time.perf_counter()
    dataset = build_dataset(spec, settings.split)
    first = record_of(dataset, 0)
    columns = {ext: "bytes" for ext in first}
    count = size = 0
    with MDSWriter(out=str(out), columns=columns, size_limit=settings.shard_bytes) as writer:
        for i in range(len(dataset)):
            record = first if i == 0 else record_of(dataset, i)
            if record.keys() != columns.keys():
                raise ValueError(f"sample {i} has members {sorted(record)}, sample 0 {sorted(columns)}: "
                                 f"MDS columns are fixed")
            writer.write(record)
            count, size = count + 1, size + nbytes(record)
    return Written(out, time.perf_counter() - start, count, size,
                   {"streaming.StreamingDataset": functools.partial(read_mds, out, settings.batch_size, out.parent / "streaming-locks")})


def write_litdata(spec: dict[str, Any], out: Path, settings: Settings) -> Written:
    import litdata

    start = time.perf_counter()
    dataset = build_dataset(spec, settings.split)
    n = len(dataset)
    # optimize keeps its work folders under /tmp/chunks and /tmp/data unless told otherwise;
    # its one worker is a child process (fork: the function and the dataset need no pickling)
    cache = out.parent / "litdata-cache"
    with environment(DATA_OPTIMIZER_CACHE_FOLDER=str(cache / "chunks"),
                     DATA_OPTIMIZER_DATA_CACHE_FOLDER=str(cache / "data")), \
            contextlib.redirect_stdout(sys.stderr):
        litdata.optimize(fn=functools.partial(record_of, dataset), inputs=list(range(n)), output_dir=str(out),
                         chunk_bytes=settings.shard_bytes, num_workers=1, start_method="fork", verbose=False)
    seconds = time.perf_counter() - start
    size = sum(nbytes(record_of(dataset, i)) for i in range(n))  # what was written, for the read check
    return Written(out, seconds, n, size, {"litdata.StreamingDataset": functools.partial(read_litdata, out),
                                           "litdata ... + bytes(member)": functools.partial(read_litdata, out, True)})


WRITERS: dict[str, Callable[[dict[str, Any], Path, Settings], Written]] = {
    "webdataset": write_webdataset, "mosaicml-streaming": write_mds, "litdata": write_litdata}


# --- readers: one full sequential pass, (samples, member bytes) ------------------------------------

def read_mmim(urls: list[str]) -> Pass:
    count = size = 0
    for url in urls:
        for _, members in iter_samples(url):
            count, size = count + 1, size + nbytes(members)
    return count, size


def read_webdataset(urls: list[str]) -> Pass:
    import webdataset as wds

    count = size = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        count, size = count + 1, size + nbytes(sample)
    return count, size


def read_mds(folder: Path, batch_size: int, locks: Path) -> Pass:
    """streaming requires ``batch_size`` (it yields single samples all the same); its read-ahead thread stays
    within ``8 batch_size`` samples and polls every 7 ms, so a small batch size caps the rate (1: ~1,000/s)."""
    from streaming import StreamingDataset

    locks.mkdir(exist_ok=True)
    with temp_root(locks):  # its file locks go to the temporary folder, not /tmp
        dataset = StreamingDataset(local=str(folder), batch_size=batch_size)
    count = size = 0
    for sample in dataset:
        count, size = count + 1, size + nbytes(sample)
    del dataset  # frees its shared memory, so the next pass may open the same folder
    return count, size


def read_litdata(folder: Path, copy: bool = False) -> Pass:
    """LitData gives each member as a ``memoryview`` into its chunk; ``copy`` makes it ``bytes``, as the others give."""
    from litdata import StreamingDataset

    count = size = 0
    for sample in StreamingDataset(input_dir=str(folder)):
        if copy:
            sample = {k: bytes(v) for k, v in sample.items()}
        count, size = count + 1, size + nbytes(sample)
    return count, size


# --- what each library says about itself ----------------------------------------------------------

def url_schemes(dist: str) -> list[str]:
    """The URL schemes the library's reader registers (local paths always work)."""
    if dist == "webdataset":
        from webdataset.gopen import gopen_schemes

        return sorted(k for k in gopen_schemes if k != "__default__")
    if dist == "mosaicml-streaming":
        from streaming.base.storage.download import DOWNLOADER_MAPPINGS

        return sorted(k for k in DOWNLOADER_MAPPINGS if k)  # "" is the local copy
    from litdata.streaming.downloader import _DOWNLOADERS

    return sorted(k.rstrip(":/") for k in _DOWNLOADERS)


def resume_methods(dist: str) -> list[str]:
    """``Class.state_dict`` of the library's dataset and loader classes that have one."""
    module = import_library(dist)
    names = {"webdataset": ["WebDataset", "WebLoader"], "mosaicml-streaming": ["StreamingDataset", "StreamingDataLoader"],
             "litdata": ["StreamingDataset", "StreamingDataLoader"]}[dist]
    return [f"{n}.state_dict" for n in names if callable(getattr(getattr(module, n, None), "state_dict", None))]


def facts(dist: str, written: Written | None) -> dict[str, str]:
    """Tar members, http(s), pipe and resume, as the installed library and the written files show them."""
    out: dict[str, str] = {}
    if written is not None:
        shards = data_files(written.folder)
        tars = [tarfile.is_tarfile(p) for p in shards]
        kinds = sorted({p.suffix for p in shards})
        out["tar"] = "yes" if shards and all(tars) else f"no ({'/'.join(kinds)} files)"
    for key, get in (("schemes", url_schemes), ("resume", resume_methods)):
        try:
            out[key] = ",".join(get(dist)) or "no"
        except Exception as err:  # a private name moved in another version
            out[key] = f"unknown ({type(err).__name__})"
    schemes = out["schemes"].split(",")
    out["http(s)"] = "yes" if {"http", "https"} <= set(schemes) else "no"
    out["pipe"] = "yes" if "pipe" in schemes else "no"
    return out


# --- the benchmark ---------------------------------------------------------------------------------

def timed(read: Callable[[], Pass]) -> tuple[float, Pass]:
    start = time.perf_counter()
    result = read()
    return time.perf_counter() - start, result


def run(spec: dict[str, Any], settings: Settings, rounds: int, tmp: Path) -> tuple[list[Row], dict[str, dict]]:
    """Write every installed format, then read each with its readers over ``rounds``."""
    rows: list[Row] = []
    readers: list[tuple[Row, Written]] = []
    about: dict[str, dict[str, str]] = {}
    for dist, write in WRITERS.items():
        ver = installed_version(dist)
        if ver is None:
            rows.append(Row(dist, "-", "not installed", format=FORMATS[dist]))
            about[dist] = {"version": "not installed"}
            continue
        written = None
        try:
            import_library(dist)  # imported before the clock starts
            written = write(spec, tmp / dist, settings)
        except Exception as err:
            rows.append(Row(dist, "-", f"failed: {type(err).__name__}: {err}", ver, FORMATS[dist]))
        about[dist] = {"version": ver, **facts(dist, written)}
        if written is None:
            continue
        disk, files = folder_size(written.folder)
        for name in written.readers:
            row = Row(dist, name, "ok", ver, FORMATS[dist], round(written.seconds, 3), disk, files)
            rows.append(row)
            readers.append((row, written))
    for r in range(rounds):
        order = readers[r % len(readers):] + readers[:r % len(readers)] if readers else []
        for row, written in order:
            if not row.status.startswith(("ok", "MISCOUNT")):
                continue
            try:
                seconds, (count, size) = timed(written.readers[row.reader])
            except Exception as err:
                row.status = f"failed: {type(err).__name__}: {err}"
                continue
            row.samples, row.member_bytes = count, size
            row.rates.append(count / seconds)
            if (count, size) != (written.samples, written.member_bytes):
                row.status = (f"MISCOUNT: {count} of {written.samples} samples, "
                              f"{size} of {written.member_bytes} bytes")
    return rows, about


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def report(rows: list[Row], about: dict[str, dict[str, str]], title: str) -> str:
    lines = [title, "",
             f"{'library':<19} {'version':<8} {'format':<15} {'write s':>8} {'MB':>7} {'files':>5}  "
             f"{'reader':<27} {'samples':>7} {'samples/s':>10} {'(min-max)':>18}  status"]
    for row in rows:
        mb = None if row.disk_bytes is None else row.disk_bytes / 1e6
        spread = f"({min(row.rates):,.0f}-{max(row.rates):,.0f})" if row.rates else ""
        lines.append(f"{row.library:<19} {row.version or '-':<8} {row.format:<15} {_num(row.write_s, '.2f'):>8} "
                     f"{_num(mb, '.2f'):>7} {row.files if row.files is not None else '-':>5}  {row.reader:<27} "
                     f"{row.samples if row.samples is not None else '-':>7} {_num(row.rate, ',.0f'):>10} "
                     f"{spread:>18}  {row.status}")
    lines += ["", f"{'library':<19} {'tar members':<17} {'http(s)':<8} {'pipe:':<6} {'URL schemes':<53} resume state"]
    for dist, facts_ in about.items():
        if "schemes" not in facts_:
            lines.append(f"{dist:<19} {facts_['version']}")
            continue
        lines.append(f"{dist:<19} {facts_.get('tar', '-'):<17} {facts_['http(s)']:<8} {facts_['pipe']:<6} "
                     f"{facts_['schemes']:<53} {facts_['resume']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--modality", default="image", help="the default recipe's data.dataset (default: image)")
    src.add_argument("--dataset", help="a registered dataset name, with its default options")
    p.add_argument("--split", default="train")
    p.add_argument("--samples", type=int, help="the first N samples only (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="read passes per reader, alternated (default: 3)")
    p.add_argument("--shard-bytes", type=int, default=1 << 20, help="target shard size in bytes (default: 1 MiB)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="streaming's batch_size, which sets how far it reads ahead (default: 256)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line instead of tables")
    args = p.parse_args(argv)
    if args.dataset:
        spec, origin = {"name": args.dataset}, "its defaults"
    else:
        spec, origin = read_yaml(default_recipe(args.modality))["data"]["dataset"], f"{args.modality} default recipe"
    spec = cut(spec, args.samples)
    with tempfile.TemporaryDirectory(prefix="mmim-shard-formats-") as tmp:
        settings = Settings(args.split, args.shard_bytes, args.batch_size)
        rows, about = run(spec, settings, args.rounds, Path(tmp))
    samples = next((r.samples for r in rows if r.samples is not None), None)
    result = {"dataset": spec, "split": args.split, "samples": samples, "rounds": args.rounds,
              "shard_bytes": args.shard_bytes, "batch_size": args.batch_size,
              "rows": [{**asdict(r), "rate": r.rate} for r in rows], "libraries": about}
    if args.json:
        print(json.dumps(result))
    else:
        print(report(rows, about, f"{spec['name']} ({origin}), split {args.split}, {samples} samples, "
                                  f"{args.rounds} rounds, shards of ~{args.shard_bytes / 2**20:g} MiB; samples/s: "
                                  f"median of the rounds, one process, raw bytes from the page cache; "
                                  f"streaming batch_size {args.batch_size}"))
    return result


if __name__ == "__main__":
    main()

"""``mmim pack``: write a registered dataset to tar shards with an index, in parallel and resumably.

Sample ``i`` becomes the members ``{i:09d}.<ext>`` (its ``shard_record``: original encoded bytes
plus ``.json`` metadata). Shard ``s`` holds samples ``[s n, (s + 1) n)`` with ``n`` samples per
shard (given, or chosen from the mean record size of the first samples and the target shard
size), so workers write whole shards independently and an interrupted pack resumes by skipping
the shards already finished (each leaves a ``.done.json`` note until ``index.json`` is written).
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from mmim.data.errors import CorruptSampleError, DataError
from mmim.data.records import META, require_protocol
from mmim.data.shards import FORMAT, INDEX, sha256_file

PLAN = "pack.json"
PROBE = 16

_dataset: Any = None  # the dataset of a pack worker process
_encode: dict[str, Any] = {}  # the pack's encode options, passed to every shard_record call


def build_dataset(spec: dict[str, Any], split: str) -> Any:
    """The registered dataset ``spec`` for ``split``, without augmentation (what is packed is the source)."""
    from mmim import registry

    dataset = registry.build("dataset", spec, where="pack: dataset", split=split, augment=False)
    require_protocol(dataset, f"pack: dataset {spec.get('name')!r}")
    return dataset


def encode_members(record: dict[str, Any]) -> dict[str, bytes]:
    """Record values as bytes (``json`` dicts serialised)."""
    out = {}
    for ext, value in record.items():
        if ext == META and not isinstance(value, (bytes, bytearray)):
            value = json.dumps(value, sort_keys=True).encode()
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"shard_record member {ext!r} is {type(value).__name__}, not bytes")
        out[ext] = bytes(value)
    return out


def source_of(dataset: Any, index: int) -> str:
    """A name for sample ``index`` in errors: its file when the dataset lists ``samples`` with paths."""
    samples = getattr(dataset, "samples", None)
    try:
        first = samples[index][0]
        return str(first) if isinstance(first, (str, os.PathLike)) else f"sample {index}"
    except (TypeError, IndexError, KeyError):
        return f"sample {index}"


def record_of(dataset: Any, index: int) -> dict[str, bytes]:
    """Encoded members of sample ``index`` (``shard_record(index, **encode options)``); errors name the source file."""
    try:
        return encode_members(dataset.shard_record(index, **_encode))
    except CorruptSampleError:
        raise
    except Exception as err:
        raise CorruptSampleError(source_of(dataset, index), f"cannot pack ({type(err).__name__}: {err})") from err


def write_shard(dataset: Any, path: Path, indices: range, skip_corrupt: bool) -> dict[str, Any]:
    """Write samples ``indices`` to the tar ``path`` (atomically); returns its index entry."""
    tmp = path.with_name(path.name + ".tmp")
    skipped, written = [], 0
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in indices:
            try:
                members = record_of(dataset, i)
            except CorruptSampleError as err:
                if not skip_corrupt:
                    raise DataError(f"pack: sample {i}: {err}") from None
                skipped.append(str(err))
                continue
            for ext in sorted(members, key=lambda e: (e == META, e)):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size, info.mtime, info.mode = len(members[ext]), 0, 0o644
                tar.addfile(info, io.BytesIO(members[ext]))
            written += 1
    os.replace(tmp, path)
    return {"name": path.name, "samples": written, "bytes": os.path.getsize(path), "sha256": sha256_file(path),
            "first": indices.start, "skipped": skipped}


def _init_worker(spec: dict[str, Any], split: str, threads: int, encode: dict[str, Any]) -> None:
    global _dataset, _encode
    import torch

    torch.set_num_threads(threads)
    _dataset, _encode = build_dataset(spec, split), dict(encode)


def check_encode(dataset: Any, encode: dict[str, Any]) -> None:
    """DataError unless the dataset's ``shard_record`` takes the ``encode`` options (tried on sample 0)."""
    if not encode:
        return
    try:
        dataset.shard_record(0, **encode)
    except TypeError as err:
        if "keyword" not in str(err):
            raise
        raise DataError(f"pack --encode {sorted(encode)}: {type(dataset).__name__}.shard_record does not take "
                        f"these options ({err}); see the dataset's shard_record for what it can re-encode") from None
    except CorruptSampleError:
        pass  # sample 0 is unreadable: reported (or skipped) when its shard is written


def _pack_one(job: tuple[str, str, int, int, int, bool]) -> dict[str, Any]:
    out, split, shard, start, stop, skip_corrupt = job
    path = Path(out) / shard_name(split, shard)
    entry = write_shard(_dataset, path, range(start, stop), skip_corrupt)
    (path.parent / (path.name + ".done.json")).write_text(json.dumps(entry))
    return entry


def shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:06d}.tar"


def choose_samples_per_shard(dataset: Any, shard_bytes: int) -> int:
    """Samples per shard so that shards come out near ``shard_bytes`` (from the first records' size)."""
    probe = min(len(dataset), PROBE)
    sizes = []
    for i in range(probe):
        try:
            sizes.append(sum(len(v) + 512 for v in record_of(dataset, i).values()) + 512)
        except CorruptSampleError:
            continue
    mean = sum(sizes) / len(sizes) if sizes else 1.0
    return max(1, int(shard_bytes // mean))


def pack(spec: dict[str, Any], out: str | Path, split: str = "train", samples_per_shard: int | None = None,
         shard_bytes: int = 256 << 20, workers: int = 1, skip_corrupt: bool = False, progress: bool = True,
         threads: int = 1, encode: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write dataset ``spec``'s ``split`` to shards in ``out``; returns the index (also saved as ``out/index.json``).

    ``encode`` options go to every ``shard_record(index, **encode)`` call: how the dataset re-encodes its
    samples at pack time (video: ``short_side``, ``keyint``, ``frames``; see the dataset). They are recorded
    in the index. Resumes when ``out`` holds an unfinished pack of the same dataset, split, shard size and
    encode options.

    Raises:
        DataError: a sample cannot be read (names its file) unless ``skip_corrupt``; ``out`` holds
            a different pack.
    """
    global _dataset, _encode
    encode = dict(encode or {})
    out = Path(out)
    dataset = build_dataset(spec, split)
    n = len(dataset)
    if n == 0:
        raise DataError(f"pack: dataset {spec.get('name')!r} split {split!r} has no samples")
    check_encode(dataset, encode)
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        if plan["dataset"] != spec or plan["split"] != split or plan["num_samples"] != n or \
                plan.get("encode", {}) != encode or \
                (samples_per_shard is not None and plan["samples_per_shard"] != samples_per_shard):
            raise DataError(f"{out}: holds a pack of another dataset/split/shard size/encoding ({plan_path}); "
                            f"choose another output folder or remove it")
    else:
        _encode = encode  # the probe of record sizes encodes as the pack will
        per = samples_per_shard or choose_samples_per_shard(dataset, shard_bytes)
        plan = {"dataset": spec, "split": split, "num_samples": n, "samples_per_shard": per, "encode": encode}
        plan_path.write_text(json.dumps(plan, indent=1))
    per = plan["samples_per_shard"]
    num_shards = math.ceil(n / per)
    entries: dict[int, dict[str, Any]] = {}
    for s in range(num_shards):
        note = out / (shard_name(split, s) + ".done.json")
        if note.is_file() and (out / shard_name(split, s)).is_file():
            entries[s] = json.loads(note.read_text())
    jobs = [(str(out), split, s, s * per, min(n, (s + 1) * per), skip_corrupt) for s in range(num_shards) if s not in entries]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=sum(e["samples"] + len(e["skipped"]) for e in entries.values()),
                   unit="sample", desc=f"pack {split}", dynamic_ncols=True)
    start = time.perf_counter()
    try:
        _encode = encode
        if workers <= 1:
            _dataset = dataset
            results = map(_pack_one, jobs)
            pool = None
        else:
            ctx = mp.get_context("spawn" if os.environ.get("MMIM_PACK_SPAWN") else "fork")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(spec, split, threads, encode))
            results = pool.imap_unordered(_pack_one, jobs)
        for entry in results:
            entries[entry["first"] // per] = entry
            if bar is not None:
                bar.update(entry["samples"] + len(entry["skipped"]))
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if bar is not None:
            bar.close()
        _dataset, _encode = None, {}
    shards = [entries[s] for s in range(num_shards)]
    index = {"format": FORMAT, "version": 1, "dataset": spec, "split": split, "encode": encode,
             "num_samples": sum(e["samples"] for e in shards), "samples_per_shard": per,
             "skipped": [m for e in shards for m in e["skipped"]],
             "shards": [{k: e[k] for k in ("name", "samples", "bytes", "sha256", "first")} for e in shards],
             "seconds": round(time.perf_counter() - start, 3)}
    (out / INDEX).write_text(json.dumps(index, indent=1))
    for s in range(num_shards):
        (out / (shard_name(split, s) + ".done.json")).unlink(missing_ok=True)
    plan_path.unlink(missing_ok=True)
    return index

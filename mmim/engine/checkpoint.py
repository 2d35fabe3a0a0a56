"""Checkpoints of a run directory: atomic saves, safe loading, and a fallback past a corrupt newest one.

Two formats live side by side in a run directory:

- ``ckpt-<step>.pt``: one ``torch.save`` file in the one-process format (rank 0 writes it);
- ``ckpt-<step>/``: a sharded checkpoint (``torch.distributed.checkpoint``, every rank writes its
  part; see :mod:`mmim.engine.sharded`).

Either is written under a temporary name (``ckpt-<step>.pt.tmp``, ``ckpt-<step>.tmp/``) and renamed
only once complete, so a reader never sees a partial checkpoint; temporary leftovers of a crash are
never picked up. Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d+)(\.pt)?$")
REQUIRED_KEYS = ("model", "optimizer", "step")
T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read (truncated, corrupt, not a checkpoint)."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (e.g. a full disk); nothing half-written is left under its name."""


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors/tuples (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fsync_dir(path: str | Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` so that a reader never sees a partial file.

    The data goes to ``<path>.tmp`` (flushed and fsynced), which is then renamed. If writing fails
    (a full disk, an I/O error) the temporary file is removed and :class:`CheckpointSaveError`
    names the file and the cause; whatever was at ``path`` before is untouched.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointSaveError(f"{path}: cannot write the checkpoint: {_describe(err)}") from err
    return path


def _describe(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return f"no space left on the device ({err})"
    return str(err)


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint named ``ckpt-<step>.pt`` or ``ckpt-<step>/``, else ``None``."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` is a (complete) sharded checkpoint directory."""
    from mmim.engine.sharded import is_complete

    return Path(path).is_dir() and is_complete(path)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``run_dir`` as ``(step, path)``, oldest first: ``ckpt-<step>.pt`` files
    and finished sharded ``ckpt-<step>/`` directories (temporary ``*.tmp`` names are never listed)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.glob("ckpt-*"):
        m = _NAME.match(p.name)
        if m is None:
            continue
        if m.group(2) and p.is_file():
            found.append((int(m.group(1)), p))
        elif not m.group(2) and p.is_dir() and is_sharded(p):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_checkpoint(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps all)."""
    if keep > 0:
        for _, path in list_checkpoints(run_dir)[:-keep]:
            remove_checkpoint(path)


def remove_partial(run_dir: str | Path) -> list[Path]:
    """Delete temporary leftovers (``ckpt-*.tmp``, ``ckpt-*.pt.tmp``) of a save that did not finish."""
    run_dir = Path(run_dir)
    stale = sorted(run_dir.glob("ckpt-*.tmp")) if run_dir.is_dir() else []
    for p in stale:
        log.info("removing %s: a checkpoint whose save did not finish", p)
        remove_checkpoint(p)
    return stale


def load_newest(run_dir: str | Path, load: Callable[[Path], T]) -> tuple[Path, T]:
    """``load(path)`` of the newest checkpoint in ``run_dir`` that can be read.

    A checkpoint that cannot be read (``load`` raises) is skipped with a warning naming it and the
    cause, and the previous complete one is tried; :class:`CheckpointError` lists every failure when
    none can be read, and :class:`FileNotFoundError` is raised when there is none.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint (ckpt-<step>.pt or ckpt-<step>/) in {run_dir}")
    failures = []
    for i, (_, path) in enumerate(reversed(found)):
        try:
            return path, load(path)
        except (CheckpointError, FileNotFoundError) as err:
            failures.append(f"{path}: {err}")
            older = found[-i - 2][1] if i + 1 < len(found) else None
            log.warning("cannot read checkpoint %s (%s); %s", path, err,
                        f"falling back to the previous complete checkpoint {older}" if older else "no older one left")
    raise CheckpointError(f"no readable checkpoint in {run_dir}:\n  " + "\n  ".join(failures))


def read_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A ``ckpt-<step>.pt`` file's contents; :class:`CheckpointError` when it is truncated, corrupt
    or lacks a checkpoint's keys."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, refused global, ...
        raise CheckpointError(f"{path}: cannot load checkpoint: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: cannot load checkpoint: holds a {type(state).__name__}, not a checkpoint dict")
    return state


def check_keys(path: str | Path, state: dict[str, Any], keys: tuple[str, ...] = REQUIRED_KEYS) -> None:
    """:class:`CheckpointError` naming ``path`` when ``state`` lacks one of a training checkpoint's ``keys``."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint: no {', '.join(map(repr, missing))} "
                              f"(keys: {sorted(state)[:10]})")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint in the one-process format: a ``ckpt-<step>.pt`` file, a sharded ``ckpt-<step>/``
    directory (gathered into one dict), or the newest readable one of a run directory (falling back
    past a corrupt newest one with a warning)."""
    path = Path(path)
    if path.is_dir() and not is_sharded(path):
        if checkpoint_step(path) is not None and not list_checkpoints(path):
            from mmim.engine.sharded import check_complete

            check_complete(path)  # a sharded checkpoint whose save did not finish: say so
        return load_newest(path, lambda p: load_checkpoint(p, map_location))[1]
    if path.is_dir():
        from mmim.engine.sharded import read_full

        return read_full(path, map_location)
    return read_file(path, map_location)

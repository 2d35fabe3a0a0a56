"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP): every process writes its own part.

A sharded checkpoint is a directory ``ckpt-<step>/`` holding

- DCP's files (``__<rank>_0.distcp`` and ``.metadata``): the model and the optimizer state keyed by
  parameter name, as global tensors. Under FSDP2 each process writes its shards; under DDP the
  replicated tensors are written once, spread over the processes. Nothing is gathered on rank 0.
- ``trainer.pt`` (rank 0): the rest of the trainer's state (step, schedule, RNG, data position).

It is written as ``ckpt-<step>.tmp/`` and renamed by rank 0 once DCP has written its metadata
(which it does after every process has reported its part written), so a listed directory is
complete. Loading reshards: DCP reads whatever slice each process of the new run needs, so a
checkpoint resumes on another process count, or under FSDP2 from DDP and back.

With ``train.async_checkpoint`` the state is copied to host memory in the training step
(``async_save``'s staging) and written by a background thread over a separate gloo process group
while training goes on; the directory is renamed when the write has finished.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from mmim.engine.checkpoint import CheckpointError, CheckpointSaveError, fsync_dir

log = logging.getLogger(__name__)
TRAINER_STATE = "trainer.pt"
_ERRORS = (Exception, CheckpointException)  # DCP's gathered errors derive from BaseException
# one process without a process group (a one-process run, mmim eval/export) is an intended use
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
METADATA = ".metadata"


def describe(err: BaseException) -> str:
    """One line per failing rank for DCP's gathered errors (instead of their tracebacks)."""
    failures = getattr(err, "failures", None)
    if isinstance(failures, dict) and failures:
        parts = []
        for rank, failure in sorted(failures.items()):
            exc = failure[0] if isinstance(failure, tuple) else failure
            parts.append(f"rank {rank}: {type(exc).__name__}: {exc}")
        return "; ".join(parts)
    return f"{type(err).__name__}: {err}"


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    return (path / METADATA).is_file() and (path / TRAINER_STATE).is_file()


def check_complete(path: str | Path) -> None:
    path = Path(path)
    missing = [name for name in (METADATA, TRAINER_STATE) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: incomplete sharded checkpoint (no {' or '.join(missing)})")


def _dcp_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and optimizer's state as DCP saves and loads it (parameter names as keys; DTensors
    under FSDP2); initialises an empty optimizer state so that a load has slots to fill."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}


class ShardedSaver:
    """Writes sharded checkpoints of one run; at most one write is in flight.

    Args:
        run_dir: the run directory.
        is_main: this process is rank 0 (it writes ``trainer.pt`` and renames).
        async_save: write in a background thread (see the module's docstring).
    """

    def __init__(self, run_dir: Path, is_main: bool, async_save: bool = False) -> None:
        self.run_dir, self.is_main, self.async_save = run_dir, is_main, async_save
        self.group = None
        if async_save and dist.is_initialized() and dist.get_world_size() > 1:
            self.group = dist.new_group(backend="gloo")  # the background write must not share training's group
        self.stager = None
        if async_save:  # one stager for the run: its host buffers are allocated once and reused by every save
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            cuda = torch.cuda.is_available()
            self.stager = DefaultStager(StagingOptions(use_pinned_memory=cuda, use_shared_memory=False,
                                                       use_async_staging=False, use_non_blocking_copy=cuda))
        self.pending: tuple[Future, Path, Path] | None = None
        self.finished: list[Path] = []

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any],
             step: int) -> Path:
        """Start (async) or do (sync) the save of ``ckpt-<step>/``; returns its final path."""
        import torch.distributed.checkpoint as dcp

        self.wait()  # the previous write finishes (and is renamed) before the next starts
        final = self.run_dir / f"ckpt-{step:08d}"
        tmp = self.run_dir / f"ckpt-{step:08d}.tmp"
        try:
            if self.is_main:
                tmp.mkdir(parents=True, exist_ok=True)
                torch.save(trainer_state, tmp / TRAINER_STATE)
            if dist.is_initialized():
                dist.barrier()  # the directory exists before any process writes into it
            state = _dcp_state(model, optimizer)
            if self.async_save:
                future = dcp.async_save(state, checkpoint_id=str(tmp), process_group=self.group,
                                        async_stager=self.stager, no_dist=not dist.is_initialized())
                self.pending = (future, tmp, final)
            else:
                dcp.save(state, checkpoint_id=str(tmp), no_dist=not dist.is_initialized())
                self._finish(tmp, final)
        except _ERRORS as err:  # OSError, or DCP's CheckpointException gathering every rank's errors
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointSaveError(f"{tmp}: cannot write the sharded checkpoint: {describe(err)}") from err
        return final

    def poll(self) -> None:
        """Rename a finished background write (cheap; call once per step)."""
        if self.pending is not None and self.pending[0].done():
            self.wait()

    def wait(self) -> None:
        """Wait for a background write and rename it; raises :class:`CheckpointSaveError` if it failed."""
        if self.pending is None:
            return
        future, tmp, final = self.pending
        self.pending = None
        try:
            future.result()
        except _ERRORS as err:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointSaveError(f"{tmp}: the background write of the sharded checkpoint failed: {describe(err)}") from err
        self._finish(tmp, final)

    def _finish(self, tmp: Path, final: Path) -> None:
        if self.is_main:
            check_complete(tmp)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            self.finished.append(final)


def load_into(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
              map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a sharded checkpoint into ``model`` and ``optimizer`` (each process reads the slices it
    holds, whatever the process count that wrote it); returns the trainer state (``trainer.pt``).

    Raises :class:`CheckpointError` naming the directory when it is incomplete or unreadable.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    path = Path(path)
    check_complete(path)
    trainer_state = read_trainer_state(path, map_location)
    state = _dcp_state(model, optimizer)
    try:
        dcp.load(state, checkpoint_id=str(path), no_dist=not dist.is_initialized())
    except _ERRORS as err:
        raise CheckpointError(f"{path}: cannot load the sharded checkpoint: {describe(err)}") from err
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    return trainer_state


def read_trainer_state(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    file = path / TRAINER_STATE
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except _ERRORS as err:
        raise CheckpointError(f"{file}: cannot load checkpoint: {err}") from err
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{file}: cannot load checkpoint: not a trainer state")
    return state


def read_full(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A sharded checkpoint as one dict in the one-process format (as a ``ckpt-<step>.pt`` file holds:
    full model state, optimizer state keyed by parameter index), read by this process alone."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    path = Path(path)
    check_complete(path)
    trainer_state = read_trainer_state(path, map_location)
    full: dict[str, Any] = {}
    try:
        _load_state_dict(full, storage_reader=FileSystemReader(str(path)), planner=_EmptyStateDictLoadPlanner(),
                         no_dist=True)
    except _ERRORS as err:
        raise CheckpointError(f"{path}: cannot load the sharded checkpoint: {describe(err)}") from err
    model = {k: v.to(map_location) if isinstance(v, torch.Tensor) else v for k, v in full["model"].items()}
    return {**trainer_state, "model": model, "optimizer": _index_keyed(full["optimizer"])}


def _index_keyed(optim: dict[str, Any]) -> dict[str, Any]:
    """DCP's optimizer state (keyed by parameter name) as ``optimizer.state_dict()`` keys it (by index)."""
    names = [n for group in optim["param_groups"] for n in group["params"]]
    index = {n: i for i, n in enumerate(names)}
    return {"state": {index[n]: v for n, v in optim.get("state", {}).items()},
            "param_groups": [dict(g, params=[index[n] for n in g["params"]]) for g in optim["param_groups"]]}


def consolidate(path: str | Path, out: str | Path) -> Path:
    """Write a sharded checkpoint (or a run directory's newest checkpoint) as one ``torch.save`` file."""
    from mmim.engine.checkpoint import load_checkpoint, save_atomic

    return save_atomic(load_checkpoint(path), Path(out))

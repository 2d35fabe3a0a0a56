"""torchrun under supervision: launch a run with ``--max-restarts``, find its workers, kill one.

Used by the fault-injection tests (``tests/engine/test_torchrun_restart.py``) and the soak script
(``benchmarks/soak_restarts.py``); rendezvous is c10d on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(args: Sequence[str], nproc: int = 2, max_restarts: int = 0, port: int | None = None,
                     nnodes: int = 1, node_rank: int | None = None, monitor_interval: float = 0.2) -> list[str]:
    """``python -m torch.distributed.run ... -m mmim train ARGS`` with c10d rendezvous on 127.0.0.1."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
           f"--max-restarts={max_restarts}", f"--monitor-interval={monitor_interval}", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{port or free_port()}", "--rdzv-id=mmim"]
    if node_rank is not None:
        cmd.append(f"--node-rank={node_rank}")
    return [*cmd, "-m", "mmim", "train", *args]


def launch(args: Sequence[str], log: Path | None = None, fresh_store: bool = True, **options) -> subprocess.Popen:
    """Start torchrun (one torch thread per worker); its output goes to ``log`` when given.

    ``fresh_store`` sets ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``: every attempt of the worker group gets a fresh store
    (hosted by its rank 0) instead of sharing the agents' store, whose keys outlive an attempt (see
    :func:`mmim.engine.runtime.elastic_store`).
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if fresh_store:
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    return subprocess.Popen(torchrun_command(args, **options), env=env, stdout=out, stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux ``/proc``)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def workers(agent: subprocess.Popen, nproc: int, timeout: float = 120.0) -> list[int]:
    """The ``nproc`` worker processes torchrun ``agent`` runs now (waits until they are all up)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [c for c in children(agent.pid) if _is_worker(c)]
        if len(found) >= nproc:
            return sorted(found)
        if agent.poll() is not None:
            raise RuntimeError(f"torchrun exited with {agent.returncode} before its workers started")
        time.sleep(0.05)
    raise TimeoutError(f"torchrun (pid {agent.pid}) did not start {nproc} workers within {timeout:.0f}s")


def _is_worker(pid: int) -> bool:
    try:
        return b"mmim" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_worker(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

"""Where and how a run executes: device, precision, torchrun process group."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# x86 CPU flags of native bf16 arithmetic; without them torch emulates bf16 matmuls
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (Linux x86), or None where they cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def cpu_bf16_note(flags: set[str] | None, machine: str | None = None) -> str | None:
    """A warning for bf16 on an x86 CPU without native bf16, where matmuls are emulated; else None."""
    machine = machine or platform.machine()
    if flags is None or machine not in ("x86_64", "AMD64") or any(f in flags for f in NATIVE_BF16_FLAGS):
        return None
    return ("train.precision=bf16 on a CPU without native bf16 (no avx512_bf16 or amx_bf16): torch emulates bf16 "
            "matmuls, measured 4x slower than fp32 on such a CPU (an Ice Lake Xeon); fp32 is faster here")


def cpu_oversubscription_note(threads: int, processes: int, load: float, cores: int) -> str | None:
    """A warning when torch's threads (``threads`` per process, ``processes`` processes) and the
    machine's other work (``load``, the 1-minute load average) want more than its ``cores``; else None."""
    if threads <= 1 or threads * processes + load <= cores + 0.5:
        return None
    return (f"torch runs {threads} threads per process on {cores} cores with the CPU already busy "
            f"(load average {load:.1f}{f', {processes} processes' if processes > 1 else ''}): competing threads "
            f"were measured 5-18x slower; give each process one thread with train.threads=1 (or OMP_NUM_THREADS=1)")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Runtime:
    """Process-level facts of a run."""

    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16/fp16 autocast on the run's device, or nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def setup_runtime(device: str = "auto", precision: str = "auto", threads: int | None = None,
                  collective_timeout: float | None = None) -> Runtime:
    """Pick the device (``auto``: CUDA if present), start the process group under torchrun (its
    collectives time out after ``collective_timeout`` seconds, or torch's default), resolve
    ``precision`` (``auto``: bf16 on CUDA, fp32 on CPU) and set torch's thread count."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"train.threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        if collective_timeout is not None and collective_timeout <= 0:
            raise ValueError(f"train.collective_timeout must be > 0 seconds, got {collective_timeout}")
        timeout = datetime.timedelta(seconds=collective_timeout) if collective_timeout else None
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = elastic_store(rank, world_size)
        if store is not None:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if threads is None and dev.type == "cpu" and rank == 0 and "OMP_NUM_THREADS" not in os.environ:
        with contextlib.suppress(OSError, AttributeError):  # no load average on this system
            note = cpu_oversubscription_note(torch.get_num_threads(), world_size, os.getloadavg()[0], _cores())
            if note:
                log.warning(note)
    if precision == "bf16" and dev.type == "cpu" and rank == 0:
        note = cpu_bf16_note(cpu_flags())
        if note:
            log.warning(note)
    return Runtime(dev, precision, rank, world_size, local_rank)


def elastic_store(rank: int, world_size: int) -> dist.Store | None:
    """Under torchrun's shared rendezvous store, a view of it private to this attempt of the worker group.

    torchrun (c10d rendezvous) hands every attempt of the group the same TCP store; a restarted
    group would read the previous attempt's keys (gloo's peer addresses: the dead workers') and
    fail to connect. The keys of each attempt are put under ``mmim/attempt_<restart count>_<world size>``.
    That is sound with one node (one agent counts the restarts); several nodes with restarts must
    launch with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store per attempt), else this is an
    error that says so. ``None`` outside torchrun or when the workers host their own store.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    nodes, restarts = int(os.environ.get("GROUP_WORLD_SIZE", "1")), int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if nodes > 1 and restarts > 0:
        # with several agents a restart count is not agreed on (a node restarted for a membership change
        # keeps its count), so the attempt's keys cannot be told apart: a restarted group would hang
        raise RuntimeError(
            f"torchrun --max-restarts {restarts} with {nodes} nodes: export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
            "for torchrun on every node, so that each attempt of the worker group gets a fresh store (the shared "
            "store keeps the previous attempt's keys and a restarted group cannot connect); see docs/scaling.md")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    tcp = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                        timeout=datetime.timedelta(minutes=10))
    return dist.PrefixStore(f"mmim/attempt_{attempt}_{world_size}", tcp)


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()

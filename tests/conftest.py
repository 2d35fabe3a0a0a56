"""Shared test set-up: the third-party example plugin installed before collection (so the
conformance kit covers it), and a tiny image recipe that trains in seconds."""

from __future__ import annotations

import copy
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mmim-timeseries"
DISTRIBUTION = "mmim-timeseries"
_temporary: dict[str, Any] = {}


def _installed() -> bool:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    return any(ep.group == "mmim.plugins" and ep.name == "timeseries" for ep in dist.entry_points)


def install_example_plugin() -> None:
    """Make ``examples/mmim-timeseries`` discoverable without touching the active environment.

    If it is installed already (``pip install examples/mmim-timeseries``), that install is used.
    Otherwise a copy is built and installed (offline, ``pip install --target``) into a temporary
    folder put on ``sys.path`` and on ``PYTHONPATH`` (for the CLI subprocesses); the folder is
    removed when the session ends.
    """
    if not _installed() and "dir" not in _temporary:
        tmp = Path(tempfile.mkdtemp(prefix="mmim-timeseries-"))
        shutil.copytree(EXAMPLE, tmp / "src", ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(tmp / "site"), str(tmp / "src")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"installing a copy of {EXAMPLE} into {tmp} failed:\n{done.stdout}\n{done.stderr}")
        _temporary.update(dir=tmp, pythonpath=os.environ.get("PYTHONPATH"))
        sys.path.insert(0, str(tmp / "site"))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "site"), os.environ.get("PYTHONPATH")]))
        importlib.invalidate_caches()
    from mmim import registry

    registry.discover(refresh=True)


@pytest.fixture(scope="session")
def timeseries_plugin() -> Any:
    """The example plugin, installed by ``tests/conftest.py`` before collection."""
    install_example_plugin()
    from mmim import registry

    infos = {info.entry_point: info for info in registry.discover(refresh=True)}
    assert "timeseries" in infos, f"entry point not found; discovered: {sorted(infos)}"
    info = infos["timeseries"]
    assert info.status == "ok", info.status
    assert info.distribution == DISTRIBUTION
    return info.plugin


def pytest_configure(config: pytest.Config) -> None:
    install_example_plugin()


def pytest_unconfigure(config: pytest.Config) -> None:
    tmp = _temporary.pop("dir", None)
    if tmp is None:
        return
    if str(tmp / "site") in sys.path:
        sys.path.remove(str(tmp / "site"))
    old = _temporary.pop("pythonpath", None)
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old
    shutil.rmtree(tmp, ignore_errors=True)

TINY_RECIPE: dict[str, Any] = {
    "name": "tiny",
    "modality": "image",
    "seed": 0,
    "model": {
        "encoder": {"embed_dim": 32, "depth": 2, "num_heads": 2},
        "streams": {
            "image": {
                "tokenizer": {"name": "patch", "img_size": 28, "patch_size": 7, "in_chans": 1},
                "masker": {"name": "random", "ratio": 0.75},
                "target": {"name": "content", "normalize": True},
                "loss": {"name": "mse"},
                "decoder": {"name": "mae", "embed_dim": 16, "depth": 1, "num_heads": 2},
            }
        },
    },
    "data": {"dataset": {"name": "fashion_mnist", "max_samples": 96}, "batch_size": 16},
    "optim": {"lr": 1e-3},
    "schedule": {"epochs": 2, "warmup_epochs": 0.5},
    "train": {"log_every": 1, "loggers": [], "progress": False},
    "eval": {"linear_epochs": 5, "knn_k": 5, "batch_size": 64},
}


@pytest.fixture(scope="session")
def tiny_recipe_data() -> dict[str, Any]:
    """A copy of the tiny recipe for module- and session-scoped fixtures (``import conftest`` from a test
    module may find another folder's conftest; this fixture is the one way to reach this one)."""
    return copy.deepcopy(TINY_RECIPE)


@pytest.fixture
def tiny_recipe_dict(tmp_path) -> dict[str, Any]:
    """A fresh copy of the tiny recipe, writing into ``tmp_path/run``."""
    data = copy.deepcopy(TINY_RECIPE)
    data["train"]["out_dir"] = str(tmp_path / "run")
    return data


class TrainProcess:
    """``mmim train`` as a separate process (one torch thread), and killing one mid-run."""

    @staticmethod
    def start(args: list[str], **kwargs: Any) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        return subprocess.Popen([sys.executable, "-m", "mmim", "train", *args], env=env, **kwargs)

    @classmethod
    def kill_after_checkpoint(cls, args: list[str], run_dir: Path, step: int) -> None:
        """Start a run and SIGKILL it once it has written the checkpoint of ``step`` (or a later one)."""
        import signal
        import time

        from mmim.engine.checkpoint import list_checkpoints

        proc = cls.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            done = list_checkpoints(run_dir) if run_dir.exists() else []
            if done and done[-1][0] >= step:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.fixture
def train_process() -> type[TrainProcess]:
    return TrainProcess

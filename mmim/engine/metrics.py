"""Metrics sinks: ``metrics.jsonl`` always, and the experiment trackers of ``train.loggers``
(TensorBoard, W&B, MLflow: :mod:`mmim.engine.loggers`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsWriter:
    """Appends one JSON object per call to ``metrics.jsonl``; mirrors the scalars to the trackers.

    ``MetricsWriter(run_dir, tensorboard)`` (TensorBoard only, or nothing) is kept for callers
    without a recipe; :meth:`for_recipe` opens the trackers a recipe names.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True,
                 trackers: list[Any] | None = None) -> None:
        from mmim.engine.loggers import TensorBoardTracker, TrackerGroup

        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        if trackers is None:
            trackers = []
            if enabled and tensorboard:
                try:
                    trackers.append(TensorBoardTracker(Path(run_dir), None, {}))
                except ImportError as err:
                    log.warning("TensorBoard logging disabled: %s (pip install tensorboard)", err)
        self.trackers = TrackerGroup(trackers if enabled else [])

    @classmethod
    def for_recipe(cls, recipe: Any, run_dir: Path, enabled: bool = True) -> MetricsWriter:
        """The writer of a run of ``recipe``, with the trackers of ``recipe.train.loggers`` (on the
        process that logs, ``enabled``)."""
        from mmim.engine.loggers import open_trackers

        return cls(run_dir, enabled=enabled, trackers=open_trackers(Path(run_dir), recipe, warn=True) if enabled else [])

    def write(self, record: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")
        self.trackers.log(record, step)

    def close(self) -> None:
        self.trackers.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, named in ``train.loggers``.

Each gets what the training loop logs (loss and its parts, lr, samples/s, TFLOP/s and MFU, corrupt
samples skipped) at the logging steps, and the probe results of ``mmim train`` / ``mmim eval``
(``eval/<encoder>/<protocol>``, e.g. ``eval/trained/knn``). The ids of the W&B and MLflow runs are
kept in the run directory (``trackers.json``), so a resumed run and a later ``mmim eval`` log into
the same tracker run.

* ``tensorboard``: ``<run>/tensorboard/``.
* ``wandb``: offline by default (``train.wandb_mode``, else ``$WANDB_MODE``), files in ``<run>/wandb/``;
  ``wandb sync <run>/wandb/offline-run-*`` uploads them. The recipe is the run's config.
* ``mlflow``: ``train.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``, else a local file store next to the
  run directories (``runs/mlruns``: ``mlflow ui --backend-store-uri runs/mlruns``); experiment
  ``train.project``, the recipe's fields as parameters.

W&B and MLflow are optional extras (``pip install "mmim[wandb]"`` / ``"mmim[mlflow]"``); a recipe
naming a missing one fails when it is loaded (:func:`missing_trackers`), before the run directory exists.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from mmim.extras import active_loggers, missing_trackers

log = logging.getLogger(__name__)

STATE = "trackers.json"
__all__ = ["active_loggers", "missing_trackers", "open_trackers", "log_eval_results", "TrackerGroup"]
def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a record (no booleans)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def eval_scalars(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"trained": {"knn": 0.77}}`` -> ``{"eval/trained/knn": 0.77}``."""
    return {f"eval/{encoder}/{name}": float(v) for encoder, res in results.items() for name, v in res.items()}


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, run_dir: Path, recipe: Any, state: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_final(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandbTracker:
    name = "wandb"

    def __init__(self, run_dir: Path, recipe: Any, state: dict[str, Any]) -> None:
        import wandb

        from mmim.config.recipe import recipe_to_dict

        mode = recipe.train.wandb_mode or os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(project=recipe.train.project, name=run_dir.name, id=state.get("id"), resume="allow",
                              dir=str(run_dir), mode=mode,
                              settings=wandb.Settings(silent=True, console="off", disable_git=True, save_code=False))
        # a resumed run may change fields such as schedule.max_steps: the config follows the recipe
        self.run.config.update(recipe_to_dict(recipe), allow_val_change=True)
        state.update(id=self.run.id, mode=mode)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def log_final(self, values: dict[str, float], step: int) -> None:
        # a resumed W&B run refuses history at a step it already has: results go to the run's summary
        for key, value in values.items():
            self.run.summary[key] = value

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowTracker:
    name = "mlflow"

    def __init__(self, run_dir: Path, recipe: Any, state: dict[str, Any]) -> None:
        uri = state.get("tracking_uri") or recipe.train.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            (run_dir.resolve().parent / "mlruns").as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode behind this switch; the store still works
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        from mmim.config.recipe import recipe_to_dict

        self.Metric = Metric
        self.client = MlflowClient(uri)
        if state.get("run_id"):
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            found = self.client.get_experiment_by_name(recipe.train.project)
            experiment = found.experiment_id if found else self.client.create_experiment(recipe.train.project)
            run = self.client.create_run(experiment, run_name=run_dir.name,
                                         tags={"mmim.recipe": recipe.name, "mmim.modality": recipe.modality or "",
                                               "mmim.run_dir": str(run_dir.resolve())})
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in _flat(recipe_to_dict(recipe)).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        state.update(run_id=self.run_id, tracking_uri=uri)

    def log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self.Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_final(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


def open_trackers(run_dir: Path, recipe: Any, warn: bool = False, strict: bool = True) -> list[Any]:
    """The trackers of ``recipe.train.loggers`` for ``run_dir``, attached to the tracker runs that
    ``trackers.json`` names (a resumed run, ``mmim eval``), whose ids are written back. Not
    ``strict``: a tracker that cannot be opened (its package missing on this machine, say) is
    left out with a warning."""
    path = run_dir / STATE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    trackers = []
    for name in active_loggers(recipe.train, warn):
        state = dict(saved.get(name) or {})
        try:
            trackers.append(TRACKERS[name](run_dir, recipe, state))
        except ModuleNotFoundError as err:
            from mmim.extras import MissingExtraError

            hint = next((h for h in missing_trackers(recipe.train) if f"names {name}," in h), str(err))
            if strict:
                raise MissingExtraError(hint) from err
            log.warning("not logged to %s: %s", name, hint)
            continue
        except Exception as err:  # noqa: BLE001 - e.g. W&B online without a login
            if strict:
                raise RuntimeError(f"train.loggers: {name} did not start: {type(err).__name__}: {err}") from err
            log.warning("not logged to %s: %s: %s", name, type(err).__name__, err)
            continue
        saved[name] = state
    if any(saved.get(t.name) for t in trackers):
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=1))
    return trackers


class TrackerGroup:
    """Several trackers behind one call; a tracker that fails to log is reported once and dropped,
    so a tracker's hiccup never stops training."""

    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # noqa: BLE001 - a tracker must not end a run
                log.warning("%s logging stopped: %s: %s", tracker.name, type(err).__name__, err)
                self.trackers.remove(tracker)

    def log(self, record: dict[str, Any], step: int) -> None:
        self._each("log", scalars(record), step)

    def log_final(self, values: dict[str, float], step: int) -> None:
        self._each("log_final", values, step)

    def close(self) -> None:
        failed = sys.exc_info()[0] is not None  # closed from a ``finally`` while an error propagates
        self._each("close", failed)
        self.trackers = []


def log_eval_results(run_dir: str | Path, recipe: Any, results: dict[str, dict[str, float]], step: int) -> None:
    """Probe results of a run (``evaluate_with_baseline``'s, or fine-tuning's ``{"finetune": {"top1": ...}}``)
    to its trackers, at training step ``step``; a tracker that cannot be opened here is left out with a warning."""
    group = TrackerGroup(open_trackers(Path(run_dir), recipe, strict=False))
    try:
        group.log_final(eval_scalars(results), step)
    finally:
        group.close()

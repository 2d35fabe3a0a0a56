"""A run's recipe: its one home (``config.yaml`` in the run directory) and what may change when a
run is resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mmim.config.recipe import Recipe, recipe_to_dict

CONFIG = "config.yaml"


class RecipeMismatchError(ValueError):
    """A checkpoint to resume from was written by a recipe that differs in fields that shape training."""


# Recipe fields that may change between a run and its resumption: where and how it runs, how it
# logs, when it stops; not what it computes. A task adds its own (``Task.resumable_changes``).
RESUMABLE_CHANGES = (
    "name", "description", "provenance", "source", "eval", "schedule.max_steps", "data.num_workers",
    "data.persistent_workers", "data.prefetch_factor", "data.pin_memory",
    "data.shards", "data.shards_index",
    "train.device", "train.distributed", "train.compile", "train.compile_mode", "train.fused_attention", "train.tf32",
    "train.threads", "train.out_dir", "train.log_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.tensorboard", "train.progress",
    "train.checkpoint_format", "train.async_checkpoint", "train.save_retries", "train.save_retry_wait",
    "train.collective_timeout",
    "train.loggers", "train.project", "train.wandb_mode", "train.mlflow_uri",
)


def run_directory(path: str | Path) -> Path:
    """The run directory of ``path``: a run directory, a checkpoint file, or a sharded checkpoint
    directory (``ckpt-<step>/``) in it."""
    from mmim.engine.checkpoint import checkpoint_step

    path = Path(path)
    if path.is_dir() and (checkpoint_step(path) is None or (path / CONFIG).exists()):
        return path
    return path.parent


def saved_recipe(run: str | Path) -> dict[str, Any]:
    """The recipe of a run, from its one home: ``config.yaml`` in the run directory (``run`` is the
    directory or one of its checkpoint files or sharded checkpoint directories)."""
    run = Path(run)
    path = run_directory(run) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no config.yaml in the run directory {path.parent} (a run keeps its recipe there)")
    return yaml.safe_load(path.read_text())


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: list(data) if isinstance(data, tuple) else data}


def recipe_differences(saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = RESUMABLE_CHANGES
                       ) -> list[str]:
    """Fields (dotted) whose values differ between two recipe dicts, as ``"field: saved -> current"``,
    leaving out fields under ``ignore``."""
    a, b = _flatten(saved), _flatten(current)
    skip = lambda key: any(key == p or key.startswith(p + ".") for p in ignore)  # noqa: E731
    return [f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}"
            for key in sorted(set(a) | set(b)) if not skip(key) and a.get(key) != b.get(key)]


def run_dir_for(recipe: Recipe) -> Path:
    return Path(recipe.train.out_dir.format(name=recipe.name))


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    """Write the resolved recipe as the run's ``config.yaml``."""
    (run_dir / CONFIG).write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))


def check_resumable(saved: dict[str, Any], recipe: Recipe, also: tuple[str, ...] = ()) -> None:
    """Raise :class:`RecipeMismatchError` naming the fields in which ``saved`` differs from
    ``recipe`` beyond :data:`RESUMABLE_CHANGES` and ``also`` (a task's own)."""
    diff = recipe_differences(saved, recipe_to_dict(recipe), RESUMABLE_CHANGES + also)
    if diff:
        raise RecipeMismatchError(
            "cannot resume: the checkpoint was written by a different recipe; differing fields "
            "(checkpoint -> now):\n  " + "\n  ".join(diff) + "\nrestore these values, or start a new run "
            "(another train.out_dir) to train with the new ones"
        )

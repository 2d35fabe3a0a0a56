"""Run the recipe's evaluation protocols on a model, optionally next to a random-init twin."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from mmim import registry
from mmim.config.recipe import Recipe
from mmim.eval.cross_modal import cross_modal_losses
from mmim.eval.features import extract_features
from mmim.eval.probes import knn_accuracy, linear_probe_accuracy
from mmim.model import MaskedModel, build_model

log = logging.getLogger(__name__)


def eval_datasets(recipe: Recipe) -> tuple[Any, Any]:
    """Train and test splits of the labelled eval dataset, without augmentation: from their files,
    or, where ``eval.train_shards`` / ``eval.test_shards`` are given, from shards in packed order
    (decoded by the same dataset's reader, so a node with only the shards can evaluate)."""
    cfg = recipe.eval
    spec = cfg.dataset or recipe.data.dataset

    def split(name: str, shards: Any, index: str | None) -> Any:
        if shards:
            from mmim.data.stream import ShardSequence

            return ShardSequence.of(spec, name, shards, index)
        return registry.build("dataset", spec, where="eval.dataset", split=name, augment=False)

    return (split(cfg.train_split, cfg.train_shards, cfg.train_shards_index),
            split(cfg.test_split, cfg.test_shards, cfg.test_shards_index))


def evaluate(model: MaskedModel, recipe: Recipe, device: torch.device | str = "cpu", datasets: tuple[Any, Any] | None = None,
             label: str = "trained") -> dict[str, float]:
    """Accuracy of each protocol in ``recipe.eval.protocols`` on frozen pooled features (none without
    protocols). ``label`` names the encoder in the progress output (a bar per stage on a terminal)."""
    cfg = recipe.eval
    if not cfg.protocols:
        return {}
    train_ds, test_ds = datasets or eval_datasets(recipe)
    t0 = time.perf_counter()
    sizes = "/".join(str(len(d)) if hasattr(d, "__len__") else "?" for d in (train_ds, test_ds))
    log.info("evaluating the %s encoder (%s) on %s train/test samples", label, ", ".join(cfg.protocols), sizes)
    results: dict[str, float] = {}
    if set(cfg.protocols) & {"linear", "knn"}:
        train_x, train_y = extract_features(model, train_ds, cfg.batch_size, recipe.model.pool, device,
                                            progress=f"{label}: features ({cfg.train_split})")
        test_x, test_y = extract_features(model, test_ds, cfg.batch_size, recipe.model.pool, device,
                                          progress=f"{label}: features ({cfg.test_split})")
        sizes = f"{len(train_y)}/{len(test_y)}"
    if "linear" in cfg.protocols:
        results["linear"] = linear_probe_accuracy(train_x, train_y, test_x, test_y, cfg.linear_epochs, cfg.linear_lr,
                                                  cfg.linear_weight_decay, seed=recipe.seed,
                                                  progress=f"{label}: linear probe")
    if "knn" in cfg.protocols:
        results["knn"] = knn_accuracy(train_x, train_y, test_x, test_y, cfg.knn_k, cfg.knn_temperature)
    if "cross_modal" in cfg.protocols:
        results.update(cross_modal_losses(model, test_ds, cfg.batch_size, device,
                                          progress=f"{label}: cross-modal ({cfg.test_split})"))
    log.info("evaluated the %s encoder on %s train/test samples in %.1fs: %s", label, sizes,
             time.perf_counter() - t0, ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results


def evaluate_with_baseline(model: MaskedModel, recipe: Recipe, device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """``{"trained": ..., "random_init": ...}``; the baseline is the same architecture, freshly initialised
    with the recipe's seed, evaluated identically."""
    if not recipe.eval.protocols:
        return {}
    datasets = eval_datasets(recipe)
    out = {"trained": evaluate(model, recipe, device, datasets)}
    if recipe.eval.compare_random_init:
        torch.manual_seed(recipe.seed)
        baseline = build_model(recipe.model, recipe.source).to(device)
        out["random_init"] = evaluate(baseline, recipe, device, datasets, label="random_init")
    return out


def format_results(results: dict[str, dict[str, float]]) -> str:
    """A small text table: one row per model, one column per protocol (or measured value); empty
    without results."""
    if not any(results.values()):
        return ""
    protocols = sorted({p for r in results.values() for p in r})
    width = max([10, *(len(p) + 2 for p in protocols)])
    lines = [f"{'encoder':<12}" + "".join(f"{p:>{width}}" for p in protocols)]
    for name, res in results.items():
        lines.append(f"{name:<12}" + "".join(f"{res.get(p, float('nan')):>{width}.4f}" for p in protocols))
    return "\n".join(lines)

"""``mmim eval | visualize | export | consolidate``: the commands that act on a trained run (and the
evaluation that ``mmim train`` ends with)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("mmim")


def _evaluate_run(model, recipe, run_dir: Path, device, step: int | None, name: str = "eval.json") -> None:  # noqa: ANN001
    """The recipe's probes (next to a random-init encoder): printed as a table, written to the run's
    ``eval.json`` (or ``name``) and logged to its trackers (``train.loggers``) at training step ``step``."""
    from mmim.engine.loggers import log_eval_results
    from mmim.eval.protocols import evaluate_with_baseline, format_results

    if not recipe.eval.protocols:
        log.info("no evaluation: eval.protocols is empty")
        return
    results = evaluate_with_baseline(model, recipe, device)
    (Path(run_dir) / name).write_text(json.dumps(results, indent=2))
    print(format_results(results))
    log.info("results in %s", Path(run_dir) / name)
    log_eval_results(run_dir, recipe, results, step or 0)


def _load_run(run: str, overrides: list[str]):  # noqa: ANN202 - CLI plumbing
    """A trained run's recipe (its ``config.yaml``, with ``overrides``) and model with its weights
    (the newest checkpoint, or the checkpoint file given)."""
    from mmim.config.recipe import apply_overrides, recipe_from_dict
    from mmim.engine.checkpoint import load_checkpoint
    from mmim.engine.run import saved_recipe
    from mmim.model import build_model

    state = load_checkpoint(run)
    recipe = recipe_from_dict(apply_overrides(saved_recipe(run), overrides), source=str(run))
    model = build_model(recipe.model, recipe.source)
    model.load_state_dict(state["model"])
    return recipe, model


def _run_dir(run: str) -> Path:
    from mmim.engine.run import run_directory

    return run_directory(run)


def _checkpoint_step(run: str) -> int | None:
    """The training step of the checkpoint that ``_load_run`` loads (the newest of a run directory)."""
    from mmim.engine.checkpoint import list_checkpoints

    found = {path.resolve(): step for step, path in list_checkpoints(_run_dir(run))}
    if Path(run).is_dir():
        return max(found.values(), default=None)
    return found.get(Path(run).resolve())


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    recipe, model = _load_run(args.run, args.overrides)
    if args.no_baseline:
        recipe.eval.compare_random_init = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from mmim.engine.checkpoint import list_checkpoints

    step = _checkpoint_step(args.run)
    newest = max((s for s, _ in list_checkpoints(_run_dir(args.run))), default=None)
    # eval.json describes the run's newest checkpoint; an older one given as a file gets its own file
    name = "eval.json" if step is None or step == newest else f"eval-{step:08d}.json"
    _evaluate_run(model.to(device), recipe, _run_dir(args.run), device, step, name)
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    import torch

    from mmim import registry
    from mmim.data.device import device_transforms, to_device

    recipe, model = _load_run(args.run, args.overrides)
    model.eval()
    spec = recipe.eval.dataset or recipe.data.dataset
    out_dir = Path(args.out) if args.out else _run_dir(args.run) / "visualize"
    visualizers, undrawn = {}, []
    for name, s in recipe.model.streams.items():
        if s.tokenizer is None:
            continue
        try:
            visualizers[name] = registry.companion("visualizer", s.tokenizer["name"])()
        except registry.RegistryError as err:
            undrawn.append(f"stream {name!r}: {err}")
    if not visualizers:  # one line: nothing to draw, and why
        raise ValueError("nothing to draw: " + "; ".join(undrawn))
    for line in undrawn:
        print(f"mmim visualize: not drawn: {line}", file=sys.stderr)
    if args.input:
        if len(visualizers) != 1:
            raise ValueError("--input works for single-stream models; use dataset samples for several streams")
        (name, vis), = visualizers.items()
        batch = {model.streams[name].input_key or name: torch.cat([vis.load_input(p, model, name, spec) for p in args.input])}
    else:
        ds = registry.build("dataset", spec, where="eval.dataset", split=args.split or recipe.eval.test_split, augment=False)
        items = [ds[i] for i in range(min(args.num, len(ds)))]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
        batch = to_device(batch, "cpu", device_transforms(ds))
    with torch.no_grad():  # decoders that can are asked for every token (``full``) to draw whole reconstructions
        output = model(batch, generator=torch.Generator().manual_seed(args.seed), full=True)
    raw = model.raw_inputs(batch)
    if len(visualizers) == 1 and output.mask.streams is not None:  # one stream, fixed counts: the whole batch at once
        (name, vis), = visualizers.items()
        paths = vis.render(model, name, raw[name], output, out_dir, spec, prefix=name)
    else:  # several streams, or per-sample budgets: sample by sample, the streams stacked
        from mmim.fusion.visualize import render_fused

        paths = render_fused(model, raw, output, out_dir, visualizers, spec)
    for path in paths:
        print(path)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mmim.export_cli import export_run

    for path in export_run(args.run, args.out, args.format, encoder_only=args.encoder_only):
        print(path)
    return 0


def cmd_consolidate(args: argparse.Namespace) -> int:
    from mmim.engine.checkpoint import checkpoint_step, latest_checkpoint
    from mmim.engine.sharded import consolidate

    src = Path(args.checkpoint)
    if src.is_dir() and checkpoint_step(src) is None:  # a run directory: its newest checkpoint
        src = latest_checkpoint(src) or src
    if src.is_file():
        raise ValueError(f"{src} is already one file")
    step = checkpoint_step(src)
    out = Path(args.out) if args.out else src.parent / f"consolidated-{step if step is not None else 0:08d}.pt"
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another --out")
    print(consolidate(src, out))
    return 0

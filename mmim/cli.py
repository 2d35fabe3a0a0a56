"""``mmim`` command line: train, eval, recipes, plugins."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mmim import __version__
from mmim.cli_runs import _evaluate_run, cmd_consolidate, cmd_eval, cmd_export, cmd_visualize

log = logging.getLogger("mmim")

USAGE = """examples:
  mmim train --modality image                 the image plugin's default recipe on its embedded data
  mmim train recipes/image/mae_vit_b16_in1k.yaml data.dataset.root=/data/imagenet optim.base_lr=1.5e-4
  mmim train --resume runs/mae_fashion_mnist  continue a run exactly where it stopped
  torchrun --nproc-per-node 8 --max-restarts 3 -m mmim train RECIPE --resume auto
                                              restarted after a failure, a run resumes by itself
  mmim consolidate runs/NAME/ckpt-00001000    a sharded checkpoint as one file (consolidated-00001000.pt)
  mmim eval runs/mae_fashion_mnist            linear probe and k-NN of a trained encoder
  mmim pack --modality image shards/          write the training data to tar shards, then
  mmim train --modality image data.shards=shards/   train from them (local, http(s)://, pipe:)
  mmim recipes | mmim plugins | mmim check-plugin NAME
  mmim new-plugin NAME DIR                    a new modality as a package (entry point, tokenizer, dataset, recipe, tests)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmim", description="Masked modeling across modalities.", epilog=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mmim {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a recipe")
    t.add_argument("args", nargs="*", help="[RECIPE] [key=value ...]: a recipe file or name, then overrides")
    t.add_argument("--modality", help="run the default recipe of the plugin serving this modality")
    t.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue from the newest checkpoint of the run directory (or of the given run dir/file); "
                        "'--resume auto': continue if the run directory holds a complete checkpoint, else start "
                        "fresh (for torchrun --max-restarts)")
    t.add_argument("--init", help="start from pretrained weights: an mmim run dir/checkpoint, or CONVERTER:PATH "
                                  "(hf:DIR for a transformers ViTMAE/VideoMAE folder, mae:ckpt.pth, videomae:ckpt.pth)")
    f = sub.add_parser("finetune", help="fine-tune a pretrained encoder for classification (recipe's finetune section)")
    f.add_argument("args", nargs="*", help="RUN_DIR or RECIPE, then key=value overrides")
    f.add_argument("--init", help="pretrained weights: an mmim run dir/checkpoint, or CONVERTER:PATH (e.g. mae:ckpt.pth, "
                                  "hf:DIR for a transformers folder); "
                                  "default: the run given as first argument")
    f.add_argument("--resume", action="store_true", help="continue the fine-tuning run")
    e = sub.add_parser("eval", help="linear probe / k-NN of a trained run")
    e.add_argument("run", help="run directory or checkpoint file")
    e.add_argument("overrides", nargs="*", help="key=value overrides of the saved recipe (e.g. eval.knn_k=10)")
    e.add_argument("--no-baseline", action="store_true", help="skip the random-init comparison")
    v = sub.add_parser("visualize", help="render reconstructions of a trained run (PNG per sample)")
    v.add_argument("run", help="run directory or checkpoint file")
    v.add_argument("overrides", nargs="*", help="key=value overrides of the saved recipe")
    v.add_argument("--input", nargs="+", help="input files (default: samples of the eval test split)")
    v.add_argument("--num", type=int, default=4, help="number of dataset samples (without --input)")
    v.add_argument("--split", help="dataset split to draw samples from (default: eval.test_split)")
    v.add_argument("--out", help="output folder (default: <run>/visualize)")
    v.add_argument("--seed", type=int, default=0, help="masking seed")
    x = sub.add_parser("export", help="export the pretrained encoder: safetensors, config.json, model card "
                                      "(images also as timm)")
    x.add_argument("run", help="run directory or checkpoint file")
    x.add_argument("--out", help="output folder (default: <run>/export, or <run>/export/transformers)")
    x.add_argument("--format", default="mmim", choices=("mmim", "transformers"),
                   help="mmim (default): safetensors + config.json + card (images also as timm); transformers: a "
                        "save_pretrained folder for ViTMAEForPreTraining (images) or VideoMAEForPreTraining (video)")
    x.add_argument("--encoder-only", action="store_true",
                   help="--format transformers: the encoder alone (ViTMAEModel / VideoMAEModel), which AutoModel loads "
                        "with no unexpected key; without it the folder holds the decoder too")
    k = sub.add_parser("pack", help="write a recipe's training dataset to tar shards (for data.shards=...)")
    k.add_argument("args", nargs="*", help="[RECIPE] OUT [key=value ...]: a recipe (or --modality), the output folder, overrides")
    k.add_argument("--modality", help="pack the dataset of this plugin's default recipe")
    k.add_argument("--split", default="train", help="dataset split (default: train)")
    k.add_argument("--shard-size", default="256MB", help="target shard size, e.g. 256MB or 1GB (default: 256MB)")
    k.add_argument("--samples-per-shard", type=int, help="samples per shard (overrides --shard-size)")
    k.add_argument("--workers", type=int, default=1, help="parallel pack processes")
    k.add_argument("--skip-corrupt", action="store_true", help="leave out unreadable samples (listed in the index)")
    k.add_argument("--verify", action="store_true", help="only check OUT's shards against their index checksums")
    k.add_argument("--encode", action="append", default=[], metavar="KEY=VALUE",
                   help="re-encode samples at pack time, passed to the dataset's shard_record (video: short_side=320, "
                        "keyint=16, crf=23, frames=jpeg|webp, quality=90, subsampling=420|422|444); repeatable")
    o = sub.add_parser("consolidate", help="write a sharded checkpoint (ckpt-<step>/) as one ckpt-<step>.pt file")
    o.add_argument("checkpoint", help="a sharded checkpoint directory, or a run directory (its newest checkpoint)")
    o.add_argument("--out", help="output file (default: consolidated-<step>.pt beside it; mmim eval/export/finetune "
                                 "read it like a checkpoint)")
    r = sub.add_parser("recipes", help="list recipes with their provenance")
    r.add_argument("--modality", help="only recipes of this modality")
    sub.add_parser("plugins", help="list installed plugins, their components and status")
    c = sub.add_parser("check-plugin", help="run the conformance kit on every component of an installed plugin")
    c.add_argument("plugin", help="plugin name, as `mmim plugins` lists it")
    c.add_argument("--kind", action="append", help="only components of this kind (repeatable)")
    n = sub.add_parser("new-plugin", help="scaffold a plugin package: entry point, tokenizer, dataset, recipe, tests")
    n.add_argument("name", help="plugin and modality name (lower case; the module is mmim_NAME)")
    n.add_argument("dir", help="folder for the new package (absent or empty)")
    return p


def _split_train_args(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``[RECIPE_OR_RUN] [key=value ...]`` -> the first argument (if not an override) and the overrides."""
    recipe = None
    overrides = list(args.args)
    if overrides and "=" not in overrides[0]:
        recipe = overrides.pop(0)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise SystemExit(f"mmim {args.command}: expected key=value overrides after the recipe, got {bad}")
    return recipe, overrides


def cmd_train(args: argparse.Namespace) -> int:
    from mmim.config.recipe import load_recipe
    from mmim.engine.trainer import Trainer
    from mmim.extras import check_recipe_extras
    from mmim.recipes_catalog import default_recipe, find_recipe

    recipe_arg, overrides = _split_train_args(args)
    resume = args.resume
    if resume == "auto" and recipe_arg is None and args.modality is None:
        raise SystemExit("mmim train --resume auto: give the recipe too (the run directory is its train.out_dir)")
    if recipe_arg is None and args.modality is None and isinstance(resume, str):
        run_dir = Path(resume)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"--resume {run_dir}: no config.yaml in that run directory")
        path = saved
        overrides = [f"train.out_dir={run_dir}", *overrides]
        resume = True
    elif recipe_arg is not None and args.modality is not None:
        raise SystemExit("mmim train: give a recipe or --modality, not both")
    elif recipe_arg is not None:
        path = find_recipe(recipe_arg)
    elif args.modality is not None:
        path = default_recipe(args.modality)
    else:
        raise SystemExit("mmim train: give a recipe (file or name) or --modality MODALITY")
    recipe = load_recipe(path, overrides)
    check_recipe_extras(recipe)  # before the run directory exists
    if not recipe.modality and args.modality:
        recipe.modality = args.modality
    log.info("recipe %s (%s)", recipe.name, path)
    task = _pretrain_task_from(recipe, args.init) if args.init else None
    trainer = Trainer(recipe, resume=resume, task=task)
    log.info("run directory %s; %d steps/epoch, %s, effective batch %d (%d x %d accumulation x %d processes), "
             "peak lr %.3g, %s on %s", trainer.run_dir, trainer.steps_per_epoch, _steps_text(trainer),
             trainer.effective_batch, recipe.data.batch_size, trainer.accum, trainer.rt.world_size, trainer.peak_lr,
             trainer.rt.precision, trainer.rt.device)
    summary = trainer.fit()
    model = trainer.unsharded_model()  # a collective under FSDP2: every rank takes part
    if trainer.rt.is_main:
        print(f"trained {summary['steps']} steps in {summary['seconds']:.1f}s, final loss {summary['final_loss']:.4f}, "
              f"{summary['samples_per_s']:.1f} samples/s, {summary['skipped']} corrupt samples skipped")
        if recipe.eval.after_train:
            _evaluate_run(model, recipe, trainer.run_dir, trainer.rt.device, trainer.step)
    return 0


def _pretrain_task_from(recipe, init: str):  # noqa: ANN001, ANN202 - a Recipe; a PretrainTask
    """``mmim train --init``: the pre-training task with its model's weights loaded from ``init``
    (a run, a checkpoint or ``CONVERTER:PATH``), built under the recipe's seed as the trainer would.
    A resumed run's checkpoint replaces them."""
    import torch

    from mmim.engine.task import PretrainTask
    from mmim.finetune.task import load_pretrained

    torch.manual_seed(recipe.seed)
    task = PretrainTask(recipe)
    teacher = getattr(task.module.teacher, "encoder", None) and task.module.teacher  # an EMA copy, if any
    before = {k: v.clone() for k, v in teacher.state_dict().items()} if teacher else None
    rng = torch.get_rng_state()
    load_pretrained(task.module, init)
    torch.set_rng_state(rng)  # what loading draws (e.g. a transformers model's init) leaves the run's randomness alone
    if teacher and all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items()):
        teacher.encoder.load_state_dict(task.module.encoder.state_dict())  # not in the file: the EMA starts as the student
        for name, tokenizer in teacher.tokenizers.items():
            tokenizer.load_state_dict(task.module.streams[name].tokenizer.state_dict())
    log.info("initialised from %s", init)
    return task


def _steps_text(trainer) -> str:  # noqa: ANN001 - CLI plumbing
    """``1380 steps``, or ``20 of 1380 steps (schedule.max_steps)`` where the run stops early."""
    stop = trainer.settings.max_steps
    if stop is not None and stop < trainer.total_steps:
        return f"{stop} of {trainer.total_steps} steps (schedule.max_steps)"
    return f"{trainer.total_steps} steps"


def _size(text: str) -> int:
    """``"256MB"`` -> bytes (units B, KB, MB, GB; powers of 1024)."""
    import re

    units = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not found:
        raise ValueError(f"--shard-size {text!r}: give a size such as 256MB or 1GB")
    return int(float(found.group(1)) * units[found.group(2)])


def _encode_options(pairs: list[str]) -> dict[str, object]:
    """``--encode KEY=VALUE`` pairs as a dict, values read as YAML scalars (numbers, booleans, strings); a value
    with a colon stays a string (YAML 1.1 would read ``4:2:0`` as the base-60 number 14520)."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"mmim pack: --encode expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip() if ":" in value else yaml.safe_load(value)
    return out


def cmd_pack(args: argparse.Namespace) -> int:
    from mmim.config.recipe import load_recipe
    from mmim.data.pack import pack
    from mmim.data.shards import verify
    from mmim.recipes_catalog import default_recipe, find_recipe

    plain = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if args.verify:
        if len(plain) != 1:
            raise SystemExit("mmim pack --verify OUT")
        problems = verify(plain[0])
        print("\n".join(problems) or f"{plain[0]}: every shard matches its index")
        return 1 if problems else 0
    if len(plain) != (1 if args.modality else 2):
        raise SystemExit("mmim pack: give --modality MODALITY OUT, or RECIPE OUT (then key=value overrides)")
    path = default_recipe(args.modality) if args.modality else find_recipe(plain[0])
    recipe = load_recipe(path, overrides)
    index = pack(recipe.data.dataset, plain[-1], split=args.split, samples_per_shard=args.samples_per_shard,
                 shard_bytes=_size(args.shard_size), workers=args.workers, skip_corrupt=args.skip_corrupt,
                 encode=_encode_options(args.encode))
    out = plain[-1]
    uses = [f"train with data.shards={out}"] if args.split == "train" else []
    uses += [f"probe with eval.{which}_shards={out}" for which, split in
             (("train", recipe.eval.train_split), ("test", recipe.eval.test_split)) if args.split == split]
    print(f"packed {index['num_samples']} samples of {recipe.data.dataset['name']} ({args.split}) into "
          f"{len(index['shards'])} shards in {out} ({len(index['skipped'])} skipped)" +
          (f"; {', or '.join(uses)}" if uses else ""))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    import torch

    from mmim.config.recipe import apply_overrides, load_recipe, recipe_from_dict
    from mmim.engine.run import saved_recipe
    from mmim.engine.trainer import Trainer
    from mmim.finetune.task import FinetuneTask
    from mmim.recipes_catalog import find_recipe

    target, overrides = _split_train_args(args)
    if target is None:
        raise SystemExit("mmim finetune: give a pretraining run directory or a recipe")
    init = args.init
    if Path(target).is_dir() and (Path(target) / "config.yaml").exists():
        recipe = recipe_from_dict(apply_overrides(saved_recipe(target), overrides), source=str(target))
        init = init or target
    else:
        recipe = load_recipe(find_recipe(target), overrides)
    from mmim.extras import check_recipe_extras

    check_recipe_extras(recipe)  # the plugins' extras and train.loggers, before the run directory exists
    torch.manual_seed(recipe.seed)
    task = FinetuneTask(recipe, init)
    run_dir = Path(recipe.finetune.out_dir.format(name=recipe.name))
    trainer = Trainer(recipe, resume=args.resume, task=task, run_dir=run_dir)
    log.info("fine-tuning %s from %s: %d steps, effective batch %d, peak lr %.3g, layer decay %.2f -> %s",
             recipe.name, init or "random init", trainer.total_steps, trainer.effective_batch, trainer.peak_lr,
             recipe.finetune.layer_decay, run_dir)
    summary = trainer.fit()
    model = trainer.unsharded_model()  # a collective under FSDP2: every rank takes part
    if trainer.rt.is_main:
        metrics = task.evaluate(model, device=trainer.rt.device)  # {"top1": ...} or {"mAP": ...} (multilabel)
        (name, value), = metrics.items()
        votes = f", {task.votes} votes" if task.votes > 1 else ""
        (run_dir / "finetune.json").write_text(json.dumps({**metrics, "votes": task.votes, "init": init, **summary},
                                                          indent=2, default=str))
        from mmim.engine.loggers import log_eval_results

        log_eval_results(run_dir, recipe, {"finetune": metrics}, trainer.step)
        label = "top-1" if name == "top1" else name
        print(f"fine-tuned {summary['steps']} steps in {summary['seconds']:.1f}s; {label} on {recipe.finetune.test_split}"
              f"{votes}: {value:.4f}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from mmim.config.recipe import read_yaml
    from mmim.engine.optim import optimizer_rules
    from mmim.recipes_catalog import catalog, provenance_line

    for entry in catalog():
        modality = read_yaml(entry.path).get("modality", "")
        if args.modality and modality != args.modality:
            continue
        print(f"{entry.name:<32} {modality:<12} {provenance_line(entry.path)}")
        print(f"{'':<32} {'':<12} {entry.path} ({entry.origin})")
        for line in optimizer_rules(entry.path):
            print(f"{'':<32} {'':<12} {line}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from mmim import registry

    for info in registry.discover():
        print(f"{info.name} {info.version} [{info.distribution}] {info.status}")
        if info.plugin:
            if info.plugin.modality:
                print(f"  modality: {info.plugin.modality}")
            for kind, names in info.plugin.components.items():
                print(f"  {kind}: {', '.join(names)}")
    return 0


def cmd_check_plugin(args: argparse.Namespace) -> int:
    from mmim.testing.plugin_checks import check_plugin

    results = check_plugin(args.plugin, args.kind)
    for r in results:
        print(f"{r.status.upper():<5} {r.kind:<11} {r.name}" + (f": {r.message}" if r.message else ""))
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "skip", "fail")}
    print(f"{args.plugin}: {counts['pass']} passed, {counts['skip']} skipped, {counts['fail']} failed")
    return 1 if counts["fail"] or not results else 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from mmim.scaffold import new_plugin

    written = new_plugin(args.name, args.dir)
    for path in written:
        print(path)
    print(f"next: pip install -e {args.dir} && mmim check-plugin {args.name} && mmim train --modality {args.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come before or after flags
    if extra and args.command in ("train", "finetune", "eval", "visualize", "pack") and \
            all("=" in e and not e.startswith("-") for e in extra):
        (args.args if args.command in ("train", "finetune", "pack") else args.overrides).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="mmim: %(message)s", stream=sys.stderr)
    # under torchrun only rank 0 reports (run directory, steps, evaluation); the others warn only
    log.setLevel(logging.INFO if os.environ.get("RANK", "0") in ("", "0") else logging.WARNING)
    command = {"train": cmd_train, "finetune": cmd_finetune, "eval": cmd_eval, "visualize": cmd_visualize, "export": cmd_export,
               "recipes": cmd_recipes, "pack": cmd_pack, "consolidate": cmd_consolidate,
               "plugins": cmd_plugins, "check-plugin": cmd_check_plugin, "new-plugin": cmd_new_plugin}[args.command]
    if args.debug:
        return command(args)
    from mmim.config.typed import ConfigError
    from mmim.data.errors import DataError
    from mmim.registry import RegistryError

    try:
        return command(args)
    except ModuleNotFoundError as err:  # an optional dependency: name the extra that brings it
        from mmim.extras import missing_module_hint

        print(f"mmim {args.command}: error: {missing_module_hint(err)}", file=sys.stderr)
        return 1
    except (ConfigError, RegistryError, DataError, FileNotFoundError, FileExistsError, ValueError, KeyError,
            RuntimeError) as err:
        print(f"mmim {args.command}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, (ConfigError, RegistryError, FileNotFoundError, FileExistsError)) else 1

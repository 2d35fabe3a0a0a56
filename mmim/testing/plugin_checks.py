"""Conformance checks for a plugin's datasets, converters and visualizers, and ``mmim check-plugin``.

The component checks (tokenizers ... decoders) are in :mod:`mmim.testing.conformance`. These
three need data or a model, which a plugin describes through optional hooks:

- dataset class: ``example_options(root: Path) -> dict``, the options of a tiny instance (it
  may write files under ``root``). Without it the dataset is built with no options, or skipped
  when it needs some. Checked: ``SeededDataset(ds)[(i, seed)]`` is the same for two fresh
  builds, and, when the instance reads files under ``root``, that overwriting them with garbage
  gives an error naming the file.
- converter: ``example_recipe`` (a recipe name) and ``to_official(model, stream)`` (what the
  official code would ``torch.save``), and optionally ``save_official(model, stream, folder) -> path``
  for a format that is not one ``torch.save`` file (a transformers ``save_pretrained`` folder).
  Checked: save, load into a fresh model, which gives the same official weights back and the same
  features.
- visualizer: found through a recipe the plugins ship whose stream uses its tokenizer; checked
  that ``render`` writes non-empty files into the output folder.
- exporter (what ``mmim export`` adds for a tokenizer, e.g. timm for images): found the same way;
  checked that it writes non-empty files into its folder with the mode any new file gets there,
  and, where it has a ``load(folder)`` hook returning a callable of the raw input, that the
  loaded model gives the encoder's pooled features on dataset samples.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmim import registry
from mmim.testing.conformance import CHECKS as COMPONENT_CHECKS

GARBAGE = b"this is not a valid data file\x00\xff\xfe garbage"


class CheckSkipped(Exception):
    """A check cannot run for this component (says why)."""


def _dataset_options(cls: Any, root: Path) -> dict[str, Any]:
    hook = getattr(cls, "example_options", None)
    if hook is not None:
        try:
            return dict(hook(root))
        except ModuleNotFoundError as err:  # the hook writes files with an optional library
            from mmim.extras import missing_module_hint

            raise CheckSkipped(f"example_options: {missing_module_hint(err)}") from err
    required = registry.required_options(cls, ("split", "augment"))
    if required:
        raise CheckSkipped(f"needs options ({', '.join(required)}) and has no example_options(root) hook")
    return {}


def _items(spec: dict[str, Any], seed: int, n: int = 2, hooked: bool = True) -> list[Any]:
    from mmim.data.loading import SeededDataset

    try:
        ds = registry.build("dataset", spec, where="check", split="train", augment=True)
    except Exception as err:
        if hooked:
            raise
        raise CheckSkipped(f"cannot be built without options ({err}) and has no example_options(root) hook") from err
    if len(ds) == 0:
        raise AssertionError("the dataset is empty")
    wrapped = SeededDataset(ds)
    return [wrapped[(i, seed + i)] for i in range(min(n, len(ds)))]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) or hasattr(a, "__array__"):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


def check_dataset(name: str) -> None:
    cls = registry.resolve("dataset", name)
    with tempfile.TemporaryDirectory(prefix="mmim-check-") as tmp:
        root = Path(tmp)
        spec = {"name": name, **_dataset_options(cls, root)}
        hooked = hasattr(cls, "example_options")
        first, again = _items(spec, seed=7, hooked=hooked), _items(spec, seed=7)
        assert _same(first, again), "two builds give different samples for the same seed (SeededDataset)"
        files = [p for p in root.rglob("*") if p.is_file()]
        if not files:
            return  # embedded or procedural data: no user files to corrupt
        for p in files:
            p.write_bytes(GARBAGE)
        try:
            _items(spec, seed=7, n=len(files))
        except Exception as err:  # noqa: BLE001 - any error is fine if it names the file
            named = [p for p in files if p.name in str(err)]
            assert named, f"the error for corrupt files does not name any of them: {type(err).__name__}: {err}"
            return
        raise AssertionError(f"no error after overwriting {len(files)} data files with garbage")


def check_converter(name: str) -> None:
    from mmim.config import load_recipe
    from mmim.model import build_model
    from mmim.recipes_catalog import find_recipe

    conv = registry.resolve("converter", name)
    to_official, recipe_name = getattr(conv, "to_official", None), getattr(conv, "example_recipe", None)
    if to_official is None or recipe_name is None:
        raise CheckSkipped("no round-trip hooks (to_official and example_recipe on the converter)")
    recipe = load_recipe(find_recipe(recipe_name))
    stream = next(n for n, s in recipe.model.streams.items() if s.tokenizer is not None)
    torch.manual_seed(0)
    model = build_model(recipe.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    torch.manual_seed(1)
    fresh = build_model(recipe.model).eval()
    with tempfile.TemporaryDirectory(prefix="mmim-check-") as tmp:
        save = getattr(conv, "save_official", None)
        if save is not None:
            path = save(model, stream, Path(tmp) / "official")
        else:
            path = Path(tmp) / "official.pth"
            torch.save(to_official(model, stream), path)
        conv(path, fresh)  # the registry's converter contract: converter(path, model, head=None)
    # compared in the official layout: what it cannot hold (e.g. VideoMAE's key bias) may differ in mmim's
    mine, theirs = _flat(to_official(model, stream)), _flat(to_official(fresh, stream))
    assert mine.keys() == theirs.keys(), f"keys differ after the round trip: {sorted(mine.keys() ^ theirs.keys())[:5]}"
    differ = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not differ, f"weights changed in the round trip: {differ[:5]}"
    batch = {fresh.streams[s].input_key or s: fresh.streams[s].tokenizer.example_input(2, torch.Generator().manual_seed(0))
             for s in fresh.inputs}
    torch.testing.assert_close(fresh.features(batch), model.features(batch))


def _flat(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {}


def _recipe_for_tokenizer(tokenizer: str) -> tuple[Path, str]:
    """A recipe shipped by an installed plugin with a stream using ``tokenizer`` (single-stream first)."""
    from mmim.config.recipe import read_yaml

    owner = registry.qualified_name("tokenizer", tokenizer)
    found = []
    for plugin in registry.plugins().values():
        for path in plugin.recipe_files():
            streams = (read_yaml(path).get("model") or {}).get("streams") or {}
            for stream, cfg in streams.items():
                name = (cfg.get("tokenizer") or {}).get("name")
                if name and registry.qualified_name("tokenizer", name) == owner:
                    found.append((path.name != plugin.default_recipe, len(streams), str(path), path, stream))
    if not found:
        raise CheckSkipped(f"no recipe of an installed plugin uses tokenizer {owner!r}")
    *_, path, stream = min(found, key=lambda f: f[:3])  # a plugin's default recipe, then fewer streams
    return path, stream


def check_visualizer(name: str) -> None:
    from mmim.config.recipe import read_yaml, recipe_from_dict
    from mmim.model import build_model

    path, stream = _recipe_for_tokenizer(name)
    recipe = recipe_from_dict(read_yaml(path), source=str(path))
    torch.manual_seed(0)
    model = build_model(recipe.model, recipe.source).eval()
    spec = recipe.eval.dataset or recipe.data.dataset
    ds = registry.build("dataset", spec, split=recipe.eval.test_split, augment=False)
    items = [ds[i] for i in range(min(2, len(ds)))]
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
    vis = registry.companion("visualizer", name)()
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="mmim-check-") as tmp:
        out_dir = Path(tmp) / "vis"
        output = model(batch, generator=torch.Generator().manual_seed(0), full=True)  # as mmim visualize
        raw = model.raw_inputs(batch)
        if output.mask.streams is not None:  # fixed per-stream counts: the whole batch at once
            paths = vis.render(model, stream, raw[stream], output, out_dir, spec, prefix=stream)
        else:
            from mmim.fusion.visualize import render_fused

            paths = render_fused(model, raw, output, out_dir, {stream: vis}, spec)
        paths = [Path(p) for p in paths]
        assert paths, "render wrote no file"
        for p in paths:
            assert p.is_file() and p.stat().st_size > 0, f"{p} is missing or empty"
            assert out_dir in p.parents, f"{p} is outside the output folder {out_dir}"


def _check_written(out_dir: Path, tmp: str) -> None:
    """Files under ``out_dir``: some, none empty, each with the mode other new files get."""
    (Path(tmp) / "probe").write_text("x")
    mode = (Path(tmp) / "probe").stat().st_mode & 0o777
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert files, f"the exporter wrote no file into {out_dir}"
    for p in files:
        assert p.stat().st_size > 0, f"{p.name} is empty"
        got = p.stat().st_mode & 0o777
        assert got == mode, f"{p.name} has mode {got:o}; other new files get {mode:o}"


def _check_format_exporter(name: str) -> None:
    """An exporter registered under a format name (``mmim export --format NAME``), not a tokenizer's: run on
    its plugin's default recipe's model; it writes readable files (and checks its own output, if it does)."""
    from mmim.config.recipe import read_yaml, recipe_from_dict
    from mmim.model import build_model

    owner = registry.qualified_name("exporter", name).split(":")[0]
    plugin = registry.plugins()[owner]
    paths = [p for p in plugin.recipe_files() if p.name == plugin.default_recipe]
    if not paths:
        raise CheckSkipped(f"plugin {owner!r} has no default recipe to export")
    recipe = recipe_from_dict(read_yaml(paths[0]), source=str(paths[0]))
    torch.manual_seed(0)
    model = build_model(recipe.model, recipe.source).eval()
    exporter = registry.resolve("exporter", registry.qualified_name("exporter", name))
    with tempfile.TemporaryDirectory(prefix="mmim-check-") as tmp:
        out_dir = Path(tmp) / "export"
        exporter(model, recipe, out_dir, metrics={"trained": {"knn": 0.5}})
        _check_written(out_dir, tmp)


def check_exporter(name: str) -> None:
    from mmim.config.recipe import read_yaml, recipe_from_dict
    from mmim.data.device import device_transforms, to_device
    from mmim.model import build_model

    owner, _, short = registry.qualified_name("exporter", name).partition(":")
    if short not in registry.plugins()[owner].components.get("tokenizer", {}):
        return _check_format_exporter(name)
    path, stream = _recipe_for_tokenizer(name)
    recipe = recipe_from_dict(read_yaml(path), source=str(path))
    torch.manual_seed(0)
    model = build_model(recipe.model, recipe.source).eval()
    exporter = registry.companion("exporter", name)
    with tempfile.TemporaryDirectory(prefix="mmim-check-") as tmp:
        out_dir = Path(tmp) / "export"
        exporter(model, recipe, out_dir, stream, {"trained": {"knn": 0.5}})
        _check_written(out_dir, tmp)
        load = getattr(exporter, "load", None)
        if load is None:
            return
        spec = recipe.eval.dataset or recipe.data.dataset
        ds = registry.build("dataset", spec, split=recipe.eval.test_split, augment=False)
        items = [ds[i] for i in range(min(2, len(ds)))]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
        batch = to_device(batch, "cpu", device_transforms(ds))
        key = recipe.model.streams[stream].input_key or stream
        with torch.no_grad():
            want = model.features({key: batch[key]}, pool=recipe.model.pool)
            got = load(out_dir)(batch[key])
        assert got.shape == want.shape, f"the exported model gives features {tuple(got.shape)}, the encoder {tuple(want.shape)}"
        err = (got - want).abs().max().item()
        assert err <= 1e-4 * max(1.0, want.abs().max().item()), f"the exported model's features differ by {err:.3g}"


CHECKS: dict[str, Callable[[str], None]] = {**COMPONENT_CHECKS, "dataset": check_dataset, "converter": check_converter,
                                           "visualizer": check_visualizer, "exporter": check_exporter}


@dataclass
class CheckResult:
    kind: str
    name: str
    status: str  # "pass", "fail" or "skip"
    message: str = ""


def check_plugin(plugin_name: str, kinds: list[str] | None = None) -> list[CheckResult]:
    """Run every check on every component of the installed plugin ``plugin_name``."""
    from mmim.extras import missing_extras

    infos = {i.name: i for i in registry.discover()}
    if plugin_name not in infos:
        raise registry.RegistryError(f"no installed plugin {plugin_name!r}; installed: {', '.join(sorted(infos))}")
    info = infos[plugin_name]
    if info.plugin is None:
        return [CheckResult("plugin", plugin_name, "fail", f"does not load: {info.error}")]
    missing = missing_extras(info.plugin)
    if missing:
        return [CheckResult("plugin", plugin_name, "fail", "; ".join(f"needs {m.hint()}" for m in missing))]
    results = []
    for kind, names in info.plugin.components.items():
        if kind not in CHECKS or (kinds and kind not in kinds):
            continue
        for name in names:
            qualified = f"{plugin_name}:{name}"
            try:
                CHECKS[kind](qualified)
                results.append(CheckResult(kind, qualified, "pass"))
            except CheckSkipped as why:
                results.append(CheckResult(kind, qualified, "skip", str(why)))
            except Exception as err:  # noqa: BLE001 - every failure is reported, the others still run
                results.append(CheckResult(kind, qualified, "fail", f"{type(err).__name__}: {err}"))
    return results

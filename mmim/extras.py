"""Optional dependencies: which pip extra a plugin needs, checked before a run writes anything.

A plugin declares ``extras={"video": ("av", "decord", "torchcodec")}``: it works when any one of
those modules can be found. Finding (``importlib.util.find_spec``) imports nothing, so ``mmim
plugins`` stays light.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from mmim import registry

log = logging.getLogger(__name__)


class MissingExtraError(RuntimeError):
    """A recipe needs a plugin whose optional dependencies are not installed."""


@dataclass(frozen=True)
class MissingExtra:
    plugin: str
    extra: str
    modules: tuple[str, ...]

    def hint(self) -> str:
        """``extra "video" (none of av, decord, torchcodec is installed): pip install "mmim[video]"``."""
        what = self.modules[0] if len(self.modules) == 1 else f"none of {', '.join(self.modules)}"
        verb = "is not installed" if len(self.modules) == 1 else "is installed"
        return f'extra "{self.extra}" ({what} {verb}): pip install "mmim[{self.extra}]"'


# modules that the pip extras in pyproject.toml bring, for the hint when an import fails
EXTRA_OF_MODULE = {"av": "video", "decord": "video", "torchcodec": "torchcodec", "soundfile": "audio",
                   "scipy": "audio", "trimesh": "points", "h5py": "points", "matplotlib": "viz", "open3d": "open3d",
                   "transformers": "transformers",
                   "wandb": "wandb", "mlflow": "mlflow"}


def missing_module_hint(err: ModuleNotFoundError) -> str:
    """One line for a failed optional import: the module and the extra that brings it."""
    top = (err.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    return f"{err}; install it with pip install \"mmim[{extra}]\"" if extra else str(err)


def module_available(name: str) -> bool:
    """Whether ``import name`` can find the module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_extras(plugin: registry.Plugin) -> list[MissingExtra]:
    """The extras of ``plugin`` none of whose modules is installed."""
    return [MissingExtra(plugin.name, extra, tuple(mods)) for extra, mods in plugin.extras.items()
            if not any(module_available(m) for m in mods)]


def recipe_plugins(model: dict[str, Any], datasets: list[dict[str, Any] | None]) -> list[str]:
    """Names of the plugins providing the components of a recipe's model and data sets."""
    specs: list[tuple[str, Any]] = [("dataset", d) for d in datasets]
    for stream in (model.get("streams") or {}).values():
        specs += [(kind, stream.get(kind)) for kind in ("tokenizer", "masker", "target", "loss", "decoder")]
    owners = []
    for kind, spec in specs:
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            try:
                owner = registry.qualified_name(kind, spec["name"]).split(":")[0]
            except registry.RegistryError:
                continue  # unknown names are reported by recipe validation, with the file
            if owner not in owners:
                owners.append(owner)
    return owners


def check_recipe_extras(recipe: Any) -> None:
    """Raise :class:`MissingExtraError` (one line, with the pip command) if the recipe's plugins, or the
    trackers of its ``train.loggers``, lack an extra."""
    from mmim.config.recipe import recipe_to_dict

    data = recipe_to_dict(recipe)
    datasets = [data.get("data", {}).get("dataset"), (data.get("eval") or {}).get("dataset")]
    plugins = registry.plugins()
    missing = [m for name in recipe_plugins(data.get("model", {}), datasets) if name in plugins
               for m in missing_extras(plugins[name])]
    needs = [f"the {m.plugin} plugin needs {m.hint()}" for m in missing]
    needs += missing_trackers(recipe.train)  # train.loggers: wandb, mlflow
    if needs:
        raise MissingExtraError(f"recipe {recipe.name!r}: {'; '.join(needs)}")


# experiment trackers (train.loggers, mmim.engine.loggers): name -> (module to import, the pip extra bringing it)
MODULES = {"tensorboard": ("tensorboard", None), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


def active_loggers(train: Any, warn: bool = False) -> list[str]:
    """``train.loggers`` in order, without duplicates, less ``tensorboard`` where the deprecated
    ``train.tensorboard: false`` says so (``true`` adds it; ``warn``: say that it is deprecated)."""
    names = list(dict.fromkeys(train.loggers))
    if train.tensorboard is not None:
        if train.tensorboard and "tensorboard" not in names:
            names.insert(0, "tensorboard")
        elif not train.tensorboard:
            names = [n for n in names if n != "tensorboard"]
        if warn:
            log.warning("train.tensorboard is deprecated: list the trackers in train.loggers instead "
                        "(here train.loggers=[%s])", ",".join(names))
    return names


def missing_trackers(train: Any) -> list[str]:
    """One hint per tracker of ``train.loggers`` whose package is not installed."""
    out = []
    for name in active_loggers(train):
        module, extra = MODULES[name]
        if not module_available(module):
            pip = f'pip install "mmim[{extra}]"' if extra else f"pip install {module}"
            out.append(f"train.loggers names {name}, but {module} is not installed: {pip}")
    return out

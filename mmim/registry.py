"""Plugin discovery and component lookup through the ``mmim.plugins`` entry-point group.

A plugin package exposes one :class:`Plugin` object in its ``pyproject.toml``::

    [project.entry-points."mmim.plugins"]
    image = "mmim_image:plugin"

The object names its components as ``"module:attribute"`` strings, so listing plugins imports
only the light module holding the :class:`Plugin`, never the components' dependencies. A
component is imported the first time it is resolved. The core's generic components and the
built-in modalities register through this same group.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "mmim.plugins"
KINDS = ("tokenizer", "masker", "target", "loss", "decoder", "dataset", "visualizer", "converter", "exporter")


class RegistryError(LookupError):
    """Unknown, ambiguous or broken component or plugin."""


@dataclass
class Plugin:
    """What a plugin adds, declared without importing any of it.

    Attributes:
        name: plugin name; the prefix of qualified component names (``image:patch``).
        description: one line for ``mmim plugins``.
        modality: what ``mmim train --modality <modality>`` selects, if the plugin is a modality.
        components: ``{kind: {name: "module:attribute"}}``; kinds are those in ``KINDS``.
        recipes: ``"package/relative/dir"`` of YAML recipes shipped inside the plugin package.
        default_recipe: file name (inside ``recipes``) that ``--modality`` runs.
        extras: ``{extra: (module, ...)}``: the plugin cannot run unless one of the modules
            imports; ``pip install "mmim[<extra>]"`` brings them (see :mod:`mmim.extras`).
    """

    name: str
    description: str = ""
    modality: str | None = None
    components: dict[str, dict[str, str]] = field(default_factory=dict)
    recipes: str | None = None
    default_recipe: str | None = None
    extras: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in self.components:
            if kind not in KINDS:
                raise RegistryError(f"plugin {self.name!r} declares unknown component kind {kind!r}; kinds: {KINDS}")

    def recipe_files(self) -> list[Path]:
        """The YAML recipes the plugin ships, sorted by name."""
        if not self.recipes:
            return []
        package, _, rel = self.recipes.partition("/")
        root = Path(str(resources.files(package))) / rel
        return sorted(root.glob("*.yaml"))


@dataclass
class PluginInfo:
    """One discovered entry point: the loaded plugin, or the error that stopped it."""

    entry_point: str
    distribution: str
    version: str
    plugin: Plugin | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.plugin.name if self.plugin else self.entry_point

    @property
    def status(self) -> str:
        if not self.plugin:
            return f"failed: {self.error}"
        from mmim.extras import missing_extras

        missing = missing_extras(self.plugin)
        return f"needs {'; '.join(m.hint() for m in missing)}" if missing else "ok"


_cache: list[PluginInfo] | None = None
_classes: dict[tuple[str, str, str], Any] = {}


def discover(refresh: bool = False) -> list[PluginInfo]:
    """All entry points of the ``mmim.plugins`` group; a broken one is reported, not raised."""
    global _cache
    if _cache is not None and not refresh:
        return _cache
    found: list[PluginInfo] = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist
        info = PluginInfo(ep.name, dist.name if dist else "?", dist.version if dist else "?")
        try:
            obj = ep.load()
            if not isinstance(obj, Plugin):
                raise TypeError(f"entry point {ep.value!r} is a {type(obj).__name__}, not an mmim.registry.Plugin")
            info.plugin = obj
        except Exception as err:  # a broken plugin must not break the others
            info.error = f"{type(err).__name__}: {err}"
        found.append(info)
    _cache = found
    return found


def plugins() -> dict[str, Plugin]:
    """The plugins that loaded, by name."""
    return {i.plugin.name: i.plugin for i in discover() if i.plugin}


def _failed_note() -> str:
    failed = [f"{i.entry_point} ({i.error})" for i in discover() if i.plugin is None]
    return f"; plugins that failed to load: {', '.join(failed)}" if failed else ""


def available(kind: str) -> list[str]:
    """Qualified names ``plugin:name`` of every component of ``kind``."""
    return [f"{p.name}:{n}" for p in plugins().values() for n in p.components.get(kind, {})]


def _locate(kind: str, name: str) -> tuple[str, str, str]:
    """Resolve ``name`` or ``plugin:name`` to ``(plugin, name, "module:attr")``."""
    if kind not in KINDS:
        raise RegistryError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
    owner, _, short = name.rpartition(":")
    pls = plugins()
    if owner:
        if owner not in pls:
            raise RegistryError(f"no plugin named {owner!r} (for {kind} {name!r}); installed: {', '.join(pls)}{_failed_note()}")
        candidates = [owner] if short in pls[owner].components.get(kind, {}) else []
    else:
        candidates = [p for p, pl in pls.items() if short in pl.components.get(kind, {})]
    if not candidates:
        choices = available(kind)
        close = difflib.get_close_matches(name, choices + [c.split(":")[1] for c in choices], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RegistryError(f"unknown {kind} {name!r}{hint} installed {kind}s: {', '.join(choices) or 'none'}{_failed_note()}")
    if len(candidates) > 1:
        both = " and ".join(f"{c!r}" for c in candidates)
        raise RegistryError(
            f"{kind} name {short!r} is provided by plugins {both}; "
            f"write it qualified: {', '.join(f'{c}:{short}' for c in candidates)}"
        )
    plugin = candidates[0]
    return plugin, short, pls[plugin].components[kind][short]


def resolve(kind: str, name: str) -> Any:
    """Import and return the component class (or factory) registered as ``name``."""
    plugin, short, target = _locate(kind, name)
    key = (kind, plugin, short)
    if key not in _classes:
        module, _, attr = target.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as err:
            raise RegistryError(f"{kind} {plugin}:{short} could not be imported from {target!r}: {type(err).__name__}: {err}") from err
        _classes[key] = obj
    return _classes[key]


def qualified_name(kind: str, name: str) -> str:
    """``plugin:name`` for a possibly short ``name``."""
    plugin, short, _ = _locate(kind, name)
    return f"{plugin}:{short}"


def _resolve_spec(kind: str, spec: Any, where: str) -> Any:
    """The class a component spec ``{"name": ..., **options}`` names; errors name ``where``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise RegistryError(f"{where or kind}: give the component as a mapping with a 'name'; installed {kind}s: {', '.join(available(kind))}")
    try:
        return resolve(kind, spec["name"])
    except RegistryError as err:
        raise RegistryError(f"{where}: {err}" if where else str(err)) from None


def check_options(kind: str, spec: dict[str, Any], context: tuple[str, ...] | dict[str, Any], *, where: str = "") -> Any:
    """Resolve ``spec["name"]`` and check its options against the constructor; return the class.

    Unknown options raise an error naming the option, where it was given and the valid ones.
    """
    cls = _resolve_spec(kind, spec, where)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [n for n, p in params.items() if n not in context and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in spec:
        if key == "name":
            continue
        if key in context or (key not in params and not takes_any):
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RegistryError(
                f"{where or kind}: unknown option {key!r} for {kind} {spec['name']!r}{hint}; valid options: {', '.join(valid)}"
            )
    return cls


def required_options(cls: Any, injected: tuple[str, ...] = ()) -> list[str]:
    """The constructor arguments of ``cls`` without a default, other than the ``injected`` ones."""
    params = inspect.signature(cls).parameters
    return [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in injected
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def constructor_defaults(cls: Any) -> dict[str, Any]:
    """The constructor arguments of ``cls`` that have defaults, with them (for datasets that build a
    decode-only instance without running ``__init__``)."""
    params = inspect.signature(cls).parameters
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


def option_value(kind: str, spec: dict[str, Any] | None, name: str, default: Any = None) -> Any:
    """The value a component built from ``spec`` has for option ``name``: the spec's, else the
    constructor's default, else the class's ``option_defaults`` (options it passes on), else
    ``default``."""
    if spec is None:
        return default
    if name in spec:
        return spec[name]
    cls = resolve(kind, spec["name"])
    defaults = constructor_defaults(cls)
    if name in defaults:
        return defaults[name]
    return getattr(cls, "option_defaults", {}).get(name, default)


def build(kind: str, spec: dict[str, Any], *, where: str = "", **context: Any) -> Any:
    """Build a component from ``{"name": ..., **options}``; ``context`` args come from the model.

    The options were checked when the recipe was loaded (:func:`check_options`); a constructor
    that still refuses them raises an error naming ``where``.
    """
    cls = _resolve_spec(kind, spec, where)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {k: v for k, v in context.items() if k in params or takes_any}
    options = {k: v for k, v in spec.items() if k != "name"}
    try:
        return cls(**accepted, **options)
    except (TypeError, ValueError) as err:
        if isinstance(err, TypeError):  # a spec that skipped recipe validation: name the bad option
            check_options(kind, spec, context, where=where)
        raise RegistryError(f"{where or kind}: cannot build {kind} {spec['name']!r}: {err}") from err


def companion(kind: str, tokenizer_name: str) -> Any:
    """The ``visualizer`` or ``exporter`` a plugin registers under its tokenizer's name."""
    plugin, short, _ = _locate("tokenizer", tokenizer_name)
    if short not in plugins()[plugin].components.get(kind, {}):
        raise RegistryError(f"plugin {plugin!r} registers no {kind} for its tokenizer {short!r} "
                            f"(a plugin adds one under components[{kind!r}][{short!r}])")
    return resolve(kind, f"{plugin}:{short}")


def modality_plugin(modality: str) -> Plugin:
    """The plugin serving ``--modality``; the error lists the installed modalities."""
    matches = [p for p in plugins().values() if p.modality == modality]
    if not matches:
        have = sorted(p.modality for p in plugins().values() if p.modality)
        raise RegistryError(f"unknown modality {modality!r}; installed modalities: {', '.join(have) or 'none'}{_failed_note()}")
    if len(matches) > 1:
        raise RegistryError(f"modality {modality!r} is provided by plugins {', '.join(p.name for p in matches)}")
    return matches[0]

"""Finding recipes: the paper recipes (``recipes/`` in a checkout, ``mmim/paper_recipes/`` in an
installed wheel, see ``setup.py``) and the recipes plugins ship."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmim import registry
from mmim.config.recipe import read_yaml
from mmim.config.typed import ConfigError

REPO_RECIPES = Path(__file__).resolve().parent.parent / "recipes"  # a source checkout (editable install)
PACKAGED_RECIPES = Path(__file__).resolve().parent / "paper_recipes"  # the same files inside a built wheel


@dataclass
class RecipeEntry:
    name: str
    path: Path
    origin: str  # "recipes/" or "plugin <name>"


def catalog() -> list[RecipeEntry]:
    """Every known recipe: the paper recipes ``recipes/**.yaml`` and each plugin's recipes."""
    entries, shipped = [], set()
    for root in dict.fromkeys((PACKAGED_RECIPES, REPO_RECIPES, Path.cwd() / "recipes")):
        if root.is_dir():  # the same file under two roots (a wheel run inside a checkout) is listed once
            entries += [RecipeEntry(p.stem, p, "recipes/") for p in sorted(root.rglob("*.yaml"))
                        if p.relative_to(root) not in shipped]
            shipped.update(p.relative_to(root) for p in root.rglob("*.yaml"))
    for plugin in registry.plugins().values():
        entries += [RecipeEntry(p.stem, p, f"plugin {plugin.name}") for p in plugin.recipe_files()]
    seen, unique = set(), []
    for e in entries:
        if e.path.resolve() not in seen:
            seen.add(e.path.resolve())
            unique.append(e)
    return unique


def find_recipe(name_or_path: str) -> Path:
    """A path to an existing file, or a recipe name from :func:`catalog`."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    matches = [e for e in catalog() if e.name == name_or_path or e.name == path.stem and not path.exists()]
    if len(matches) == 1:
        return matches[0].path
    if len(matches) > 1:
        raise ConfigError(f"recipe name {name_or_path!r} is ambiguous: {', '.join(str(m.path) for m in matches)}")
    names = ", ".join(sorted(e.name for e in catalog()))
    raise ConfigError(f"no recipe file or name {name_or_path!r}; known recipes: {names}")


def default_recipe(modality: str) -> Path:
    """The recipe that ``mmim train --modality <modality>`` runs."""
    plugin = registry.modality_plugin(modality)
    if not plugin.default_recipe:
        raise ConfigError(f"plugin {plugin.name!r} declares no default recipe for modality {modality!r}")
    for path in plugin.recipe_files():
        if path.name == plugin.default_recipe:
            return path
    raise ConfigError(f"plugin {plugin.name!r}: default recipe {plugin.default_recipe!r} not found in {plugin.recipes}")


def provenance_line(path: Path) -> str:
    data = read_yaml(path)
    prov = data.get("provenance") or {}
    reported = prov.get("reported")
    metric = f"{prov.get('metric', '')} {reported}" if reported is not None else ""
    unverified = " ".join(str(prov.get("unverified") or "").split())
    flag = f"UNVERIFIED: {unverified}" if unverified else ""
    return " | ".join(x for x in (prov.get("paper", ""), prov.get("table", ""), metric.strip(), flag) if x)

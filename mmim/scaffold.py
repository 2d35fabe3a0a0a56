"""``mmim new-plugin NAME DIR``: a new plugin package that installs, passes ``mmim check-plugin``
and trains with ``mmim train --modality NAME`` as it is, ready to be changed into a real modality.

The package adds a trivial modality, 1-D signals of ``length`` values:

- ``mmim_NAME/__init__.py``: the :class:`~mmim.registry.Plugin` declaration (light: components
  are ``"module:attribute"`` strings, imported when a recipe names them);
- ``tokenizer.py``: ``NAME_patch``, non-overlapping windows of ``patch_len`` values -> tokens;
- ``datasets.py``: ``NAME_waves``, generated labelled signals (a sine whose number of cycles is
  the class, random phase, amplitude and noise), deterministic per ``(seed, split, index)``;
- ``visualize.py``: ``mmim visualize`` for the modality (Pillow: signal, hidden patches, prediction);
- ``recipes/mae_NAME.yaml``: the default recipe (MAE with the core's masker, target, loss and
  decoder), a few seconds on a CPU;
- ``tests/``: the package's own tests;
- ``pyproject.toml`` with the ``mmim.plugins`` entry point, and a README.

``docs/plugins.md`` starts from it.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

NAME = re.compile(r"[a-z][a-z0-9_]*")

TEMPLATES = Path(__file__).resolve().parent / "plugin_template"  # string.Template files ($name, $dist)
FILES = {  # path in the package -> its template
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "mmim_{name}/__init__.py": "__init__.py.tmpl",
    "mmim_{name}/tokenizer.py": "tokenizer.py.tmpl",
    "mmim_{name}/datasets.py": "datasets.py.tmpl",
    "mmim_{name}/visualize.py": "visualize.py.tmpl",
    "mmim_{name}/recipes/mae_{name}.yaml": "recipe.yaml.tmpl",
    "tests/conftest.py": "conftest.py.tmpl",
    "tests/test_{name}_plugin.py": "test_plugin.py.tmpl",
}


def check_name(name: str) -> None:
    """A plugin name becomes a module (``mmim_NAME``), a component prefix and a modality."""
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter "
                         "(it names the module mmim_NAME and the modality)")
    from mmim import registry

    taken = {info.name: info.distribution for info in registry.discover()}
    if name in taken:
        raise ValueError(f"plugin name {name!r} is taken: the installed distribution {taken[name]} registers it")
    modalities = {p.modality for p in registry.plugins().values() if p.modality}
    if name in modalities:
        raise ValueError(f"modality {name!r} is served by an installed plugin already")


def new_plugin(name: str, out_dir: str | Path) -> list[Path]:
    """Write the package for plugin ``name`` into ``out_dir`` (absent or empty); return the files."""
    check_name(name)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; give a new folder for the package")
    values = {"name": name, "dist": name.replace("_", "-")}
    written = []
    for rel, template in FILES.items():
        path = out / rel.format(name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template((TEMPLATES / template).read_text()).substitute(values))
        written.append(path)
    return written

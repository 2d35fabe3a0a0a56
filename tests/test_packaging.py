"""The built wheel carries every paper recipe, and the catalog finds them there by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mmim import recipes_catalog

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted(p.relative_to(REPO / "recipes") for p in (REPO / "recipes").rglob("*.yaml"))


def test_installed_layout_is_found_by_name(tmp_path, monkeypatch):
    """A wheel install has no checkout: recipes come from ``mmim/paper_recipes`` only, once each,
    even when run inside a checkout that has the same files under ``./recipes``."""
    packaged = tmp_path / "site" / "paper_recipes"
    shutil.copytree(REPO / "recipes", packaged)
    monkeypatch.setattr(recipes_catalog, "REPO_RECIPES", tmp_path / "no-checkout")
    monkeypatch.setattr(recipes_catalog, "PACKAGED_RECIPES", packaged)
    for cwd in (tmp_path, REPO):
        monkeypatch.chdir(cwd)
        papers = [e for e in recipes_catalog.catalog() if e.origin == "recipes/"]
        assert sorted(e.path.relative_to(packaged) for e in papers) == PAPER
        for rel in PAPER:
            assert recipes_catalog.find_recipe(rel.stem) == packaged / rel


@pytest.mark.slow
def test_wheel_contains_every_paper_recipe(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("mmim", "plugins", "recipes"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    wheel, = (tmp_path / "dist").glob("mmim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(Path(n).relative_to("mmim/paper_recipes") for n in names if n.startswith("mmim/paper_recipes/"))
    assert shipped == PAPER
    assert all(f"mmim/paper_recipes/{p}" in names for p in PAPER)

"""Build hook: the wheel carries the repository's paper recipes (``recipes/**/*.yaml``) as
``mmim/paper_recipes/``, so ``mmim recipes`` and ``mmim train <name>`` find them when installed.
Everything else is declared in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithRecipes(build_py):
    def run(self) -> None:
        super().run()
        for src in sorted((ROOT / "recipes").rglob("*.yaml")):
            dest = Path(self.build_lib) / "mmim" / "paper_recipes" / src.relative_to(ROOT / "recipes")
            self.mkpath(str(dest.parent))
            self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": BuildPyWithRecipes})

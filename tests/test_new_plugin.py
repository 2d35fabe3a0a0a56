"""``mmim new-plugin NAME DIR``: the scaffolded package installs, passes its own tests and
``mmim check-plugin``, and ``mmim train --modality NAME`` trains it, all offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from mmim.cli import main

NAME = "scaffoldtest"


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.slow
def test_scaffold_installs_checks_trains_and_tests(tmp_path, capsys):
    pytest.importorskip("setuptools")  # pip install --no-build-isolation builds with the environment's setuptools
    pkg = tmp_path / "mmim-scaffoldtest"
    assert main(["new-plugin", NAME, str(pkg)]) == 0
    printed = capsys.readouterr().out
    assert f"mmim check-plugin {NAME}" in printed
    pyproject = (pkg / "pyproject.toml").read_text()
    assert f'[project.entry-points."mmim.plugins"]\n{NAME} = "mmim_{NAME}:plugin"' in pyproject
    recipe = yaml.safe_load((pkg / f"mmim_{NAME}" / "recipes" / f"mae_{NAME}.yaml").read_text())
    assert recipe["modality"] == NAME and recipe["model"]["streams"][NAME]["tokenizer"]["name"] == f"{NAME}_patch"

    install = _run("-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-e", str(pkg))
    assert install.returncode == 0, install.stdout + install.stderr
    try:
        listed = _run("-m", "mmim", "plugins")
        assert f"{NAME} 0.1.0 [mmim-{NAME}] ok" in listed.stdout, listed.stdout + listed.stderr
        check = _run("-m", "mmim", "check-plugin", NAME)
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"PASS  tokenizer   {NAME}:{NAME}_patch" in check.stdout and "0 failed" in check.stdout
        assert f"PASS  dataset     {NAME}:{NAME}_waves" in check.stdout
        assert f"PASS  visualizer  {NAME}:{NAME}_patch" in check.stdout
        run = tmp_path / "run"
        train = _run("-m", "mmim", "train", "--modality", NAME, "schedule.max_steps=4", "eval.linear_epochs=2",
                     f"train.out_dir={run}", "train.threads=1")
        assert train.returncode == 0, train.stderr
        assert "trained 4 steps" in train.stdout and "random_init" in train.stdout
        assert set(json.loads((run / "eval.json").read_text())["trained"]) == {"linear", "knn"}
        drawn = _run("-m", "mmim", "visualize", str(run), "--num", "2")
        assert drawn.returncode == 0, drawn.stderr
        assert [line.rsplit("/", 1)[-1] for line in drawn.stdout.split()] == [f"{NAME}_000.png", f"{NAME}_001.png"]
        own = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=pkg)
        assert own.returncode == 0 and "4 passed" in own.stdout, own.stdout + own.stderr
    finally:
        removed = _run("-m", "pip", "uninstall", "-y", "-q", f"mmim-{NAME}")
    assert removed.returncode == 0, removed.stderr
    assert NAME not in _run("-m", "mmim", "plugins").stdout.split()


def test_bad_names_and_folders_are_refused(tmp_path, capsys):
    assert main(["new-plugin", "Bad-Name", str(tmp_path / "a")]) != 0
    assert "lower-case letters" in capsys.readouterr().err
    assert main(["new-plugin", "image", str(tmp_path / "b")]) != 0
    assert "taken" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    assert main(["new-plugin", "fresh", str(tmp_path / "full")]) != 0
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "full" / "x.txt").read_text() == "mine" and not (tmp_path / "a").exists()

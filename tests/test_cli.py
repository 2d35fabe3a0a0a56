"""The ``mmim`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mmim.cli import main


def test_plugins_lists_versions_components_and_status(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "image 0.1.0 [mmim] ok" in out and "tokenizer: patch" in out and "masker: random" in out


def test_recipes_lists_provenance(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "mae_vit_b16_in1k" in out and "83.6" in out and "mae_fashion_mnist" in out


def test_unknown_modality_lists_installed(capsys):
    assert main(["train", "--modality", "smell"]) == 2
    err = capsys.readouterr().err
    assert "unknown modality 'smell'" in err and "image" in err


def test_bad_override_names_key(capsys, tmp_path):
    assert main(["train", "--modality", "image", "optim.lrr=1", f"train.out_dir={tmp_path}"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_train_eval_and_resume_through_cli(tiny_recipe_dict, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    tiny_recipe_dict["schedule"]["max_steps"] = 4
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    run = tmp_path / "run"
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    assert "trained 4 steps" in out and "random_init" in out
    results = json.loads((run / "eval.json").read_text())
    assert set(results) == {"trained", "random_init"} and set(results["trained"]) == {"linear", "knn"}
    assert main(["train", "--resume", str(run), "schedule.max_steps=6", "eval.after_train=false"]) == 0
    assert "trained 6 steps" in capsys.readouterr().out
    assert main(["eval", str(run), "--no-baseline", "eval.protocols=[knn]"]) == 0
    out = capsys.readouterr().out
    assert "trained" in out and "knn" in out and "random_init" not in out


@pytest.mark.slow
def test_default_image_run_via_console_script(tmp_path):
    """``mmim train --modality image`` as a user runs it (shortened)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mmim", "train", "--modality", "image", f"train.out_dir={tmp_path}",
         "schedule.max_steps=3", "eval.linear_epochs=2", "train.loggers=[tensorboard]"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trained 3 steps" in proc.stdout and "random_init" in proc.stdout
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "metrics.jsonl").exists()
    assert list((tmp_path / "tensorboard").iterdir())

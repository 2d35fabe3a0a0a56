"""What a new user meets in the first hour (issue 25): the run header, evaluation output,
``mmim eval`` and ``eval.json``, the run-directory error, export file modes, ``check-plugin``'s
exporter check, visualization labels, the busy-CPU warning and rank-0-only logging."""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import pytest
import torch
import yaml

from mmim.cli import main


@pytest.fixture
def tiny_run(tiny_recipe_dict, tmp_path, capsys):
    """A trained tiny run (3 steps, no evaluation): its directory and recipe file."""
    tiny_recipe_dict["schedule"]["max_steps"] = 3
    tiny_recipe_dict["eval"]["after_train"] = False
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    return tmp_path / "run", path


def test_header_counts_the_steps_the_run_makes(tiny_run, caplog, capsys):
    run, path = tiny_run
    with caplog.at_level(logging.INFO, logger="mmim"):
        assert main(["train", str(path), f"train.out_dir={run}_b", "schedule.max_steps=2"]) == 0
    header = next(r.getMessage() for r in caplog.records if "run directory" in r.getMessage())
    assert "2 of 12 steps (schedule.max_steps)" in header
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmim"):
        assert main(["train", str(path), f"train.out_dir={run}_c", "schedule.max_steps=null"]) == 0
    header = next(r.getMessage() for r in caplog.records if "run directory" in r.getMessage())
    assert ", 12 steps," in header and "max_steps" not in header
    assert "trained 12 steps" in capsys.readouterr().out


def test_existing_run_directory_error_says_how_to_pick_another(tiny_run, capsys):
    run, path = tiny_run
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--resume" in err and f"train.out_dir={run}_2" in err
    assert main(["train", str(path), f"train.out_dir={run}_2", "schedule.max_steps=1"]) == 0  # the advice works


def test_eval_rewrites_eval_json_prints_rounded_figures_and_shows_progress(tiny_run, caplog, capsys, monkeypatch):
    run, _ = tiny_run
    (run / "eval.json").write_text("{}")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: progress bars
    with caplog.at_level(logging.INFO, logger="mmim"):
        assert main(["eval", str(run), "eval.linear_epochs=3"]) == 0
    captured = capsys.readouterr()
    results = json.loads((run / "eval.json").read_text())
    assert set(results) == {"trained", "random_init"} and set(results["trained"]) == {"linear", "knn"}
    assert f"{results['trained']['knn']:.4f}" in captured.out
    for label in ("trained", "random_init"):
        assert f"{label}: features (train)" in captured.err and f"{label}: linear probe" in captured.err
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluated")]
    assert len(done) == 2
    for line, label in zip(done, ("trained", "random_init")):
        figures = line.rsplit(": ", 1)[1]
        assert figures == f"linear {results[label]['linear']:.4f}, knn {results[label]['knn']:.4f}", line


def test_no_protocols_no_table(tiny_run, caplog, capsys):
    run, _ = tiny_run
    with caplog.at_level(logging.INFO, logger="mmim"):
        assert main(["eval", str(run), "eval.protocols=[]"]) == 0
    assert "encoder" not in capsys.readouterr().out
    assert "eval.protocols is empty" in caplog.text and not (run / "eval.json").exists()
    from mmim.eval.protocols import format_results

    assert format_results({"trained": {}, "random_init": {}}) == ""


def test_only_rank_zero_logs_progress_lines(tiny_run, caplog, monkeypatch, capsys):
    run, _ = tiny_run
    for rank, expect in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main(["eval", str(run), "--no-baseline", "eval.protocols=[knn]"]) == 0
        assert any(r.getMessage().startswith("evaluating") for r in caplog.records) == expect, rank


def test_exported_files_are_readable_like_other_new_files(tiny_run, capsys):
    run, _ = tiny_run
    assert main(["export", str(run)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in (run / "export").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.parent.name == "timm" for p in files)
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_check_plugin_checks_the_exporter(monkeypatch):
    from safetensors.torch import save_file

    import mmim_image.export as image_export
    from mmim.testing.plugin_checks import check_plugin

    def results():
        return {r.name: r for r in check_plugin("image", ["exporter"])}

    assert results()["image:patch"].status == "pass"
    # a file private to its owner (what safetensors creates) fails the check
    monkeypatch.setattr(image_export, "save_safetensors",
                        lambda tensors, path, metadata=None: save_file(tensors, str(path), metadata=metadata))
    got = results()["image:patch"]
    assert got.status == "fail" and "model.safetensors has mode 600" in got.message
    monkeypatch.undo()
    # an export that loads into a different model fails too
    real = image_export.load_timm

    def perturbed(out_dir):
        model = real(out_dir)
        with torch.no_grad():
            model.blocks[0].mlp.fc2.weight.mul_(2.0)
        return model

    monkeypatch.setattr(image_export.export_timm, "load", perturbed)
    got = results()["image:patch"]
    assert got.status == "fail" and "features differ" in got.message


def test_visualize_panels_are_labelled(tiny_run, capsys):
    from PIL import Image

    from mmim_image.visualize import PANELS, render_grid

    panel = np.zeros((8, 8, 3), np.uint8)
    plain = render_grid([[panel] * 4], scale=4)
    titled = render_grid([[panel] * 4], scale=4, labels=PANELS)
    assert titled.width == plain.width and titled.height > plain.height
    band = np.asarray(titled)[: titled.height - plain.height]
    cols = np.array_split(np.arange(band.shape[1]), 4)
    assert all((band[:, c] < 128).any() for c in cols), "each panel has its title"
    run, _ = tiny_run
    assert main(["visualize", str(run), "--num", "1"]) == 0
    png = Image.open(run / "visualize" / "image_000.png")
    assert (np.asarray(png.convert("RGB"))[:12] < 128).any(), "titles above the panels (white padding without)"


def test_busy_cpu_warning():
    from mmim.engine.runtime import cpu_oversubscription_note

    note = cpu_oversubscription_note(threads=2, processes=1, load=2.0, cores=2)
    assert note and "train.threads=1" in note
    assert cpu_oversubscription_note(threads=2, processes=1, load=0.1, cores=2) is None  # an idle machine
    assert cpu_oversubscription_note(threads=1, processes=1, load=8.0, cores=2) is None  # already one thread
    assert "2 processes" in cpu_oversubscription_note(threads=2, processes=2, load=0.0, cores=2)


def test_busy_cpu_warning_is_given_at_start(monkeypatch, caplog):
    from mmim.engine import runtime

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    monkeypatch.setattr(runtime, "_cores", lambda: 2)
    monkeypatch.setattr(runtime.torch, "get_num_threads", lambda: 2)
    with caplog.at_level(logging.WARNING):
        runtime.setup_runtime("cpu", "fp32", None)
    assert "train.threads=1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        runtime.setup_runtime("cpu", "fp32", 1)  # the advice taken
    assert "train.threads=1" not in caplog.text


@pytest.mark.slow
def test_under_torchrun_only_rank_zero_prints_the_header(tiny_recipe_dict, tmp_path):
    import subprocess

    tiny_recipe_dict["schedule"]["max_steps"] = 2
    tiny_recipe_dict["eval"]["after_train"] = False
    tiny_recipe_dict["data"]["batch_size"] = 8
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "mmim", "train", str(path), "train.threads=1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("mmim: run directory") == 1, proc.stderr
    assert proc.stderr.count("mmim: recipe tiny") == 1 and "2 processes" in proc.stderr
    assert proc.stdout.count("trained 2 steps") == 1


def test_eval_of_an_older_checkpoint_writes_its_own_file(tiny_recipe_dict, tmp_path, capsys):
    tiny_recipe_dict["schedule"]["max_steps"] = 3
    tiny_recipe_dict["eval"]["after_train"] = False
    tiny_recipe_dict["train"]["checkpoint_every"] = 1
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path)]) == 0
    run = tmp_path / "run"
    assert main(["eval", str(run / "ckpt-00000002.pt"), "--no-baseline", "eval.protocols=[knn]"]) == 0
    assert (run / "eval-00000002.json").is_file() and not (run / "eval.json").exists()
    assert main(["eval", str(run / "ckpt-00000003.pt"), "--no-baseline", "eval.protocols=[knn]"]) == 0
    assert set(json.loads((run / "eval.json").read_text())["trained"]) == {"knn"}

"""``mmim visualize`` for the third-party plugin, and the one-line message for a plugin without a visualizer."""

from __future__ import annotations

import pytest

from mmim.cli import main

SMALL = ["model.encoder.embed_dim=32", "model.encoder.depth=1", "model.encoder.num_heads=2", "schedule.max_steps=2",
         "eval.after_train=false", "data.batch_size=8", "train.tensorboard=false", "train.progress=false"]


@pytest.fixture(scope="module")
def timeseries_run(tmp_path_factory, timeseries_plugin):
    out = tmp_path_factory.mktemp("ts") / "run"
    assert main(["train", "--modality", timeseries_plugin.modality, *SMALL, f"train.out_dir={out}"]) == 0
    return out


def test_third_party_visualizer_writes_pngs(timeseries_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    num = 3
    assert main(["visualize", str(timeseries_run), "--num", str(num), "--out", str(tmp_path / "vis")]) == 0
    paths = sorted((tmp_path / "vis").glob("*.png"))
    assert len(paths) == num and all(p.stat().st_size > 1000 for p in paths)
    assert capsys.readouterr().out.split() == [str(p) for p in paths]


def test_plugin_without_visualizer_gets_one_line(timeseries_run, timeseries_plugin, monkeypatch, tmp_path, capsys):
    monkeypatch.delitem(timeseries_plugin.components, "visualizer")
    assert main(["visualize", str(timeseries_run), "--out", str(tmp_path / "vis")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "registers no visualizer" in err[0] and "'timeseries'" in err[0], err
    assert not (tmp_path / "vis").exists()


def test_missing_optional_module_names_the_extra(timeseries_run, monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["visualize", str(timeseries_run), "--out", str(tmp_path / "vis")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "mmim[viz]"' in err[0], err

"""A modality whose pip extra is missing fails before anything is written, with the pip command."""

from __future__ import annotations

import pytest

from mmim import extras, registry
from mmim.cli import main

EXTRA_PLUGINS = [(p.modality, extra, mods) for p in registry.plugins().values() for extra, mods in p.extras.items()]


def _hide(monkeypatch, modules) -> None:
    real = extras.module_available
    monkeypatch.setattr(extras, "module_available", lambda name: name not in modules and real(name))


def test_plugins_declaring_extras_exist():
    assert {extra for _, extra, _ in EXTRA_PLUGINS} >= {"video", "audio"}


@pytest.mark.parametrize("modality,extra,modules", EXTRA_PLUGINS, ids=[e[1] for e in EXTRA_PLUGINS])
def test_train_without_the_extra_fails_before_writing(modality, extra, modules, monkeypatch, tmp_path, capsys):
    _hide(monkeypatch, modules)
    out = tmp_path / "run"
    assert main(["train", "--modality", modality, f"train.out_dir={out}"]) != 0
    assert not out.exists(), "the run directory was created before the missing extra was reported"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f'pip install "mmim[{extra}]"' in err[0] and all(m in err[0] for m in modules)


@pytest.mark.parametrize("modality,extra,modules", EXTRA_PLUGINS, ids=[e[1] for e in EXTRA_PLUGINS])
def test_plugins_lists_the_plugin_as_needing_its_extra(modality, extra, modules, monkeypatch, capsys):
    assert main(["plugins"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{modality} "))
    assert line.endswith(" ok"), line
    _hide(monkeypatch, modules)
    assert main(["plugins"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{modality} "))
    assert f'needs extra "{extra}"' in line and f'pip install "mmim[{extra}]"' in line


def test_one_backend_is_enough(monkeypatch):
    """An extra with several modules (video: av, decord, torchcodec) is served by any one of them."""
    modality, extra, modules = next(e for e in EXTRA_PLUGINS if len(e[2]) > 1)
    plugin = registry.modality_plugin(modality)
    _hide(monkeypatch, modules[1:])
    monkeypatch.setattr(extras, "module_available", lambda name: name == modules[0])
    assert extras.missing_extras(plugin) == []
    monkeypatch.setattr(extras, "module_available", lambda name: False)
    assert [m.extra for m in extras.missing_extras(plugin)] == [extra]


def test_a_fused_recipe_needs_the_extras_of_every_stream(monkeypatch):
    """The audio-visual fusion recipe names the video and the audio plugin's components."""
    from mmim.config import load_recipe
    from mmim.recipes_catalog import find_recipe

    recipe = load_recipe(find_recipe("multimae_video_audio"))
    monkeypatch.setattr(extras, "module_available", lambda name: False)
    with pytest.raises(extras.MissingExtraError) as err:
        extras.check_recipe_extras(recipe)
    assert 'pip install "mmim[video]"' in str(err.value) and 'pip install "mmim[audio]"' in str(err.value)

"""Plugin discovery: entry points, broken plugins, duplicates, qualified names."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata

import pytest

from mmim import registry


def test_builtin_plugins_register_through_entry_points():
    names = {i.name: i for i in registry.discover(refresh=True)}
    assert {"core", "image"} <= set(names)
    assert names["image"].status == "ok"
    assert names["image"].distribution == "mmim"
    eps = {ep.name for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert {"core", "image"} <= eps
    assert registry.resolve("tokenizer", "patch").__name__ == "PatchTokenizer"
    assert registry.resolve("tokenizer", "image:patch") is registry.resolve("tokenizer", "patch")


def test_listing_does_not_import_components():
    code = (
        "import sys; from mmim import registry; registry.discover(); "
        "heavy = [m for m in ('mmim_image.tokenizer', 'mmim_image.datasets', 'timm', 'torchvision') if m in sys.modules]; "
        "print(heavy); assert not heavy, heavy"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Two extra plugins (one duplicating a name, one failing to import) next to the real ones."""
    (tmp_path / "fake_dup.py").write_text(textwrap.dedent("""
        from mmim.registry import Plugin
        plugin = Plugin(name="dup", components={"masker": {"random": "mmim.components.random_masker:RandomMasker"},
                                                "loss": {"mine": "fake_dup:Nope"}})
    """))
    (tmp_path / "fake_broken.py").write_text("import not_a_real_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = list(metadata.entry_points(group=registry.ENTRY_POINT_GROUP))
    extra = [metadata.EntryPoint("dup", "fake_dup:plugin", registry.ENTRY_POINT_GROUP),
             metadata.EntryPoint("broken", "fake_broken:plugin", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: real + extra)
    registry.discover(refresh=True)
    yield
    sys.modules.pop("fake_dup", None)
    monkeypatch.undo()
    registry.discover(refresh=True)


def test_broken_plugin_is_reported_and_others_work(fake_plugins):
    infos = {i.name: i for i in registry.discover()}
    assert infos["broken"].plugin is None
    assert "not_a_real_module_xyz" in infos["broken"].status
    assert registry.resolve("tokenizer", "patch").__name__ == "PatchTokenizer"


def test_duplicate_names_error_names_both_plugins_and_qualified_works(fake_plugins):
    with pytest.raises(registry.RegistryError, match=r"'core' and 'dup'.*core:random, dup:random"):
        registry.resolve("masker", "random")
    assert registry.resolve("masker", "dup:random") is registry.resolve("masker", "core:random")


def test_component_import_failure_names_component(fake_plugins):
    with pytest.raises(registry.RegistryError, match="loss dup:mine could not be imported"):
        registry.resolve("loss", "mine")


def test_unknown_component_lists_installed():
    with pytest.raises(registry.RegistryError, match=r"unknown masker 'randm'.*did you mean.*random.*core:random"):
        registry.resolve("masker", "randm")
    with pytest.raises(registry.RegistryError, match="installed modalities: .*image"):
        registry.modality_plugin("smell")


def test_build_rejects_unknown_option_naming_it():
    with pytest.raises(registry.RegistryError, match=r"unknown option 'ratoi'.*did you mean 'ratio'"):
        registry.build("masker", {"name": "random", "ratoi": 0.5}, where="model.streams.image.masker")
    masker = registry.build("masker", {"name": "random", "ratio": 0.5})
    assert masker.ratio == 0.5

"""``mmim check-plugin NAME``: the conformance kit on one installed plugin, and that its new checks
(datasets, converters, visualizers) catch what they promise to catch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from mmim import registry
from mmim.cli import main
from mmim.data import CorruptSampleError
from mmim.testing import plugin_checks


def test_third_party_plugin_passes(timeseries_plugin, capsys):
    assert main(["check-plugin", timeseries_plugin.name]) == 0
    out = capsys.readouterr().out.splitlines()
    checked = {tuple(line.split()[1:3]) for line in out[:-1] if line.startswith("PASS")}
    expected = {(kind, f"timeseries:{n}") for kind, names in timeseries_plugin.components.items()
                if kind in plugin_checks.CHECKS for n in names}
    assert checked == expected, out
    assert out[-1].startswith(f"{timeseries_plugin.name}: {len(expected)} passed, 0 skipped, 0 failed")


def test_kind_filter_and_unknown_plugin(capsys):
    assert main(["check-plugin", "image", "--kind", "dataset"]) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    assert lines and all(line.split()[1] == "dataset" for line in lines)
    assert main(["check-plugin", "no_such_plugin"]) == 2
    assert "no installed plugin 'no_such_plugin'" in capsys.readouterr().err


# --- components that break the contracts, registered by a throw-away plugin -----------------------

class RandomDataset(Dataset):
    """Draws its samples from an unseeded generator: not reproducible under a seed."""

    builds = 0

    def __init__(self, split: str, augment: bool) -> None:
        RandomDataset.builds += 1  # every build draws other samples (an id()-based seed may repeat)
        self.rng = torch.Generator().manual_seed(1000 + RandomDataset.builds)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.rand(3, generator=self.rng)}


class SilentFileDataset(Dataset):
    """Reads files, but its error for a corrupt one does not say which."""

    def __init__(self, split: str, augment: bool, root: str) -> None:
        self.files = sorted(Path(root).glob("*.txt"))

    @staticmethod
    def example_options(root: Path) -> dict:
        for i in range(2):
            (root / f"{i}.txt").write_text("1 2 3")
        return {"root": str(root)}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        try:
            return {"x": torch.tensor([float(v) for v in self.files[i].read_text().split()])}
        except ValueError:
            raise CorruptSampleError("a file", "cannot parse") from None


class NamingFileDataset(SilentFileDataset):
    def __getitem__(self, i: int) -> dict:
        try:
            return super().__getitem__(i)
        except CorruptSampleError:
            raise CorruptSampleError(str(self.files[i]), "cannot parse") from None


def load_nothing(path, model, stream="image"):  # noqa: ANN001, ANN201 - a converter that ignores the file
    return []


load_nothing.to_official = lambda model, stream: {"model": model.state_dict()}
load_nothing.example_recipe = "mae_fashion_mnist"


class EmptyVisualizer:
    def render(self, model, stream, raw, output, out_dir, dataset_spec=None, prefix="sample"):  # noqa: ANN001, ANN201
        return []


@pytest.fixture
def broken_plugin(monkeypatch):
    here = __name__
    plugin = registry.Plugin(name="broken", components={
        "dataset": {"random": f"{here}:RandomDataset", "silent": f"{here}:SilentFileDataset",
                    "naming": f"{here}:NamingFileDataset"},
        "converter": {"nothing": f"{here}:load_nothing"},
    })
    infos = [*registry.discover(), registry.PluginInfo("broken", "test", "0")]
    infos[-1].plugin = plugin
    monkeypatch.setattr(registry, "_cache", infos)
    monkeypatch.setattr(registry, "_classes", {})
    return plugin


def test_broken_components_fail_with_the_reason(broken_plugin):
    results = {r.name: r for r in plugin_checks.check_plugin("broken", ["dataset", "converter", "visualizer"])}
    assert results["broken:naming"].status == "pass"
    assert results["broken:random"].status == "fail" and "same seed" in results["broken:random"].message
    assert results["broken:silent"].status == "fail" and "does not name" in results["broken:silent"].message
    assert results["broken:nothing"].status == "fail" and "changed in the round trip" in results["broken:nothing"].message


def test_a_visualizer_that_writes_nothing_fails(monkeypatch):
    monkeypatch.setitem(registry.plugins()["image"].components["visualizer"], "patch", f"{__name__}:EmptyVisualizer")
    monkeypatch.setattr(registry, "_classes", {})
    with pytest.raises(AssertionError, match="wrote no file"):
        plugin_checks.check_visualizer("image:patch")


def test_cli_exit_status_reports_failures(broken_plugin, capsys):
    assert main(["check-plugin", "broken", "--kind", "dataset"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  dataset     broken:random" in out and "1 passed, 0 skipped, 2 failed" in out

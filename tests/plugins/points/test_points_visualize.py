"""``mmim visualize`` support for point clouds: PNG panels of original, visible and reconstructed patches."""

from __future__ import annotations

import pytest
import torch

from mmim import registry
from mmim.model import build_model
from mmim_points.converters.pointmae import pointmae_model_config
from mmim_points.visualize import patch_points

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    cfg = pointmae_model_config(trans_dim=32, depth=1, num_heads=4, decoder_depth=1, decoder_num_heads=4,
                                num_group=8, group_size=8)
    cfg.streams["points"].tokenizer["channels"] = [8, 16, 32]
    model = build_model(cfg).eval()
    x = model.streams["points"].tokenizer.example_input(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model({"points": x}, generator=torch.Generator().manual_seed(0))
    return model, x, out


def test_patch_points_are_absolute(run):
    model, x, out = run
    visible, predicted = patch_points(model, "points", out)
    assert visible.shape == (2, 4 * 8, 3) and predicted.shape == (2, 4 * 8, 3)
    # visible patches are real input points
    dist2 = (visible[:, :, None] - x[:, None]).square().sum(-1).min(dim=2).values
    assert dist2.max() < 1e-12


def test_visualizer_writes_pngs(run, tmp_path):
    from PIL import Image

    model, x, out = run
    vis = registry.companion("visualizer", "point_patch")()
    paths = vis.render(model, "points", x, out, tmp_path / "vis", prefix="points")
    assert [p.name for p in paths if p.suffix == ".png"] == ["points_000.png", "points_001.png"]
    with Image.open(paths[0]) as img:
        assert img.size == (900, 320)
    (tmp_path / "c.xyz").write_text("\n".join(f"{i % 7} {i % 5} {i % 3}" for i in range(100)))
    inp = vis.load_input(tmp_path / "c.xyz", model, "points", {"num_points": 64})
    assert inp.shape == (1, 64, 3) and abs(float(inp.norm(dim=-1).max()) - 1) < 1e-5

"""``mmim visualize`` for images: PNG grids from a checkpoint and an input."""

from __future__ import annotations

import numpy as np
import torch
import yaml
from PIL import Image

from mmim.cli import main
from mmim.config.recipe import recipe_from_dict
from mmim.model import build_model
from mmim.types import StreamMask
from mmim_image.visualize import reconstruct


def _train(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["schedule"]["max_steps"] = 2
    tiny_recipe_dict["eval"]["after_train"] = False
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path)]) == 0
    return tmp_path / "run"


def test_visualize_dataset_samples_and_file_input(tiny_recipe_dict, tmp_path, capsys):
    run = _train(tiny_recipe_dict, tmp_path)
    capsys.readouterr()
    assert main(["visualize", str(run), "--num", "2"]) == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 2
    img = np.asarray(Image.open(paths[0]))
    assert img.shape[2] == 3 and img.shape[1] > 3 * img.shape[0]  # four panels side by side
    Image.fromarray((np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    assert main(["visualize", str(run), "--input", str(tmp_path / "x.png"), "--out", str(tmp_path / "viz")]) == 0
    assert (tmp_path / "viz" / "image_000.png").exists()


def test_reconstruction_panels_keep_visible_pixels(tiny_recipe_dict):
    data = dict(tiny_recipe_dict)
    data["model"]["streams"]["image"]["decoder"]["predict"] = "all"
    model = build_model(recipe_from_dict(data).model).eval()
    x = torch.randn(2, 1, 28, 28)
    mask = StreamMask(torch.tensor([[0, 5]] * 2), torch.tensor([[i for i in range(16) if i not in (0, 5)]] * 2))
    with torch.no_grad():
        out = model({"image": x}, masks={"image": mask})
    masked, recon, pasted = reconstruct(model, "image", x, out)
    assert torch.equal(masked[:, :, :7, :7], x[:, :, :7, :7]) and torch.isnan(masked[:, :, 7:14, :7]).all()
    torch.testing.assert_close(pasted[:, :, :7, :7], x[:, :, :7, :7])
    torch.testing.assert_close(pasted[:, :, 7:14, :7], recon[:, :, 7:14, :7])

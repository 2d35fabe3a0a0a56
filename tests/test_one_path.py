"""One path through the model: a one-stream model is the one-stream case of the joint path, every
command serves one-stream and fused models alike, the teacher is an ordinary module, and the
layers import only downwards."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import torch

from mmim.components.random_masker import RandomMasker
from mmim.config.recipe import recipe_from_dict
from mmim.eval.cross_modal import cross_modal_losses
from mmim.model import MaskedModel, build_model
from mmim.types import JointMask, StreamMask

ROOT = Path(__file__).resolve().parents[1] / "mmim"
# layer of each top-level part of the core package; a module may import only its own layer or lower ones
# (the package root, ``mmim/__init__.py``, is the public facade: its lazy ``load_encoder`` alias sits on top)
LAYERS = {"__init__": 3, "cli": 3, "cli_runs": 3, "__main__": 3, "export_cli": 3, "eval": 2, "finetune": 2, "export": 2, "engine": 1}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 and parts[0] == "mmim" else 0


def test_layers_import_only_downwards():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        me = ".".join(rel.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("mmim.") and _layer(name) > _layer(me):
                    bad.append(f"{me} imports {name}")
    assert not bad, "imports against the layering core <- engine <- eval/finetune <- cli:\n" + "\n".join(bad)


def test_the_core_imports_no_plugin():
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("mmim_") for n in names), f"{path} imports a plugin: {names}"


def test_one_stream_mask_is_the_maskers_mask_in_its_order(tiny_recipe_dict):
    model = build_model(recipe_from_dict(tiny_recipe_dict).model)
    x = {"image": torch.randn(3, 1, 28, 28)}
    tokens = model.tokenize(x)
    mask = model.make_mask(tokens, torch.Generator().manual_seed(4))
    stream = RandomMasker(tiny_recipe_dict["model"]["streams"]["image"]["masker"]["ratio"])(
        tokens["image"].layout, torch.Generator().manual_seed(4))
    assert isinstance(mask, JointMask) and mask.names == ("image",)
    assert torch.equal(mask.visible, stream.visible)  # the official (noise) order, not sorted
    assert torch.equal(mask.predict, stream.bool_mask())
    out = model(x, masks={"image": stream})
    again = model(x, masks=mask)
    assert torch.equal(out.loss, again.loss)
    assert out.encoded.shape == (3, stream.visible.shape[1], model.encoder.embed_dim)


def test_cross_modal_prediction_works_for_a_one_stream_model(tiny_recipe_dict, monkeypatch, capsys):
    import sys

    from mmim import registry

    model = build_model(recipe_from_dict(tiny_recipe_dict).model)
    spec = tiny_recipe_dict["data"]["dataset"]
    ds = registry.build("dataset", spec, split="test", augment=False)
    subset = torch.utils.data.Subset(ds, range(8))
    out = cross_modal_losses(model, subset, batch_size=4)
    assert set(out) == {"blind/image"} and torch.isfinite(torch.tensor(out["blind/image"]))
    assert "cross-modal" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: a progress bar over the samples
    assert cross_modal_losses(model, subset, batch_size=4, progress="trained: cross-modal (test)") == out
    assert "trained: cross-modal (test)" in capsys.readouterr().err
    blind = model.predict_stream({"image": torch.randn(2, 1, 28, 28)}, [], "image")
    assert blind.mask.visible.shape == (2, 0) and blind.mask.predict.all()


def test_teacher_is_an_ordinary_module_without_back_reference(tiny_recipe_dict):
    data = copy.deepcopy(tiny_recipe_dict)
    data["model"]["streams"]["image"]["target"] = {"name": "teacher_features", "top_k": 1}
    for ema in (True, False):
        data["model"]["teacher"] = {"ema": ema}
        model = build_model(recipe_from_dict(data).model).train()
        teacher = model.teacher
        assert not any(isinstance(v, MaskedModel) for v in vars(teacher).values())
        assert not any(isinstance(m, MaskedModel) for m in teacher.modules())
        assert not teacher.training  # the EMA copy stays in eval mode; the shared one owns nothing
        modes = [m.training for m in model.modules()]
        model({"image": torch.randn(2, 1, 28, 28)}, generator=torch.Generator().manual_seed(0))
        assert [m.training for m in model.modules()] == modes, "a forward flipped train/eval state"
        if not ema:
            assert len(list(teacher.parameters())) == 0


def test_a_stream_joined_without_a_mask_is_not_encoded():
    """A stream of the joint sequence that no masker drew for (not an input) holds no encoded
    tokens: the streams after it start at the encoder's first token."""
    later = StreamMask(torch.tensor([[3, 0]]), torch.tensor([[1, 2]]))
    mask = JointMask.from_streams({"b": later}, {"a": 5, "b": 4})
    assert mask.encoded_count("a") == 0 and mask.stream_positions("b") == slice(0, 2)
    assert torch.equal(mask.visible, torch.tensor([[8, 5]])) and torch.equal(mask.stream_mask("b").visible, later.visible)

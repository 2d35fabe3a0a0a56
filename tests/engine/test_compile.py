"""A compile-clean, sync-free step: forward + loss compile whole for every default recipe and the
paper recipes' models, ``train.compile`` uses the compiled parts, and a step reads nothing back
from the device."""

from __future__ import annotations

import copy

import pytest
import torch

from mmim import registry
from mmim.config.recipe import load_recipe, recipe_from_dict
from mmim.engine.progress import format_percent
from mmim.engine.trainer import Trainer
from mmim.model import build_model
from mmim.recipes_catalog import catalog, default_recipe

DEFAULTS = ["image", "video", "points", "audio", "multimodal"]


def _small(recipe_path, overrides=()):
    """The recipe with its trunk cut to one block (the same code paths, a fraction of the trace)."""
    recipe = load_recipe(recipe_path, ["model.encoder.depth=1", *overrides])
    for stream in recipe.model.streams.values():
        if stream.decoder is not None and "depth" in stream.decoder:
            stream.decoder["depth"] = 1
    return recipe


def _example_batch(model, batch_size=2):
    """Each tokenizer's own example input, under the stream's batch key."""
    g = torch.Generator().manual_seed(0)
    batch = {}
    for name in model.token_streams:
        stream = model.streams[name]
        batch[stream.input_key or name] = stream.tokenizer.example_input(batch_size, g)
    return batch


def _graph_breaks(model, batch):
    raw = model.raw_inputs(batch)
    tokenize = torch._dynamo.explain(model.tokenize)(raw)
    tokens = model.tokenize(raw)
    gen = torch.Generator().manual_seed(0)
    mask = model.make_mask(tokens, gen)
    targets = tuple(model.targets)
    draws = {}
    for name in targets:
        drawn = model.streams[name].decoder.draw(tokens[model.token_source(name)].layout, gen)
        if drawn is not None:
            draws[model.token_source(name)] = drawn
    views = None
    if model.teacher is not None:
        views = {n: raw[n] for n in tokens}
    predict = torch._dynamo.explain(model.predict)(raw, tokens, mask, targets, draws, views, False)
    reasons = [b.reason.splitlines()[0] for b in tokenize.break_reasons + predict.break_reasons]
    return tokenize.graph_break_count + predict.graph_break_count, reasons


def _recipe_paths():
    paths = [(f"default:{m}", default_recipe(m)) for m in DEFAULTS]
    paths += [(entry.name, entry.path) for entry in catalog() if entry.origin != "plugin default"]
    seen, out = set(), []
    for name, path in paths:
        if str(path) not in seen:
            seen.add(str(path))
            out.append(pytest.param(path, id=name))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", _recipe_paths())
def test_forward_and_loss_compile_without_graph_breaks(path):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(_small(path).model).train()
    breaks, reasons = _graph_breaks(model, _example_batch(model))
    assert breaks == 0, f"{path}: {breaks} graph breaks: {reasons}"


def test_train_compile_uses_the_compiled_parts(tiny_recipe_dict, tmp_path):
    """``train.compile=true`` must run the compiled tokenize/predict: dynamo compiles frames and the
    eager methods are not called through the model's forward."""
    data = copy.deepcopy(tiny_recipe_dict)
    data["train"].update(out_dir=str(tmp_path / "c"), compile=True)
    data["schedule"]["max_steps"] = 2
    data["eval"]["after_train"] = False
    torch._dynamo.reset()
    trainer = Trainer(recipe_from_dict(data))
    model = trainer.model
    assert model.compiled
    compiled = model._compiled["predict"]
    assert hasattr(compiled, "_torchdynamo_orig_callable"), "predict is not a torch.compile'd callable"
    calls = {"n": 0}

    def counting(*args, **kwargs):
        calls["n"] += 1
        return compiled(*args, **kwargs)

    model._compiled["predict"] = counting
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    trainer.fit()
    after = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert calls["n"] == 3, f"forward went through the compiled predict {calls['n']} times (2 steps + the FLOP count)"
    assert after - before >= 2, "train.compile=true compiled no graphs (tokenize and predict expected)"


def test_uncompiled_runs_are_eager(tiny_recipe_dict, tmp_path):
    data = copy.deepcopy(tiny_recipe_dict)
    data["train"]["out_dir"] = str(tmp_path / "e")
    assert not Trainer(recipe_from_dict(data)).model.compiled


def test_a_training_step_reads_nothing_back_from_the_device(tiny_recipe_dict, tmp_path, monkeypatch):
    """No ``.item()``, ``float(tensor)`` or ``.tolist()`` between logging steps: the loss and its
    parts stay tensors until the logging step reads them."""
    data = copy.deepcopy(tiny_recipe_dict)
    data["train"].update(out_dir=str(tmp_path / "s"), log_every=5, checkpoint_every=0)
    data["schedule"]["max_steps"] = 4
    # the for-loop AdamW reads its step counters with .item(); the fused one (CUDA's default) does not
    data.setdefault("optim", {})["fused"] = True
    data["eval"]["after_train"] = False
    trainer = Trainer(recipe_from_dict(data))
    batches = trainer._count_flops(trainer._micro_batches(0))
    trainer.model.train()
    reads = {"n": 0}

    def forbid(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            reads["n"] += 1
            return original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapper)

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        forbid(name)
    loss, _, parts, _ = trainer._train_step(batches)
    monkeypatch.undo()
    assert reads["n"] == 0, f"{reads['n']} host reads in one training step"
    assert isinstance(loss, torch.Tensor) and all(isinstance(v, torch.Tensor) for v in parts.values())


def test_mfu_prints_meaningful_digits():
    assert format_percent(0.000123) == "0.0123%"
    assert format_percent(0.456) == "45.6%"
    assert format_percent(2e-8) == "2.00e-06%"


def test_every_default_recipe_has_example_inputs():
    """The compile test feeds each tokenizer's own example input; every default's tokenizers have one."""
    for modality in DEFAULTS:
        model = build_model(_small(default_recipe(modality)).model)
        batch = _example_batch(model)
        assert set(model.raw_inputs(batch)) >= set(model.token_streams), modality
    assert registry.available("tokenizer")

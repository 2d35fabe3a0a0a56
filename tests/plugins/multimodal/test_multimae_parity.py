"""MultiMAE parity: every official fixture set (EPFL-VILAB/MultiMAE, small models, fp32) loaded into an
mmim fused model gives the same masks, encoder output, predictions and losses (<= 1e-5). Every size and
option is read from the set's ``config.json``; the sets differ in sizes, seeds, budgets and global tokens."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from einops import rearrange
from mmim_multimodal.converters.multimae import (
    CheckpointFormatError,
    load_multimae_checkpoint,
    mmim_to_multimae,
    multimae_to_mmim,
)
from safetensors.torch import load_file, save_file

from mmim.config.recipe import recipe_from_dict
from mmim.fusion.masking import BudgetNoise
from mmim.model import build_model
from mmim.types import JointMask

FIXTURES = Path(__file__).parents[2] / "fixtures"
SETS = sorted(p.name for p in FIXTURES.iterdir() if re.fullmatch(r"multimae(-.+)?", p.name))
ATOL = 1e-5
LOSS_PART = {"MaskedMSELoss": "mse", "MaskedL1Loss": "l1", "MaskedCrossEntropyLoss": "ce"}


def _eps(norm_layer: str) -> float:
    return float(re.search(r"eps=([0-9.e-]+)", norm_layer)[1])


def _tokenizer(a: dict) -> dict:
    patch = a["patch_size_full"] // a["stride_level"]
    if a["cls"] == "PatchedInputAdapter":
        return {"name": "patch", "img_size": a["image_size"], "patch_size": patch, "in_chans": a["num_channels"],
                "pos_layout": "multimae"}
    assert a["cls"] == "SemSegInputAdapter" and not a["interpolate_class_emb"]
    return {"name": "segmap", "map_size": a["image_size"] // a["stride_level"], "patch_size": patch,
            "num_classes": a["num_classes"], "class_dim": a["dim_class_emb"], "pos_layout": "multimae"}


def _target_and_loss(spec: dict, adapter: dict) -> tuple[dict, dict]:
    if spec["cls"] == "MaskedCrossEntropyLoss":
        assert spec["label_smoothing"] == 0.0
        n = adapter["num_channels"]
        return {"name": "class_ids", "num_classes": n}, {"name": "cross_entropy", "num_classes": n, "reduction": "sample"}
    loss = {"MaskedMSELoss": "mse", "MaskedL1Loss": "l1"}[spec["cls"]]
    return {"name": "content", "normalize": spec["norm_pix"]}, {"name": loss, "reduction": "sample"}


def fixture_recipe(cfg: dict) -> dict:
    """The mmim recipe of the set's official ``MultiMAE`` (every size from ``config.json``)."""
    m = cfg["model"]
    streams: dict[str, dict] = {}
    for task in cfg["input_dict_order"]:
        streams[task] = {"tokenizer": _tokenizer(cfg["input_adapters"][task])}
    for name, a in cfg["output_adapters"].items():
        assert a["use_task_queries"] and a["use_xattn"] and a["context_tasks"] == cfg["input_dict_order"]
        target, loss = _target_and_loss(cfg["losses"][name], a)
        entry = streams.setdefault(name, {})
        if a["task"] != name:
            entry["tokens_of"] = a["task"]
        entry.update(target=target, loss=loss, decoder={
            "name": "multimae", "dim": a["dim_tokens"], "depth": a["depth"], "num_heads": a["num_heads"],
            "mlp_ratio": a.get("mlp_ratio", 4.0), "qkv_bias": a.get("qkv_bias", True)})
    return {
        "name": cfg["name"],
        "model": {
            "encoder": {"embed_dim": m["dim_tokens"], "depth": m["depth"], "num_heads": m["num_heads"],
                        "mlp_ratio": m["mlp_ratio"], "qkv_bias": m["qkv_bias"], "norm_eps": _eps(m["norm_layer"]),
                        "cls_token": True, "num_prefix_tokens": m["num_global_tokens"], "final_norm": False},
            "streams": streams,
            "fusion": {"input_budget": cfg["forward"]["num_encoded_tokens"], "input_alpha": cfg["forward"]["alphas"]},
        },
        "data": {"dataset": {"name": "fashion_mnist"}},
    }


@pytest.fixture(scope="module", params=SETS)
def setup(request, tmp_path_factory):
    torch.set_num_threads(1)
    root = FIXTURES / request.param
    cfg = json.loads((root / "config.json").read_text())
    model = build_model(recipe_from_dict(fixture_recipe(cfg)).model).eval()
    path = tmp_path_factory.mktemp("ckpt") / "multimae.pth"
    state = load_file(root / "official_state_dict.safetensors")
    torch.save({"model": state, "epoch": 1}, path)
    missing = load_multimae_checkpoint(path, model)
    return cfg, model, missing, load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors"), state


def tasks_of(cfg):
    return tuple(cfg["input_dict_order"])


def batch_of(cfg, inputs):
    return {t: inputs[t] for t in tasks_of(cfg)}


def to_image(model, name, values):
    return model.streams[name].tokenizer.content_to_raw(values)


def class_map(model, name, values):
    """Logits ``(B, h*w, C*p*q)`` (channel-major, as the official ``out_proj``) -> ``(B, C, H, W)``."""
    tok = model.streams[name].tokenizer
    (h, _), (p, q) = tok.grid, tok.patch_size
    return rearrange(values, "b (h w) (c p q) -> b c (h p) (w q)", h=h, p=p, q=q)


def test_sets_differ_in_what_matters():
    """The parity sets together cover more than one size and more than one global token."""
    cfgs = [json.loads((FIXTURES / s / "config.json").read_text()) for s in SETS]
    assert len({c["model"]["num_global_tokens"] for c in cfgs}) > 1
    assert len({(c["model"]["dim_tokens"], c["image_size"], c["patch_size"]) for c in cfgs}) > 1


def test_every_parameter_is_loaded(setup):
    cfg, model, missing, _, _, _ = setup
    assert missing == [], f"model keys the official checkpoint did not set: {missing}"
    assert model.encoder.cls_token.shape[1] == model.encoder.num_prefix == cfg["model"]["num_global_tokens"]


def test_budget_masking_replays_the_official_draw(setup):
    cfg, model, _, inputs, _, _ = setup
    tasks = tasks_of(cfg)
    tokens = model.tokenize(model.raw_inputs(batch_of(cfg, inputs)))
    budget = model.budget_masker({n: t.layout.num_tokens for n, t in tokens.items()})
    noise = BudgetNoise(inputs["dirichlet_sample"], [inputs[f"noise_{t}"] for t in tasks], inputs["shuffle_noise"])
    mask = budget.from_noise(noise)
    assert torch.equal(mask.visible, inputs["ids_keep"])
    for t in tasks:
        assert torch.equal(mask.stream_masked(t).long(), inputs[f"mask_{t}"]), t
    # the per-sample splits differ, so a masker that ignored the Dirichlet draw would fail
    per_stream = torch.stack([(~mask.stream_masked(t)).sum(1) for t in tasks], 1)
    k = cfg["forward"]["num_encoded_tokens"]
    assert per_stream.sum(1).tolist() == [k] * cfg["batch_size"]
    assert any(not torch.equal(per_stream[0], row) for row in per_stream[1:])


@pytest.fixture(scope="module")
def scenario_a(setup):
    cfg, model, _, inputs, _, _ = setup
    tasks = tasks_of(cfg)
    visible_bool = torch.cat([1 - inputs[f"mask_{t}"] for t in tasks], 1).bool()
    sizes = tuple(inputs[f"mask_{t}"].shape[1] for t in tasks)
    mask = JointMask(inputs["ids_keep"], ~visible_bool, tasks, sizes)
    with torch.no_grad():
        return model(batch_of(cfg, inputs), mask), mask


def test_encoder_output_matches(setup, scenario_a):
    cfg, model, _, inputs, outputs, _ = setup
    _, mask = scenario_a
    tokens = model.tokenize(model.raw_inputs(batch_of(cfg, inputs)))
    for t in tasks_of(cfg):
        got = tokens[t].embeddings + tokens[t].pos
        torch.testing.assert_close(got, outputs[f"tokens_{t}"], atol=ATOL, rtol=0, msg=t)
    with torch.no_grad():
        prefix, encoded = model.encode(tokens, mask)
    k, g = cfg["forward"]["num_encoded_tokens"], cfg["model"]["num_global_tokens"]
    assert outputs["encoder_output"].shape[1] == k + g  # official: visible tokens, then the global tokens
    torch.testing.assert_close(encoded, outputs["encoder_output"][:, :k], atol=ATOL, rtol=0)
    torch.testing.assert_close(prefix, outputs["encoder_output"][:, k:], atol=ATOL, rtol=0)


def _check_predictions(cfg, model, out, outputs, prefix=""):
    for name, a in cfg["output_adapters"].items():
        values = out.predictions[name].values
        if cfg["losses"][name]["cls"] == "MaskedCrossEntropyLoss":
            got = class_map(model, a["task"], values)
        else:
            got = to_image(model, a["task"], values)
        torch.testing.assert_close(got, outputs[f"{prefix}pred_{name}"], atol=ATOL, rtol=0, msg=name)


def test_predictions_and_losses_match(setup, scenario_a):
    cfg, model, _, _, outputs, _ = setup
    out, _ = scenario_a
    _check_predictions(cfg, model, out, outputs)
    for name in cfg["preds_order"]:
        part = LOSS_PART[cfg["losses"][name]["cls"]]
        assert abs(out.parts[f"{name}/{part}"] - float(outputs[f"loss_{name}"])) <= ATOL, name
    assert abs(float(out.loss) - float(outputs["loss"])) <= 4 * ATOL


def test_injected_masks_match_scenario_b(setup):
    cfg, model, _, inputs, outputs, _ = setup
    mask = JointMask.from_stream_masks({t: inputs[f"mask_{t}"].bool() for t in tasks_of(cfg)})
    with torch.no_grad():
        out = model(batch_of(cfg, inputs), mask)
    _check_predictions(cfg, model, out, outputs, prefix="inj_")
    assert abs(float(out.loss) - float(outputs["inj_loss"])) <= 4 * ATOL


def test_mmim_to_multimae_round_trip(setup):
    """mmim -> official gives back every official tensor (``pos_emb`` tables rebuilt from mmim's)."""
    _, model, _, _, _, state = setup
    back = mmim_to_multimae(model)
    assert set(back) == set(state)
    for key, value in state.items():
        assert back[key].shape == value.shape, key
        if key.endswith("pos_emb"):
            torch.testing.assert_close(back[key], value, atol=1e-6, rtol=0, msg=key)
        else:
            assert torch.equal(back[key], value), key
    assert set(multimae_to_mmim(back, model)) == set(multimae_to_mmim(state, model))


def test_mmim_to_multimae_needs_the_multimae_table_layout(setup):
    cfg, _, _, _, _, _ = setup
    recipe = fixture_recipe(cfg)
    recipe["model"]["streams"]["rgb"]["tokenizer"]["pos_layout"] = "mae"
    with pytest.raises(CheckpointFormatError, match="'rgb': pos_layout 'mae'"):
        mmim_to_multimae(build_model(recipe_from_dict(recipe).model))


def test_global_token_count_must_match(setup):
    cfg, _, _, _, _, state = setup
    recipe = fixture_recipe(cfg)
    g = cfg["model"]["num_global_tokens"]
    recipe["model"]["encoder"]["num_prefix_tokens"] = g + 1
    other = build_model(recipe_from_dict(recipe).model)
    with pytest.raises(CheckpointFormatError, match=f"{g} global tokens, the model's encoder has {g + 1}"):
        multimae_to_mmim(state, other)


def test_wrong_files_are_named(setup, tmp_path):
    _, model, _, _, _, state = setup
    bad = tmp_path / "vit.pth"
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(3)}}, bad)
    with pytest.raises(CheckpointFormatError, match="vit.pth.*not a MultiMAE checkpoint.*timm/MAE"):
        load_multimae_checkpoint(bad, model)
    state = dict(state)
    state["output_adapters.rgb.pos_emb"] = torch.zeros_like(state["output_adapters.rgb.pos_emb"])
    with pytest.raises(CheckpointFormatError, match="pos_emb"):
        multimae_to_mmim(state, model)
    odd = tmp_path / "odd.safetensors"
    save_file({"x": torch.zeros(1)}, odd)
    with pytest.raises(CheckpointFormatError, match="odd.safetensors"):
        load_multimae_checkpoint(odd, model)

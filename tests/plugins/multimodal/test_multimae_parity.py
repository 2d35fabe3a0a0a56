"""MultiMAE parity: the official fixture (EPFL-VILAB/MultiMAE, small model, fp32) loaded into an
mmim fused model gives the same masks, encoder output, predictions and losses (<= 1e-5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from einops import rearrange
from mmim_multimodal.converters.multimae import CheckpointFormatError, load_multimae_checkpoint, multimae_to_mmim
from safetensors.torch import load_file, save_file

from mmim.config.recipe import recipe_from_dict
from mmim.fusion.masking import BudgetNoise
from mmim.model import build_model
from mmim.types import JointMask

FIXTURE = Path(__file__).parents[2] / "fixtures" / "multimae"
TASKS = ("rgb", "depth", "semseg")
ATOL = 1e-5


def fixture_recipe() -> dict:
    def decoder():
        return {"name": "multimae", "dim": 32, "depth": 1, "num_heads": 4}

    def patch(chans):
        return {"name": "patch", "img_size": 32, "patch_size": 8, "in_chans": chans, "pos_layout": "multimae"}

    return {
        "name": "multimae_fixture",
        "model": {
            "encoder": {"embed_dim": 64, "depth": 2, "num_heads": 4, "cls_token": True, "final_norm": False},
            "streams": {
                "rgb": {"tokenizer": patch(3), "target": {"name": "content", "normalize": False},
                        "loss": {"name": "mse", "reduction": "sample"}, "decoder": decoder()},
                "depth": {"tokenizer": patch(1), "target": {"name": "content", "normalize": False},
                          "loss": {"name": "l1", "reduction": "sample"}, "decoder": decoder()},
                "semseg": {"tokenizer": {"name": "segmap", "map_size": 8, "patch_size": 2, "num_classes": 5,
                                         "class_dim": 32, "pos_layout": "multimae"},
                           "target": {"name": "class_ids", "num_classes": 5},
                           "loss": {"name": "cross_entropy", "num_classes": 5, "reduction": "sample"},
                           "decoder": decoder()},
                "norm_rgb": {"tokens_of": "rgb", "target": {"name": "content", "normalize": True},
                             "loss": {"name": "mse", "reduction": "sample"}, "decoder": decoder()},
            },
            "fusion": {"input_budget": 16, "input_alpha": 1.0},
        },
        "data": {"dataset": {"name": "fashion_mnist"}},
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    model = build_model(recipe_from_dict(fixture_recipe()).model).eval()
    path = tmp_path_factory.mktemp("ckpt") / "multimae.pth"
    torch.save({"model": load_file(FIXTURE / "official_state_dict.safetensors"), "epoch": 1}, path)
    missing = load_multimae_checkpoint(path, model)
    return model, missing, load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


def batch_of(inputs):
    return {"rgb": inputs["rgb"], "depth": inputs["depth"], "semseg": inputs["semseg"]}


def to_image(model, name, values):
    return model.streams[name].tokenizer.content_to_raw(values)


def test_every_parameter_is_loaded(setup):
    model, missing, _, _ = setup
    assert missing == [], f"model keys the official checkpoint did not set: {missing}"


def test_budget_masking_replays_the_official_draw(setup):
    model, _, inputs, _ = setup
    tokens = model.tokenize(model.raw_inputs(batch_of(inputs)))
    budget = model.budget_masker({n: t.layout.num_tokens for n, t in tokens.items()})
    noise = BudgetNoise(inputs["dirichlet_sample"], [inputs[f"noise_{t}"] for t in TASKS], inputs["shuffle_noise"])
    mask = budget.from_noise(noise)
    assert torch.equal(mask.visible, inputs["ids_keep"])
    for t in TASKS:
        assert torch.equal(mask.stream_masked(t).long(), inputs[f"mask_{t}"]), t
    # per-sample splits differ (the fixture's budgets are [8, 4, 4] and [0, 0, 15] before the fix-up)
    per_stream = torch.stack([(~mask.stream_masked(t)).sum(1) for t in TASKS], 1)
    assert per_stream.sum(1).tolist() == [16, 16] and not torch.equal(per_stream[0], per_stream[1])


@pytest.fixture(scope="module")
def scenario_a(setup):
    model, _, inputs, _ = setup
    visible_bool = torch.cat([1 - inputs[f"mask_{t}"] for t in TASKS], 1).bool()
    mask = JointMask(inputs["ids_keep"], ~visible_bool, ("rgb", "depth", "semseg"), (16, 16, 16))
    with torch.no_grad():
        return model(batch_of(inputs), mask), mask


def test_encoder_output_matches(setup, scenario_a):
    model, _, inputs, outputs = setup
    _, mask = scenario_a
    tokens = model.tokenize(model.raw_inputs(batch_of(inputs)))
    for t in TASKS:
        got = tokens[t].embeddings + tokens[t].pos
        assert torch.allclose(got, outputs[f"tokens_{t}"], atol=ATOL), t
    with torch.no_grad():
        prefix, encoded = model.encode(tokens, mask)
    torch.testing.assert_close(encoded, outputs["encoder_output"][:, :16], atol=ATOL, rtol=0)
    torch.testing.assert_close(prefix, outputs["encoder_output"][:, 16:], atol=ATOL, rtol=0)


def test_predictions_and_losses_match(setup, scenario_a):
    model, _, _, outputs = setup
    out, _ = scenario_a
    for t in ("rgb", "depth", "norm_rgb"):
        source = "rgb" if t == "norm_rgb" else t
        got = to_image(model, source, out.predictions[t].values)
        torch.testing.assert_close(got, outputs[f"pred_{t}"], atol=ATOL, rtol=0)
    sem = rearrange(out.predictions["semseg"].values, "b (h w) (c p q) -> b c (h p) (w q)", h=4, p=2, q=2)
    torch.testing.assert_close(sem, outputs["pred_semseg"], atol=ATOL, rtol=0)
    for t, part in (("rgb", "mse"), ("depth", "l1"), ("norm_rgb", "mse"), ("semseg", "ce")):
        assert abs(out.parts[f"{t}/{part}"] - float(outputs[f"loss_{t}"])) <= ATOL, t
    assert abs(float(out.loss) - float(outputs["loss"])) <= 4 * ATOL


def test_injected_masks_match_scenario_b(setup):
    model, _, inputs, outputs = setup
    mask = JointMask.from_stream_masks({t: inputs[f"mask_{t}"].bool() for t in TASKS})
    with torch.no_grad():
        out = model(batch_of(inputs), mask)
    torch.testing.assert_close(to_image(model, "rgb", out.predictions["rgb"].values), outputs["inj_pred_rgb"],
                               atol=ATOL, rtol=0)
    assert abs(float(out.loss) - float(outputs["inj_loss"])) <= 4 * ATOL


def test_wrong_files_are_named(setup, tmp_path):
    model, _, _, _ = setup
    bad = tmp_path / "vit.pth"
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(3)}}, bad)
    with pytest.raises(CheckpointFormatError, match="vit.pth.*not a MultiMAE checkpoint.*timm/MAE"):
        load_multimae_checkpoint(bad, model)
    state = load_file(FIXTURE / "official_state_dict.safetensors")
    state["output_adapters.rgb.pos_emb"] = torch.zeros_like(state["output_adapters.rgb.pos_emb"])
    with pytest.raises(CheckpointFormatError, match="pos_emb"):
        multimae_to_mmim(state, model)
    odd = tmp_path / "odd.safetensors"
    save_file({"x": torch.zeros(1)}, odd)
    with pytest.raises(CheckpointFormatError, match="odd.safetensors"):
        load_multimae_checkpoint(odd, model)

"""Fusion: Dirichlet budgets' invariants, 4M target budgets, any-to-any inference, bad input."""

from __future__ import annotations

import pytest
import torch

from mmim.config.recipe import recipe_from_dict
from mmim.config.typed import ConfigError
from mmim.engine.optim import no_weight_decay
from mmim.fusion.masking import BudgetMasker, FusionConfig, sample_dirichlet, sample_gamma
from mmim.model import build_model
from mmim.types import JointMask

SIZES = {"a": 16, "b": 16, "c": 24}


def masker(**kw) -> BudgetMasker:
    targets = kw.pop("targets", {"a": "a", "b": "b", "c": "c"})
    return BudgetMasker(FusionConfig(**kw), SIZES, targets)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_gamma_sampler_has_the_right_moments(alpha):
    x = sample_gamma(torch.full((200_000,), alpha), torch.Generator().manual_seed(0))
    assert abs(float(x.mean()) - alpha) < 0.02 * max(alpha, 1)
    assert abs(float(x.var()) - alpha) < 0.05 * max(alpha, 1)
    assert (x >= 0).all()


def test_dirichlet_rows_sum_to_one_and_concentration_shapes_them():
    g = torch.Generator().manual_seed(0)
    flat = sample_dirichlet(torch.full((4000, 3), 1.0), g)
    assert torch.allclose(flat.sum(1), torch.ones(4000), atol=1e-5)
    assert torch.allclose(flat.mean(0), torch.full((3,), 1 / 3), atol=0.02)
    peaked = sample_dirichlet(torch.full((4000, 3), 0.1), g).max(1).values.mean()
    even = sample_dirichlet(torch.full((4000, 3), 10.0), g).max(1).values.mean()
    assert peaked > 0.85 and even < 0.5


def test_input_budget_invariants():
    m = masker(input_budget=12)(64, torch.Generator().manual_seed(0))
    assert m.visible.shape == (64, 12)
    assert all(len(set(row.tolist())) == 12 for row in m.visible), "duplicate visible tokens"
    assert int(m.visible.max()) < sum(SIZES.values())
    # predicted = exactly the tokens not encoded (MultiMAE), per sample
    assert torch.equal(m.predict, ~m.visible_bool())
    split = torch.stack([(~m.stream_masked(n)).sum(1) for n in SIZES], 1)
    assert (split.sum(1) == 12).all()
    assert len({tuple(r) for r in split.tolist()}) > 10, "the split should vary per sample"
    again = masker(input_budget=12)(64, torch.Generator().manual_seed(0))
    assert torch.equal(again.visible, m.visible)
    other = masker(input_budget=12)(64, torch.Generator().manual_seed(1))
    assert not torch.equal(other.visible, m.visible)


def test_inputs_subset_and_uniform_stream_sampling():
    m = masker(input_budget=10, inputs=["a", "c"], sample_streams_uniformly=True)(256, torch.Generator().manual_seed(0))
    assert m.stream_masked("b").all(), "a stream that is not an input is never encoded"
    seen_a, seen_c = (~m.stream_masked("a")).sum(1), (~m.stream_masked("c")).sum(1)
    only_one = ((seen_a == 0) | (seen_c == 0)).float().mean()
    assert 0.4 < only_one < 0.95, "about 2/3 of the samples draw a single stream (eps-alphas put ~no tokens elsewhere)"


def test_target_budget_is_exact_disjoint_and_within_target_streams():
    m = masker(input_budget=10, target_budget=20, targets={"a": "a", "c": "c"})(64, torch.Generator().manual_seed(2))
    assert (m.predict.sum(1) == 20).all()
    assert not (m.predict & m.visible_bool()).any(), "targets are chosen among the tokens not encoded"
    assert not m.stream_slice(m.predict, "b").any(), "b is not a target stream"
    assert (m.stream_slice(m.predict, "a").sum(1) != m.stream_slice(m.predict, "a").sum(1)[0]).any()


def test_budgets_larger_than_the_tokens_name_the_value():
    with pytest.raises(ValueError, match="input_budget=57"):
        masker(input_budget=57)
    with pytest.raises(ValueError, match="target_budget=41.*'a', 'c'"):
        masker(input_budget=4, target_budget=41, targets={"a": "a", "c": "c"})
    with pytest.raises(ValueError, match="inputs: 'x'"):
        masker(input_budget=4, inputs=["a", "x"])


def test_joint_mask_from_stream_masks_needs_equal_totals():
    ok = JointMask.from_stream_masks({"a": torch.tensor([[True, False], [False, True]]),
                                      "b": torch.tensor([[False, True], [True, False]])})
    assert ok.visible.tolist() == [[1, 2], [0, 3]]
    with pytest.raises(ValueError, match="same number of visible"):
        JointMask.from_stream_masks({"a": torch.tensor([[True, True], [False, True]])})


def recipe(decoder="multimae", **fusion):
    dec = {"name": decoder, "dim": 16, "depth": 1, "num_heads": 2}
    return {
        "name": "fused",
        "model": {
            "encoder": {"embed_dim": 32, "depth": 1, "num_heads": 2},
            "streams": {
                "image": {"tokenizer": {"name": "patch", "img_size": 16, "patch_size": 4, "in_chans": 1},
                          "target": {"name": "content"}, "loss": {"name": "mse", "reduction": "sample"}, "decoder": dec},
                "series": {"tokenizer": {"name": "patch", "img_size": [4, 32], "patch_size": [4, 4], "in_chans": 2},
                           "target": {"name": "content", "normalize": False}, "loss": {"name": "l1"}, "decoder": dec},
            },
            "fusion": {"input_budget": 8, **fusion},
        },
        "data": {"dataset": {"name": "fashion_mnist"}},
    }


def batch(n=3):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(n, 1, 16, 16, generator=g), "series": torch.randn(n, 2, 4, 32, generator=g)}


@pytest.mark.parametrize("decoder", ["multimae", "joint"])
def test_fused_forward_backward_and_any_to_any(decoder):
    model = build_model(recipe_from_dict(recipe(decoder)).model)
    out = model(batch(), generator=torch.Generator().manual_seed(0))
    assert out.loss.isfinite() and set(out.predictions) == {"image", "series"}
    assert out.predictions["image"].values.shape == (3, 16, 16) and out.predictions["series"].values.shape == (3, 8, 32)
    out.loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    model.eval()
    cross = model.predict_stream(batch(), inputs=["series"], target="image")
    assert set(cross.predictions) == {"image"}
    assert cross.predictions["image"].weight.all(), "every token of the predicted stream counts"
    assert cross.mask.stream_masked("image").all() and not cross.mask.stream_masked("series").any()
    blind = model.predict_stream(batch(), inputs=[], target="image")
    assert blind.mask.visible.shape == (3, 0) and blind.loss.isfinite()
    feats = model.features(batch())
    assert feats.shape == (3, 32)


def test_4m_target_only_stream_and_target_budget():
    model = build_model(recipe_from_dict(recipe(inputs=["series"], targets=["image"], target_budget=5)).model)
    out = model(batch(), generator=torch.Generator().manual_seed(0))
    assert set(out.predictions) == {"image"}
    assert out.mask.stream_masked("image").all(), "image is a target only"
    assert (out.predictions["image"].weight.sum(1) == 5).all()


def test_bad_batches_are_named():
    model = build_model(recipe_from_dict(recipe()).model)
    b = batch()
    b["series"] = b["series"][:2]
    with pytest.raises(ValueError, match="batch sizes disagree.*'image': 3.*'series': 2"):
        model(b)
    b = batch() | {"sample_id/image": torch.tensor([1, 2, 3]), "sample_id/series": torch.tensor([1, 2, 4])}
    with pytest.raises(ValueError, match="stream 'series': sample ids"):
        model(b)


def test_bad_recipes_are_named():
    bad = recipe()
    bad["model"]["streams"]["image"]["tokenizer"]["name"] = "depthmap"
    with pytest.raises(ConfigError, match="model.streams.image.tokenizer.*depthmap"):
        recipe_from_dict(bad)
    bad = recipe(targets=["image", "sound"])
    with pytest.raises(ConfigError, match="fusion.targets: no stream 'sound'"):
        recipe_from_dict(bad)
    bad = recipe()
    bad["model"]["streams"]["image"]["decoder"] = {"name": "mae", "embed_dim": 16, "depth": 1, "num_heads": 2}
    with pytest.raises(ConfigError, match="image.decoder: decoder 'mae' reads its own stream's tokens only"):
        recipe_from_dict(bad)  # refused at load, from the decoder's declared capability
    with pytest.raises(ValueError, match="input_budget=99"):
        build_model(recipe_from_dict(recipe(input_budget=99)).model)(batch())


def test_stream_embeddings_are_not_decayed():
    model = build_model(recipe_from_dict(recipe(modality_embedding=True)).model)
    names = {n for n, p in model.named_parameters() if no_weight_decay(n, p)}
    assert "modality_embed.image" in names and "streams.image.decoder.task_embeddings.series" in names
    assert "streams.image.decoder.xattn.q.weight" not in names


def test_finetuning_a_fused_model_on_one_stream():
    from mmim.finetune.classifier import EncoderClassifier

    data = recipe()
    data["model"]["encoder"]["final_norm"] = False
    model = build_model(recipe_from_dict(data).model)
    model.restrict_inputs(["image"])
    clf = EncoderClassifier(model, num_classes=4)
    logits = clf({"image": batch()["image"]})  # no "series" key needed
    assert logits.shape == (3, 4)
    with pytest.raises(ValueError, match="'sound'"):
        model.restrict_inputs(["sound"])


def test_finetuning_token_masker_on_a_fused_model():
    """A token masker drops tokens of every input stream of a fused model, as of a one-stream one."""
    from mmim.components.random_masker import RandomMasker
    from mmim.finetune.classifier import EncoderClassifier

    model = build_model(recipe_from_dict(recipe()).model)
    clf = EncoderClassifier(model, num_classes=3).train()
    full = clf(batch())
    clf.set_token_masker(RandomMasker(0.5))
    masked = clf(batch(), generator=torch.Generator().manual_seed(0))
    assert masked.shape == full.shape == (3, 3) and not torch.allclose(masked, full)

"""Teacher-based MIM: EMA teacher, momentum schedule, feature targets, InfoNCE, views, resume."""

from __future__ import annotations

import copy

import pytest
import torch

from mmim.components.contrastive_loss import InfoNCELoss
from mmim.components.feature_target import TeacherFeatureTarget
from mmim.config.recipe import recipe_from_dict
from mmim.engine.checkpoint import load_checkpoint
from mmim.engine.metrics import read_metrics
from mmim.engine.trainer import Trainer
from mmim.model import build_model
from mmim.teacher import TeacherConfig, momentum_at


def _data2vec(tiny, out_dir, ema=True):
    data = copy.deepcopy(tiny)
    stream = data["model"]["streams"]["image"]
    stream.update(mask_in_encoder=True, teacher_input_key="image_teacher", decoder={"name": "linear"},
                  target={"name": "teacher_features", "top_k": 2}, loss={"name": "smooth_l1"})
    data["model"]["teacher"] = {"ema": ema, "momentum": 0.9, "momentum_end": 1.0, "schedule": "cosine"}
    data["data"]["dataset"]["teacher_view"] = True
    data["train"]["out_dir"] = str(out_dir)
    return recipe_from_dict(data)


def test_momentum_schedules():
    cfg = TeacherConfig(momentum=0.99, momentum_end=1.0)
    assert momentum_at(cfg, 0.0) == pytest.approx(0.99) and momentum_at(cfg, 1.0) == pytest.approx(1.0)
    assert momentum_at(cfg, 0.5) == pytest.approx(0.995)
    assert momentum_at(TeacherConfig(schedule="linear", momentum=0.5, momentum_end=1.0), 0.25) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        TeacherConfig(momentum=1.5)


def test_ema_update_moves_teacher_towards_student(tiny_recipe_dict, tmp_path):
    model = build_model(_data2vec(tiny_recipe_dict, tmp_path).model)
    assert model.teacher is not None and not any(p.requires_grad for p in model.teacher.parameters())
    student_w = model.encoder.blocks[0].attn.qkv.weight
    teacher_w = model.teacher.encoder.blocks[0].attn.qkv.weight
    assert torch.equal(student_w, teacher_w)
    with torch.no_grad():
        student_w.add_(1.0)
    before = teacher_w.clone()
    m = model.update_teacher(0.0)
    assert m == pytest.approx(0.9)
    torch.testing.assert_close(teacher_w, before * 0.9 + student_w * 0.1)
    shared = build_model(_data2vec(tiny_recipe_dict, tmp_path, ema=False).model)
    assert len(list(shared.teacher.parameters())) == 0 and shared.update_teacher(0.5) == 1.0


def test_teacher_feature_target_averages_normalised_top_layers():
    target = TeacherFeatureTarget(top_k=2, instance_norm=True)
    layers = [torch.randn(2, 5, 4) for _ in range(3)]
    out = target(None, None, teacher_layers=layers)
    norm = [(x - x.mean(1, keepdim=True)) / (x.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt() for x in layers[1:]]
    torch.testing.assert_close(out, (norm[0] + norm[1]) / 2, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="teacher"):
        target(None, None)


def test_info_nce_prefers_matching_tokens():
    loss = InfoNCELoss(temperature=0.1)
    t = torch.randn(3, 6, 16)
    perfect = loss(t.clone(), t)
    shuffled = loss(t[:, torch.randperm(6)], t)
    assert perfect.parts["nce_acc"] == 1.0 and float(perfect.total) < float(shuffled.total)
    batch = InfoNCELoss(negatives="batch")(t.clone(), t)
    assert batch.parts["nce_acc"] == 1.0


def test_two_views_share_the_crop(tiny_recipe_dict):
    from mmim import registry

    ds = registry.build("dataset", {"name": "fashion_mnist", "teacher_view": True, "max_samples": 4},
                        split="train", augment=True)
    torch.manual_seed(0)
    item = ds[0]
    assert item["image"].shape == item["image_teacher"].shape == (1, 28, 28)
    # photometric jitter only: the views are strongly correlated but not equal
    corr = torch.corrcoef(torch.stack([item["image"].flatten(), item["image_teacher"].flatten()]))[0, 1]
    assert corr > 0.8 and not torch.equal(item["image"], item["image_teacher"])


def test_data2vec_training_resumes_exactly_with_the_teacher(tiny_recipe_dict, tmp_path):
    full = Trainer(_data2vec(tiny_recipe_dict, tmp_path / "full"))
    full.fit()
    ref = {r["step"]: (r["loss"], r["teacher_momentum"]) for r in read_metrics(tmp_path / "full")}
    state = load_checkpoint(tmp_path / "full")
    assert any(k.startswith("teacher.encoder.") for k in state["model"])
    part = _data2vec(tiny_recipe_dict, tmp_path / "part")
    part.schedule.max_steps = 5
    Trainer(part).fit()
    Trainer(_data2vec(tiny_recipe_dict, tmp_path / "part"), resume=True).fit()
    got = {r["step"]: (r["loss"], r["teacher_momentum"]) for r in read_metrics(tmp_path / "part")}
    assert got == ref
    assert ref[12][1] == pytest.approx(1.0) and ref[1][1] < ref[12][1]


def test_teacher_view_without_augment_is_the_clean_image():
    from mmim import registry

    ds = registry.build("dataset", {"name": "fashion_mnist", "teacher_view": True, "max_samples": 4},
                        split="test", augment=False)
    plain = registry.build("dataset", {"name": "fashion_mnist", "max_samples": 4}, split="test", augment=False)
    item = ds[1]
    assert torch.equal(item["image"], plain[1]["image"]) and torch.equal(item["image_teacher"], plain[1]["image"])

"""Fine-tuning features shared by the modalities: the MLP head, test-time voting, multi-label targets."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from mmim import registry
from mmim.cli import main
from mmim.config.recipe import recipe_from_dict
from mmim.finetune.classifier import EncoderClassifier, build_head
from mmim.finetune.evaluate import evaluate, predict
from mmim.finetune.metrics import average_precision, mean_average_precision, top1
from mmim.finetune.task import FinetuneTask, mix_multihot
from mmim.model import build_model
from mmim.timm_compat import import_timm

# ---------------------------------------------------------------- MLP head


def test_mlp_head_is_point_maes_cls_head_finetune(tiny_recipe_dict):
    head = build_head("mlp", 64, 7, hidden=32, dropout=0.3)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert (head[0].in_features, head[0].out_features, head[4].in_features, head[8].out_features) == (64, 32, 32, 7)
    assert head[3].p == head[7].p == 0.3
    keys = {k.split(".")[0] for k in head.state_dict()}
    assert keys == {"0", "1", "4", "5", "8"}  # the official cls_head_finetune indices
    with pytest.raises(ValueError, match="head must be one of"):
        build_head("conv", 64, 7)

    backbone = build_model(recipe_from_dict(tiny_recipe_dict).model)
    clf = EncoderClassifier(backbone, 5, pool="cls_max", head="mlp", head_hidden=16, head_dropout=0.5)
    assert clf.head[0].in_features == 64 and clf.head[8].out_features == 5  # [cls, max] = 2 x 32
    clf.train()
    out = clf({"image": torch.randn(4, 1, 28, 28)})
    out.sum().backward()
    assert out.shape == (4, 5) and clf.head[0].weight.grad is not None
    clf.eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(clf({"image": x}), clf({"image": x}))  # eval: BN running stats, no dropout


def test_finetune_task_builds_the_configured_head(tiny_recipe_dict):
    tiny_recipe_dict["finetune"] = {"head": "mlp", "head_hidden": 24, "head_dropout": 0.2, "num_classes": 10}
    task = FinetuneTask(recipe_from_dict(tiny_recipe_dict))
    assert isinstance(task.module.head, nn.Sequential) and task.module.head[0].out_features == 24
    assert task.module.head[3].p == 0.2
    tiny_recipe_dict["finetune"] = {"num_classes": 10}
    assert isinstance(FinetuneTask(recipe_from_dict(tiny_recipe_dict)).module.head, nn.Linear)


# ---------------------------------------------------------------- voting


class Constant(Dataset):
    """Item i: x = i (one feature), label i % 2; vote_augment adds generator noise and counts calls."""

    def __init__(self, n: int = 6, hook: bool = True) -> None:
        self.n, self.calls = n, 0
        if hook:
            self.vote_augment = self._vote

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": torch.tensor([float(i)]), "label": i % 2}

    def _vote(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        self.calls += 1
        return {**batch, "x": batch["x"] + torch.randn(batch["x"].shape, generator=generator)}


class Identity(nn.Module):
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([batch["x"], -batch["x"]], dim=1)


def test_votes_average_logits_of_augmented_copies():
    ds = Constant()
    plain, labels = predict(Identity(), ds, votes=1, batch_size=4)
    assert ds.calls == 0 and torch.equal(plain[:, 0], torch.arange(6.0)) and labels.tolist() == [0, 1, 0, 1, 0, 1]
    voted, _ = predict(Identity(), ds, votes=5, batch_size=4, seed=3)
    assert ds.calls == 10  # 5 votes x 2 batches
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order
    noise = torch.stack([torch.randn(4, 1, generator=g) for _ in range(5)]).mean(0)
    noise = torch.cat([noise, torch.stack([torch.randn(2, 1, generator=g) for _ in range(5)]).mean(0)])
    torch.testing.assert_close(voted[:, :1], torch.arange(6.0)[:, None] + noise)
    again, _ = predict(Identity(), ds, votes=5, batch_size=4, seed=3)
    assert torch.equal(voted, again)
    with pytest.raises(ValueError, match="vote_augment.*Constant has none"):
        predict(Identity(), Constant(hook=False), votes=2)
    with pytest.raises(ValueError, match="positive integer"):
        predict(Identity(), ds, votes=0)


def test_points_vote_augment_scales_translates_and_reorders():
    from mmim_points.datasets import Primitives

    ds = Primitives("test", augment=False, num_samples=4, num_points=64)
    batch = {"points": torch.stack([ds[i]["points"] for i in range(4)]), "label": torch.arange(4)}
    a = ds.vote_augment(batch, torch.Generator().manual_seed(0))
    b = ds.vote_augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(a["points"], b["points"]) and a["points"].shape == (4, 64, 3) and torch.equal(a["label"], batch["label"])
    assert not torch.equal(a["points"], batch["points"])
    for i in range(4):  # per cloud: an affine map of the same points in another order
        src, out = batch["points"][i], a["points"][i]
        # undo the per-axis scale and shift from the bounding boxes, then compare as sets
        lo_s, hi_s, lo_o, hi_o = src.min(0).values, src.max(0).values, out.min(0).values, out.max(0).values
        scale = (hi_o - lo_o) / (hi_s - lo_s)
        assert ((scale > 2 / 3 - 1e-4) & (scale < 1.5 + 1e-4)).all()
        back = (out - lo_o) / scale + lo_s
        torch.testing.assert_close(back[back[:, 0].argsort()], src[src[:, 0].argsort()], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(back, src, atol=1e-3)  # the order changed


def test_finetune_with_votes_on_points(tmp_path):
    from mmim.config.recipe import load_recipe
    from mmim.recipes_catalog import default_recipe

    r = load_recipe(default_recipe("points"), ["data.dataset.num_samples=40", "data.dataset.num_points=64",
                                               "model.streams.points.tokenizer.num_group=8",
                                               "model.streams.points.tokenizer.group_size=8", "finetune.votes=3",
                                               "finetune.head=mlp", "model.encoder.cls_token=true",
                                               "finetune.pool=cls_max"])
    task = FinetuneTask(r)
    metrics = task.evaluate(task.module)
    assert set(metrics) == {"top1"} and 0.0 <= metrics["top1"] <= 1.0
    assert metrics == task.evaluate(task.module)  # votes are seeded


# ---------------------------------------------------------------- multi-label


def brute_force_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    """sum over distinct thresholds t (descending) of (R(t) - R(t_prev)) * P(t), predicting score >= t."""
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        pred = scores >= t
        tp = float((pred & (targets > 0)).sum())
        precision, recall = tp / pred.sum(), tp / (targets > 0).sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_average_precision_against_brute_force_and_sklearn():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, c = rng.integers(1, 30), rng.integers(1, 6)
        scores = np.round(rng.normal(size=(n, c)), 1 if trial % 2 else 3)  # rounding makes ties
        targets = (rng.random((n, c)) < 0.4).astype(np.float32)
        ap = average_precision(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
        for k in range(c):
            if targets[:, k].sum() == 0:
                assert np.isnan(ap[k])
            else:
                assert ap[k] == pytest.approx(brute_force_ap(scores[:, k], targets[:, k]), abs=1e-12)
        valid = targets.sum(0) > 0
        expect = float(np.mean([brute_force_ap(scores[:, k], targets[:, k]) for k in np.flatnonzero(valid)])) if valid.any() else 0.0
        assert mean_average_precision(torch.from_numpy(scores), torch.from_numpy(targets)) == pytest.approx(expect, abs=1e-12)
    metrics = pytest.importorskip("sklearn.metrics")
    scores = np.round(rng.normal(size=(50, 4)), 1)
    targets = (rng.random((50, 4)) < 0.3).astype(int)
    targets[0] = 1
    expect = metrics.average_precision_score(targets, scores, average="macro")
    assert mean_average_precision(torch.from_numpy(scores), torch.from_numpy(targets)) == pytest.approx(expect, abs=1e-12)
    assert average_precision(torch.tensor([[0.9], [0.1]]), torch.tensor([[1.0], [0.0]])).item() == 1.0
    assert top1(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5


@pytest.mark.parametrize("mode", [dict(mixup_alpha=0.8), dict(cutmix_alpha=1.0), dict(mixup_alpha=0.8, mode="elem"),
                                  dict(mixup_alpha=0.8, cutmix_alpha=1.0, mode="pair")])
def test_mixup_mixes_multi_hot_labels_like_the_inputs(mode):
    """Each input is constant (its value v_i): a mixed input's mean tells its mix, which the labels must follow."""
    torch.manual_seed(0)
    mixup = import_timm().data.Mixup(num_classes=3, label_smoothing=0.1, **mode)
    values = torch.arange(8.0)
    inputs = values[:, None, None, None].expand(8, 1, 8, 8).clone()
    labels = torch.stack([values, 1 - values / 8, (values % 2)], dim=1)  # any float (B, C) matrix
    for _ in range(5):
        mixed, mixed_labels = mix_multihot(mixup, inputs.clone(), labels)
        share = mixed.mean(dim=(1, 2, 3))  # = sum_j W[i, j] v_j
        torch.testing.assert_close(mixed_labels[:, 0], share)
        assert mixed_labels.shape == (8, 3)
        torch.testing.assert_close(mixed_labels[:, 1], 1 - share / 8)  # the mixing weights of a row sum to 1


class MultiHot(Dataset):
    """A single-label dataset with multi-hot labels {y, (y + 1) mod C}: the audio plugins' contract."""

    def __init__(self, base: Dataset) -> None:
        self.base, self.num_classes = base, base.num_classes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        y = int(item["label"])
        label = torch.zeros(self.num_classes)
        label[[y, (y + 1) % self.num_classes]] = 1.0
        item["label"] = label
        return item


@pytest.fixture
def multihot_datasets(monkeypatch):
    build = registry.build

    def wrapped(kind: str, spec: dict[str, Any], **kw: Any) -> Any:
        obj = build(kind, spec, **kw)
        return MultiHot(obj) if kind == "dataset" else obj

    monkeypatch.setattr(registry, "build", wrapped)


def test_multilabel_step_uses_bce_and_checks_labels(tiny_recipe_dict, multihot_datasets):
    tiny_recipe_dict["finetune"] = {"multilabel": True, "label_smoothing": 0.0}
    task = FinetuneTask(recipe_from_dict(tiny_recipe_dict))
    items = [task.dataset[i] for i in range(4)]
    batch = {"image": torch.stack([it["image"] for it in items]), "label": torch.stack([it["label"] for it in items])}
    loss, parts, n = task.step(task.module, batch, torch.Generator())
    expect = nn.functional.binary_cross_entropy_with_logits(task.module(batch), batch["label"])
    assert n == 4 and set(parts) == {"bce"} and loss.item() == pytest.approx(expect.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"float multi-hot tensor \(B, 10\)"):
        task.step(task.module, {**batch, "label": batch["label"].argmax(1)}, torch.Generator())
    single = FinetuneTask(recipe_from_dict({**tiny_recipe_dict, "finetune": {}}))
    with pytest.raises(ValueError, match="multilabel: true"):
        single.step(single.module, batch, torch.Generator())


def test_multilabel_finetune_through_cli_reports_map(tiny_recipe_dict, tmp_path, capsys, multihot_datasets):
    tiny_recipe_dict["finetune"] = {"epochs": 1, "batch_size": 16, "multilabel": True, "mixup": 0.8, "cutmix": 1.0,
                                    "out_dir": str(tmp_path / "ft")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["finetune", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mAP on test" in out and "top-1" not in out
    result = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert "top1" not in result and 0.0 < result["mAP"] <= 1.0 and result["votes"] == 1


def test_evaluate_multilabel_needs_multi_hot():
    with pytest.raises(ValueError, match="multi-hot"):
        evaluate(Identity(), Constant(), multilabel=True)

"""Fine-tuning options the official MAE loop needs: ``finetune.train_positions`` (timm's ViT trains
``pos_embed``), ``finetune.mixup_prob`` / ``finetune.mixup_switch_prob`` and the official (timm
0.3.2) cut-mix box; the classifier converter of the MAE plugin. Each test fails if its option is
ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmim.config.recipe import load_recipe
from mmim.finetune.mixup import Mixup
from mmim.finetune.task import FinetuneTask
from mmim.trunk.position import FixedPositionTable, LearnedPositionTable, sincos_2d
from mmim_image.converters.mae import mae_classifier_to_mmim, mmim_classifier_to_mae

ROOT = Path(__file__).resolve().parents[2]
MAE_RECIPES = [ROOT / "recipes" / "image" / f"mae_vit_{s}_in1k.yaml" for s in ("b16", "l16", "h14")]
TINY = ["model.encoder.size=null", "model.encoder.embed_dim=16", "model.encoder.depth=2", "model.encoder.num_heads=2",
        "model.streams.image.tokenizer.img_size=8", "model.streams.image.tokenizer.patch_size=4",
        "model.streams.image.decoder.embed_dim=8", "model.streams.image.decoder.depth=1",
        "model.streams.image.decoder.num_heads=1", "data.dataset={name: fashion_mnist, max_samples: 8}",
        "finetune.dataset={name: fashion_mnist, max_samples: 8}", "finetune.num_classes=4", "finetune.drop_path=0.0"]


def task(extra: list[str] = ()) -> FinetuneTask:
    torch.manual_seed(0)
    return FinetuneTask(load_recipe(MAE_RECIPES[0], TINY + list(extra)))


class Draws:
    """A random source answering rand/beta/randint from fixed lists (and logging the calls)."""

    def __init__(self, rand=(), beta=(), randint=()) -> None:
        self.values = {"rand": list(rand), "beta": list(beta), "randint": list(randint)}
        self.calls: list[tuple] = []

    def rand(self):
        self.calls.append(("rand",))
        return self.values["rand"].pop(0)

    def beta(self, a, b):
        self.calls.append(("beta", a, b))
        return self.values["beta"].pop(0)

    def randint(self, low, high):
        self.calls.append(("randint", low, high))
        return self.values["randint"].pop(0)


@pytest.mark.parametrize("path", MAE_RECIPES, ids=lambda p: p.stem)
def test_mae_recipes_declare_the_official_fine_tuning(path):
    ft = load_recipe(path, TINY).finetune
    # main_finetune.py: --global_pool, --mixup_prob 1.0, --mixup_switch_prob 0.5; models_vit trains pos_embed
    assert ft.train_positions and ft.pool == "mean"
    assert (ft.mixup_prob, ft.mixup_switch_prob) == (1.0, 0.5)


def test_train_positions_trains_the_table_and_a_cls_position():
    t = task()
    backbone = t.module.backbone
    pos = backbone.streams["image"].tokenizer.pos
    assert isinstance(pos, LearnedPositionTable)
    assert torch.equal(pos.table[0], sincos_2d(16, (2, 2)))  # starts from the sin-cos table
    assert torch.equal(backbone.encoder.cls_pos, torch.zeros(1, 1, 16))  # MAE's zero cls row
    groups = t.param_groups()
    where = {id(p): g for g in groups for p in g["params"]}
    for p in (pos.table, backbone.encoder.cls_pos):
        assert where[id(p)]["weight_decay"] == 0 and where[id(p)]["layer_id"] == 0
    t.module.train()
    logits = t.module({"image": torch.randn(2, 3, 8, 8)})
    logits.square().sum().backward()
    assert pos.table.grad.abs().sum() > 0
    # the cls position is added to the cls token: the same gradient
    assert torch.equal(backbone.encoder.cls_pos.grad, backbone.encoder.cls_token.grad)
    assert backbone.encoder.cls_pos.grad.abs().sum() > 0


def test_without_train_positions_the_table_stays_fixed():
    t = task(["finetune.train_positions=false", "finetune.no_weight_decay=[backbone.encoder.cls_token]"])
    backbone = t.module.backbone
    assert isinstance(backbone.streams["image"].tokenizer.pos, FixedPositionTable)
    assert backbone.encoder.cls_pos is None
    assert not any("pos" in n.split(".")[-2:][0] for n, _ in t.module.named_parameters() if "tokenizer" in n)


def test_cls_position_changes_the_output():
    t = task()
    t.module.eval()
    x = {"image": torch.randn(2, 3, 8, 8)}
    before = t.module(x)
    with torch.no_grad():
        t.module.backbone.encoder.cls_pos.normal_()  # not a constant: LayerNorm would remove it
    assert (before - t.module(x)).abs().max() > 1e-3 * before.abs().max()


def test_classifier_converter_round_trip_carries_the_trained_positions():
    t = task()
    with torch.no_grad():
        t.module.backbone.encoder.cls_pos.fill_(0.25)
        t.module.backbone.streams["image"].tokenizer.pos.table.add_(0.5)
    official = mmim_classifier_to_mae(t.module)
    assert official["pos_embed"].shape == (1, 5, 16) and torch.all(official["pos_embed"][0, 0] == 0.25)
    assert {"head.weight", "fc_norm.weight", "cls_token", "patch_embed.proj.weight"} <= set(official)
    mapped = mae_classifier_to_mmim(official, task().module)
    state = t.module.state_dict()
    assert set(mapped) == set(state)
    for k, v in mapped.items():
        assert torch.equal(v, state[k]), k


def test_mixup_prob_leaves_batches_unmixed():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    for prob, mixed in ((0.5, False), (0.7, True)):
        mix = Mixup(0.8, 0.0, prob=prob, label_smoothing=0.1, num_classes=4)
        mix.random = Draws(rand=[0.6], beta=[0.3])
        out, target = mix(x, y)
        assert torch.equal(out, x) != mixed
        assert torch.allclose(target.max(dim=1).values, torch.full((4,), 0.925)) != mixed


def test_switch_prob_picks_cutmix_or_mixup():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    for switch, cutmix in ((0.5, True), (0.3, False)):
        mix = Mixup(0.8, 1.0, prob=1.0, switch_prob=switch, num_classes=4)
        mix.random = Draws(rand=[0.1, 0.4], beta=[0.6], randint=[4, 4])
        mix(x, y)
        assert mix.random.calls[2] == ("beta", 1.0, 1.0) if cutmix else ("beta", 0.8, 0.8)
        assert (len(mix.random.calls) == 5) == cutmix


def test_cutmix_box_is_timm_0_3_s_and_the_input_is_left_alone():
    """A 7-pixel cut centred at 8 spans [5, 11) (half a side each way rounded down, timm 0.3.2 as
    MAE pins it), not [5, 12) (timm >= 0.9); lam is corrected to the uncut area."""
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    keep = x.clone()
    lam = 1 - (7.5 / 16) ** 2  # cut side int(16 * sqrt(1 - lam)) = 7
    mix = Mixup(0.0, 1.0, label_smoothing=0.0, num_classes=4)
    mix.random = Draws(rand=[0.0], beta=[lam], randint=[8, 8])
    out, target = mix(x, y)
    assert torch.equal(x, keep)  # the caller's batch (the loader's tensor) is not mixed in place
    changed = (out != x).any(dim=(0, 1))
    rows, cols = changed.nonzero().T
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 10, 5, 10)
    assert target[0, 0].item() == pytest.approx(1 - 36 / 256)


def test_mixup_settings_are_checked():
    with pytest.raises(ValueError, match="finetune.mixup_prob"):
        Mixup(0.8, 1.0, prob=1.5)
    with pytest.raises(ValueError, match="finetune.mixup_switch_prob"):
        Mixup(0.8, 1.0, switch_prob=-0.1)
    with pytest.raises(ValueError, match="even batch"):
        Mixup(0.8, 0.0)(torch.randn(3, 1, 4, 4), torch.tensor([0, 1, 2]))


def test_the_task_uses_the_recipe_s_mixup_settings():
    t = task(["finetune.mixup_prob=0.25", "finetune.mixup_switch_prob=0.75", "finetune.label_smoothing=0.2"])
    assert (t.mixup.prob, t.mixup.switch_prob, t.mixup.label_smoothing) == (0.25, 0.75, 0.2)
    assert (t.mixup.mixup_alpha, t.mixup.cutmix_alpha) == (0.8, 1.0)

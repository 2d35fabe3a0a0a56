"""``schedule.epoch_cosine`` (timm's CosineLRScheduler stepped once per epoch, as Point-MAE) and
``train.grad_accumulation`` (``sum``: Point-MAE's ``step_per_update``): the rules, and that the trainer
follows them (each test fails if the trainer ignores the key)."""

from __future__ import annotations

import pytest
import torch

from mmim.config.recipe import ConfigError, recipe_from_dict
from mmim.engine.schedule import epoch_cosine_lr
from mmim.engine.trainer import Trainer


@pytest.mark.parametrize("epochs, cycle, warmup, warmup_lr_init, min_lr", [
    (16, 15, 5, 1e-6, 1e-6), (30, 29, 8, 1e-6, 1e-6), (12, 12, 0, 0.0, 0.0), (10, 6, 3, 1e-4, 1e-5)])
def test_epoch_cosine_is_timms_scheduler_stepped_after_each_epoch(epochs, cycle, warmup, warmup_lr_init, min_lr):
    """Point-MAE: CosineLRScheduler(t_initial, lr_min, warmup_lr_init, warmup_t, t_in_epochs=True) built
    on the optimizer, ``scheduler.step(epoch)`` after every epoch; the lr each epoch trained at."""
    from mmim.timm_compat import import_timm

    import_timm()
    from timm.scheduler import CosineLRScheduler as scheduler_cls
    peak = 1e-3
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = scheduler_cls(opt, t_initial=cycle, lr_min=min_lr,  # t_mul 1 (timm 1.x: cycle_mul), no noise
                              warmup_lr_init=warmup_lr_init, warmup_t=warmup, cycle_limit=1, t_in_epochs=True)
    official = []
    for epoch in range(epochs):
        official.append(opt.param_groups[0]["lr"])
        scheduler.step(epoch)
    ours = [epoch_cosine_lr(e, epochs, warmup, peak, min_lr, warmup_lr_init, cycle, lag=1) for e in range(epochs)]
    assert ours == pytest.approx(official, rel=1e-12, abs=0)
    if warmup:
        assert ours[0] == ours[1] == warmup_lr_init  # one epoch late: the first two epochs train at warmup_lr_init
    # lag 0: the scheduler's own value for each epoch
    assert epoch_cosine_lr(3, epochs, warmup, peak, min_lr, warmup_lr_init, cycle, lag=0) == ours[4]


def _lrs_and_norms(data: dict, tmp_path, **changes) -> tuple[list[float], list[float], Trainer]:
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    data["train"].update(device="cpu", precision="fp32", threads=1, out_dir=str(tmp_path / "run"))
    trainer = Trainer(recipe_from_dict(data))
    lrs, norms = [], []

    def pre_step(opt, args, kwargs):
        lrs.append(opt.param_groups[0]["lr"])
        norms.append(float(torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for g in opt.param_groups for p in g["params"] if p.grad is not None]))))

    trainer.optimizer.register_step_pre_hook(pre_step)
    trainer.fit()
    return lrs, norms, trainer


def test_trainer_changes_the_lr_once_per_epoch(tiny_recipe_dict, tmp_path):
    cosine = {"warmup_lr_init": 1e-5, "cycle_epochs": 3, "lag": 1}
    lrs, _, trainer = _lrs_and_norms(tiny_recipe_dict, tmp_path, optim={"lr": 1e-3},
                                     schedule={"epochs": 4, "warmup_epochs": 1, "min_lr": 1e-6, "epoch_cosine": cosine})
    per_epoch = trainer.steps_per_epoch
    assert per_epoch > 1 and len(lrs) == 4 * per_epoch
    expected = [epoch_cosine_lr(s // per_epoch, 4, 1, 1e-3, 1e-6, 1e-5, 3, 1) for s in range(len(lrs))]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == lrs[2 * per_epoch - 1] == 1e-5  # epochs 0 and 1: warmup_lr_init
    # epoch 2 trains at t = 1, already on the cosine (timm counts it from epoch 0, warmup_prefix=False)
    assert lrs[2 * per_epoch] == lrs[3 * per_epoch - 1] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.75, rel=1e-12)


def test_summed_accumulation_adds_the_micro_batch_gradients(tiny_recipe_dict, tmp_path):
    """Two micro-batches per step: ``sum`` steps with twice the gradient ``mean`` does (same data and
    masks; compared at the first step, before the two runs' weights differ)."""
    batch = tiny_recipe_dict["data"]["batch_size"]
    common = {"effective_batch_size": 2 * batch}
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tiny_recipe_dict.items()}
    _, mean, t_mean = _lrs_and_norms(tiny_recipe_dict, tmp_path / "mean", train={**common},
                                     schedule={"epochs": 1})
    _, summed, t_sum = _lrs_and_norms(data, tmp_path / "sum", train={**common, "grad_accumulation": "sum"},
                                      schedule={"epochs": 1})
    assert t_mean.accum == t_sum.accum == 2
    assert summed[0] == pytest.approx(2 * mean[0], rel=1e-5)


@pytest.mark.parametrize("where, value, message", [
    ("schedule", {"epoch_cosine": {"lag": -1}}, "lag"),
    ("schedule", {"epoch_cosine": {"cycle_epochs": 0}}, "cycle_epochs"),
    ("schedule", {"epoch_cosine": {"warmup_lr": 1e-6}}, "warmup_lr"),
    ("train", {"grad_accumulation": "average"}, "grad_accumulation"),
])
def test_bad_values_are_errors_naming_the_key(tiny_recipe_dict, where, value, message):
    tiny_recipe_dict[where].update(value)
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(tiny_recipe_dict, source="recipe.yaml")


def test_mmim_recipes_shows_the_rules():
    from pathlib import Path

    from mmim.engine.optim import optimizer_rules

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    line, schedule = optimizer_rules(recipes / "points" / "pointmae_shapenet55.yaml")[:2]
    assert "no decay on 1-D, biases, *_token" in line and "lr 0.001 (not scaled)" in line
    assert "accumulated gradients summed" in line
    assert schedule.startswith("pretrain schedule: lr per epoch (timm cosine over 300 epochs, 10 warmup epochs from "
                               "1e-06, 1 epoch late)"), schedule
    assert "MAE lr_sched" not in schedule  # the per-step rule it replaces is not described
    mae = optimizer_rules(recipes / "image" / "mae_vit_b16_in1k.yaml")[:2]
    assert "per epoch" not in " ".join(mae) and "summed" not in mae[0]

"""The BEiT-family schedule rule a recipe can declare (mmim.engine.schedule): linspace warmup from
``schedule.warmup_lr``, ``schedule.scale_min_lr`` and the cosine weight-decay schedule to
``optim.weight_decay_end``. Each key is checked through the Trainer, so ignoring it fails here."""

from __future__ import annotations

import copy
import math

import pytest

from mmim.config.recipe import recipe_from_dict
from mmim.engine.schedule import cosine_at, linspace_lr_at, lr_at
from mmim.engine.trainer import Trainer


def _trainer(data, tmp_path, schedule=None, optim=None, **train):
    data = copy.deepcopy(data)
    data["schedule"].update(schedule or {})
    data.setdefault("optim", {}).update(optim or {})
    data["train"].update({"out_dir": str(tmp_path / "run"), **train})
    return Trainer(recipe_from_dict(data))


def _observed(trainer):
    """Each group's (lr, weight decay) as the optimizer steps with them."""
    seen = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, *_: seen.append([(g["lr"], g["weight_decay"]) for g in opt.param_groups]))
    trainer.fit()
    return seen


def test_linspace_warmup_is_beit_cosine_scheduler():
    # np.linspace(0.1, 1.0, 4) = [0.1, 0.4, 0.7, 1.0], then the cosine over the remaining 6 steps
    assert [linspace_lr_at(s, 10, 4, 1.0, 0.0, 0.1) for s in range(4)] == pytest.approx([0.1, 0.4, 0.7, 1.0])
    assert linspace_lr_at(4, 10, 4, 1.0, 0.0, 0.1) == 1.0  # the first cosine step repeats the peak
    assert linspace_lr_at(7, 10, 4, 1.0, 0.2, 0.1) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert linspace_lr_at(7, 10, 4, 1.0, 0.2, 0.1) == lr_at(7, 10, 4, 1.0, 0.2)
    assert linspace_lr_at(0, 10, 1, 1.0, 0.0, 0.3) == 0.3  # np.linspace(a, b, 1) == [a]
    assert [lr_at(s, 10, 4, 1.0) for s in range(4)] == [0.0, 0.25, 0.5, 0.75]  # MAE's for comparison
    assert [cosine_at(s, 4, 0.04, 0.4) for s in range(4)] == pytest.approx(
        [0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * s / 4)) for s in range(4)])


def test_warmup_style_linspace_is_used_by_the_trainer(tiny_recipe_dict, tmp_path):
    base = _trainer(tiny_recipe_dict, tmp_path / "a", {"warmup_epochs": 1.0}, {"lr": 1e-3})
    warm = base.warmup_steps
    assert warm >= 2
    seen = _observed(base)
    assert seen[0][0][0] == 0.0 and seen[warm][0][0] == pytest.approx(1e-3)
    lin = _observed(_trainer(tiny_recipe_dict, tmp_path / "b", {"warmup_epochs": 1.0, "warmup_style": "linspace",
                                                                  "warmup_lr": 1e-4}, {"lr": 1e-3}))
    expected = [1e-4 + (1e-3 - 1e-4) * s / (warm - 1) for s in range(warm)]
    assert [s[0][0] for s in lin[:warm]] == pytest.approx(expected, rel=1e-12)
    assert lin[warm - 1][0][0] == pytest.approx(1e-3)  # the peak on the last warmup step


def test_scale_min_lr_scales_min_and_warmup_lr(tiny_recipe_dict, tmp_path):
    sched = {"warmup_epochs": 1.0, "warmup_style": "linspace", "warmup_lr": 1e-4, "min_lr": 2e-4}
    plain = _trainer(tiny_recipe_dict, tmp_path / "a", sched, {"lr": None, "base_lr": 1e-2}, effective_batch_size=32)
    scaled = _trainer(tiny_recipe_dict, tmp_path / "b", {**sched, "scale_min_lr": True}, {"lr": None, "base_lr": 1e-2},
                      effective_batch_size=32)
    assert plain.schedule.min_lr == 2e-4 and plain.schedule.warmup_lr == 1e-4
    assert scaled.schedule.min_lr == pytest.approx(2e-4 * 32 / 256)
    assert scaled.schedule.warmup_lr == pytest.approx(1e-4 * 32 / 256)
    first = _observed(scaled)[0][0][0]
    assert first == pytest.approx(1e-4 * 32 / 256)
    last = scaled.schedule.lr(scaled.total_steps - 1)
    assert last == pytest.approx(2e-4 / 8 + (1e-2 / 8 - 2e-4 / 8) * 0.5 * (1 + math.cos(
        math.pi * (scaled.total_steps - 1 - scaled.warmup_steps) / (scaled.total_steps - scaled.warmup_steps))))


def test_weight_decay_end_gives_decayed_groups_a_cosine(tiny_recipe_dict, tmp_path):
    steady = _observed(_trainer(tiny_recipe_dict, tmp_path / "a", optim={"weight_decay": 0.05}))
    assert {s[0][1] for s in steady} == {0.05}
    trainer = _trainer(tiny_recipe_dict, tmp_path / "b", optim={"weight_decay": 0.05, "weight_decay_end": 0.2})
    seen = _observed(trainer)
    total = trainer.total_steps
    assert [s[0][1] for s in seen] == pytest.approx(
        [0.2 + 0.5 * (0.05 - 0.2) * (1 + math.cos(math.pi * k / total)) for k in range(total)], rel=1e-12)
    assert {s[1][1] for s in seen} == {0.0}  # the group without weight decay stays without


def test_weight_decay_schedule_survives_resume(tiny_recipe_dict, tmp_path):
    optim = {"weight_decay": 0.05, "weight_decay_end": 0.2}
    data = copy.deepcopy(tiny_recipe_dict)
    data["schedule"]["max_steps"] = 5
    _trainer(data, tmp_path, optim=optim).fit()
    resumed = copy.deepcopy(tiny_recipe_dict)
    resumed["optim"] = dict(resumed.get("optim") or {}, **optim)
    resumed["train"]["out_dir"] = str(tmp_path / "run")
    trainer = Trainer(recipe_from_dict(resumed), resume=True)
    assert trainer.step == 5 and trainer.decayed_groups == [True, False]
    seen = []
    trainer.optimizer.register_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["weight_decay"]))
    trainer.fit()
    assert seen[0] == pytest.approx(cosine_at(5, trainer.total_steps, 0.05, 0.2), rel=1e-12)


def test_warmup_lr_without_linspace_is_an_error(tiny_recipe_dict, tmp_path):
    with pytest.raises(ValueError, match="schedule.warmup_lr.*linspace"):
        _trainer(tiny_recipe_dict, tmp_path, {"warmup_lr": 1e-6})
    data = copy.deepcopy(tiny_recipe_dict)
    data["schedule"]["warmup_style"] = "cosine"
    with pytest.raises(Exception, match="warmup_style"):
        recipe_from_dict(data)


@pytest.mark.parametrize("beit", [{"warmup_style": "linspace"}, {"scale_min_lr": True}])
def test_epoch_cosine_does_not_mix_with_the_beit_keys(tiny_recipe_dict, tmp_path, beit):
    per_epoch = {"epoch_cosine": {"warmup_lr_init": 1e-6, "lag": 1}}
    _trainer(tiny_recipe_dict, tmp_path / "ok", per_epoch)  # alone it builds
    with pytest.raises(ValueError, match="schedule.epoch_cosine"):
        _trainer(tiny_recipe_dict, tmp_path / "mixed", {**per_epoch, **beit})


def test_recipes_command_prints_the_schedule_rule(tmp_path):
    import yaml

    from mmim.engine.optim import optimizer_rules

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"optim": {"weight_decay": 0.05, "weight_decay_end": 0.1},
                                    "schedule": {"warmup_epochs": 40, "warmup_style": "linspace", "warmup_lr": 1e-6,
                                                 "min_lr": 1e-5, "scale_min_lr": True}}))
    line = optimizer_rules(path)[1]
    assert "linspace from 1e-06 x batch/256" in line and "min_lr 1e-05 x batch/256" in line
    assert "wd cosine 0.05 -> 0.1" in line
    path.write_text(yaml.safe_dump({"schedule": {"warmup_epochs": 40}}))
    assert "linear from 0" in optimizer_rules(path)[1] and "constant wd" in optimizer_rules(path)[1]

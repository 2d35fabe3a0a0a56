"""The training loop: exact resume, non-finite loss, accumulation, run directory contents."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from mmim.components import regression_loss
from mmim.config.recipe import recipe_from_dict
from mmim.engine.checkpoint import list_checkpoints, load_checkpoint
from mmim.engine.metrics import read_metrics
from mmim.engine.trainer import NonFiniteLossError, Trainer


def _recipe(data, out_dir, **train):
    data = copy.deepcopy(data)
    data["train"]["out_dir"] = str(out_dir)
    data["train"].update(train)
    return recipe_from_dict(data)


def test_resume_repeats_the_uninterrupted_run_exactly(tiny_recipe_dict, tmp_path):
    full = Trainer(_recipe(tiny_recipe_dict, tmp_path / "full", keep_checkpoints=0))
    summary = full.fit()
    assert summary["steps"] == full.total_steps == 12
    reference = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "full")}

    interrupted = copy.deepcopy(tiny_recipe_dict)
    interrupted["schedule"]["max_steps"] = 5
    Trainer(_recipe(interrupted, tmp_path / "part")).fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [5]
    resumed = Trainer(_recipe(tiny_recipe_dict, tmp_path / "part"), resume=True)
    assert resumed.step == 5
    resumed.fit()
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "part")}
    assert sorted(losses) == list(range(1, 13))
    assert losses == reference  # bit-identical in fp32 on CPU


def test_run_directory_holds_config_metrics_and_checkpoints(tiny_recipe_dict, tmp_path):
    recipe = _recipe(tiny_recipe_dict, tmp_path / "r", keep_checkpoints=1)
    Trainer(recipe).fit()
    run = tmp_path / "r"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["encoder"]["embed_dim"] == 32 and saved["name"] == "tiny"
    records = read_metrics(run)
    assert {"loss", "lr", "samples_per_s", "epoch", "image/mse"} <= set(records[0])
    state = load_checkpoint(run)
    assert state["step"] == 12 and state["scheduler"]["total_steps"] == 12
    assert {"model", "optimizer", "rng", "data", "scaler"} <= set(state)
    assert "recipe" not in state  # one home per run: config.yaml
    assert len(list_checkpoints(run)) == 1
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(recipe)


def test_non_finite_loss_stops_naming_step_and_keeps_checkpoint(tiny_recipe_dict, tmp_path, monkeypatch):
    recipe = _recipe(tiny_recipe_dict, tmp_path / "nan", checkpoint_every=2)
    trainer = Trainer(recipe)
    original = regression_loss.MSELoss.distance
    calls = {"n": 0}

    def flaky(self, pred, target):
        calls["n"] += torch.is_grad_enabled()  # the FLOP count's forward (no grad) is not a training step
        out = original(self, pred, target)
        return out * float("nan") if calls["n"] == 4 else out

    monkeypatch.setattr(regression_loss.MSELoss, "distance", flaky)
    with pytest.raises(NonFiniteLossError, match=r"\(nan\) at step 4 .*ckpt-00000002.pt"):
        trainer.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "nan")] == [2]
    assert load_checkpoint(tmp_path / "nan")["step"] == 2


def test_gradient_accumulation_reaches_effective_batch(tiny_recipe_dict, tmp_path):
    data = copy.deepcopy(tiny_recipe_dict)
    data["train"]["effective_batch_size"] = 32
    trainer = Trainer(_recipe(data, tmp_path / "acc"))
    assert trainer.accum == 2 and trainer.steps_per_epoch == 3
    assert trainer.peak_lr == pytest.approx(1e-3)
    assert trainer.fit()["steps"] == 6
    data["train"]["effective_batch_size"] = 24
    with pytest.raises(ValueError, match="not a multiple"):
        Trainer(_recipe(data, tmp_path / "bad"))


def test_lr_scaling_rule_applies_without_explicit_lr(tiny_recipe_dict, tmp_path):
    data = copy.deepcopy(tiny_recipe_dict)
    data["optim"] = {"base_lr": 1.6e-3}
    trainer = Trainer(_recipe(data, tmp_path / "lr"))
    assert trainer.peak_lr == pytest.approx(1.6e-3 * 16 / 256)


def test_flops_are_counted_once_and_logged(tiny_recipe_dict, tmp_path):
    trainer = Trainer(_recipe(tiny_recipe_dict, tmp_path / "f"))
    trainer.fit()
    # forward+backward of the encoder alone is at least 3 x 2 x params x tokens per sample
    enc_params = sum(p.numel() for p in trainer.model.encoder.blocks.parameters())
    assert trainer.flops.per_sample > 6 * enc_params * 4
    assert all(r["tflops_per_device"] > 0 for r in read_metrics(tmp_path / "f"))


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tiny_recipe_dict, tmp_path):
    data = copy.deepcopy(tiny_recipe_dict)
    data["schedule"]["max_steps"] = 3
    Trainer(_recipe(data, tmp_path / "eager")).fit()
    compiled = Trainer(_recipe(data, tmp_path / "compiled", compile=True))
    compiled.fit()
    eager = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "eager")}
    fast = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "compiled")}
    assert eager.keys() == fast.keys()
    for step in eager:
        assert fast[step] == pytest.approx(eager[step], rel=1e-4, abs=1e-5)
    assert set(load_checkpoint(tmp_path / "compiled")["model"]) == set(load_checkpoint(tmp_path / "eager")["model"])


def test_grad_clip_bounds_the_update(tiny_recipe_dict, tmp_path):
    data = copy.deepcopy(tiny_recipe_dict)
    data["schedule"] = {"epochs": 1, "max_steps": 1}
    data["optim"] = {"lr": 1.0, "weight_decay": 0.0, "betas": [0.0, 0.0]}  # SGD-like step: update = lr * g / |g|

    def update_size(clip, name):
        trainer = Trainer(_recipe(data, tmp_path / name, grad_clip=clip))
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        captured = {}
        original = trainer.optimizer.step

        def spy(*args, **kwargs):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            captured["norm"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            return original(*args, **kwargs)

        trainer.optimizer.step = spy
        trainer.fit()
        moved = any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
        return captured["norm"], moved

    free, moved = update_size(None, "free")
    clipped, _ = update_size(1e-3, "clipped")
    assert moved and free > 1e-3
    assert clipped == pytest.approx(1e-3, rel=1e-3)

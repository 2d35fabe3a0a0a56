"""``--resume auto``, falling back past a corrupt newest checkpoint, and a full disk during a save."""

from __future__ import annotations

import copy
import errno
import logging

import pytest
import torch

from mmim.config.recipe import recipe_from_dict
from mmim.engine import checkpoint as ckpt
from mmim.engine.trainer import Trainer


def _recipe(tiny, steps, **train):
    data = copy.deepcopy(tiny)
    data["schedule"]["max_steps"] = steps
    data["eval"]["after_train"] = False
    data["train"].update(checkpoint_every=1, keep_checkpoints=5, threads=1, **train)
    return recipe_from_dict(data)


def _assert_same_model(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=0, rtol=0, msg=key)


def test_resume_auto_starts_fresh_then_resumes(tiny_recipe_dict, tmp_path):
    ref = copy.deepcopy(tiny_recipe_dict)
    ref["train"]["out_dir"] = str(tmp_path / "ref")
    Trainer(_recipe(ref, 4)).fit()

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ckpt-00000003.pt.tmp").write_bytes(b"\x80half")  # a crash's leftover is no checkpoint
    first = Trainer(_recipe(tiny_recipe_dict, 2), resume="auto")
    assert first.step == 0, "auto with no complete checkpoint starts fresh"
    assert not (run_dir / "ckpt-00000003.pt.tmp").exists(), "the leftover is cleaned up"
    first.fit()
    second = Trainer(_recipe(tiny_recipe_dict, 4), resume="auto")
    assert second.step == 2, "auto with a checkpoint resumes from it"
    second.fit()
    _assert_same_model(ckpt.load_checkpoint(tmp_path / "ref"), ckpt.load_checkpoint(run_dir))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "sharded_truncate"])
def test_corrupt_newest_checkpoint_falls_back_with_warning(tiny_recipe_dict, tmp_path, caplog, damage):
    fmt = "sharded" if damage.startswith("sharded") else "file"
    Trainer(_recipe(tiny_recipe_dict, 3, checkpoint_format=fmt)).fit()
    run_dir = tmp_path / "run"
    newest = ckpt.latest_checkpoint(run_dir)
    assert ckpt.checkpoint_step(newest) == 3
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    elif damage == "garbage":
        newest.write_bytes(b"not a checkpoint at all")
    else:
        part = next(newest.glob("*.distcp"))
        part.write_bytes(part.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="mmim.engine.checkpoint"):
        trainer = Trainer(_recipe(tiny_recipe_dict, 4, checkpoint_format=fmt), resume=True)
    assert trainer.step == 2, "resumed from the previous complete checkpoint"
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert str(newest) in warning and "ckpt-00000002" in warning
    # tools that read a run directory fall back the same way
    assert ckpt.load_checkpoint(run_dir)["step"] == 2
    # naming the corrupt checkpoint itself is an error naming it, not a silent fallback
    with pytest.raises(ckpt.CheckpointError, match=str(newest)):
        ckpt.load_checkpoint(newest)


def test_every_checkpoint_corrupt_is_an_error_listing_them(tiny_recipe_dict, tmp_path):
    Trainer(_recipe(tiny_recipe_dict, 2)).fit()
    for _, path in ckpt.list_checkpoints(tmp_path / "run"):
        path.write_bytes(b"junk")
    with pytest.raises(ckpt.CheckpointError, match=r"ckpt-00000001\.pt.*\n.*ckpt-00000002\.pt|ckpt-00000002\.pt"):
        Trainer(_recipe(tiny_recipe_dict, 3), resume=True)


class FullDisk:
    """``torch.save`` that fails with ENOSPC on chosen calls after writing part of the file."""

    def __init__(self, fail_calls: set[int]) -> None:
        self.fail_calls, self.calls, self.real = fail_calls, 0, torch.save

    def __call__(self, obj, f, *args, **kwargs):
        self.calls += 1
        if self.calls in self.fail_calls:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(obj, f, *args, **kwargs)


def test_full_disk_stops_and_keeps_previous_checkpoint(tiny_recipe_dict, tmp_path, monkeypatch):
    disk = FullDisk({3})  # the third save: step 3
    monkeypatch.setattr(torch, "save", disk)
    trainer = Trainer(_recipe(tiny_recipe_dict, 5))
    with pytest.raises(ckpt.CheckpointSaveError, match=r"ckpt-00000003\.pt.*no space left.*step 3.*ckpt-00000002\.pt"):
        trainer.fit()
    run_dir = tmp_path / "run"
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [1, 2]
    assert not list(run_dir.glob("*.tmp")), "nothing half-written is left"
    monkeypatch.setattr(torch, "save", disk.real)
    resumed = Trainer(_recipe(tiny_recipe_dict, 5), resume=True)
    assert resumed.step == 2
    resumed.fit()
    assert ckpt.load_checkpoint(run_dir)["step"] == 5


def test_full_disk_retries_as_configured(tiny_recipe_dict, tmp_path, monkeypatch, caplog):
    disk = FullDisk({3})
    monkeypatch.setattr(torch, "save", disk)
    with caplog.at_level(logging.WARNING):
        Trainer(_recipe(tiny_recipe_dict, 4, save_retries=1, save_retry_wait=0)).fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [1, 2, 3, 4]
    assert any("retrying" in r.getMessage() and "ckpt-00000003.pt" in r.getMessage() for r in caplog.records)


def test_full_disk_during_a_sharded_save(tiny_recipe_dict, tmp_path, monkeypatch):
    from torch.distributed.checkpoint import filesystem

    real, calls, run_dir = filesystem._write_item, [], tmp_path / "run"

    def full(*args, **kwargs):
        if (run_dir / "ckpt-00000002.tmp").exists():  # part of the way into the second checkpoint's tensors
            calls.append(1)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(filesystem, "_write_item", full)
    trainer = Trainer(_recipe(tiny_recipe_dict, 3, checkpoint_format="sharded"))
    with pytest.raises(ckpt.CheckpointSaveError, match=r"ckpt-00000002\.tmp.*rank 0: OSError.*No space left.*step 2"):
        trainer.fit()
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [1]
    assert not list(run_dir.glob("*.tmp")), "the partial directory is removed"
    assert ckpt.load_checkpoint(run_dir)["step"] == 1


def test_async_needs_sharded(tiny_recipe_dict):
    with pytest.raises(ValueError, match="async_checkpoint needs train.checkpoint_format=sharded"):
        Trainer(_recipe(tiny_recipe_dict, 1, async_checkpoint=True))


def test_async_sharded_save_writes_in_the_background(tiny_recipe_dict, tmp_path, monkeypatch):
    """``train.async_checkpoint`` goes through DCP's async_save (and never its blocking save), each write
    completes before the next starts, and the checkpoints equal those of a synchronous run."""
    import torch.distributed.checkpoint as dcp

    calls = {"async_save": 0, "save": 0}
    for name in calls:
        real = getattr(dcp, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(dcp, name, spy)
    sync = copy.deepcopy(tiny_recipe_dict)
    sync["train"]["out_dir"] = str(tmp_path / "sync")
    Trainer(_recipe(sync, 3, checkpoint_format="sharded")).fit()
    assert calls == {"async_save": 0, "save": 3}
    trainer = Trainer(_recipe(tiny_recipe_dict, 3, checkpoint_format="sharded", async_checkpoint=True))
    trainer.fit()
    assert calls == {"async_save": 3, "save": 3}
    assert trainer.sharded.pending is None, "fit waits for the last write"
    run_dir = tmp_path / "run"
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [1, 2, 3]
    assert not list(run_dir.glob("*.tmp"))
    a, b = ckpt.load_checkpoint(tmp_path / "sync"), ckpt.load_checkpoint(run_dir)
    _assert_same_model(a, b)
    for i in a["optimizer"]["state"]:
        for key, value in a["optimizer"]["state"][i].items():
            torch.testing.assert_close(value, b["optimizer"]["state"][i][key], atol=0, rtol=0)


def test_sharded_checkpoint_is_read_by_eval_export_and_consolidate(tiny_recipe_dict, tmp_path, capsys):
    """A sharded run is read directly by mmim eval and mmim export, and ``mmim consolidate`` writes it as
    one file in the one-process format (what a file checkpoint holds)."""
    from mmim.cli import main

    Trainer(_recipe(tiny_recipe_dict, 2, checkpoint_format="sharded")).fit()
    run_dir = tmp_path / "run"
    sharded = ckpt.latest_checkpoint(run_dir)
    assert sharded.is_dir() and ckpt.checkpoint_step(sharded) == 2
    assert main(["consolidate", str(run_dir)]) == 0
    one = run_dir / "consolidated-00000002.pt"
    assert capsys.readouterr().out.strip() == str(one)
    file_state, dir_state = ckpt.read_file(one), ckpt.load_checkpoint(sharded)
    _assert_same_model(file_state, dir_state)
    assert sorted(file_state["optimizer"]["state"]) == list(range(len(file_state["optimizer"]["param_groups"][0]["params"]) +
                                                                  sum(len(g["params"]) for g in
                                                                      file_state["optimizer"]["param_groups"][1:])))
    # the consolidated file loads into a plain optimizer like one written by a one-process run
    trainer = Trainer(_recipe(tiny_recipe_dict, 2), run_dir=tmp_path / "fresh")
    trainer.optimizer.load_state_dict(file_state["optimizer"])
    assert main(["consolidate", str(sharded), "--out", str(one)]) == 2, "an existing output is not overwritten"
    assert main(["export", str(run_dir), "--out", str(tmp_path / "export")]) == 0
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "export").rglob("*"))
    assert main(["eval", str(sharded), "--no-baseline", "eval.protocols=[knn]"]) == 0
    assert "knn" in capsys.readouterr().out.lower()


def test_cli_resume_auto_and_finetune_init_from_a_sharded_run(tiny_recipe_dict, tmp_path, capsys):
    """``mmim train RECIPE --resume auto`` starts fresh, then resumes; fine-tuning's ``--init`` reads the
    sharded run directly."""
    import yaml

    from mmim.cli import main
    from mmim.config.recipe import recipe_from_dict
    from mmim.finetune.task import load_pretrained
    from mmim.model import build_model

    data = copy.deepcopy(tiny_recipe_dict)
    data["eval"]["after_train"] = False
    data["train"].update(checkpoint_format="sharded", threads=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path), "schedule.max_steps=2", "--resume", "auto"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert main(["train", str(path), "schedule.max_steps=3", "--resume", "auto"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out  # steps counted from 0: it resumed at 2
    run_dir = tmp_path / "run"
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [2, 3]
    with pytest.raises(SystemExit, match="--resume auto: give the recipe"):  # no recipe: no run directory
        main(["train", "--resume", "auto"])

    model = build_model(recipe_from_dict(data).model)
    load_pretrained(model, str(run_dir))
    saved = ckpt.load_checkpoint(run_dir)["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], atol=0, rtol=0, msg=key)


def test_another_process_count_needs_the_same_effective_batch(tiny_recipe_dict):
    """Without train.effective_batch_size the effective batch follows the process count; resuming on
    another count then stops before any work and says which value to set."""
    from mmim.engine.runtime import Runtime

    Trainer(_recipe(tiny_recipe_dict, 1)).fit()
    batch = tiny_recipe_dict["data"]["batch_size"]
    two = Runtime(torch.device("cpu"), "fp32", rank=0, world_size=2)
    with pytest.raises(ValueError, match=rf"effective batch of {batch} samples per step \(1 process\).*"
                                         rf"{2 * batch} \({batch} x 1 accumulation x 2 processes\).*"
                                         rf"train.effective_batch_size={batch}"):
        Trainer(_recipe(tiny_recipe_dict, 2), resume=True, runtime=two)

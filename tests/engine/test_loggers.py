"""Experiment trackers (``train.loggers``): TensorBoard, W&B (offline) and MLflow (local file store)
get what the loop logs and the probe results; a resumed run and ``mmim eval`` log into the same
tracker runs; a missing tracker package fails at recipe load. No network is used."""

from __future__ import annotations

import glob
import json
import logging
import struct
import sys
from pathlib import Path

import pytest
import yaml

from mmim.cli import main
from mmim.engine.metrics import read_metrics


def wandb_offline_records(run_dir: Path) -> dict[str, list]:
    """The history rows, summary updates and config of the offline W&B runs under ``run_dir/wandb``,
    merged in the order the runs started (W&B's transaction log: a 7-byte header, then 32 KiB blocks
    of length-prefixed protobuf records)."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    # W&B's service process writes the log after ``finish`` returns; its teardown waits for it
    wandb.teardown()
    runs = []
    for path in glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")):
        raw, pos, block, buf, records = Path(path).read_bytes(), 7, 32768, b"", []
        while pos + 7 <= len(raw):
            left = block - pos % block
            _crc, n, kind = struct.unpack("<IHB", raw[pos:pos + 7])
            if left < 7 or (n == 0 and kind == 0):
                pos += left
                continue
            buf, pos = buf + raw[pos + 7:pos + 7 + n], pos + 7 + n
            if kind in (1, 4):  # FULL or LAST: a record is complete
                record = pb.Record()
                record.ParseFromString(buf)
                records.append(record)
                buf = b""
        start = next((r.run.start_time.ToNanoseconds() for r in records if r.WhichOneof("record_type") == "run"), 0)
        runs.append((start, records))
    out: dict[str, list] = {"history": [], "summary": {}, "config": {}, "ids": [], "projects": []}
    for _, records in sorted(runs, key=lambda r: r[0]):
        for record in records:
            which = record.WhichOneof("record_type")
            if which == "history":
                row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                out["history"].append(row)
            elif which == "summary":
                out["summary"].update({"/".join(u.nested_key) or u.key: json.loads(u.value_json)
                                       for u in record.summary.update})
            elif which == "run":
                out["ids"].append(record.run.run_id)
                out["projects"].append(record.run.project)
                out["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif which == "config":
                out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
    return out


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted((run_dir / "tensorboard").glob("events.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


@pytest.fixture
def offline(monkeypatch):
    """No tracker setting from the environment: the defaults (W&B offline, MLflow file store) act."""
    for var in ("WANDB_MODE", "WANDB_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # W&B's own crash reports would go out


def test_trackers_get_training_metrics_probe_results_and_continue_on_resume(tiny_recipe_dict, tmp_path, capsys,
                                                                            offline):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    tiny_recipe_dict["train"].update(loggers=["tensorboard", "wandb", "mlflow"], project="mmim-test")
    tiny_recipe_dict["schedule"]["max_steps"] = 3
    tiny_recipe_dict["eval"]["linear_epochs"] = 2
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    run = Path(tiny_recipe_dict["train"]["out_dir"])
    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3]
    logged = {k for r in records for k, v in r.items() if isinstance(v, (int, float)) and k != "step"}
    # the loss and its parts (<stream>/<part>), lr, throughput and TFLOP/s (MFU where the device's peak is known)
    assert {"loss", "lr", "samples_per_s", "tflops_per_device", "skipped"} <= logged
    assert any(k.startswith("image/") for k in logged), logged
    results = json.loads((run / "eval.json").read_text())
    probes = {f"eval/{enc}/{p}": v for enc, res in results.items() for p, v in res.items()}
    assert set(probes) == {"eval/trained/linear", "eval/trained/knn", "eval/random_init/linear",
                           "eval/random_init/knn"}
    state = json.loads((run / "trackers.json").read_text())

    # TensorBoard: every logged key at every logging step, the probes at the last step
    tb = tensorboard_scalars(run)
    for r in records:
        for key in logged & set(r):
            assert tb[key][r["step"]] == pytest.approx(r[key], rel=1e-6), key
    for key, value in probes.items():
        assert tb[key][3] == pytest.approx(value, rel=1e-6)

    # MLflow: a local file store beside the run directory, experiment train.project, the recipe as parameters
    assert state["mlflow"]["tracking_uri"] == (run.parent / "mlruns").resolve().as_uri()
    client = MlflowClient(state["mlflow"]["tracking_uri"])
    mrun = client.get_run(state["mlflow"]["run_id"])
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == run.name
    assert client.get_experiment(mrun.info.experiment_id).name == "mmim-test"
    assert mrun.data.params["model.encoder.embed_dim"] == str(tiny_recipe_dict["model"]["encoder"]["embed_dim"])
    assert mrun.data.tags["mmim.recipe"] == tiny_recipe_dict["name"]
    for key in logged:
        history = {m.step: m.value for m in client.get_metric_history(mrun.info.run_id, key)}
        assert history == {r["step"]: pytest.approx(r[key]) for r in records if key in r}, key
    for key, value in probes.items():
        assert [(m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, key)] == [(3, pytest.approx(value))]

    # W&B: an offline run in the run directory with the recipe as config, history and probe summary
    wb = wandb_offline_records(run)
    assert set(wb["ids"]) == {state["wandb"]["id"]} and state["wandb"]["mode"] == "offline"
    assert set(wb["projects"]) == {"mmim-test"}  # train.project
    assert wb["config"]["model"]["encoder"]["embed_dim"] == tiny_recipe_dict["model"]["encoder"]["embed_dim"]
    rows = {row["_step"]: row for row in wb["history"]}
    for r in records:
        for key in logged & set(r):
            assert rows[r["step"]][key] == pytest.approx(r[key], rel=1e-6), key
    for key, value in probes.items():
        assert wb["summary"][key] == pytest.approx(value, rel=1e-6)

    # resumed: the same tracker runs go on; then `mmim eval` logs its probes there too
    assert main(["train", "--resume", str(run), "schedule.max_steps=5", "eval.after_train=false"]) == 0
    assert json.loads((run / "trackers.json").read_text()) == state
    assert [m.step for m in client.get_metric_history(mrun.info.run_id, "loss")] == [1, 2, 3, 4, 5]
    wb = wandb_offline_records(run)
    assert set(wb["ids"]) == {state["wandb"]["id"]} and {4, 5} <= {row["_step"] for row in wb["history"]}
    assert wb["config"]["schedule"]["max_steps"] == 5  # the config follows the resumed recipe
    (run / "eval.json").unlink()
    assert main(["eval", str(run), "--no-baseline", "eval.protocols=[knn]"]) == 0
    knn = json.loads((run / "eval.json").read_text())["trained"]["knn"]
    assert [(m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, "eval/trained/knn")][-1] == \
        (5, pytest.approx(knn))
    assert wandb_offline_records(run)["summary"]["eval/trained/knn"] == pytest.approx(knn, rel=1e-6)
    assert tensorboard_scalars(run)["eval/trained/knn"][5] == pytest.approx(knn, rel=1e-6)


def test_mlflow_uri_setting_is_used(tiny_recipe_dict, tmp_path, offline):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from mmim.config.recipe import recipe_from_dict
    from mmim.engine.trainer import Trainer

    store = (tmp_path / "elsewhere").as_uri()
    tiny_recipe_dict["train"].update(loggers=["mlflow"], mlflow_uri=store)
    tiny_recipe_dict["schedule"]["max_steps"] = 2
    Trainer(recipe_from_dict(tiny_recipe_dict)).fit()
    run = Path(tiny_recipe_dict["train"]["out_dir"])
    state = json.loads((run / "trackers.json").read_text())["mlflow"]
    assert state["tracking_uri"] == store and not (run.parent / "mlruns").exists()
    assert [m.step for m in MlflowClient(store).get_metric_history(state["run_id"], "loss")] == [1, 2]
    assert not (run / "tensorboard").exists()  # not in train.loggers


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_missing_tracker_fails_at_recipe_load_with_the_pip_line(tiny_recipe_dict, tmp_path, capsys, monkeypatch,
                                                                 tracker):
    import mmim.extras

    real = mmim.extras.module_available
    monkeypatch.setattr(mmim.extras, "module_available", lambda name: name != tracker and real(name))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    run = Path(tiny_recipe_dict["train"]["out_dir"])
    assert main(["train", str(path), f"train.loggers=[tensorboard,{tracker}]"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'pip install "mmim[{tracker}]"' in err[0] and f"train.loggers names {tracker}" in err[0]
    assert not run.exists()  # nothing written
    assert main(["finetune", str(path), f"train.loggers=[{tracker}]"]) != 0
    assert f'pip install "mmim[{tracker}]"' in capsys.readouterr().err


@pytest.mark.parametrize("switch,loggers,expect", [(False, ["tensorboard"], False), (True, [], True),
                                                   (None, ["tensorboard"], True), (None, [], False)])
def test_deprecated_tensorboard_switch_still_acts(tiny_recipe_dict, caplog, switch, loggers, expect):
    from mmim.config.recipe import recipe_from_dict
    from mmim.engine.trainer import Trainer

    tiny_recipe_dict["train"].update(loggers=loggers, tensorboard=switch)
    tiny_recipe_dict["schedule"]["max_steps"] = 1
    with caplog.at_level(logging.WARNING):
        Trainer(recipe_from_dict(tiny_recipe_dict)).fit()
    run = Path(tiny_recipe_dict["train"]["out_dir"])
    assert (run / "tensorboard").is_dir() == expect
    assert ("train.tensorboard is deprecated" in caplog.text) == (switch is not None)


def test_finetuning_logs_its_metrics_and_accuracy(tiny_recipe_dict, tmp_path, capsys, offline):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    tiny_recipe_dict["schedule"]["max_steps"] = 2
    tiny_recipe_dict["eval"]["after_train"] = False
    tiny_recipe_dict["finetune"] = {"epochs": 1, "batch_size": 16, "out_dir": str(tmp_path / "ft")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path)]) == 0
    assert main(["finetune", str(tmp_path / "run"), "finetune.max_steps=3", "train.loggers=[mlflow]"]) == 0
    capsys.readouterr()
    top1 = json.loads((tmp_path / "ft" / "finetune.json").read_text())["top1"]
    state = json.loads((tmp_path / "ft" / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(state["tracking_uri"])
    assert [m.step for m in client.get_metric_history(state["run_id"], "loss")] == [1, 2, 3]
    assert [(m.step, m.value) for m in client.get_metric_history(state["run_id"], "eval/finetune/top1")] == \
        [(3, pytest.approx(top1))]


def test_eval_without_a_tracker_package_still_evaluates(tiny_recipe_dict, tmp_path, capsys, caplog, monkeypatch):
    tiny_recipe_dict["schedule"]["max_steps"] = 2
    tiny_recipe_dict["eval"]["after_train"] = False
    tiny_recipe_dict["train"]["loggers"] = ["tensorboard"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path)]) == 0
    run = Path(tiny_recipe_dict["train"]["out_dir"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed on this machine
    with caplog.at_level(logging.WARNING):
        assert main(["eval", str(run), "--no-baseline", "eval.protocols=[knn]", "train.loggers=[tensorboard,wandb]"]) == 0
    knn = json.loads((run / "eval.json").read_text())["trained"]["knn"]
    assert 'not logged to wandb' in caplog.text and 'pip install "mmim[wandb]"' in caplog.text
    assert tensorboard_scalars(run)["eval/trained/knn"][2] == pytest.approx(knn, rel=1e-6)


def test_wandb_mode_setting_wins_over_the_environment(tiny_recipe_dict, offline, monkeypatch):
    pytest.importorskip("wandb")
    from mmim.config.recipe import recipe_from_dict
    from mmim.engine.trainer import Trainer

    monkeypatch.setenv("WANDB_MODE", "disabled")
    tiny_recipe_dict["train"]["loggers"] = ["wandb"]
    tiny_recipe_dict["schedule"]["max_steps"] = 1
    run = Path(tiny_recipe_dict["train"]["out_dir"])
    Trainer(recipe_from_dict(tiny_recipe_dict)).fit()  # no train.wandb_mode: $WANDB_MODE decides
    assert json.loads((run / "trackers.json").read_text())["wandb"]["mode"] == "disabled"
    assert not wandb_offline_records(run)["history"]
    tiny_recipe_dict["train"].update(wandb_mode="offline", out_dir=str(run) + "_b")
    Trainer(recipe_from_dict(tiny_recipe_dict)).fit()
    run_b = Path(str(run) + "_b")
    assert json.loads((run_b / "trackers.json").read_text())["wandb"]["mode"] == "offline"
    assert [row["_step"] for row in wandb_offline_records(run_b)["history"]] == [1]


def test_a_tracker_that_cannot_start_stops_the_run_with_its_reason(tiny_recipe_dict, tmp_path, capsys, monkeypatch):
    from mmim.engine import loggers

    class Refusing:
        name = "wandb"

        def __init__(self, *args):
            raise PermissionError("api key not configured")

    monkeypatch.setitem(loggers.TRACKERS, "wandb", Refusing)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path), "train.loggers=[wandb]", "schedule.max_steps=1"]) == 1
    err = capsys.readouterr().err
    assert "train.loggers: wandb did not start: PermissionError: api key not configured" in err
    assert not list(Path(tiny_recipe_dict["train"]["out_dir"]).glob("ckpt-*"))  # it stopped before training

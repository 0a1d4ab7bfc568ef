"""``--report-to tensorboard,mlflow,wandb`` (loralab.training.tracking, through accelerate's
trackers): what each tracker receives and where it writes. Everything written into the run
directory is there when the run is (no hidden staging folder is left beside it); MLflow's
experiment follows one naming rule, says where it writes when ``MLFLOW_TRACKING_URI`` is unset, tags
study runs and search trials, ends a pruned trial KILLED and an interrupted run FAILED, and a
``--resume``d run continues its MLflow run; W&B works offline inside the run directory."""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path

import pytest
import yaml

import loralab
from conftest import tiny_run_config
from loralab.cli import main as cli_main
from loralab.training import tracking


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    """A ``file:`` MLflow store in ``tmp_path``, no experiment name from the environment, no study."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store in maintenance mode
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS", *tracking.STUDY_TAGS):
        monkeypatch.delenv(name, raising=False)
    return MlflowClient(tracking_uri=uri)


def hidden_beside(run_dir) -> list[str]:
    """Hidden entries beside a run directory (staging ``.partial`` folders, checkpoints, trash)."""
    return sorted(p.name for p in run_dir.parent.iterdir() if p.name.startswith("."))


def only_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    (run,) = client.search_runs([exp.experiment_id])
    return run


def test_tensorboard_and_mlflow_receive_the_run(tiny_models, tiny_data, tmp_path, monkeypatch, mlflow_store):
    pytest.importorskip("tensorboard")
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("LORALAB_STUDY", "demo")
    monkeypatch.setenv("LORALAB_CELL", "lora-r4")
    monkeypatch.setenv("LORALAB_SEED", "1")
    out = tmp_path / "tracked"
    cfg = tiny_run_config(tiny_models["bert"], tiny_data, out, epochs=2, report_to=["tensorboard", "mlflow"])
    result = loralab.train(cfg)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "validation/accuracy"} <= set(scalars)
    assert len(events.Scalars("validation/accuracy")) == 2
    assert events.Scalars("validation/accuracy")[-1].value == pytest.approx(
        [r for r in loralab.load_run(out).metrics() if r["kind"] == "epoch"][-1]["val_accuracy"]
    )
    client = mlflow_store
    run = only_run(client, "demo")  # a study run: the study's experiment
    assert run.data.tags["cell"] == "lora-r4" and run.data.tags["seed"] == "1"
    assert run.data.tags["study"] == "demo" and run.data.tags["loralab.run"] == "tracked"
    assert run.data.params["rank"] == "4" and run.data.params["method"] == "lora"
    assert run.data.metrics["final_test_accuracy"] == pytest.approx(result.results["test"]["accuracy"])
    assert len(client.get_metric_history(run.info.run_id, "validation_accuracy")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert "run/results.json" in artifacts and "run/tensorboard" in artifacts
    assert run.info.status == "FINISHED"
    assert mlflow.active_run() is None
    assert hidden_beside(out) == []


def test_tensorboard_final_metrics_and_hparams_are_inside_the_finished_run(tiny_models, tiny_data, tmp_path):
    """The hparams with the final metrics are written before the staging folder is renamed: inside
    the run directory, and no staging folder is left for a study to report as 'left by killed runs'."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from loralab.experiments.folder import StudyFolder

    study = StudyFolder(tmp_path / "study")
    out = study.run_dir("cell-a-s1")
    result = loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, out, report_to=["tensorboard"]))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    hparams = EventAccumulator(str(out / "tensorboard" / "hparams"))
    hparams.Reload()
    content = hparams.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["rank"].number_value == 4 and start.hparams["method"].string_value == "lora"
    final = hparams.Scalars("final/validation_accuracy")
    assert final[-1].value == pytest.approx(result.results["validation"]["accuracy"])
    assert hparams.Scalars("final/trainable_params")[-1].value == result.results["params"]["trainable"]
    assert hidden_beside(out) == [] and study.staging_of() == [] and study.sweep_stale_staging() == 0
    assert not list(tmp_path.rglob("*.partial"))


def test_the_experiment_naming_rule(monkeypatch):
    for name in ("MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT", *tracking.STUDY_TAGS):
        monkeypatch.delenv(name, raising=False)
    assert tracking.experiment_name(tracking.study_tags()) == "loralab"
    with tracking.run_tags(search="lora-minilm", trial=7):
        assert tracking.study_tags() == {"search": "lora-minilm", "trial": "7"}
        assert tracking.experiment_name(tracking.study_tags()) == "lora-minilm"
        monkeypatch.setenv("LORALAB_STUDY", "ranks")
        assert tracking.experiment_name(tracking.study_tags()) == "ranks"
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
        assert tracking.experiment_name(tracking.study_tags()) == "mine"
        assert tracking.experiment_name(tracking.study_tags(), "WANDB_PROJECT") == "ranks"
    assert tracking.study_tags() == {"study": "ranks"}  # the trial's tags end with its block


def test_a_plain_run_goes_to_the_loralab_experiment(tiny_models, tiny_data, tmp_path, mlflow_store):
    out = tmp_path / "plain"
    result = loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, out, report_to=["mlflow"]))
    run = only_run(mlflow_store, "loralab")
    assert run.info.status == "FINISHED" and run.info.run_name == "plain"
    assert run.data.params["rank"] == "4" and run.data.params["lr"] == str(result.config.lr)
    assert run.data.metrics["final_validation_accuracy"] == pytest.approx(result.results["validation"]["accuracy"])
    assert {"study", "cell", "seed", "search", "trial"}.isdisjoint(run.data.tags)
    assert len(mlflow_store.get_metric_history(run.info.run_id, "train_loss")) >= 2
    assert hidden_beside(out) == []


def test_a_pruned_trial_is_tagged_with_its_search_and_not_finished(tiny_models, tiny_data, tmp_path, mlflow_store):
    pytest.importorskip("optuna")
    from loralab.experiments.search import load_spec
    from loralab.tune.objective import train_trial, trial_dir

    base = {
        "model": str(tiny_models["bert"]),
        "data_dir": str(tiny_data),
        "epochs": 2,
        "batch_size": 8,
        "eval_batch_size": 16,
        "max_length": 48,
        "rank": 4,
        "device": "cpu",
        "report_to": ["mlflow"],
    }
    path = tmp_path / "s.yaml"
    search = {"name": "tracked-search", "base": base, "space": {"lr": [1e-3, 1e-4]}, "pruner": {"type": "median"}}
    path.write_text(yaml.safe_dump(search), encoding="utf-8")
    spec = load_spec(path)
    outcome = train_trial(spec, {"lr": 1e-3}, 3, trial_dir(tmp_path / "out", 3), lambda value, epoch: True)
    assert outcome.pruned and outcome.epochs == 1
    run = only_run(mlflow_store, "tracked-search")  # a search trial: the search's experiment
    assert run.data.tags["search"] == "tracked-search" and run.data.tags["trial"] == "3"
    assert run.info.status == "KILLED"
    assert run.data.tags["loralab.stopped"].startswith("pruned by the median pruner after epoch 1")
    assert "final_validation_accuracy" in run.data.metrics  # its run directory is written all the same
    assert hidden_beside(outcome.run_dir) == []


def test_an_interrupted_run_is_failed_and_resume_continues_its_mlflow_run(
    tiny_models, tiny_data, tmp_path, mlflow_store
):
    out = tmp_path / "r"
    cfg = tiny_run_config(tiny_models["bert"], tiny_data, out, epochs=2, report_to=["mlflow"])

    def interrupt(row):
        if row["epoch"] == 2:  # after epoch 1's checkpoint, with epoch 2 already sent to MLflow
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loralab.train(cfg, on_epoch=interrupt)
    first = only_run(mlflow_store, "loralab")
    assert first.info.status == "FAILED"
    state = json.loads((tmp_path / ".r.checkpoint" / tracking.STATE_FILE).read_text())
    assert state["mlflow"]["run_id"] == first.info.run_id
    assert not out.exists()

    result = loralab.train(cfg.override({"resume": True}))
    run = only_run(mlflow_store, "loralab")  # the same run, continued: not a second one
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    history = mlflow_store.get_metric_history(run.info.run_id, "validation_accuracy")
    assert sorted(m.step for m in history) == sorted({m.step for m in history}) and len(history) == 2
    epochs = [r for r in loralab.load_run(out).metrics() if r["kind"] == "epoch"]
    assert result.results["epochs"] == 2 and history[-1].value == pytest.approx(epochs[-1]["val_accuracy"])
    assert run.data.params["resume"] == "False"  # parameters are write-once: the first attempt's stay
    assert hidden_beside(out) == []  # the checkpoint folder (and the state file in it) is gone


def test_mlflow_says_where_it_writes_when_no_tracking_uri_is_set(tmp_path, monkeypatch, caplog):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow's default store is in the current folder: not the checkout
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", *tracking.STUDY_TAGS):
        monkeypatch.delenv(name, raising=False)
    staging = tmp_path / "run"
    staging.mkdir()
    with caplog.at_level(logging.INFO, logger="loralab.training.tracking"):
        trackers = tracking.Trackers(["mlflow"], "run", staging, {"rank": 4})
    try:
        lines = [r.getMessage() for r in caplog.records if "MLFLOW_TRACKING_URI is not set" in r.getMessage()]
        assert len(lines) == 1
        assert str(tmp_path / "mlflow.db") in lines[0] and str(tmp_path / "mlruns") in lines[0]
        assert "set MLFLOW_TRACKING_URI" in lines[0]
        assert (tmp_path / "mlflow.db").is_file()  # where it said
    finally:
        trackers.abort()
    assert mlflow.active_run() is None


def wandb_records(path):
    """The records of an offline W&B run file (a LevelDB-style log of protobuf ``Record``s)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_writes_inside_the_run_directory(tiny_models, tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    for name in ("WANDB_PROJECT", "WANDB_DIR", *tracking.STUDY_TAGS):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "runs" / "wb"
    result = loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, out, epochs=2, report_to=["wandb"]))
    (offline,) = (out / "wandb").glob("offline-run-*")
    (run_file,) = offline.glob("run-*.wandb")
    records = list(wandb_records(run_file))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "loralab" and run.display_name == "wb" and "loralab.run=wb" in run.tags
    logged = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                logged.setdefault("/".join(item.nested_key) or item.key, []).append(json.loads(item.value_json))
    assert {"train/loss", "train/lr", "validation/accuracy"} <= set(logged)
    epochs = [r for r in loralab.load_run(out).metrics() if r["kind"] == "epoch"]
    assert logged["validation/accuracy"] == pytest.approx([r["val_accuracy"] for r in epochs])
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    assert summary["final/validation_accuracy"] == pytest.approx(result.results["validation"]["accuracy"])
    config = {}  # the run record's config, then store_init_configuration's updates
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            config.update(
                {u.key: json.loads(u.value_json) for u in (r.run.config if kind == "run" else r.config).update}
            )
    assert config["rank"] == 4
    assert any(r.WhichOneof("record_type") == "exit" for r in records)  # finished, before the rename
    assert hidden_beside(out) == []
    links = [Path(d) / n for d, dirs, files in os.walk(out) for n in (*dirs, *files) if (Path(d) / n).is_symlink()]
    for link in links:  # W&B's links stay inside the run (a Ray task's run is landed with tar's data filter)
        assert out.resolve() in link.resolve().parents, link


def test_a_missing_tracker_library_is_one_line(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    assert cli_main(["train", "--report-to", "mlflow"]) == 2
    assert capsys.readouterr().err.strip() == (
        "loralab: error: --report-to mlflow needs the mlflow package: pip install 'loralab[track]'"
    )


def test_an_unknown_tracker_is_one_line(capsys):
    assert cli_main(["train", "--report-to", "comet"]) == 2
    assert capsys.readouterr().err.strip() == (
        "loralab: error: --report-to: unknown tracker 'comet' (choose from tensorboard, mlflow, wandb)"
    )

"""``loralab tune`` on a tiny model: the search finds a planted better learning rate, pruning stops
a trial early (pruned, its weights' epoch stated) while early stopping completes one, several workers share one SQLite storage for exactly N trials, a killed worker's
trial is failed and the search continues, trials never see the test split, and the report."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port, write_glue_dir

optuna = pytest.importorskip("optuna", reason="needs the tune extra: pip install 'loralab[tune]'")

GOOD_LR, BAD_LR = 5e-3, 1e-6  # full fine-tuning of the tiny BERT: learns within 4 epochs / stays at 50 %


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_glue_dir(tmp_path_factory.mktemp("tune-data"), 160, 64, 32)


def write_search(tmp_path: Path, model: Path, data: Path, name: str = "s", **top) -> Path:
    base = {
        "model": str(model),
        "data_dir": str(data),
        "method": "full",
        "epochs": 4,
        "batch_size": 8,
        "eval_batch_size": 32,
        "max_length": 48,
        "warmup_ratio": 0.0,
        "device": "cpu",
        "log_every": 100,
        # fp32 everywhere: where the median pruner stops follows the tiny model's exact trajectory,
        # which bf16 (what `auto` is on a CPU with native bf16) moves
        "precision": "fp32",
    }
    base.update(top.pop("base", {}))
    values = {"name": name, "base": base, "space": {"lr": [GOOD_LR, BAD_LR]}, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def load(path: Path, out: Path):
    from loralab.tune.report import open_search

    return open_search(out)[2]


def tune_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "loralab", "-q", "tune", *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def finished(study) -> list:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def test_search_finds_the_better_learning_rate_and_never_sees_test(tmp_path, tiny_models, data):
    from loralab.experiments.search import load_spec
    from loralab.tune.runner import run_worker

    spec = load_spec(write_search(tmp_path, tiny_models["bert"], data, sampler={"type": "grid", "seed": 0}))
    out = tmp_path / "out"
    run_worker(spec, out, echo=lambda s: None)
    study = load(spec, out)
    trials = finished(study)
    assert sorted(t.params["lr"] for t in trials) == sorted([GOOD_LR, BAD_LR])
    assert study.best_trial.params["lr"] == GOOD_LR
    by_lr = {t.params["lr"]: t for t in trials}
    assert by_lr[GOOD_LR].value > by_lr[BAD_LR].value
    for t in trials:  # each trial is an ordinary run directory, scored on validation only
        run = Path(t.user_attrs["run_dir"])
        results = json.loads((run / "results.json").read_text())
        assert t.value == results["validation"]["accuracy"]
        assert results["test"] is None and not (run / "predictions_test.csv").exists()
        assert "test" not in json.loads((run / "config.json").read_text())["data_files"]
    assert (data / "test.tsv").is_file()  # the test split was there to be found


def test_pruning_stops_a_bad_trial_early(tmp_path, tiny_models, data):
    from loralab.experiments.search import load_spec
    from loralab.tune.runner import run_worker
    from loralab.tune.storage import open_storage, open_study

    pruner = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 2}
    spec = load_spec(write_search(tmp_path, tiny_models["bert"], data, pruner=pruner))
    out = tmp_path / "out"
    study = open_study(spec, open_storage(f"sqlite:///{out}.db"))
    study.enqueue_trial({"lr": GOOD_LR})  # the good trial first: the median to beat
    study.enqueue_trial({"lr": BAD_LR})
    run_worker(spec, out, storage=f"sqlite:///{out}.db", trials=2, echo=lambda s: None)
    good, bad = study.get_trials(deepcopy=False)
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert bad.state == optuna.trial.TrialState.PRUNED
    results = json.loads((Path(bad.user_attrs["run_dir"]) / "results.json").read_text())
    assert results["epochs"] == 2  # stopped after epoch 2 of 4
    assert results["stopped"]["epoch"] == 2 and "pruned by the median pruner" in results["stopped"]["reason"]
    assert results["weights_epoch"] == 2  # the pruned trial keeps the weights of the epoch it stopped after
    good_results = json.loads((Path(good.user_attrs["run_dir"]) / "results.json").read_text())
    assert good_results["epochs"] == 4 and good_results["weights_epoch"] == good_results["best_epoch"]


def test_early_stopping_completes_a_trial_with_its_best_value(tmp_path, tiny_models, data):
    """``patience`` ending a trial is not pruning: the trial is complete, with the value of its
    restored best epoch, so it counts for the best trial and the sampler's history."""
    from loralab.experiments.search import load_spec
    from loralab.tune.runner import run_worker

    still = 1e-9  # learns nothing: no epoch beats the first, and patience 1 stops after epoch 2
    spec = load_spec(
        write_search(tmp_path, tiny_models["bert"], data, base={"patience": 1}, space={"lr": [still]}, sampler="grid")
    )
    out = tmp_path / "out"
    lines: list[str] = []
    run_worker(spec, out, trials=1, echo=lines.append)
    (trial,) = load(spec, out).get_trials(deepcopy=False)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    results = json.loads((Path(trial.user_attrs["run_dir"]) / "results.json").read_text())
    assert results["epochs"] == 2 and "early stopping" in results["stopped"]["reason"]
    assert results["best_epoch"] == results["weights_epoch"] == 1
    assert trial.value == results["validation"]["accuracy"] and trial.user_attrs["stopped"].startswith("early")
    assert any(line.startswith("trial 0 done (stopped early):") for line in lines)


def check_two_workers(tmp_path: Path, model: Path, data: Path, storage: str | None) -> None:
    """``--jobs 2``: two worker processes share the storage and finish exactly n trials between them."""
    n = 5
    search = write_search(
        tmp_path, model, data, base={"epochs": 1}, space={"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}
    )
    out = tmp_path / "out"
    extra = ["--storage", storage] if storage else []
    run_search(search, out, "--trials", str(n), "--jobs", "2", "--threads", "1", *extra)
    from loralab.tune.report import open_search

    study = open_search(out, storage)[2]
    done = finished(study)
    assert len(done) == n
    run_dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(run_dirs)) == n and all((Path(d) / "results.json").is_file() for d in run_dirs)
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(Path(d).name for d in run_dirs)
    assert len({t.user_attrs["pid"] for t in study.get_trials(deepcopy=False)}) == 2  # both workers took trials


def test_two_workers_share_one_sqlite_file_for_exactly_n_trials(tmp_path, tiny_models, data):
    check_two_workers(tmp_path, tiny_models["bert"], data, None)
    assert (tmp_path / "out" / "tune.db").is_file()


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return dirs[-1].parent if dirs else None


@pytest.fixture
def postgres_url(tmp_path_factory):
    """A throw-away PostgreSQL server on 127.0.0.1 in a temp folder (initdb + pg_ctl)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not installed: scripts/ci-system-deps.sh installs them"
        )
    pytest.importorskip("psycopg2", reason="needs psycopg2 (pip install 'loralab[tune]')")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="loralab-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    pgdata = root / "data"
    quiet = {"capture_output": True, "text": True, "timeout": 120}
    r = subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(pgdata), "-U", "loralab", "--auth=trust", "-E", "UTF8", "-N"],
        **quiet,
    )
    assert r.returncode == 0, r.stderr
    opts = f"-k {root} -p {port} -c listen_addresses=127.0.0.1"
    r = subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(root / "log"), "-w", "start"],
        **quiet,
    )
    assert r.returncode == 0, r.stderr + (root / "log").read_text()
    try:
        yield f"postgresql://loralab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"], **quiet)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_server_for_exactly_n_trials(tmp_path, tiny_models, data, postgres_url):
    check_two_workers(tmp_path, tiny_models["bert"], data, postgres_url)
    assert not (tmp_path / "out" / "tune.db").exists()
    assert json.loads((tmp_path / "out" / "tune.json").read_text())["storage"] == postgres_url


def test_killed_worker_restarted_continues_the_search(tmp_path, tiny_models, data):
    search = write_search(
        tmp_path,
        tiny_models["bert"],
        data,
        base={"epochs": 3},
        space={"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        tune_cmd(str(search), "--out", str(out), "--trials", "2"),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the first trial is training
            staging = list((out / "trials").glob(".trial-0000.*")) if (out / "trials").is_dir() else []
            if staging and (staging[0] / "config.json").is_file():
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first trial never started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    r = subprocess.run(
        tune_cmd(str(search), "--out", str(out), "--trials", "2"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed 1 trial(s) of killed workers: [0]" in r.stdout
    study = load(search, out)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[0] == optuna.trial.TrialState.FAIL  # interrupted: not counted as a result
    assert [t.number for t in finished(study)] == [1, 2]
    assert not list((out / "trials").glob(".*"))  # the killed attempt's staging folder is gone


def run_search(search: Path, out: Path, *args: str) -> None:
    r = subprocess.run(
        tune_cmd(str(search), "--out", str(out), *args), capture_output=True, text=True, env=env(), timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_report(tmp_path, tiny_models, data):
    from loralab.experiments.search import load_spec
    from loralab.tune.runner import run_worker

    search = write_search(tmp_path, tiny_models["bert"], data, sampler="grid", base={"epochs": 2})
    out = tmp_path / "out"
    run_worker(load_spec(search), out, echo=lambda s: None)
    r = subprocess.run(tune_cmd("report", str(out)), capture_output=True, text=True, env=env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (out / "report.md").read_text()
    best = load(search, out).best_trial
    assert f"Trial {best.number}: validation accuracy **{best.value:.4f}**" in md
    assert f"`--lr {best.params['lr']!r}`" in md or f"--lr {best.params['lr']!r}" in md
    assert "## All trials" in md and md.count("| complete |") == 2
    for name in ("history.png", "slice.png"):
        assert (out / "plots" / name).is_file() and f"(plots/{name})" in md
    assert "<img" in (out / "report.html").read_text()
    assert not (out / "final").exists()


@pytest.mark.slow
def test_report_final_seeds(tmp_path, tiny_models, data):
    search = write_search(
        tmp_path, tiny_models["bert"], data, sampler="grid", base={"epochs": 2}, final={"train_size": 100}
    )
    out = tmp_path / "out"
    run_search(search, out)
    r = subprocess.run(
        tune_cmd("report", str(out), "--final-seeds", "2", "--threads", "1"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    md = (out / "report.md").read_text()
    best = load(search, out).best_trial
    finals = sorted(p for p in (out / "final" / "runs").iterdir() if not p.name.startswith("."))
    assert len(finals) == 2
    results = [json.loads((p / "results.json").read_text()) for p in finals]
    assert all(x["test"] is not None and x["data"]["train_examples"] == 100 for x in results)  # final: test scored
    assert {x["lr"] for x in results} == {best.params["lr"]}
    assert "Best setting retrained with 2 seeds" in md and "| test | 2 |" in md


@pytest.mark.ray
def test_search_on_a_ray_cluster_prunes_lands_trials_and_continues(ray_cluster, tmp_path, tiny_models, data):
    """``--executor ray``: trials run as Ray tasks, the pruner on the driver stops the bad one, run
    directories land in the search folder, and a second command continues the same search."""
    from loralab.experiments.search import load_spec
    from loralab.tune.storage import open_storage, open_study

    pruner = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 2}
    search = write_search(tmp_path, tiny_models["bert"], data, pruner=pruner)
    out = tmp_path / "out"
    url = f"sqlite:///{tmp_path}/ray.db"
    study = open_study(load_spec(search), open_storage(url))
    study.enqueue_trial({"lr": GOOD_LR})  # the good trial first: the median to beat
    study.enqueue_trial({"lr": BAD_LR})
    ray_env = {**env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    cmd = tune_cmd(
        str(search),
        "--out",
        str(out),
        "--storage",
        url,
        "--executor",
        "ray",
        "--address",
        ray_cluster,
        "--threads",
        "1",
    )
    r = subprocess.run([*cmd, "--trials", "2", "--jobs", "1"], env=ray_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    good, bad = study.get_trials(deepcopy=False)
    assert good.state == optuna.trial.TrialState.COMPLETE and bad.state == optuna.trial.TrialState.PRUNED
    assert good.user_attrs["node"] and good.user_attrs["seconds"] > 0
    results = json.loads((Path(bad.user_attrs["run_dir"]) / "results.json").read_text())
    assert results["epochs"] == 2 and "pruned by the median pruner" in results["stopped"]["reason"]
    good_results = json.loads((Path(good.user_attrs["run_dir"]) / "results.json").read_text())
    assert good_results["epochs"] == 4 and good.value == good_results["validation"]["accuracy"]
    assert good_results["test"] is None  # a trial never sees the test split, on Ray too
    again = subprocess.run(
        [*cmd, "--trials", "4", "--jobs", "2"], env=ray_env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout + again.stderr
    done = finished(study)
    assert len(done) == 4 and len({t.user_attrs["run_dir"] for t in done}) == 4
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(
        Path(t.user_attrs["run_dir"]).name for t in done
    ), "no staging left"

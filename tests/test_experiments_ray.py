"""The Ray loop that studies and searches share (loralab.experiments.ray): resources checked against
the largest node, a task that dies is one failure, Ctrl-C cancels what is in flight, a broken archive
lands nothing; then, on a real local Ray cluster (loopback), a run or a trial whose archive cannot
be landed is recorded as failed while the others land."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from loralab.experiments.folder import StudyError, StudyFolder
from loralab.experiments.ray import (
    LandingError,
    land_archive,
    largest_node,
    pack_dir,
    run_tasks,
    task_gpus,
)


class FakeRay:
    """Just what run_tasks calls: tasks are (ref -> result or exception), finishing in order."""

    def __init__(self, outcomes: dict):
        self.outcomes, self.cancelled = outcomes, []

    def wait(self, refs, num_returns=1):
        return [refs[0]], refs[1:]

    def get(self, ref):
        out = self.outcomes[ref]
        if isinstance(out, BaseException):
            raise out
        return out

    def cancel(self, ref, force=False):
        self.cancelled.append(ref)

    def nodes(self):
        return [
            {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
            {"Alive": True, "Resources": {"CPU": 8.0}},
            {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
        ]


def test_resources_are_checked_against_the_largest_live_node_not_the_cluster_total():
    node = largest_node(FakeRay({}))
    assert node == {"CPU": 8.0, "GPU": 1.0}  # the dead node's 64 CPUs do not count
    assert task_gpus(node, threads=8, gpus_per_run=None) == 1
    with pytest.raises(StudyError, match=r"--threads 12: no node .*the largest has 8"):
        task_gpus(node, threads=12, gpus_per_run=None)  # the cluster has 12 CPUs in all, no node has
    with pytest.raises(StudyError, match=r"--gpus-per-run 2: no node .*the largest has 1"):
        task_gpus(node, threads=1, gpus_per_run=2)


def test_a_task_that_dies_is_one_failure_and_the_loop_goes_on():
    ray = FakeRay({"a": {"ok": 1}, "b": RuntimeError("node lost"), "c": {"ok": 3}})
    queue, seen = ["a", "b", "c"], []
    run_tasks(ray, lambda: (queue[0], queue.pop(0)) if queue else None, lambda ctx, r, n: seen.append((ctx, r)))
    assert seen[0] == ("a", {"ok": 1}) and seen[2] == ("c", {"ok": 3})
    assert seen[1][0] == "b" and seen[1][1] == {"error": "ray task failed: RuntimeError: node lost"}


def test_at_most_max_in_flight_tasks_run_and_an_interrupt_cancels_the_rest():
    ray = FakeRay({k: {"k": k} for k in "abcd"})
    queue, in_flight, aborted = list("abcd"), [], []

    def submit():
        if not queue:
            return None
        in_flight.append(queue[0])
        return queue[0], queue.pop(0)

    def done(ctx, result, running):
        assert running <= 1  # max_in_flight=2: one still running when one ends
        if ctx == "b":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tasks(ray, submit, done, max_in_flight=2, on_abort=aborted.append)
    assert in_flight == ["a", "b", "c"] and ray.cancelled == ["c"] and aborted == ["c"]


def test_a_truncated_archive_is_a_landing_error_and_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    payload = json.dumps({"values": list(range(5000))})
    (src / "results.json").write_text(payload)
    archive = pack_dir(src)
    land_archive(tmp_path / "good", archive)
    assert (tmp_path / "good" / "results.json").read_text() == payload
    with pytest.raises(LandingError, match="could not be landed"):
        land_archive(tmp_path / "bad", archive[: len(archive) // 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "src"], "no staging folder left"


def test_an_archive_with_a_path_outside_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"escape"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(LandingError):
        land_archive(tmp_path / "run", buf.getvalue())
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "run").exists()


def truncate_first(monkeypatch, module) -> list[Path]:
    """Make the driver's first landing receive half an archive (as a truncated transfer would)."""
    real, calls = module.land_archive, []

    def land(path, archive):
        calls.append(Path(path))
        return real(path, archive[: len(archive) // 2] if len(calls) == 1 else archive)

    monkeypatch.setattr(module, "land_archive", land)
    return calls


@pytest.mark.ray
def test_a_study_run_that_cannot_land_is_recorded_as_failed(ray_cluster, tiny_models, tiny_data, tmp_path, monkeypatch):
    import loralab.study.ray_executor as executor
    from loralab.study.plan import make_plan
    from loralab.study.spec import load_spec
    from test_study_executors import write_study

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    calls = truncate_first(monkeypatch, executor)
    plan = make_plan(load_spec(write_study(tmp_path, tiny_models["bert"], tiny_data)), tmp_path / "out")
    outcome = executor.run_study_on_ray(plan, address=ray_cluster, threads=1, echo=lambda s: None)
    assert len(calls) == 2 and len(outcome.trained) == 1 and len(outcome.failed) == 1
    ((failed_id, failure),) = outcome.failed.items()
    assert "could not be landed" in failure["error"] and failure["returncode"] == -1
    folder = StudyFolder(plan.root)
    assert not folder.is_complete(failed_id) and folder.is_complete(outcome.trained[0])
    assert json.loads((plan.root / "failures.json").read_text())[failed_id]["error"] == failure["error"]
    assert sorted(p.name for p in folder.runs_dir.iterdir()) == outcome.trained, "no staging left"


@pytest.mark.ray
def test_a_trial_that_cannot_land_is_failed_not_left_running(ray_cluster, tiny_models, tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    import loralab.tune.ray_executor as executor
    from conftest import write_glue_dir
    from loralab.experiments.search import load_spec
    from loralab.tune.storage import default_url

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "data").mkdir()
    data = write_glue_dir(tmp_path / "data", 64, 32, 16)
    search = tmp_path / "s.yaml"
    search.write_text(
        f"name: landing\nbase: {{model: {tiny_models['bert']}, data_dir: {data}, method: full, epochs: 1, "
        "batch_size: 16, max_length: 32, device: cpu}\n"
        "space: {lr: {type: loguniform, low: 0.001, high: 0.01}}\nsampler: random\ntrials: 2\n"
    )
    calls = truncate_first(monkeypatch, executor)
    out = tmp_path / "out"
    outcome = executor.run_search_on_ray(
        load_spec(search), out, trials=2, threads=1, jobs=1, address=ray_cluster, echo=lambda s: None
    )
    # the failed trial does not count against the budget of 2: a third one runs
    assert len(calls) == 3 and len(outcome.failed) == 1
    storage = default_url(out)
    trials = optuna.load_study(study_name="landing", storage=storage).get_trials(deepcopy=False)
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"], states
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert "could not be landed" in failed.user_attrs["error"]

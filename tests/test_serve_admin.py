"""The admin surface of a multi-adapter server, over real HTTP (uvicorn on 127.0.0.1): the admin
token, concurrent adds and removes (the registry's rules hold under races), the cap, a run
served twice, symbolic links out of the adapter root, what GET /adapters and /health show, the
limit on "adapters": "all", and removing the default adapter."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402 (fastapi's TestClient needs it too)

from conftest import tiny_run_config  # noqa: E402
from loralab import ConfigError, train
from loralab.cli import main
from loralab.inference import adapters as adapters_module
from loralab.inference.adapters import AdapterError
from loralab.serving.server import ServeLimits, create_app, load_adapters, serve_in_thread
from loralab.serving.server import admin_token as cli_admin_token

TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
NAMES = ("a", "b", "c")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("admin")


@pytest.fixture(scope="module")
def runs(tiny_models, tiny_data, root) -> dict[str, Path]:
    return {
        name: train(
            tiny_run_config(tiny_models["bert"], tiny_data, root / "runs" / name, seed=k, lr=0.02), command=[]
        ).run_dir
        for k, name in enumerate(NAMES)
    }


def served(runs, names=("a", "b"), **kwargs):
    return load_adapters([runs[n] for n in names], device="cpu", **kwargs)[0]


def server(model, root, token=TOKEN, **kwargs):
    """A real server on loopback; adding is allowed from ``root/runs``."""
    return serve_in_thread(create_app(model, adapter_roots=[root / "runs"], admin_token=token, **kwargs))


def installed_uids(model) -> set[int]:
    """The adapter uids held by the model's LoRA layers and heads: exactly the served ones, no orphan."""
    from loralab.inference.multilora import MultiHead, MultiLoRALinear

    uids = set()
    for module in model.model.modules():
        if isinstance(module, MultiLoRALinear):
            uids |= set(module.updates)
        elif isinstance(module, MultiHead):
            uids |= set(module.heads)
    return uids


def assert_consistent(http, model, names: list[str]) -> None:
    """The registry, the model, GET /adapters, /health and /predict agree on what is served."""
    assert model.names == names
    assert installed_uids(model) == {a.uid for a in model.adapters.values()}
    assert [a["name"] for a in http.get("/adapters").json()["adapters"]] == names
    health = http.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["adapters"] == names and health.json()["adapter_count"] == len(names)
    assert health.json()["name"].startswith(f"{len(names)} adapters over ")
    r = http.post("/predict", json={"texts": ["a good film"]})
    assert r.status_code == 200 and r.json()["adapter"] == health.json()["default_adapter"] in names
    r = http.post("/predict", json={"texts": ["a good film"], "adapters": "all"})
    assert r.status_code == 200 and r.json()["adapters"] == names


def concurrently(*calls):
    """Run each call in its own thread, all at once; their results, in order."""
    results: list = [None] * len(calls)

    def run(i):
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return results


# ---------------------------------------------------------------------------------------------
# Races: the registry decides, under its lock
# ---------------------------------------------------------------------------------------------


def test_two_concurrent_deletes_never_remove_the_last_adapter(runs, root):
    model = served(runs)
    original, barrier = model.remove, threading.Barrier(2)

    def slow_remove(*args, **kwargs):  # both requests are inside remove at once: any check done before it races
        barrier.wait(10)
        return original(*args, **kwargs)

    model.remove = slow_remove
    with server(model, root) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
        first, second = concurrently(
            lambda: httpx.delete(f"{url}/adapters/b", headers=ADMIN),
            lambda: httpx.delete(f"{url}/adapters/a", params={"new_default": "b"}, headers=ADMIN),
        )
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 409], (first.text, second.text)
        loser = first if first.status_code == 409 else second
        assert "is the last adapter" in loser.json()["detail"]
        left = ["a"] if first.status_code == 200 else ["b"]
        assert_consistent(http, model, left)
        assert http.get("/adapters").json()["default"] == left[0]


def test_two_concurrent_adds_of_one_name_add_it_once(runs, root, monkeypatch):
    model = served(runs, ["a"])
    original_add, barrier = model.add, threading.Barrier(2)
    entered, release = threading.Event(), threading.Event()
    real_load = adapters_module.load_adapter_tensors

    def slow_load(*args, **kwargs):  # reading the weights takes a while
        entered.set()
        assert release.wait(20)
        return real_load(*args, **kwargs)

    def add_together(*args, **kwargs):
        barrier.wait(10)
        return original_add(*args, **kwargs)

    monkeypatch.setattr(adapters_module, "load_adapter_tensors", slow_load)
    model.add = add_together
    with (
        server(model, root) as url,
        httpx.Client(base_url=url, headers=ADMIN) as http,
        contextlib.ExitStack() as cleanup,
    ):
        cleanup.callback(release.set)  # a failed assertion never leaves the load waiting
        results: list = []

        def post(run):
            results.append(httpx.post(f"{url}/adapters", json={"run": run, "name": "x"}, headers=ADMIN, timeout=30))

        threads = [threading.Thread(target=post, args=(run,)) for run in ("b", "c")]
        for t in threads:
            t.start()
        assert entered.wait(20)
        deadline = time.monotonic() + 20
        while not results and time.monotonic() < deadline:  # the loser is answered while the winner loads
            time.sleep(0.02)
        assert len(results) == 1 and results[0].status_code == 409, results[0].text
        assert "an adapter named 'x' is already being loaded" in results[0].json()["detail"]
        # the weights are read with no lock held: the model answers meanwhile, and nothing is half-added
        assert http.post("/predict", json={"texts": ["a good film"]}).status_code == 200
        assert http.get("/health").json()["adapter_count"] == 1
        release.set()
        for t in threads:
            t.join(30)
        assert sorted(r.status_code for r in results) == [201, 409]
        assert_consistent(http, model, ["a", "x"])
        assert http.post("/predict", json={"texts": ["a good film"], "adapter": "x"}).status_code == 200
        assert http.delete("/adapters/x").status_code == 200
        assert_consistent(http, model, ["a"])  # removed for good: no orphan left in any layer


def test_a_failed_load_releases_the_name_and_the_run(runs, root, monkeypatch):
    model = served(runs, ["a"])
    real_load, failures = adapters_module.load_adapter_tensors, [1]

    def flaky_load(*args, **kwargs):
        if failures:
            failures.pop()
            raise AdapterError("adapter_model.safetensors: truncated file")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(adapters_module, "load_adapter_tensors", flaky_load)
    with server(model, root) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
        r = http.post("/adapters", json={"run": "b"})
        assert r.status_code == 422 and "truncated" in r.json()["detail"]
        assert model.registry.pending == [] and model.names == ["a"]
        assert http.post("/adapters", json={"run": "b"}).status_code == 201
        assert_consistent(http, model, ["a", "b"])


# ---------------------------------------------------------------------------------------------
# The admin token and the media type
# ---------------------------------------------------------------------------------------------


def test_admin_routes_are_off_without_a_token_and_need_the_right_one(runs, root):
    model = served(runs)
    with server(model, root, token=None) as url, httpx.Client(base_url=url) as http:
        for r in (http.post("/adapters", json={"run": "c"}, headers=ADMIN), http.delete("/adapters/b", headers=ADMIN)):
            assert r.status_code == 403 and "--admin-token" in r.json()["detail"]
            assert "LORALAB_ADMIN_TOKEN" in r.json()["detail"]
        assert model.names == ["a", "b"]
    with server(model, root) as url, httpx.Client(base_url=url) as http:
        for headers in ({}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
            for r in (
                http.post("/adapters", json={"run": "c"}, headers=headers),
                http.delete("/adapters/b", headers=headers),
            ):
                assert r.status_code == 401, (headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer" and "Authorization: Bearer" in r.json()["detail"]
        for wrong in (TOKEN[:-1], TOKEN + "x", "x" * len(TOKEN), "é" * 5):
            headers = {"Authorization": f"Bearer {wrong}".encode()}
            for r in (
                http.post("/adapters", json={"run": "c"}, headers=headers),
                http.delete("/adapters/b", headers=headers),
            ):
                assert r.status_code == 403 and r.json()["detail"] == "wrong admin token"
        assert model.names == ["a", "b"]
        assert http.post("/adapters", json={"run": "c"}, headers=ADMIN).status_code == 201
        assert http.delete("/adapters/c", headers={"Authorization": f"bearer  {TOKEN}"}).status_code == 200
        assert http.get("/health").json()["adapter_admin"] is True


def test_a_body_not_declared_as_json_is_415(runs, root):
    model = served(runs)
    with server(model, root) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
        body = b'{"run": "c"}'
        for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
            r = http.post("/adapters", content=body, headers=headers)
            assert r.status_code == 415 and "application/json" in r.json()["detail"], headers
            r = http.post("/predict", content=b'{"texts": ["a"]}', headers=headers)
            assert r.status_code == 415, headers
        assert model.names == ["a", "b"]
        r = http.post("/adapters", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 201


def test_the_cli_reads_the_admin_token_from_the_flag_or_the_environment(monkeypatch, runs, capsys):
    args = argparse.Namespace(admin_token=None)
    monkeypatch.delenv("LORALAB_ADMIN_TOKEN", raising=False)
    assert cli_admin_token(args, multi=True) is None
    monkeypatch.setenv("LORALAB_ADMIN_TOKEN", TOKEN)
    assert cli_admin_token(args, multi=True) == TOKEN
    assert cli_admin_token(args, multi=False) is None  # a single model has no admin routes
    assert (
        cli_admin_token(argparse.Namespace(admin_token="other-token-0123456789"), multi=True)
        == "other-token-0123456789"
    )
    for bad in ("short", " " + TOKEN, TOKEN + "\n", "é" * 20):
        with pytest.raises(ConfigError, match="at least 16 printable ASCII characters"):
            cli_admin_token(argparse.Namespace(admin_token=bad), multi=True)
    with pytest.raises(ConfigError, match="single model has no admin routes"):
        cli_admin_token(argparse.Namespace(admin_token=TOKEN), multi=False)
    capsys.readouterr()
    assert main(["-q", "serve", str(runs["a"]), str(runs["b"]), "--admin-token", "short", "--port", "0"]) == 2
    assert main(["-q", "serve", str(runs["a"]), str(runs["b"]), "--max-adapters", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--admin-token" in err[0] and "--max-adapters" in err[1]


# ---------------------------------------------------------------------------------------------
# The registry's rules: the cap, a run served twice, the default adapter
# ---------------------------------------------------------------------------------------------


def test_max_adapters_caps_what_is_loaded(runs, root):
    with pytest.raises(AdapterError, match="3 runs to serve, more than --max-adapters 2"):
        served(runs, NAMES, max_adapters=2)
    model = served(runs, ["a"], max_adapters=2)
    with server(model, root) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
        assert http.post("/adapters", json={"run": "b"}).status_code == 201
        r = http.post("/adapters", json={"run": "c"})
        assert r.status_code == 409 and "--max-adapters 2" in r.json()["detail"], r.text
        assert http.get("/health").json()["max_adapters"] == 2
        assert http.delete("/adapters/b").status_code == 200
        assert http.post("/adapters", json={"run": "c"}).status_code == 201
        assert_consistent(http, model, ["a", "c"])


def test_a_run_is_served_once_whatever_its_name_or_path(runs, root):
    model = served(runs)
    link = root / "runs" / "b-link"
    link.symlink_to(runs["b"])
    try:
        with server(model, root) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
            for body in (
                {"run": "b", "name": "b2"},
                {"run": str(runs["b"]), "name": "b3"},
                {"run": "b-link", "name": "b4"},
            ):
                r = http.post("/adapters", json=body)
                assert r.status_code == 409, (body, r.text)
                assert "already served as 'b'" in r.json()["detail"] and str(root) not in r.text
            assert_consistent(http, model, ["a", "b"])
    finally:
        link.unlink()
    with pytest.raises(AdapterError, match="already served as 'one'"):
        load_adapters([f"one={runs['a']}", f"two={runs['a']}"], device="cpu")


@pytest.mark.parametrize(
    "linked", ["adapter/adapter_model.safetensors", "adapter/adapter_config.json", "config.json", "adapter"]
)
def test_a_symbolic_link_out_of_the_adapter_root_is_refused(runs, root, tmp_path, linked):
    outside = tmp_path / "outside"
    shutil.copytree(runs["c"], outside)
    inside = root / "runs" / "linked"
    shutil.copytree(runs["c"], inside)
    try:
        target = inside / linked
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.symlink_to(outside / linked)
        model = served(runs)
        with server(model, root) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
            r = http.post("/adapters", json={"run": "linked"})
            assert r.status_code == 403, r.text
            assert r.json()["detail"].startswith("linked/")
            assert "a symbolic link that leads out of the adapter roots" in r.json()["detail"]
            assert str(tmp_path) not in r.text and str(root) not in r.text
            assert model.registry.pending == [] and model.names == ["a", "b"]
            # a link that stays inside the root is fine
            target.unlink()
            target.symlink_to(runs["c"] / linked)
            assert http.post("/adapters", json={"run": "linked"}).status_code == 201
    finally:
        shutil.rmtree(inside)


def test_removing_the_default_adapter_needs_a_new_default(runs, root):
    model = served(runs, NAMES)
    with server(model, root, default_adapter="b") as url, httpx.Client(base_url=url, headers=ADMIN) as http:
        r = http.delete("/adapters/b")
        assert r.status_code == 409 and "default adapter" in r.json()["detail"]
        assert "?new_default=" in r.json()["detail"]
        assert http.delete("/adapters/b", params={"new_default": "b"}).status_code == 409
        assert http.delete("/adapters/b", params={"new_default": "nope"}).status_code == 404
        assert http.post("/predict", json={"texts": ["a good film"]}).json()["adapter"] == "b"  # unchanged
        r = http.delete("/adapters/b", params={"new_default": "c"})
        assert r.status_code == 200 and r.json() == {"removed": "b", "default": "c"}
        assert http.post("/predict", json={"texts": ["a good film"]}).json()["adapter"] == "c"
        assert http.get("/adapters").json()["default"] == "c"
        r = http.delete("/adapters/a", params={"new_default": "a"})  # not the default: new_default still checked
        assert r.status_code == 409
        assert http.delete("/adapters/a").json() == {"removed": "a", "default": "c"}
        r = http.delete("/adapters/c", params={"new_default": "a"})
        assert r.status_code == 409 and "last adapter" in r.json()["detail"]
        assert_consistent(http, model, ["c"])


# ---------------------------------------------------------------------------------------------
# What is shown, and the limits
# ---------------------------------------------------------------------------------------------


def test_get_adapters_shows_paths_relative_to_the_root_and_health_the_current_count(runs, root):
    model = served(runs)
    with serve_in_thread(create_app(model, adapter_roots=[root], admin_token=TOKEN)) as url:
        with httpx.Client(base_url=url, headers=ADMIN) as http:
            assert [a["run"] for a in http.get("/adapters").json()["adapters"]] == ["runs/a", "runs/b"]
            r = http.post("/adapters", json={"run": "runs/c"})
            assert r.status_code == 201 and r.json()["run"] == "runs/c"
            health = http.get("/health").json()
            assert health["adapter_count"] == 3 and health["name"].startswith("3 adapters over ")
            assert http.delete("/adapters/a", params={"new_default": "c"}).status_code == 200
            health = http.get("/health").json()
            assert health["adapter_count"] == 2 and health["adapters"] == ["b", "c"]
            assert health["name"].startswith("2 adapters over ")
            for text in (http.get("/adapters").text, http.get("/health").text, r.text):
                assert str(root) not in text and "/tmp" not in text  # no server path, not even the backbone's
    with serve_in_thread(create_app(model)) as url:  # no adapter root: just the run's name
        assert [a["run"] for a in httpx.get(f"{url}/adapters").json()["adapters"]] == ["b", "c"]


def test_several_adapters_count_against_the_prediction_limit(runs, root):
    model = served(runs)
    limits = ServeLimits(max_texts=8, max_predictions=4)
    with server(model, root, limits=limits) as url, httpx.Client(base_url=url) as http:
        assert http.post("/predict", json={"texts": ["x", "y"], "adapters": "all"}).status_code == 200
        for body in (
            {"texts": ["x", "y", "z"], "adapters": "all"},
            {"texts": ["x", "y", "z"], "adapters": ["a", "b"]},
        ):
            r = http.post("/predict", json=body)
            assert r.status_code == 413, r.text
            assert r.json()["detail"] == "too many predictions: 3 texts x 2 adapters = 6 (at most 4 per request)"
        assert http.post("/predict", json={"texts": ["x"] * 8, "adapter": "b"}).status_code == 200
        assert http.post("/predict", json={"texts": ["x"] * 4, "adapters": ["b"]}).status_code == 200
    with pytest.raises(ConfigError, match="--max-predictions"):
        ServeLimits(max_predictions=0).validate()

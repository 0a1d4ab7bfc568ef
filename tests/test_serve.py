"""``loralab serve``: the HTTP API through FastAPI's TestClient (good and bad bodies, limits,
order, concurrency, micro-batching, a full queue), loading runs and exports, the CLI, and the
load benchmark's quick mode against a real server on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import tiny_run_config  # noqa: E402
from loralab import ConfigError, RunDirError, train
from loralab.cli import build_parser, main
from loralab.exports import ExportError, export_run
from loralab.serving.server import (
    MicroBatcher,
    ServeLimits,
    UnavailableError,
    bind_socket,
    create_app,
    is_loopback,
    load_predictor,
    serve_in_thread,
)

REPO = Path(__file__).resolve().parents[1]
LIMITS = ServeLimits(max_texts=8, max_chars=200, max_batch=32, max_wait_ms=5, max_queue=64)
TEXTS = ["a good film", "the plot is boring and awful", "charming , funny and smart", "dull", "it 's a movie ."]


@pytest.fixture(scope="module")
def run_dir(tiny_models, tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "run"
    return train(tiny_run_config(tiny_models["roberta"], tiny_data, out), command=[]).run_dir


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory) -> Path:
    return export_run(run_dir, tmp_path_factory.mktemp("serve-export") / "model", merge=True).path


@pytest.fixture(scope="module")
def served(export_dir):
    return load_predictor(export_dir, device="cpu")


@pytest.fixture
def client(served):
    predictor, info = served
    with TestClient(create_app(predictor, LIMITS, info)) as c:
        yield c


class FakePredictor:
    """Stands in for the model where timing matters: records each call, can block or fail."""

    label_names = ["negative", "positive"]

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def predict(self, texts):
        self.calls.append(list(texts))
        self.entered.set()
        self.release.wait(10)
        time.sleep(self.delay)
        if "boom" in texts:
            raise RuntimeError("model exploded")
        return [
            {
                "text": t,
                "label": len(t) % 2,
                "label_name": self.label_names[len(t) % 2],
                "confidence": 0.75,
                "probabilities": [0.25, 0.75],
            }
            for t in texts
        ]


# ---------------------------------------------------------------------------------------------
# Good requests
# ---------------------------------------------------------------------------------------------


def test_predict_returns_one_prediction_per_text_in_input_order(client, served):
    predictor, _ = served
    r = client.post("/predict", json={"texts": TEXTS})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert len(preds) == len(TEXTS)
    for text, p in zip(TEXTS, preds, strict=True):
        assert set(p) == {"label", "label_name", "confidence", "probabilities"}
        alone = predictor.predict([text])[0]
        assert p["label_name"] == predictor.label_names[p["label"]]
        assert p["confidence"] == pytest.approx(alone["confidence"], abs=1e-5)
        assert p["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-5)
        assert sum(p["probabilities"]) == pytest.approx(1.0)


def test_texts_at_the_limits_are_accepted(client):
    r = client.post("/predict", json={"texts": ["x" * LIMITS.max_chars] * LIMITS.max_texts})
    assert r.status_code == 200 and len(r.json()["predictions"]) == LIMITS.max_texts


def test_long_texts_are_truncated_to_the_model_positions(client):
    # the tiny RoBERTa has 70 usable positions; 100 words must not crash it
    assert client.post("/predict", json={"texts": ["good " * 39]}).status_code == 200


def test_health_describes_the_model_limits_and_batching(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["source"] == "export" and h["method"] == "lora"
    assert h["label_names"] == ["negative", "positive"]
    assert h["limits"]["max_texts"] == LIMITS.max_texts
    assert set(h["batching"]) >= {"requests", "texts", "batches", "rejected"}


def test_page_is_self_contained_and_served_with_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    html = r.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "static/app.js" in assets and "static/style.css" in assets
    for name in ("app.js", "style.css"):
        a = client.get(f"/static/{name}")
        assert a.status_code == 200
        assert not re.search(r"https?://", a.text), name  # nothing loaded from elsewhere
    assert not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    assert client.get("/static/../serve.py").status_code == 404
    assert client.get("/static/index.html").status_code == 404


def test_openapi_schema_documents_predict(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/predict"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    texts = body["properties"]["texts"]  # a list, or one "text": exactly one of the two (checked on request)
    assert {"array", "null"} == {t["type"] for t in texts["anyOf"]} and {"text", "text_pair"} <= set(body["properties"])
    assert {"200", "413", "422", "503"} <= set(post["responses"])
    assert "/health" in schema["paths"]


# ---------------------------------------------------------------------------------------------
# Bad requests: clear JSON errors, never a 500
# ---------------------------------------------------------------------------------------------

BAD_BODIES = {
    "not_json": (b"texts: hello", "Invalid JSON"),
    "empty_body": (b"", "empty body"),
    "json_null": (b"null", "Input should be an object"),
    "json_list": (b'["a review"]', "Input should be an object"),
    "empty_list": (b'{"texts": []}', "texts: List should have at least 1 item"),
    "string_not_list": (b'{"texts": "a review"}', "texts: Input should be a valid array"),
    "number_in_list": (b'{"texts": ["ok", 3]}', "texts.1: Input should be a valid string"),
    "null_in_list": (b'{"texts": [null]}', "texts.0: Input should be a valid string"),
    "nested_list": (b'{"texts": [["a"]]}', "texts.0: Input should be a valid string"),
    "missing_texts": (b'{"review": "a"}', "review: Extra inputs are not permitted"),
    "neither_form": (b"{}", 'send "texts" (a list) or "text" (one)'),
    "both_forms": (b'{"texts": ["a"], "text": "b"}', "exactly one of the two"),
    "text_not_string": (b'{"text": ["a"]}', "text: Input should be a valid string"),
    "extra_field": (b'{"texts": ["a"], "lang": "en"}', "lang: Extra inputs are not permitted"),
    "blank_text": (b'{"texts": ["fine", "   "]}', "texts.1: empty text"),
    "deep_nesting": (b"[" * 10_000, "Invalid JSON"),
    "invalid_utf8": (b'{"texts": ["\xff\xfe"]}', "Invalid JSON"),
    "lone_surrogate": (b'{"texts": ["\\ud800"]}', "Invalid JSON"),
    "nan": (b'{"texts": [NaN]}', "texts.0: Input should be a valid string"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_bodies_are_422_with_a_one_line_reason(client, case):
    body, fragment = BAD_BODIES[case]
    r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert fragment in detail


def test_too_many_texts_is_413(client):
    r = client.post("/predict", json={"texts": ["ok"] * (LIMITS.max_texts + 1)})
    assert r.status_code == 413
    assert r.json()["detail"] == f"too many texts: {LIMITS.max_texts + 1} (at most {LIMITS.max_texts} per request)"


def test_too_long_text_is_413_and_names_it(client):
    r = client.post("/predict", json={"texts": ["ok", "x" * (LIMITS.max_chars + 1)]})
    assert r.status_code == 413
    assert r.json()["detail"] == f"texts.1: too long: {LIMITS.max_chars + 1} characters (at most {LIMITS.max_chars})"


def test_oversized_body_is_413_before_it_is_parsed(client):
    big = b'{"texts": ["' + b"a" * (LIMITS.max_body_bytes + 10) + b'"]}'
    r = client.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "body too large" in r.json()["detail"]


def test_oversized_chunked_body_is_413(client):
    def chunks():
        yield b'{"texts": ["'
        for _ in range(LIMITS.max_body_bytes // 65536 + 2):
            yield b"a" * 65536
        yield b'"]}'

    r = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "more than" in r.json()["detail"]


def test_non_json_content_type_is_415(client):
    r = client.post("/predict", content=b'{"texts": ["a"]}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = client.post(
        "/predict", content=b'{"texts": ["a"]}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 200


def test_wrong_method_and_path_are_json_errors(client):
    assert client.get("/predict").status_code == 405
    assert client.get("/nope").json() == {"detail": "Not Found"}


def test_limits_are_configurable():
    predictor = FakePredictor()
    with TestClient(create_app(predictor, ServeLimits(max_texts=2, max_chars=5))) as c:
        assert c.post("/predict", json={"texts": ["a", "b", "c"]}).status_code == 413
        assert c.post("/predict", json={"texts": ["abcdef"]}).status_code == 413
        assert c.post("/predict", json={"texts": ["a", "abcde"]}).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"), [("max_texts", 0), ("max_chars", -1), ("max_batch", 0), ("max_queue", 0), ("max_wait_ms", -1)]
)
def test_bad_limits_name_the_flag(field, value):
    with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')}"):
        ServeLimits(**{field: value}).validate()


# ---------------------------------------------------------------------------------------------
# Concurrency and micro-batching
# ---------------------------------------------------------------------------------------------


def post_concurrently(client, bodies: list[dict]) -> list:
    results: list = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        barrier.wait()
        results[i] = client.post("/predict", json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_requests_each_get_their_own_predictions_in_order(client, served):
    predictor, _ = served
    bodies = [{"texts": [f"{TEXTS[i % 5]} {i}", TEXTS[(i + 1) % 5], f"{i} dull"]} for i in range(12)]
    results = post_concurrently(client, bodies)
    for body, r in zip(bodies, results, strict=True):
        assert r.status_code == 200
        expected = predictor.predict(body["texts"])
        got = r.json()["predictions"]
        assert [p["confidence"] for p in got] == pytest.approx([e["confidence"] for e in expected], abs=1e-5)


def test_concurrent_requests_share_model_calls():
    predictor = FakePredictor(delay=0.05)
    limits = ServeLimits(max_batch=32, max_wait_ms=20)
    with TestClient(create_app(predictor, limits)) as c:
        bodies = [{"texts": [f"text {i}", f"more {i}"]} for i in range(10)]
        results = post_concurrently(c, bodies)
        assert all(r.status_code == 200 for r in results)
        for body, r in zip(bodies, results, strict=True):  # each request gets its own slice back
            assert [p["label"] for p in r.json()["predictions"]] == [len(t) % 2 for t in body["texts"]]
        stats = c.get("/health").json()["batching"]
    assert stats["requests"] == 10 and stats["texts"] == 20
    assert stats["batches"] == len(predictor.calls) < 10
    assert max(len(call) for call in predictor.calls) > 2


def test_a_batch_never_exceeds_max_batch_texts():
    predictor = FakePredictor(delay=0.02)
    with TestClient(create_app(predictor, ServeLimits(max_batch=4, max_wait_ms=20))) as c:
        results = post_concurrently(c, [{"texts": ["a", "b", "c"]} for _ in range(6)])
        assert all(r.status_code == 200 for r in results)
    assert all(len(call) <= 4 for call in predictor.calls)
    assert sum(len(call) for call in predictor.calls) == 18


def test_a_lone_request_does_not_wait_for_company():
    predictor = FakePredictor()
    with TestClient(create_app(predictor, ServeLimits(max_wait_ms=1000))) as c:
        c.post("/predict", json={"texts": ["warm"]})
        t0 = time.perf_counter()
        assert c.post("/predict", json={"texts": ["alone"]}).status_code == 200
        assert time.perf_counter() - t0 < 0.5


def test_full_queue_is_503_and_the_server_recovers():
    predictor = FakePredictor()
    predictor.release.clear()  # the model call blocks until released
    with TestClient(create_app(predictor, ServeLimits(max_queue=1, max_wait_ms=0))) as c:
        first = threading.Thread(target=lambda: c.post("/predict", json={"texts": ["first"]}))
        first.start()
        assert predictor.entered.wait(10)  # the worker is busy with "first"
        queued: list = []
        second = threading.Thread(target=lambda: queued.append(c.post("/predict", json={"texts": ["second"]})))
        second.start()
        deadline = time.monotonic() + 10
        while c.get("/health").json()["queued"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.post("/predict", json={"texts": ["third"]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "busy" in r.json()["detail"]
        predictor.release.set()
        first.join(10)
        second.join(10)
        assert queued[0].status_code == 200
        assert c.post("/predict", json={"texts": ["fourth"]}).status_code == 200
        assert c.get("/health").json()["batching"]["rejected"] == 1


def test_stopping_the_batcher_answers_every_waiting_request():
    async def scenario() -> None:
        predictor = FakePredictor()
        predictor.release.clear()
        batcher = MicroBatcher(predictor.predict, max_wait_s=0)
        batcher.start()
        scoring = asyncio.ensure_future(batcher.submit(["first"]))
        while not predictor.entered.is_set():
            await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.submit(["second"]))
        await asyncio.sleep(0.01)
        await batcher.stop()
        predictor.release.set()
        for job in (scoring, queued):
            with pytest.raises(UnavailableError, match="shutting down"):
                await job
        with pytest.raises(UnavailableError, match="not running"):
            await batcher.submit(["third"])

    asyncio.run(scenario())


def test_a_model_failure_is_a_500_for_its_batch_only():
    predictor = FakePredictor()
    with TestClient(create_app(predictor, ServeLimits(max_wait_ms=0)), raise_server_exceptions=False) as c:
        r = c.post("/predict", json={"texts": ["boom"]})
        assert r.status_code == 500 and r.json() == {"detail": "prediction failed (see the server log)"}
        assert c.post("/predict", json={"texts": ["fine"]}).status_code == 200
        assert c.get("/health").json()["batching"]["failed"] == 1


def test_host_header_is_checked_when_allowed_hosts_are_given():
    with TestClient(
        create_app(FakePredictor(), allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://127.0.0.1"
    ) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"Host": "attacker.example"}).status_code == 400


# ---------------------------------------------------------------------------------------------
# Loading what is served
# ---------------------------------------------------------------------------------------------


def test_a_run_directory_serves_the_same_predictions_as_its_export(run_dir, served):
    from_run, info = load_predictor(run_dir, device="cpu")
    assert info["source"] == "run" and info["method"] == "lora"
    a = [p["confidence"] for p in from_run.predict(TEXTS)]
    b = [p["confidence"] for p in served[0].predict(TEXTS)]
    assert a == pytest.approx(b, abs=1e-5)


def test_what_cannot_be_served_is_a_one_line_error(tmp_path, tiny_models):
    with pytest.raises(RunDirError, match="no such run directory or model folder"):
        load_predictor(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="not a complete run"):
        load_predictor(tmp_path / "empty")
    with pytest.raises(ExportError, match="not a sequence-classification model"):
        load_predictor(tiny_models["roberta"])


# ---------------------------------------------------------------------------------------------
# CLI, sockets and optional dependencies
# ---------------------------------------------------------------------------------------------


def test_cli_serve_binds_loopback_by_default():
    args = build_parser().parse_args(["serve", "some/run"])
    assert (args.host, args.port, args.max_texts, args.max_chars, args.max_batch, args.max_wait_ms) == (
        "127.0.0.1",
        8000,
        64,
        2000,
        32,
        5.0,
    )


def test_cli_serve_compile_and_precision_reach_the_served_model_and_warm_up_compiles_everything(
    export_dir, monkeypatch, capsys
):
    import torch
    import uvicorn
    from torch._dynamo.utils import counters

    import loralab.serving.server as serve_module

    compiled, apps, runs = [], [], []
    real_compile, real_create_app = torch.compile, serve_module.create_app
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(kw) or real_compile(model, **kw))
    monkeypatch.setattr(serve_module, "create_app", lambda *a, **kw: apps.append(a) or real_create_app(*a, **kw))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: runs.append(sockets))
    assert (
        main(["-q", "serve", str(export_dir), "--port", "0", "--device", "cpu", "--compile", "--precision", "bf16"])
        == 0
    )
    assert compiled == [{"dynamic": True, "options": {"freezing": True}}] and len(runs) == 1
    runs[0][0].close()
    predictor, _, info = apps[0]
    assert (predictor.precision, predictor.compiled, info["precision"], info["compiled"]) == (
        "bf16",
        True,
        "bf16",
        True,
    )
    # the start-up warm-up compiled every graph that requests need: one text, many, long, short
    graphs = counters["stats"]["unique_graphs"]
    got = [predictor.predict(t) for t in (TEXTS[:1], TEXTS, [TEXTS[1] * 5] * 40, ["ok"])]
    assert counters["stats"]["unique_graphs"] == graphs
    eager = load_predictor(export_dir, device="cpu", precision="bf16")[0]
    assert [p["label"] for p in got[1]] == [p["label"] for p in eager.predict(TEXTS)]


def test_cli_serve_reports_bad_flags_and_paths_in_one_line(tmp_path, capsys):
    assert main(["-q", "serve", str(tmp_path), "--max-texts", "0"]) == 2
    assert main(["-q", "serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "loralab: error: --max-texts must be at least 1, got 0",
        f"loralab: error: {tmp_path / 'missing'}: no such run directory or model folder",
    ]


def test_serve_module_imports_without_fastapi_and_says_what_is_missing(monkeypatch, tmp_path, capsys):
    for name in ("fastapi", "uvicorn", "starlette"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "loralab.serving.server")
    import loralab.serving.server  # noqa: F401

    assert main(["-q", "serve", str(tmp_path)]) == 2
    assert "needs the serve extra" in capsys.readouterr().err


def test_sockets_ask_for_tcp_so_responses_are_not_held_back_by_nagle():
    # asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def load_bench():
    if "serve_load" not in sys.modules:
        spec = importlib.util.spec_from_file_location("serve_load", REPO / "bench" / "serve_load.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["serve_load"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["serve_load"]


def test_bench_quick_mode_against_a_real_server_on_loopback(served, capsys):
    bench = load_bench()
    predictor, info = served
    with serve_in_thread(create_app(predictor, info=info)) as url:
        assert url.startswith("http://127.0.0.1:")
        assert bench.main(["--url", url, "--quick"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^sequential\s+1\s+20\s+0\s", out, re.M)
    assert re.search(r"^concurrent\s+4\s+100\s+0\s", out, re.M)
    assert "single-text sequential latency p50:" in out and "errors: 0" in out


def test_bench_refuses_servers_off_loopback():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--url", "http://192.168.1.5:8000"])
    with pytest.raises(SystemExit):
        bench.parse_args([])


def test_served_page_and_api_over_real_http(served):
    import httpx

    predictor, info = served
    with serve_in_thread(create_app(predictor, LIMITS, info)) as url, httpx.Client(base_url=url) as http:
        assert "<textarea" in http.get("/").text
        r = http.post("/predict", json={"texts": TEXTS[:2]})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
        assert json.loads(http.get("/openapi.json").text)["info"]["title"] == "loralab text classifier"

"""Many LoRA adapters over one backbone: mixed batches equal each adapter alone (peft as the
reference), the API (adapter / adapters / all, GET /adapters, 404s), start-up errors, adding and
removing adapters while serving with the path guard, and ``loralab predict --run A --run B``.
The admin surface's rules (token, races, cap, symbolic links) are in test_serve_admin.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import synthetic_rows, tiny_run_config  # noqa: E402
from loralab import train
from loralab.cli import main
from loralab.inference.adapters import AdapterError, MultiAdapterPredictor, UnknownAdapterError
from loralab.inference.predictor import Predictor
from loralab.serving.server import create_app, load_adapters

TEXTS = [
    "a good film",
    "the plot is boring and awful",
    "charming , funny and smart",
    "dull",
    "it 's a very long and tedious and clumsy story , but the acting is great .",
]
#: name -> settings: different ranks, target modules, layers, impls and label names
ADAPTERS = {
    "qv-r2": {"rank": 2, "alpha": 4, "target_modules": ["query", "value"]},
    "all-r8": {"rank": 8, "alpha": 16, "target_modules": ["all-linear"], "seed": 3},
    "top2-r4-scratch": {"rank": 4, "alpha": 8, "target_modules": ["query", "key"], "layers": "top2", "impl": "scratch"},
    "dense-r3-3labels": {"rank": 3, "alpha": 3, "target_modules": ["dense"], "data": "three"},
    "qv-r16-len8": {"rank": 16, "alpha": 4, "target_modules": ["query", "value"], "seed": 7, "max_length": 8},
}
TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def runs(tiny_models, tiny_data, root) -> dict[str, Path]:
    three = root / "data3"
    three.mkdir()
    for split, n, seed in (("train", 48, 0), ("validation", 24, 1), ("test", 24, 2)):
        rows = [(t, ("bad", "good", "meh")[i % 3 if y else 0]) for i, (t, y) in enumerate(synthetic_rows(n, seed))]
        (three / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    out = {}
    for name, settings in ADAPTERS.items():
        settings = {"lr": 0.02, **settings}  # a large step: adapters that answer visibly differently
        data = tiny_data
        if settings.pop("data", None):
            data, settings["labels"] = three, ["bad", "good", "meh"]  # word labels are named explicitly
        out[name] = train(
            tiny_run_config(tiny_models["bert"], data, root / "runs" / name, **settings), command=[]
        ).run_dir
    return out


@pytest.fixture(scope="module")
def head_run(root, tiny_models, tiny_data) -> Path:
    return train(
        tiny_run_config(tiny_models["bert"], tiny_data, root / "runs" / "head-run", method="head"), command=[]
    ).run_dir


@pytest.fixture(scope="module")
def multi(runs) -> MultiAdapterPredictor:
    return load_adapters([runs[n] for n in ADAPTERS], device="cpu")[0]


@pytest.fixture(scope="module")
def reference(runs) -> dict[str, np.ndarray]:
    """Each adapter alone through peft (unmerged), the reference implementation."""
    return {name: Predictor.from_run(run, device="cpu", merge=False).logits(TEXTS) for name, run in runs.items()}


def interleaved(names):
    return [(names[(i + k) % len(names)], t) for k, t in enumerate(TEXTS) for i in range(len(names))]


@pytest.mark.parametrize("count", [2, 5])
def test_a_mixed_batch_equals_each_adapter_alone(runs, reference, count):
    names = list(ADAPTERS)[:count]
    model = load_adapters([runs[n] for n in names], device="cpu", batch_size=64)[0]
    calls = []
    model.model.register_forward_hook(lambda *_: calls.append(1))
    items = interleaved(names)
    got = model.logits(items)
    assert len(calls) == 1  # every adapter's rows in one forward pass
    for (name, text), z in zip(items, got, strict=True):
        want = reference[name][TEXTS.index(text)]
        assert z.shape == want.shape
        np.testing.assert_allclose(z, want, atol=1e-5, rtol=0)
        assert int(z.argmax()) == int(want.argmax())
    # the check can tell adapters apart: any two answer a text differently by far more than 1e-5
    two = [reference[n] for n in names if reference[n].shape[1] == 2]
    assert min(np.abs(a - b).max() for i, a in enumerate(two) for b in two[i + 1 :]) > 1e-3


def test_per_adapter_forwards_give_the_same_answers_with_one_pass_per_adapter(runs, multi):
    names = list(ADAPTERS)
    alone = load_adapters([runs[n] for n in names], device="cpu", mixed=False)[0]
    calls = []
    alone.model.register_forward_hook(lambda *_: calls.append(1))
    items = interleaved(names)
    for a, b in zip(alone.logits(items), multi.logits(items), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert len(calls) == len(names)


def test_each_adapter_keeps_its_label_names_and_max_length(multi, runs):
    preds = multi.predict([("dense-r3-3labels", "good"), ("qv-r2", "good")])
    assert len(preds[0]["probabilities"]) == 3 and preds[0]["label_name"] in ("bad", "good", "meh")
    assert len(preds[1]["probabilities"]) == 2 and preds[1]["label_name"] in ("negative", "positive")
    assert multi.adapters["qv-r16-len8"].max_length == 8
    info = multi.adapters["top2-r4-scratch"].info
    assert (info["method"], info["impl"], info["rank"]) == ("lora", "scratch", 4)
    assert (
        info["validation_accuracy"]
        == json.loads((runs["top2-r4-scratch"] / "results.json").read_text())["validation"]["accuracy"]
    )


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def client(multi, root):
    with TestClient(create_app(multi, adapter_roots=[root / "runs"], default_adapter="all-r8")) as c:
        yield c


def test_predict_answers_with_the_default_or_the_named_adapter(client, reference):
    r = client.post("/predict", json={"texts": TEXTS[:2]}).json()
    assert r["adapter"] == "all-r8" and [p["adapter"] for p in r["predictions"]] == ["all-r8"] * 2
    probs = np.exp(reference["all-r8"][:2]) / np.exp(reference["all-r8"][:2]).sum(1, keepdims=True)
    np.testing.assert_allclose([p["probabilities"] for p in r["predictions"]], probs, atol=1e-5)
    r = client.post("/predict", json={"texts": TEXTS[:1], "adapter": "dense-r3-3labels"}).json()
    assert r["adapter"] == "dense-r3-3labels" and len(r["predictions"][0]["probabilities"]) == 3


def test_all_answers_every_adapter_in_the_listed_order(client):
    listed = [a["name"] for a in client.get("/adapters").json()["adapters"]]
    assert listed == list(ADAPTERS)
    r = client.post("/predict", json={"texts": TEXTS, "adapters": "all"}).json()
    assert r["adapters"] == listed and len(r["predictions"]) == len(TEXTS)
    for per_text in r["predictions"]:
        assert [p["adapter"] for p in per_text] == listed
    chosen = ["qv-r2", "dense-r3-3labels"]
    r2 = client.post("/predict", json={"texts": TEXTS, "adapters": chosen[::-1]}).json()
    assert r2["adapters"] == chosen[::-1]
    for a, b in zip(r["predictions"], r2["predictions"], strict=True):
        assert b[1]["probabilities"] == pytest.approx(a[0]["probabilities"], abs=1e-6)


def test_get_adapters_shows_run_metadata(client, runs):
    body = client.get("/adapters").json()
    assert body["default"] == "all-r8"
    entry = next(a for a in body["adapters"] if a["name"] == "qv-r2")
    results = json.loads((runs["qv-r2"] / "results.json").read_text())
    assert entry["rank"] == 2 and entry["method"] == "lora" and entry["default"] is False
    assert entry["test_accuracy"] == results["test"]["accuracy"]
    assert entry["trainable_params"] == results["params"]["trainable"]
    health = client.get("/health").json()
    assert health["adapters"] == list(ADAPTERS) and health["default_adapter"] == "all-r8"
    paths = client.get("/openapi.json").json()["paths"]
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"texts", "adapter", "adapters"} <= set(body["properties"]) and "404" in paths["/predict"]["post"][
        "responses"
    ]
    assert {"get", "post"} <= set(paths["/adapters"]) and "delete" in paths["/adapters/{name}"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"texts": ["a"], "adapter": "nope"}, 404, "unknown adapter 'nope'"),
        ({"texts": ["a"], "adapters": ["qv-r2", "nope"]}, 404, "unknown adapter 'nope'"),
        ({"texts": ["a"], "adapters": []}, 422, "at least 1 item"),
        ({"texts": ["a"], "adapters": "some"}, 422, "adapters"),
        ({"texts": ["a"], "adapters": ["qv-r2", "qv-r2"]}, 422, "twice"),
        ({"texts": ["a"], "adapter": "qv-r2", "adapters": "all"}, 422, "not both"),
        ({"texts": ["a"], "adapter": 3}, 422, "adapter"),
        ({"texts": ["x" * 2001], "adapter": "qv-r2"}, 413, "too long"),
    ],
)
def test_bad_adapter_requests_are_json_errors(client, body, status, fragment):
    r = client.post("/predict", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_adapters_are_added_and_removed_while_serving(runs, root):
    model = load_adapters([runs["qv-r2"]], device="cpu")[0]
    with TestClient(create_app(model, adapter_roots=[root / "runs"], admin_token=TOKEN), headers=ADMIN) as c:
        r = c.post("/adapters", json={"run": "dense-r3-3labels"})
        assert r.status_code == 201 and r.json()["name"] == "dense-r3-3labels"
        r = c.post("/adapters", json={"run": str(runs["all-r8"]), "name": "second"})
        assert r.status_code == 201
        assert [a["name"] for a in c.get("/adapters").json()["adapters"]] == ["qv-r2", "dense-r3-3labels", "second"]
        both = c.post("/predict", json={"texts": TEXTS, "adapters": ["second", "dense-r3-3labels"]})
        assert both.status_code == 200
        assert c.post("/adapters", json={"run": "qv-r2"}).status_code == 409  # name taken
        assert c.delete("/adapters/qv-r2").status_code == 409  # the default: name the next one
        r = c.delete("/adapters/qv-r2", params={"new_default": "dense-r3-3labels"})
        assert r.json() == {"removed": "qv-r2", "default": "dense-r3-3labels"}
        assert c.post("/predict", json={"texts": ["a"], "adapter": "qv-r2"}).status_code == 404
        assert c.post("/predict", json={"texts": ["a"]}).json()["adapter"] == "dense-r3-3labels"
        assert c.delete("/adapters/qv-r2").status_code == 404
        assert c.delete("/adapters/second").status_code == 200
        assert c.delete("/adapters/dense-r3-3labels").status_code == 409  # the last one stays
        assert c.post("/adapters", json={"run": "qv-r2"}).status_code == 201  # back again


def test_the_path_guard_allows_only_runs_under_the_adapter_roots(runs, root, tmp_path):
    model = load_adapters([runs["qv-r2"]], device="cpu")[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "runs" / "escape").symlink_to(outside)
    try:
        with TestClient(create_app(model, adapter_roots=[root / "runs"], admin_token=TOKEN), headers=ADMIN) as c:
            for path in (
                "../runs/all-r8",
                "all-r8/../../runs/all-r8",
                str(outside),
                "/etc",
                "escape",
                str(root / "runs" / ".." / "data3"),
            ):
                r = c.post("/adapters", json={"run": path})
                assert r.status_code == 403, (path, r.text)
            assert c.post("/adapters", json={"run": "missing"}).status_code == 404
            r = c.post("/adapters", json={"run": str(runs["all-r8"])})  # absolute, inside the root
            assert r.status_code == 201
        with TestClient(create_app(model, admin_token=TOKEN), headers=ADMIN) as c:  # no --adapter-root: adding is off
            r = c.post("/adapters", json={"run": "dense-r3-3labels"})
            assert r.status_code == 403 and "--adapter-root" in r.json()["detail"]
    finally:
        (root / "runs" / "escape").unlink()


def test_a_run_that_is_not_a_lora_adapter_is_refused_per_request(runs, root, head_run):
    model = load_adapters([runs["qv-r2"]], device="cpu")[0]
    with TestClient(create_app(model, adapter_roots=[root / "runs"], admin_token=TOKEN), headers=ADMIN) as c:
        r = c.post("/adapters", json={"run": "head-run"})
        assert r.status_code == 422 and "not LoRA" in r.json()["detail"]
        assert str(root) not in r.json()["detail"]  # the server's own paths are not echoed


# ---------------------------------------------------------------------------------------------
# Start-up errors and the CLI
# ---------------------------------------------------------------------------------------------


def test_start_up_errors_are_one_line(runs, head_run, tiny_models, tiny_data, tmp_path, capsys):
    other = train(tiny_run_config(tiny_models["roberta"], tiny_data, tmp_path / "roberta"), command=[]).run_dir
    with pytest.raises(AdapterError, match="trained on backbone .*roberta.*share one backbone"):
        load_adapters([runs["qv-r2"], other], device="cpu")
    with pytest.raises(AdapterError, match="a head run, not LoRA"):
        load_adapters([runs["qv-r2"], head_run], device="cpu")
    twin = tmp_path / "twin" / "qv-r2"
    twin.parent.mkdir()
    os.symlink(runs["all-r8"], twin)
    with pytest.raises(AdapterError, match="adapter name 'qv-r2' is already taken"):
        load_adapters([runs["qv-r2"], twin], device="cpu")
    named = load_adapters([runs["qv-r2"], f"other={twin}"], device="cpu")[0]
    assert named.names == ["qv-r2", "other"]
    with pytest.raises(UnknownAdapterError, match="--default-adapter nope"):
        create_app(named, default_adapter="nope")
    capsys.readouterr()
    assert main(["-q", "serve", str(runs["qv-r2"]), str(other), "--port", "0"]) == 2
    assert main(["-q", "serve", str(runs["qv-r2"]), "--adapter-root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("loralab: error: ") for line in err)
    assert "share one backbone" in err[0] and "--adapter-root" in err[1]


@pytest.mark.parametrize("option", ["use_dora", "arrow_config", "ensure_weight_tying"])
def test_a_peft_option_the_layers_lack_is_refused(runs, tmp_path, option):
    run = tmp_path / "run"
    shutil.copytree(runs["qv-r2"], run)
    config = run / "adapter" / "adapter_config.json"
    conf = json.loads(config.read_text())
    assert not conf.get(option)  # peft writes every option; the trained run leaves it off
    config.write_text(json.dumps({**conf, option: {"on": 1} if option.endswith("_config") else True}))
    with pytest.raises(AdapterError, match=f"uses peft option\\(s\\) {option}, which multi-adapter serving"):
        load_adapters([runs["all-r8"], run], device="cpu")


def test_a_study_folder_serves_all_its_lora_runs(runs, head_run, tmp_path):
    study = tmp_path / "study"
    (study / "runs").mkdir(parents=True)
    (study / "study.json").write_text("{}")
    for name in ("qv-r2", "all-r8"):
        os.symlink(runs[name], study / "runs" / name)
    os.symlink(head_run, study / "runs" / "head-run")  # not LoRA: left out
    model = load_adapters([study], device="cpu")[0]
    assert model.names == ["all-r8", "qv-r2"]


def test_cli_predict_with_several_runs_gives_answers_side_by_side(runs, multi, capsys):
    names = ["qv-r2", "dense-r3-3labels"]
    capsys.readouterr()
    assert main(["-q", "predict", *[f"--run={runs[n]}" for n in names], "--json", "--device", "cpu", *TEXTS]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in rows] == TEXTS
    expected = multi.predict([(n, t) for t in TEXTS for n in names])
    for k, r in enumerate(rows):
        assert list(r["adapters"]) == names
        for j, n in enumerate(names):
            e = expected[2 * k + j]
            assert r["adapters"][n]["label_name"] == e["label_name"]
            assert r["adapters"][n]["confidence"] == pytest.approx(e["confidence"], abs=1e-6)
    assert main(["-q", "predict", f"--run={runs['qv-r2']}", "--device", "cpu", TEXTS[0]]) == 0
    single = capsys.readouterr().out.strip().split("\t")  # one run: the output is unchanged
    assert len(single) == 3 and single[2] == TEXTS[0]


@pytest.mark.slow
def test_bench_quick_mode_serves_single_and_multi_adapter_servers(runs, capsys):
    import importlib.util
    import sys

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    spec = importlib.util.spec_from_file_location("serve_adapters", bench_dir / "serve_adapters.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["serve_adapters"] = bench
    spec.loader.exec_module(bench)
    assert (
        bench.main(
            [str(runs["qv-r2"]), str(runs["dense-r3-3labels"]), "--quick", "--threads", "1", "--check-texts", "8"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| 2 adapters, mixed batches |" in out and "| 2 adapters, per-adapter batches |" in out
    assert "labels equal to the runs' own prediction files 16/16" in out
    assert "errors: 0" in out


def test_bf16_mixed_batches_score_close_to_fp32(runs, multi):
    bf16 = load_adapters([runs[n] for n in ADAPTERS], device="cpu", precision="bf16")[0]
    items = interleaved(list(ADAPTERS))
    for a, b in zip(bf16.logits(items), multi.logits(items), strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() < 0.1

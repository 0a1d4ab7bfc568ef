"""Study files: validation, cell expansion, run ids, the plan and the presets in studies/."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from loralab.cli import build_parser
from loralab.cli import main as cli_main
from loralab.cli.train import config_from_args
from loralab.config import DEFAULT_LR, RunConfig
from loralab.errors import ConfigError
from loralab.experiments.identity import run_id
from loralab.study.plan import make_plan
from loralab.study.spec import StudySpec, load_spec

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "studies").glob("*.yaml"))


def spec(**kw) -> StudySpec:
    kw.setdefault("name", "s")
    return StudySpec(**kw)


def test_grid_expands_to_the_cartesian_product_named_by_values():
    s = spec(grid={"method": ["lora"], "rank": [4, 8], "lr": [1e-3, 2e-3]}, seeds=[1, 2])
    names = [c.name for c in s.expand()]
    assert names == [
        "method=lora,rank=4,lr=0.001",
        "method=lora,rank=4,lr=0.002",
        "method=lora,rank=8,lr=0.001",
        "method=lora,rank=8,lr=0.002",
    ]
    assert s.expand()[3].options == {"method": "lora", "rank": 8, "lr": 2e-3}
    assert s.baseline_cell == names[0]  # default: the first cell


def test_named_cells_cross_the_grid_and_keep_their_options():
    s = spec(
        base={"epochs": 1},
        cells=[{"name": "head", "method": "head"}, {"name": "lora", "method": "lora"}],
        grid={"train_size": [100, 200]},
        baseline="lora,train_size=200",
    )
    assert [c.name for c in s.expand()] == [
        "head,train_size=100",
        "head,train_size=200",
        "lora,train_size=100",
        "lora,train_size=200",
    ]
    cfg = s.cell_config(s.expand()[1], seed=7)
    assert (cfg.method.method, cfg.data.train_size, cfg.train.epochs, cfg.train.seed) == ("head", 200, 1, 7)


def test_a_study_without_grid_or_cells_is_one_cell_called_base():
    assert [c.name for c in spec(base={"rank": 4}).expand()] == ["base"]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"base": {"rnak": 4}}, "'rnak'"),
        ({"grid": {"rank": [4], "epoch": [1]}}, "'epoch'"),
        ({"cells": [{"name": "a", "methd": "lora"}]}, "'methd'"),
        ({"cells": [{"name": "a", "rank": 0}]}, "--rank must be at least 1"),
        ({"grid": {"rank": [4, 0]}}, "cell 'rank=0'"),
        ({"base": {"seed": 3}}, "'seed'"),
        ({"cells": [{"name": "a", "output_dir": "x"}]}, "'output_dir'"),
        ({"grid": {"rank": [4, 4]}}, "twice"),
        ({"grid": {"rank": []}}, "non-empty list"),
        ({"cells": [{"name": "a"}, {"name": "a", "rank": 4}]}, "two cells are named 'a'"),
        ({"cells": [{"name": "a", "rank": 4}], "grid": {"rank": [8]}}, "grid also varies"),
        ({"cells": [{"name": "a", "rank": 4}, {"name": "b", "rank": 4}]}, "same configuration"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "seed twice"),
        ({"seeds": [1, True]}, "seeds"),
        ({"cells": [{"name": "a"}], "baseline": "b"}, "baseline 'b'"),
        ({"name": "a b"}, "name"),
    ],
)
def test_bad_studies_are_rejected_naming_the_key(kw, needle):
    with pytest.raises(ConfigError, match=None) as e:
        spec(**kw)
    assert needle in str(e.value)


def test_unknown_top_level_key_is_rejected(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ngrids: {rank: [4]}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: unknown key 'grids'"):
        load_spec(f)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nbase: {rank: [4\n")
    with pytest.raises(ConfigError, match=r"s\.yaml:\d+: invalid YAML"):
        load_spec(f)


def test_run_ids_are_deterministic_distinct_and_follow_the_config(tmp_path):
    s = spec(grid={"rank": [4, 8]}, seeds=[1, 2], base={"data_dir": str(tmp_path)})
    a = make_plan(s, tmp_path / "out")
    b = make_plan(s, tmp_path / "elsewhere")  # the folder is not part of the id
    ids = [r.id for r in a.runs]
    assert ids == [r.id for r in b.runs]
    assert len(set(ids)) == 4
    assert ids[0].startswith("rank-4-seed1-") and len(ids[0].rsplit("-", 1)[1]) == 8
    changed = make_plan(
        spec(grid={"rank": [4, 8]}, seeds=[1, 2], base={"data_dir": str(tmp_path), "epochs": 2}), tmp_path / "out"
    )
    assert not set(ids) & {r.id for r in changed.runs}
    flat = a.runs[0].config.to_flat()
    assert run_id("rank=4", 1, flat) == run_id("rank=4", 1, {**flat, "output_dir": "x", "progress": True})
    assert a.runs[0].config.train.output_dir == str((tmp_path / "out" / "runs" / ids[0]).resolve())


def test_run_id_hashes_the_learning_rate_in_force(tmp_path, monkeypatch):
    """`lr` left unset means the method's default: the id follows the default, and spelling the
    default out is the same configuration (same id; two such cells are rejected as duplicates)."""
    import loralab.experiments.identity as identity_module

    base = {"data_dir": str(tmp_path)}
    unset = make_plan(spec(base=base), tmp_path / "out").runs[0].id
    spelled = make_plan(spec(base={**base, "lr": DEFAULT_LR["lora"]}), tmp_path / "out").runs[0].id
    assert unset == spelled
    monkeypatch.setitem(identity_module.DEFAULT_LR, "lora", DEFAULT_LR["lora"] / 2)
    assert make_plan(spec(base=base), tmp_path / "out").runs[0].id != unset
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="same configuration"):
        spec(base=base, cells=[{"name": "a"}, {"name": "b", "lr": DEFAULT_LR["lora"]}])


def test_run_id_hashes_the_target_modules_training_resolves(tmp_path, monkeypatch):
    """LoRA's target modules enter the id as training resolves them: `null` is the `qv` preset
    (same id, and two such cells are duplicates), and when a family's preset changes, the runs
    that used it get new ids: for a local model (MiniLM, a BERT) and for a hub id alike."""
    import dataclasses

    from loralab.models import backbones

    base = {"data_dir": str(tmp_path)}

    def first_id(**options):
        return make_plan(spec(base={**base, **options}), tmp_path / "out").runs[0].id

    for model in ("minilm-l6", "some-org/hub-model"):
        assert first_id(model=model, target_modules=None) == first_id(model=model, target_modules="qv")
        assert first_id(model=model, target_modules="qv") != first_id(model=model, target_modules="all-linear")
    with pytest.raises(ConfigError, match="same configuration"):
        spec(base=base, cells=[{"name": "a", "target_modules": None}, {"name": "b", "target_modules": "qv"}])
    before = {m: first_id(model=m) for m in ("minilm-l6", "some-org/hub-model")}
    head_before = first_id(method="head")
    explicit = first_id(target_modules="query,value")
    bert = backbones.FAMILIES["bert"]
    monkeypatch.setitem(backbones.FAMILIES, "bert", dataclasses.replace(bert, linear_targets=("query", "value")))
    after = {m: first_id(model=m) for m in ("minilm-l6", "some-org/hub-model")}
    assert all(after[m] != before[m] for m in before)  # the default all-linear now means other modules
    assert first_id(method="head") == head_before  # a run without LoRA does not depend on presets
    assert first_id(target_modules="query,value") == explicit  # nor does one that names its modules


def test_plan_takes_the_data_dir_from_the_environment_and_cli_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    s = spec(cells=[{"name": "a", "rank": 4}])
    plan = make_plan(s, tmp_path / "o")
    assert plan.runs[0].config.data.data_dir == str(tmp_path)
    plan = make_plan(s, tmp_path / "o", {"model": "distilbert", "data_dir": str(tmp_path / "d")})
    assert (plan.runs[0].config.model.model, plan.runs[0].config.data.data_dir) == ("distilbert", str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="--rank cannot be given"):
        make_plan(s, tmp_path / "o", {"rank": 8})


def test_train_flags_rebuild_the_exact_config(tmp_path):
    s = spec(
        base={"data_dir": str(tmp_path), "labels": ["neg", "pos"], "group_by_length": False, "lr": 3e-4},
        cells=[
            {"name": "a", "method": "lora", "rank": 4, "target_modules": ["query", "key"]},
            {"name": "b", "method": "none"},
        ],
    )
    for run in make_plan(s, tmp_path / "o").runs:
        args = build_parser().parse_args(["train", *run.train_flags()])
        assert config_from_args(args) == run.config
        assert run.command()[:2] == ["loralab", "train"]


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_validate_and_open_with_their_command(path, tmp_path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run:") and f"loralab study run studies/{path.name}" in first
    s = load_spec(path)
    plan = make_plan(s, tmp_path, {"data_dir": str(tmp_path)})
    assert plan.baseline in {c.name for c in plan.cells}
    assert len(plan.runs) == len(plan.cells) * len(s.seeds)
    assert all(isinstance(RunConfig.from_flat(r.config.to_flat()), RunConfig) for r in plan.runs)


@pytest.mark.parametrize("path", [p for p in PRESETS if p.stem.startswith("ref")], ids=lambda p: p.stem)
def test_reference_presets_run_lora_at_alpha_16(path, tmp_path):
    # the reference projects' LoRA (and every ref preset's comments) use alpha 16; loralab's
    # default is 32, so a cell that forgets `alpha` would silently train at twice the scale
    plan = make_plan(load_spec(path), tmp_path, {"data_dir": str(tmp_path)})
    lora = [r.config.method for r in plan.runs if r.config.method.method == "lora"]
    assert lora and all(m.alpha == 16 for m in lora)


def test_smoke_preset_is_small():
    s = load_spec(REPO / "studies" / "smoke.yaml")
    runs = [s.cell_config(c, seed) for c in s.expand() for seed in s.seeds]
    assert len(runs) <= 4 and all(r.data.train_size <= 1000 and r.train.epochs <= 1 for r in runs)


def test_dry_run_lists_cells_with_their_trainable_parameters(tiny_models, tiny_data, tmp_path):
    from loralab.training.run import inspect_params

    f = tmp_path / "s.yaml"
    f.write_text(
        f"name: dry\nbase: {{model: {tiny_models['bert']}, data_dir: {tiny_data}, train_size: 40}}\n"
        "cells:\n  - {name: head, method: head}\n  - {name: lora-r4, method: lora, rank: 4}\n"
        "seeds: [1, 2]\n"
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["study", "run", str(f), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    text = out.getvalue()
    plan = make_plan(load_spec(f), tmp_path / "o")
    for cell in plan.cells:
        trainable = inspect_params(plan.spec.cell_config(cell)).trainable
        assert any(line.startswith(cell.name) and f"{trainable:,}" in line for line in text.splitlines())
    assert "2 cells x 2 seeds" in text and "estimated time" in text
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_dry_run_reports_a_cell_that_cannot_be_built(tiny_models, tiny_data, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        f"name: dry\nbase: {{model: {tiny_models['bert']}, data_dir: {tiny_data}}}\n"
        "cells:\n  - {name: top9, method: lora, layers: top9}\n"
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli_main(["study", "run", str(f), "--dry-run"]) == 2
    assert "cell 'top9'" in err.getvalue() and "--layers top9" in err.getvalue()

"""tcmn-cv: mean ± std over fold / seed runs from their summary.json, failed and missing runs listed;
the end-of-sweep report (Hydra callback) and the Optuna bootstrap-schedule search space."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tcmn.cli.cv import cv, parse_args
from tcmn.cv import SweepReport, aggregate, bootstrap_schedule, find_runs, summary_rows, write_cv
from tcmn.errors import TCMNError

# model J of dataset "a" in folds 0, 1, 2: mean 0.7, sample std (ddof=1) 0.1 (population: 0.0816)
FOLD_J = {0: 0.6, 1: 0.7, 2: 0.8}


def _train_summary(fold: int, j: float) -> dict:
    """A run_train summary with known test tables (two datasets, one class, the baseline)."""
    rec = lambda name, jj, **kw: {  # noqa: E731
        "dataset": name,
        "J": jj,
        "F": jj + 0.1,
        "Dice": jj + 0.05,
        "J&F": jj + 0.05,
        "n_videos": 3,
        "n_objects": 3,
        **kw,
    }
    return {
        "status": "ok",
        "task_name": "train_main",
        "stage": "main",
        "seed": 0,
        "fold": fold,
        "config": {"seed": 0, "data": {"fold": fold}, "model": {"loss": {"beta": 0.1}}},
        "test": {"test/J": (j + 0.5) / 2},
        "test_tables": {
            "per_dataset": [rec("a", j), rec("b", 0.5), rec("mean", (j + 0.5) / 2)],
            "per_class": [{"class": "polyp", "J": j, "F": 0.9, "Dice": 0.8, "J&F": 0.8}],
            "baseline_per_dataset": [rec("a", 0.2), rec("b", 0.3), rec("mean", 0.25)],
            "baseline_per_class": [{"class": "polyp", "J": 0.2, "F": 0.1, "Dice": 0.3}],
        },
    }


def _job(root: Path, num: int, overrides: list[str], summary: dict | None) -> Path:
    d = root / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def _sweep(root: Path) -> Path:
    """Folds 0-2 ok, fold 3 failed, fold 4 killed (no summary), fold 5 never started."""
    for k, j in FOLD_J.items():
        _job(root, k, [f"data.fold={k}"], _train_summary(k, j))
    _job(root, 3, ["data.fold=3"], {"status": "failed", "error": "loss became nan", "fold": 3})
    _job(root, 4, ["data.fold=4"], None)
    multirun = {
        "hydra": {
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
            "overrides": {"task": ["data.fold=0,1,2,3,4,5"]},
        }
    }
    (root / "multirun.yaml").write_text(OmegaConf.to_yaml(multirun))
    return root


def test_mean_and_sample_std_over_folds(tmp_path):
    runs = find_runs(_sweep(tmp_path))
    status = {(tuple(r.overrides), r.status) for r in runs}
    assert status == {
        (("data.fold=0",), "ok"),
        (("data.fold=1",), "ok"),
        (("data.fold=2",), "ok"),
        (("data.fold=3",), "failed"),
        (("data.fold=4",), "missing"),
        (("data.fold=5",), "missing"),
    }
    agg = aggregate(runs).set_index(["level", "name", "method", "metric"])
    row = agg.loc[("dataset", "a", "tcmn", "J")]
    assert row["mean"] == pytest.approx(0.7)
    assert row["std"] == pytest.approx(0.1)  # sample std, ddof=1
    assert row["n"] == 3
    # a value identical in every fold: std 0; the baseline beside the model
    assert agg.loc[("dataset", "b", "tcmn", "J"), "std"] == pytest.approx(0.0)
    assert agg.loc[("dataset", "a", "copy_first_mask", "J"), "mean"] == pytest.approx(0.2)
    assert agg.loc[("dataset", "mean", "tcmn", "J"), "mean"] == pytest.approx(0.6)
    assert agg.loc[("class", "polyp", "tcmn", "J"), "mean"] == pytest.approx(0.7)
    assert agg.loc[("class", "polyp", "copy_first_mask", "F"), "mean"] == pytest.approx(0.1)


def test_write_cv_files_list_failed_and_missing_runs(tmp_path):
    root = _sweep(tmp_path / "sweep")
    summary = cv([f"dir={root}", f"out={tmp_path / 'out'}"])
    out = tmp_path / "out"
    assert summary["n_runs"] == {"ok": 3, "failed": 1, "missing": 2}
    assert [r["fold"] for r in summary["failed"]] == [3]
    assert "loss became nan" in summary["failed"][0]["error"]
    missing = sorted(tuple(r["overrides"]) for r in summary["missing"])
    assert missing == [("data.fold=4",), ("data.fold=5",)]
    assert "ddof=1" in summary["std"]
    on_disk = json.loads((out / "cv_summary.json").read_text())
    assert on_disk["n_runs"] == summary["n_runs"]
    csv = pd.read_csv(out / "cv_per_dataset.csv")
    a = csv[(csv["name"] == "a") & (csv["method"] == "tcmn") & (csv["metric"] == "J")].iloc[0]
    assert a["mean"] == pytest.approx(0.7) and a["std"] == pytest.approx(0.1) and a["n"] == 3
    assert set(pd.read_csv(out / "cv_per_class.csv")["name"]) == {"polyp"}
    md = (out / "cv_summary.md").read_text()
    assert "| a | 70.00 ± 10.00 |" in md
    assert "failed: 3 [data.fold=3]: loss became nan" in md
    assert "missing: ? [data.fold=5]: the job never started" in md
    assert "copy_first_mask J" in md
    # each run's own scores: fold 1's dataset mean J (0.7 + 0.5) / 2, F and Dice, copy J, no
    # mask dependence in a train summary
    assert "| 1 | 1 | 0 | 60.00 | 70.00 | 65.00 | 25.00 | - |" in md
    runs = pd.read_csv(out / "cv_per_run.csv")
    j_a = runs[(runs["name"] == "a") & (runs["method"] == "tcmn") & (runs["metric"] == "J")]
    assert dict(zip(j_a["fold"], j_a["value"], strict=True)) == pytest.approx(FOLD_J)
    assert len(on_disk["per_run"]) == len(runs)


def test_one_run_has_no_std_and_eval_summaries_are_read(tmp_path):
    ev = {
        "status": "ok",
        "methods": {"tcmn": {"J": 0.5}},
        "per_dataset": [
            {"method": "tcmn", "dataset": "a", "J": 0.5, "F": 0.4, "Dice": 0.6, "J&F": 0.45},
            {"method": "copy_first_mask", "dataset": "a", "J": 0.2, "F": 0.2, "Dice": 0.3},
            {"method": "control_empty", "dataset": "a", "J": 0.1, "F": 0.1, "Dice": 0.1},
        ],
        "per_class": [{"method": "tcmn", "class": "polyp", "J": 0.5}],
        "mask_dependence": {"a": 0.4, "class/polyp": 0.3},
    }
    d = _job(tmp_path, 0, ["ckpt=x", "fold=2"], ev)
    # tcmn-eval's fold is its own top-level key; its data.fold stays null
    (d / ".hydra" / "config.yaml").write_text(
        OmegaConf.to_yaml({"fold": 2, "data": {"fold": None}})
    )
    (run,) = find_runs(tmp_path)
    assert (run.kind, run.fold) == ("eval", 2)
    agg = aggregate([run]).set_index(["level", "name", "method", "metric"])
    assert agg.loc[("dataset", "a", "tcmn", "F"), "mean"] == pytest.approx(0.4)
    assert math.isnan(agg.loc[("dataset", "a", "tcmn", "F"), "std"])
    assert agg.loc[("dataset", "a", "control_empty", "J"), "mean"] == pytest.approx(0.1)
    assert agg.loc[("dataset", "a", "mask_dependence", "J"), "mean"] == pytest.approx(0.4)
    assert agg.loc[("class", "polyp", "mask_dependence", "J"), "mean"] == pytest.approx(0.3)
    # JSON has null (not NaN) for the std of one run
    s = write_cv(tmp_path)
    assert all(r["std"] is None for r in s["per_dataset"])


def test_flat_test_metrics_are_read_when_tables_are_absent():
    rows = summary_rows(
        {
            "status": "ok",
            "test": {
                "test/J": 0.4,
                "test/syn/J": 0.3,
                "test/class/polyp/Dice": 0.2,
                "test/baseline_J": 0.1,
                "test/n_videos": 3.0,
            },
        }
    )
    got = {(r["level"], r["name"], r["method"], r["metric"]): r["value"] for r in rows}
    assert got == {
        ("dataset", "mean", "tcmn", "J"): 0.4,
        ("dataset", "syn", "tcmn", "J"): 0.3,
        ("class", "polyp", "tcmn", "Dice"): 0.2,
    }


def test_group_by_aggregates_settings_separately(tmp_path):
    for i, (beta, j) in enumerate([(0.0, 0.2), (0.0, 0.4), (0.1, 0.6), (0.1, 0.8)]):
        s = _train_summary(0, j)
        s["config"]["model"]["loss"]["beta"] = beta
        _job(tmp_path, i, [f"model.loss.beta={beta}", f"seed={i}"], s)
    agg = aggregate(find_runs(tmp_path), ["model.loss.beta"])
    a = agg[(agg["name"] == "a") & (agg["method"] == "tcmn") & (agg["metric"] == "J")]
    by_beta = dict(zip(a["model.loss.beta"], a["mean"], strict=True))
    assert by_beta == pytest.approx({0.0: 0.3, 0.1: 0.7})
    md = cv([f"dir={tmp_path}", "group_by=[model.loss.beta]"])
    assert md["group_by"] == ["model.loss.beta"]
    assert "## model.loss.beta=0.1" in (tmp_path / "cv_summary.md").read_text()


def test_cli_arguments_fail_with_one_sentence(tmp_path):
    with pytest.raises(TCMNError, match="missing mandatory value: dir"):
        parse_args([])
    with pytest.raises(TCMNError, match="Key 'folds' not in"):
        parse_args([f"dir={tmp_path}", "folds=5"])
    with pytest.raises(TCMNError, match="not key=value"):
        parse_args([str(tmp_path)])
    with pytest.raises(TCMNError, match="no such folder"):
        write_cv(tmp_path / "nope")
    with pytest.raises(TCMNError, match="no run found"):
        write_cv(tmp_path)


def test_sweep_report_exits_1_after_listing_failed_jobs(tmp_path, capsys):
    root = _sweep(tmp_path)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}})
    with pytest.raises(SystemExit) as e:
        SweepReport(exit_on_failure=True).on_multirun_end(config)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "3 of 6 jobs" in err and "data.fold=3" in err and "data.fold=5" in err
    assert (root / "cv_summary.md").exists()
    # an Optuna search: report only
    SweepReport(exit_on_failure=False, aggregate=False).on_multirun_end(config)
    # a sweep whose jobs write no summary at all (another command): silent
    other = tmp_path / "other"
    _job(other, 0, ["x=1"], None)
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(other)}}}))


def test_bootstrap_schedule_search_space_is_ordered():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = OmegaConf.create({"trainer": {"max_steps": 1000}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        bootstrap_schedule(cfg, trial)
        start, end = trial.params["model.loss.start_warm"], trial.params["model.loss.end_warm"]
        assert 0 <= start <= 500 and start <= end <= 1000
        study.tell(trial, 0.0)
    with pytest.raises(TCMNError, match="positive max_steps"):
        bootstrap_schedule(OmegaConf.create({"trainer": {"max_steps": -1}}), study.ask())

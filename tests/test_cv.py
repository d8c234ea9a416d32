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


def _job(root: Path, num: int | str, overrides: list[str], summary: dict | None) -> Path:
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
    assert s["per_dataset"] and all(r["std"] is None for r in s["per_dataset"])


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
    with pytest.raises(TCMNError, match=r"tcmn-cv needs dir=SWEEP_FOLDER \(or seeds="):
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


# --------------------------------------------------------------------------------------------
# paired comparison of two variant folders (tcmn-cv dir=A compare=B)
# --------------------------------------------------------------------------------------------

# (fold, seed) -> dataset-mean J of the model in variant B; A = B + the Δ below
PAIR_KEYS = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
B_J = 0.5
DELTA_J = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]  # all positive: exact two-sided p = 2/2**6
DELTA_F = [-0.02, 0.01, 0.03, -0.04, 0.05, 0.06]  # ranks 2 and 4 negative: p = 2 * 14/64


def _eval_summary(j: float, f: float, dice: float, copy_j: float, dep: float) -> dict:
    """A run_eval summary whose ``mean`` dataset row has the given values (dataset ``a`` differs,
    so reading the wrong row changes every number)."""
    rows = []
    for name, shift in (("a", 0.2), ("mean", 0.0)):
        rows += [
            {"method": "tcmn", "dataset": name, "J": j - shift, "F": f - shift, "Dice": dice},
            {"method": "copy_first_mask", "dataset": name, "J": copy_j - shift, "F": 0.1},
            {"method": "control_empty", "dataset": name, "J": 0.05, "F": 0.05, "Dice": 0.05},
        ]
    return {
        "status": "ok",
        "methods": {"tcmn": {"J": j}},
        "per_dataset": rows,
        "per_class": [],
        "mask_dependence": {"a": dep - 0.3, "mean": dep},
    }


def _eval_job(root: Path, name: str, fold: int, seed: int | None, summary: dict | None) -> Path:
    """A tcmn-eval run folder: fold and seed in .hydra/config.yaml (its data.fold stays null)."""
    d = _job(root, name, [f"fold={fold}", f"seed={seed}"], summary)
    config = {"fold": fold, "data": {"fold": None}} | ({} if seed is None else {"seed": seed})
    (d / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(config))
    return d


def _variants(tmp_path: Path) -> tuple[Path, Path]:
    """Variant A and B over 3 folds x 2 seeds; A also has fold 3 (unpaired), B a failed run."""
    a, b = tmp_path / "tcmn", tmp_path / "no_ltc"
    for (fold, seed), dj, df in zip(PAIR_KEYS, DELTA_J, DELTA_F, strict=True):
        job = f"fold_{fold}_seed_{seed}"
        _eval_job(b, job, fold, seed, _eval_summary(B_J, 0.4, 0.7, 0.2, 0.1))
        _eval_job(a, job, fold, seed, _eval_summary(B_J + dj, 0.4 + df, 0.7, 0.2, 0.3))
    _eval_job(a, "fold_3_seed_0", 3, 0, _eval_summary(0.9, 0.9, 0.9, 0.2, 0.3))
    _eval_job(b, "fold_3_seed_0", 3, 0, {"status": "failed", "error": "out of memory"})
    return a, b


def test_paired_deltas_mean_std_signs_and_wilcoxon(tmp_path):
    from tcmn.paired import paired_comparison

    a, b = _variants(tmp_path)
    res = paired_comparison(a, b)
    assert [ra.key for ra, _ in res.pairs] == PAIR_KEYS
    assert [rb.run for _, rb in res.pairs] == [f"fold_{f}_seed_{s}" for f, s in PAIR_KEYS]
    # the dataset "mean" row, never dataset "a" (0.2 lower)
    assert [ra.values["J"] - rb.values["J"] for ra, rb in res.pairs] == pytest.approx(DELTA_J)
    assert [ra.values["F"] - rb.values["F"] for ra, rb in res.pairs] == pytest.approx(DELTA_F)
    ra, rb = res.pairs[0]
    assert ra.values["mask_dependence J"] == pytest.approx(0.3)
    assert rb.values["mask_dependence J"] == pytest.approx(0.1)
    assert ra.values["copy_first_mask J"] == pytest.approx(0.2)
    s = {row["metric"]: row for row in res.summary}
    # J: mean 0.035, sample std sqrt(17.5e-4 / 5); 6 of 6 positive; exact p = 2 / 64
    assert s["J"]["mean"] == pytest.approx(0.035)
    assert s["J"]["std"] == pytest.approx(0.018708287)
    assert (s["J"]["n"], s["J"]["positive"], s["J"]["negative"]) == (6, 6, 0)
    assert s["J"]["p"] == pytest.approx(0.03125)
    assert (s["J"]["test"], s["J"]["min_p"]) == ("exact", pytest.approx(0.03125))
    # F: mean 0.015, sample std sqrt(77.5e-4 / 5); R- = 2 + 4 = 6, P(T <= 6) = 14 / 64
    assert s["F"]["mean"] == pytest.approx(0.015)
    assert s["F"]["std"] == pytest.approx(0.039370039)
    assert (s["F"]["positive"], s["F"]["negative"]) == (4, 2)
    assert s["F"]["p"] == pytest.approx(0.4375)
    # Dice identical in A and B: Δ 0, std 0, no test
    assert (s["Dice"]["mean"], s["Dice"]["std"], s["Dice"]["zero"]) == (0.0, 0.0, 6)
    assert math.isnan(s["Dice"]["p"]) and "all differences zero" in s["Dice"]["test"]
    # fold 3: scored in A only (B's run failed) -> unpaired, not in the n of 6
    assert res.unpaired == [
        {"folder": "A", "dir": str(a), "run": "fold_3_seed_0", "fold": 3, "seed": 0}
    ]
    assert [(x["folder"], x["run"], x["status"]) for x in res.skipped] == [
        ("B", "fold_3_seed_0", "failed")
    ]


def test_wilcoxon_small_samples_ties_and_min_p():
    from tcmn.paired import delta_summary, min_p, wilcoxon_p

    assert min_p(5) == 0.0625 and min_p(6) == 0.03125 and math.isnan(min_p(0))
    # ties |0.01| = |-0.01| (ranks 1.5, 1.5, 3, 4; R- = 1.5): 3 of 16 sign patterns as extreme
    p, test = wilcoxon_p([0.01, -0.01, 0.02, 0.03])
    assert (p, test) == (pytest.approx(0.375), "permutation")
    # roundoff in A - B does not break a tie: 0.7 - 0.6 and 0.8 - 0.7 differ in the last bit
    assert wilcoxon_p([0.7 - 0.6, 0.8 - 0.7, 0.3])[1] == "permutation"
    one = delta_summary("J", [0.05])
    assert one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["p"])
    assert one["min_p"] == 1.0 and "fewer than 2" in one["test"]
    # a metric missing in a run (NaN Δ) is left out of its n
    assert delta_summary("F", [0.01, math.nan, 0.02])["n"] == 2


def test_paired_duplicate_key_and_no_pair_fail_with_one_sentence(tmp_path):
    from tcmn.paired import paired_comparison

    a, b = _variants(tmp_path)
    _eval_job(a, "rerun", 1, 0, _eval_summary(0.6, 0.5, 0.7, 0.2, 0.3))
    with pytest.raises(TCMNError, match="rerun.*both have fold=1 seed=0") as e:
        paired_comparison(a, b)
    assert str(a / "fold_1_seed_0") in str(e.value)
    c, d = tmp_path / "c", tmp_path / "d"
    _eval_job(c, "0", 0, 0, _eval_summary(0.6, 0.5, 0.7, 0.2, 0.3))
    _eval_job(d, "0", 1, 0, _eval_summary(0.6, 0.5, 0.7, 0.2, 0.3))
    with pytest.raises(TCMNError, match="no fold and seed has a scored run in both") as e:
        paired_comparison(c, d)
    assert str(c) in str(e.value) and str(d) in str(e.value) and "compare=" in str(e.value)
    with pytest.raises(TCMNError, match="no such folder; pass as variant B"):
        paired_comparison(c, tmp_path / "nope")


def test_paired_seed_none_is_a_key_value(tmp_path):
    from tcmn.paired import paired_comparison

    a, b = tmp_path / "a", tmp_path / "b"
    for fold, dj in ((0, 0.1), (1, -0.3)):
        _eval_job(a, f"f{fold}", fold, None, _eval_summary(0.5 + dj, 0.4, 0.7, 0.2, 0.3))
        _eval_job(b, f"f{fold}", fold, None, _eval_summary(0.5, 0.4, 0.7, 0.2, 0.3))
    _eval_job(a, "f0_seed0", 0, 0, _eval_summary(0.9, 0.9, 0.9, 0.2, 0.3))  # (0, 0) != (0, None)
    res = paired_comparison(a, b, metrics=["J"])
    assert [ra.key for ra, _ in res.pairs] == [(0, None), (1, None)]
    assert [(u["run"], u["fold"], u["seed"]) for u in res.unpaired] == [("f0_seed0", 0, 0)]
    (j,) = res.summary
    # Δ 0.1 and -0.3: mean -0.1, std sqrt(2 * 0.2**2 / 1) = 0.2828; ranks 1+, 2-: p = 2 * 2/4 = 1
    assert (j["mean"], j["std"]) == (pytest.approx(-0.1), pytest.approx(0.28284271))
    assert (j["positive"], j["negative"], j["p"], j["min_p"]) == (1, 1, 1.0, 0.5)
    with pytest.raises(TCMNError, match="metrics=.*of"):
        paired_comparison(a, b, metrics=["IoU"])


def test_cli_compare_writes_paired_files(tmp_path, capsys):
    from tcmn.cv import OUTPUT_FILES
    from tcmn.paired import PAIRED_FILES

    a, b = _variants(tmp_path)
    out = tmp_path / "out"
    summary = cv([f"dir={a}", f"compare={b}", f"out={out}"])
    for name in (*OUTPUT_FILES, *PAIRED_FILES):
        assert (out / name).is_file(), name
    paired = summary["paired"]
    assert paired["n_pairs"] == 6 and paired["delta"] == "A - B"
    assert json.loads((out / "paired_summary.json").read_text()) == paired
    dice = next(s for s in paired["summary"] if s["metric"] == "Dice")
    assert dice["p"] is None and dice["min_p"] is None  # NaN -> null
    runs = pd.read_csv(out / "paired_per_run.csv")
    assert list(runs.columns) == ["fold", "seed", "run_a", "run_b", "metric", "a", "b", "delta"]
    assert len(runs) == 6 * 5  # J, F, Dice, copy-first-mask J, mask dependence J
    j = runs[runs["metric"] == "J"]
    assert list(zip(j["fold"], j["seed"], strict=True)) == PAIR_KEYS
    assert list(j["delta"]) == pytest.approx(DELTA_J)
    table = pd.read_csv(out / "paired_summary.csv").set_index("metric")
    assert table.loc["J", "positive"] == 6 and table.loc["J", "p"] == pytest.approx(0.03125)
    md = capsys.readouterr().out
    assert f"`{a}` (A) and `{b}` (B)" in md and "Δ = A − B" in md
    assert "| J | +3.50 ± 1.87 | 6 / 6 | 0 | 0 | 0.03125 | exact | 0.03125 |" in md
    assert "| 0 | 1 | fold_0_seed_1 | fold_0_seed_1 | 52.00 | 50.00 | +2.00 |" in md
    assert "A: fold_3_seed_0 (fold 3, seed 0)" in md and "B: fold_3_seed_0 (failed)" in md
    assert "paired comparison written to" in md

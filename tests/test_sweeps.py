"""Sweeps through the real command line (Hydra multirun): a grid that survives a failing job and
says so, an Optuna search with a NaN trial and an SQLite storage, the default search space, the
SLURM launcher config, and leave-one-dataset-out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DATA, compose_cfg, small_synthetic
from omegaconf import OmegaConf

from tcmn.wandb_offline import read_offline_run

TINY = [
    "model=tiny",
    *TINY_DATA,
    "trainer.max_steps=1",
    "trainer.log_every_n_steps=1",
    "extras.print_config=false",
]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """A data folder with a small synthetic dataset (8 videos of 6 frames, 64 px) for CLI runs."""
    return small_synthetic(tmp_path_factory.mktemp("small_data"), 8, holdout_classes=("atrium",))


def _env(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(TCMN_ROOT=str(tmp_path), WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    env.update(extra)
    return env


def _train_cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tcmn.cli.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _fake_pretrain_checkpoint(path: Path, marker: float) -> str:
    """A pretrain-stage checkpoint (network weights only) whose first BatchNorm running mean is
    ``marker``: BatchNorm statistics are frozen in training, so every run started from it keeps
    the marker."""
    from tcmn.lit_module import TCMNModule

    cfg = compose_cfg("train", ["model=tiny", "stage=pretrain"], path.parent)
    module = TCMNModule(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    state = module.state_dict()
    key = next(k for k in state if k.endswith("running_mean"))
    state[key] = torch.full_like(state[key], marker)
    torch.save({"state_dict": state}, path)
    return key


def test_grid_sweep_continues_after_a_failed_job_and_reports_it(tmp_path, small_data):
    """2 seeds x 2 optimizers, one optimizer unknown: 2 runs train, 2 fail fast; every job starts
    from one pretrain checkpoint (init_from); W&B offline: one run per job, one group."""
    ckpt = tmp_path / "pretrain.ckpt"
    key = _fake_pretrain_checkpoint(ckpt, 0.123)
    args = [
        "-m",
        *TINY,
        f"paths.data_dir={small_data}",
        "data.synthetic=null",
        "logger=wandb",
        "seed=0,1",
        "model.optimizer.name=adam,nope",
        f"init_from={ckpt}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = _env(tmp_path, WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb"))
    res = _train_cli(args, env, tmp_path)
    sweep = tmp_path / "sweep"
    # the sweep ran every job, then exited 1 naming the failed ones
    assert res.returncode == 1, res.stderr[-3000:]
    assert "2 of 4 jobs of the sweep" in res.stderr
    assert "model.optimizer.name=nope" in res.stderr
    summaries = {
        int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")
    }
    assert sorted(summaries) == [0, 1, 2, 3]
    ok = {n: s for n, s in summaries.items() if s["status"] == "ok"}
    assert sorted(ok) == [0, 2]  # job 2 ran after job 1 failed
    assert sorted(s["seed"] for s in ok.values()) == [0, 1]
    assert all("model.optimizer.name=nope: not allowed" in summaries[n]["error"] for n in (1, 3))
    for s in ok.values():
        assert np.isfinite(s["val"]["val/J&F"]) and "test_tables" in s
        state = torch.load(s["last_ckpt"], map_location="cpu", weights_only=False)["state_dict"]
        assert torch.all(state[key] == 0.123)  # started from the pretrain checkpoint
    report = json.loads((sweep / "cv_summary.json").read_text())
    assert report["n_runs"] == {"ok": 2, "failed": 2, "missing": 0}

    # W&B: every job that started has its own offline run (finished before the next started),
    # one group; the failed jobs stopped at the settings check, before any run was opened
    runs = {}
    for n in (0, 2):
        (run_dir,) = (sweep / str(n) / "wandb").glob("offline-run-*")
        runs[n] = read_offline_run(run_dir)
    for n in (1, 3):
        assert not list((sweep / str(n)).glob("wandb/offline-run-*"))
    ids = {r["run"].run_id for r in runs.values()}
    assert len(ids) == 2
    groups = {r["run"].run_group for r in runs.values()}
    assert groups == {f"train_main-{sweep.name}"}
    assert runs[2]["run"].display_name == "model.optimizer.name=adam,seed=1"  # swept keys only
    assert {"stage:main", "seed:1"} <= set(runs[2]["run"].tags)
    assert runs[0]["exit"] == runs[2]["exit"] == 0
    # config and metrics of a finished run
    w = runs[2]
    assert w["config"]["seed"] == 1 and w["config"]["model"]["optimizer"]["name"] == "adam"
    assert float(w["summary"]["val/J&F"]) == pytest.approx(ok[2]["val"]["val/J&F"], abs=1e-6)
    assert float(w["summary"]["test/J"]) == pytest.approx(ok[2]["test"]["test/J"], abs=1e-6)
    assert any("train/loss" in h for h in w["history"])
    # the L_tc / memory diagnostics (model.diag_every) reach W&B too
    diag = [h for h in w["history"] if "diag/d13" in h]
    assert diag and all(k in diag[0] for k in ("diag/mask_signal", "diag/value_norm"))
    # media: overlay strips and per-video tables, every validation and the test
    media = sweep / "2" / "wandb"
    assert list(media.glob("offline-run-*/files/media/images/val/overlays_*.png"))
    assert list(media.glob("offline-run-*/files/media/table/val/per_video_*.table.json"))
    assert list(media.glob("offline-run-*/files/media/table/test/per_class_*.table.json"))


def test_optuna_search_survives_a_nan_trial_and_stores_the_study(tmp_path, small_data):
    """3 trials of hparams_search=optuna's own search space; trial #1 gets alpha=inf (refused as a
    setting) and is scored failed_value; the study is in SQLite; optimization_results.yaml."""
    import optuna

    db = tmp_path / "optuna.db"
    args = [
        "hparams_search=optuna",
        *TINY,
        "logger=csv",
        "~callbacks.lr_monitor",
        f"paths.data_dir={small_data}",
        "data.synthetic=null",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.study_name=nan_test",
        "failed_value=-1.0",
        # alpha = inf in job 1 only (1.0 elsewhere), whatever the sampler draws
        "+alpha_of_job_1=inf",
        "model.loss.alpha='${oc.select:alpha_of_job_${hydra:job.num},1.0}'",
    ]
    res = _train_cli(args, _env(tmp_path), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = tmp_path / "sweep"
    summaries = {
        int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/summary.json")
    }
    assert sorted(summaries) == [0, 1, 2]
    # alpha=inf is refused before training starts (one sentence naming the setting)
    assert summaries[1]["status"] == "failed"
    assert "model.loss.alpha=inf is not allowed" in summaries[1]["error"]
    ok = {n: s["val"]["val/J&F"] for n, s in summaries.items() if s["status"] == "ok"}
    assert sorted(ok) == [0, 2]
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert result.best_value == pytest.approx(max(ok.values()))
    assert {"model.optimizer.lr", "model.loss.start_warm"} <= set(result.best_params)
    # the study in SQLite (optuna 2.10.1 with the pinned SQLAlchemy / Alembic)
    study = optuna.load_study(study_name="nan_test", storage=f"sqlite:///{db}")
    values = {t.number: t.value for t in study.trials}
    assert values[1] == -1.0
    assert [values[0], values[2]] == pytest.approx([ok[0], ok[2]])


def test_optuna_sqlite_storage_resumes_and_is_shared(tmp_path):
    """The pins: optuna 2.10.1's RDB storage works with the installed SQLAlchemy and Alembic."""
    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert sqlalchemy.__version__.startswith("1.4")
    url = f"sqlite:///{tmp_path / 'study.db'}"

    def worker(n):
        study = optuna.create_study(
            study_name="s", storage=url, direction="maximize", load_if_exists=True
        )
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
        return study

    worker(2)  # first session
    worker(1)  # resumed (or a second worker on the same storage)
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 3
    assert study.best_value == max(t.value for t in study.trials)


def test_default_search_space_composes_into_valid_runs(tmp_path):
    """Trials of hparams_search=optuna's own space (and the bootstrap schedule) become overrides
    that Hydra composes, within their ranges."""
    import optuna
    from hydra.utils import instantiate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = compose_cfg("train", ["hparams_search=optuna", "trainer.max_steps=100"], tmp_path)
    sw = cfg.hydra.sweeper
    assert sw.direction == "maximize" and cfg.optimized_metric == "val/J&F"
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.test is False
    sweeper = instantiate(sw)
    impl = sweeper.sweeper
    impl.config = cfg
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    space, fixed = create_params_from_overrides(impl._parse_sweeper_params_config())
    assert set(space) >= {
        "model.optimizer.lr",
        "model.optimizer.weight_decay",
        "model.loss.alpha",
        "model.loss.beta",
        "model.loss.top_p",
        "data.max_skip",
        "model.propagation.mem_every",
    }
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    trials = [study.ask() for _ in range(4)]
    jobs = list(impl._configure_trials(trials, space, fixed))
    assert len(jobs) == len(trials)
    for overrides in jobs:
        job = compose_cfg("train", ["trainer.max_steps=100", *overrides], tmp_path)
        assert 1e-5 <= job.model.optimizer.lr <= 1e-3
        assert 0 <= job.model.loss.start_warm <= job.model.loss.end_warm <= 100
        assert job.model.propagation.mem_every in (1, 2, 3, 5, 8)
        assert 0 <= job.data.max_skip <= 8


def test_slurm_launcher_config_renders_an_sbatch_header(tmp_path, monkeypatch):
    """hydra/launcher=slurm composes, sizes the job from the trainer, and the launcher's own code
    turns a 2-job sweep into an sbatch array (a stand-in `srun` on PATH; submission intercepted)."""
    import submitit
    from hydra.utils import instantiate

    cfg = compose_cfg(
        "train",
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=2",
            "hydra.launcher.partition=gpu",
        ],
        tmp_path,
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["gpus_per_node"] == 2 and launcher.params["tasks_per_node"] == 2
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    class Submitted(Exception):
        pass

    def fake_map_array(executor, fn, *args):
        raise Submitted(len(args[0]), executor._executor._make_submission_file_text("cmd", "0"))

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    launcher.config = cfg
    with pytest.raises(Submitted) as sub:
        launcher.launch([["data.fold=0"], ["data.fold=1"]], initial_job_idx=0)
    n_jobs, sbatch = sub.value.args
    assert n_jobs == 2
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --nodes=1",
        "#SBATCH --time=1440",
        "#SBATCH --mem=64GB",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in sbatch, line


def test_lodo_trains_without_the_left_out_dataset_and_tests_all_of_it(tmp_path):
    """Two synthetic datasets; data=lodo leaves one out of train and val and tests every video of
    it; the other way round is the same config with another leave_out."""
    from tcmn.data.splits import make_splits
    from tcmn.data.synthetic import generate_synthetic
    from tcmn.errors import TCMNError
    from tcmn.experiment import run_train

    data = tmp_path / "data"
    for name, seed in (("syn_a", 0), ("syn_b", 1)):
        root = generate_synthetic(data / name, n_videos=5, n_frames=6, size=(64, 64), seed=seed)
        meta = json.loads((root / "meta.json").read_text())
        meta["dataset"] = name  # the generator names every dataset "synthetic"
        (root / "meta.json").write_text(json.dumps(meta))
        make_splits(root, n_folds=0)
    pool = [
        "data.train=[syn_a,syn_b]",
        "data.val=[syn_a,syn_b]",
        "data.synthetic=null",
        "data.max_eval_videos=null",
    ]

    def lodo(leave_out, extra=()):
        cfg = compose_cfg(
            "train",
            [
                *TINY,
                "logger=csv",
                "~callbacks.lr_monitor",
                "data=lodo",
                *pool,
                f"data.leave_out={leave_out}",
                *extra,
            ],
            tmp_path / leave_out,
        )
        OmegaConf.update(cfg, "paths.data_dir", str(data))
        return cfg

    from hydra.utils import instantiate

    for out, keep in (("syn_a", "syn_b"), ("syn_b", "syn_a")):
        dm = instantiate(lodo(out).data, _convert_="all")
        dm.setup()
        assert [n for n, _ in dm.train_specs] == [keep] and dm.val_names == [keep]
        assert [it[1] for it in dm.test_dataset().items] == sorted(dm.dataset(out).videos)
        assert {it[0].name for it in dm.test_dataset().items} == {out}
    cfg = lodo("syn_b")
    summary = run_train(cfg)
    per_dataset = {r["dataset"]: r for r in summary["test_tables"]["per_dataset"]}
    assert set(per_dataset) == {"syn_b", "mean"}
    assert per_dataset["syn_b"]["n_videos"] == 5  # every video of the left-out dataset
    with pytest.raises(Exception, match="not among the training datasets") as e:
        instantiate(lodo("syn_c").data, _convert_="all")
    assert isinstance(e.value.__cause__ or e.value, TCMNError)  # hydra wraps it
    with pytest.raises(Exception, match="Missing mandatory value: data.leave_out"):
        instantiate(compose_cfg("train", ["data=lodo"], tmp_path).data, _convert_="all")


def test_local_multirun_refuses_ddp_that_would_rerun_the_sweep(tmp_path, monkeypatch):
    import tcmn.experiment
    from tcmn.errors import TCMNError

    monkeypatch.setattr(tcmn.experiment, "in_multirun", lambda: True)
    cfg = compose_cfg("train", [*TINY, "logger=csv", "trainer=ddp_cpu"], tmp_path)
    with pytest.raises(TCMNError, match="cannot run inside a local multirun"):
        tcmn.experiment.run_train(cfg)

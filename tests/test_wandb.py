"""Weights & Biases settings and media, without W&B itself (runs here are disabled).

The one test with a real offline W&B run (run folder, config, metrics, overlays, tables, one run
per multirun job, one group per sweep) is
``test_sweeps.py::test_grid_sweep_continues_after_a_failed_job_and_reports_it``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, compose_cfg
from omegaconf import OmegaConf, open_dict

from tcmn.callbacks import WandbMedia, apply_wandb_run_settings, wandb_run_settings


def _multirun_cfg(tmp_path: Path, job_overrides: list[str], sweep_task: list[str]):
    """A composed train config whose Hydra state says: job 3 of a multirun in tmp/sweep."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(
        OmegaConf.to_yaml({"hydra": {"overrides": {"task": sweep_task}}})
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=job_overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(sweep)
        cfg.hydra.job.num = 3
        cfg.hydra.overrides.task = job_overrides
        cfg.paths.output_dir = str(tmp_path / "out")
    HydraConfig().set_config(cfg)
    return cfg


def test_single_run_settings(tmp_path):
    cfg = compose_cfg("train", ["seed=7", "data.fold=2", "tags=[cpu]"], tmp_path)
    s = wandb_run_settings(cfg)
    assert s == {"group": "train_main", "name": None, "tags": ["stage:main", "seed:7", "fold:2"]}
    apply_wandb_run_settings(cfg)
    w = cfg.logger.wandb
    assert w.group == "train_main" and w.name is None and w.job_type == "main"
    assert list(w.tags) == ["cpu", "stage:main", "seed:7", "fold:2"]
    # the mode follows WANDB_MODE (conftest: disabled); `offline: false` leaves the env alone
    assert w.mode == "disabled" and w.offline is False


def test_sweep_jobs_share_a_group_and_are_named_by_their_swept_values(tmp_path):
    job = ["model=tiny", "seed=1", "data.fold=2", "+data.leave_out=synthetic"]
    cfg = _multirun_cfg(
        tmp_path, job, ["model=tiny", "seed=0,1", "data.fold=2,3", "+data.leave_out=synthetic"]
    )
    s = wandb_run_settings(cfg)
    assert s["group"] == "train_main-sweep"
    assert s["name"] == "data.fold=2,seed=1"  # swept keys only, sorted
    assert s["tags"] == ["stage:main", "seed:1", "fold:2", "leave_out:synthetic"]
    # a name given in the config is kept; group filled
    with open_dict(cfg):
        cfg.logger.wandb.name = "mine"
    apply_wandb_run_settings(cfg)
    assert cfg.logger.wandb.name == "mine" and cfg.logger.wandb.group == "train_main-sweep"


def test_other_loggers_are_left_alone(tmp_path):
    cfg = compose_cfg("train", ["logger=csv"], tmp_path)
    before = OmegaConf.to_container(cfg.logger)
    apply_wandb_run_settings(cfg)
    assert OmegaConf.to_container(cfg.logger) == before
    assert "wandb_media" not in cfg.callbacks  # the media callback comes with logger=wandb
    assert compose_cfg("train", [], tmp_path).callbacks.wandb_media.n_videos == 4


class _Trainer:
    """The few trainer attributes WandbMedia reads."""

    def __init__(self, loggers):
        self.loggers = loggers
        self.is_global_zero = True
        self.sanity_checking = False
        self.global_step = 5


class _FakeWandb:
    """Records what WandbMedia logs (stands in for a WandbLogger)."""

    def __init__(self):
        self.images, self.tables = [], []

    def log_image(self, key, images, caption, step):
        self.images.append((key, images, caption, step))

    def log_table(self, key, dataframe, step):
        self.tables.append((key, dataframe, step))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    from tcmn.data.clips import WholeVideoDataset
    from tcmn.data.layout import PreparedDataset
    from tcmn.data.synthetic import generate_synthetic

    root = generate_synthetic(
        tmp_path_factory.mktemp("d") / "s", n_videos=3, n_frames=6, size=(48, 64)
    )
    ds = PreparedDataset(root)
    return WholeVideoDataset([(ds, v, i) for i, v in enumerate(sorted(ds.videos))], eval_size=32)


def test_media_callback_logs_strips_and_tables_only_to_wandb(items, monkeypatch):
    from pytorch_lightning.loggers import CSVLogger

    from tcmn.metrics import VOSMetric

    fake = _FakeWandb()
    media = WandbMedia(n_videos=2, n_frames=4)
    monkeypatch.setattr(WandbMedia, "_wandb_loggers", staticmethod(lambda trainer: [fake]))
    metric = VOSMetric(
        ["synthetic"], ["atrium", "lesion", "polyp", "ventricle"], [it["video"] for it in items]
    )

    class Module:
        pass

    module = Module()
    trainer = _Trainer([fake])
    media.on_validation_epoch_start(trainer, module)
    for i in range(3):
        item = items[i]
        pred = item["labels"].numpy()  # a perfect prediction
        metric.update(
            pred, item["labels"], item["annotated"], item["objects"], item["video"], "synthetic"
        )
        media.on_validation_batch_end(trainer, module, {"pred": pred}, item, i)
    module.last_results = {"model": metric.compute(), "baseline": None}
    media.on_validation_end(trainer, module)
    ((key, images, captions, step),) = fake.images
    assert key == "val/overlays" and step == 5 and len(images) == 2  # first n_videos only
    assert captions == [f"synthetic/{items[i]['video']}" for i in range(2)]
    # a strip: given frame + 3 later frames at the label size (48 x 64)
    assert images[0].shape == (48, 4 * 64, 3) and images[0].dtype == np.uint8
    assert [k for k, _, _ in fake.tables] == ["val/per_video", "val/per_dataset", "val/per_class"]
    assert len(fake.tables[0][1]) == len(module.last_results["model"].per_video)

    # with a CSV logger only (or none): nothing collected, nothing logged, no error
    monkeypatch.undo()
    quiet = WandbMedia()
    csv_trainer = _Trainer([CSVLogger("unused")])
    quiet.on_validation_epoch_start(csv_trainer, module)
    quiet.on_validation_batch_end(csv_trainer, module, {"pred": pred}, items[0], 0)
    quiet.on_validation_end(csv_trainer, module)
    assert quiet._strips == []

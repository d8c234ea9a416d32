"""DDP: 2 CPU processes (gloo, trainer=ddp_cpu) validate like one process on the same checkpoint;
the evaluation loaders are sharded by rank and every video counts once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_cfg, small_synthetic

DATA = [
    "data.crop_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.eval_size=64",
    "data.max_eval_videos=3",
    "data.synthetic=null",
]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """A small synthetic dataset (10 videos of 6 frames, 64 px; 4 in the test / val part)."""
    return small_synthetic(tmp_path_factory.mktemp("small_data"), 10, test_fraction=0.4)


def test_eval_loader_is_sharded_by_rank_and_padding_is_deduplicated(small_data, monkeypatch):
    """3 videos on 2 ranks: rank 0 gets videos 0 and 2, rank 1 gets 1 and 0 again (padding);
    VOSMetric counts video 0 once."""
    import numpy as np
    import torch.distributed as dist
    from hydra.utils import instantiate

    from tcmn.metrics import VOSMetric

    cfg = compose_cfg("train", ["model=tiny", *DATA], small_data / "cfg")
    dm = instantiate(cfg.data, data_dir=str(small_data), _convert_="all")
    dm.setup()
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    shards = {}
    for rank in (0, 1):
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=rank: r)
        shards[rank] = list(dm.val_dataloader().sampler)
    monkeypatch.undo()
    assert shards == {0: [0, 2], 1: [1, 0]}
    # the padded repeat adds no row: one row per (dataset, video, object)
    ds = dm.val_dataset()
    metric = VOSMetric(dm.dataset_names(), dm.class_names(), dm.video_names())
    for i in shards[0] + shards[1]:
        item = ds[i]
        labels = item["labels"].numpy()
        metric.update(
            labels, labels, item["annotated"], item["objects"], item["video"], "synthetic"
        )
    res = metric.compute()
    assert res.summary["n_videos"] == 3
    assert np.allclose(res.per_video["J"], 1.0)


def test_ddp_two_processes_validate_like_one(tmp_path, small_data):
    """Train 2 steps with 2 gloo processes, then validate the checkpoint in 1 process: the
    metrics (gathered across ranks under DDP) are the same."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from tcmn.lit_module import load_module

    run = tmp_path / "ddp"
    args = [
        "trainer=ddp_cpu",
        "model=tiny",
        "logger=csv",
        *DATA,
        "data.samples_per_epoch=8",  # 4 clips a rank, 2 steps of 2: one epoch, one validation
        "trainer.max_steps=2",
        "trainer.log_every_n_steps=1",
        "test=false",
        "extras.print_config=false",
        f"paths.data_dir={small_data}",
        f"hydra.run.dir={run}",
    ]
    env = dict(os.environ, TCMN_ROOT=str(tmp_path), WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "tcmn.cli.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world_size=2" in res.stderr + res.stdout or "GLOBAL_RANK: 1" in res.stderr + res.stdout
    summary = json.loads((run / "summary.json").read_text())
    ddp = summary["val"]
    assert ddp["val/n_videos"] == 3.0

    cfg = compose_cfg("train", ["model=tiny", *DATA], tmp_path / "one")
    dm = instantiate(cfg.data, data_dir=str(small_data), _convert_="all")
    module = load_module(summary["last_ckpt"])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    one = trainer.validate(module, datamodule=dm, verbose=False)[0]
    for key in ("val/J", "val/F", "val/Dice", "val/J&F", "val/n_videos", "val/baseline_J"):
        assert one[key] == pytest.approx(ddp[key], abs=1e-6), key

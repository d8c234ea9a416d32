"""VOSDataModule: synthetic default, splits, seeded loaders, evaluation items, errors."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import pytorch_lightning as pl
import torch

from tcmn.data.clips import EpochSampler
from tcmn.data.datamodule import VOSDataModule, evenly_spaced
from tcmn.data.splits import load_splits, make_splits, select
from tcmn.errors import TCMNError

SYN = {"n_videos": 10, "n_frames": 8, "size": (64, 80), "holdout_classes": ["atrium"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    VOSDataModule(d, train=["synthetic"], synthetic=SYN).prepare_data()
    return d


def make(data_dir, **kw) -> VOSDataModule:
    args = dict(
        train=["synthetic"],
        crop_size=48,
        batch_size=4,
        num_workers=0,
        samples_per_epoch=8,
        synthetic=SYN,
        seed=0,
    )
    args.update(kw)
    dm = VOSDataModule(data_dir, **args)
    dm.prepare_data()
    dm.setup()
    return dm


def test_prepare_data_generates_synthetic_with_splits_once(data_dir, caplog):
    root = data_dir / "synthetic"
    meta = root / "meta.json"
    assert meta.exists() and (root / "splits.json").exists()
    splits = load_splits(root)
    assert splits["holdout_classes"] == ["atrium"]
    unseen = set(splits["unseen"])
    videos = json.loads(meta.read_text())["videos"]
    assert unseen == {v for v, m in videos.items() if "atrium" in m["objects"].values()}
    before = (meta.stat().st_mtime_ns, (root / "splits.json").stat().st_mtime_ns)
    make(data_dir)  # a second prepare_data keeps both files
    assert (meta.stat().st_mtime_ns, (root / "splits.json").stat().st_mtime_ns) == before
    with caplog.at_level(logging.WARNING, logger="tcmn.data.datamodule"):
        make(data_dir, synthetic={**SYN, "n_frames": 9})
    assert "n_frames differ" in caplog.text
    assert (meta.stat().st_mtime_ns, (root / "splits.json").stat().st_mtime_ns) == before


def _batches(data_dir, workers: int, seed: int) -> list[dict]:
    dm = make(data_dir, num_workers=workers, seed=seed)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochSampler) and loader.worker_init_fn is not None
    assert loader.persistent_workers == (workers > 0)
    out = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_batches_reproduce_across_worker_counts_and_change_with_seed(data_dir):
    a, b, c = _batches(data_dir, 0, 0), _batches(data_dir, 2, 0), _batches(data_dir, 0, 1)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        for k in ("frames", "masks", "labels", "valid"):
            assert torch.equal(x[k], y[k]), k
        assert x["info"]["video"] == y["info"]["video"]
    assert not any(torch.equal(x["frames"], z["frames"]) for x, z in zip(a, c, strict=True))
    assert not torch.equal(a[0]["frames"], a[2]["frames"])  # epoch 1 differs from epoch 0


def test_unseen_part_and_folds_come_from_splits_json(data_dir, tmp_path):
    shutil.copytree(data_dir / "synthetic", tmp_path / "synthetic")
    # a hand-chosen split different from the default one: the module must follow the file
    splits = make_splits(tmp_path / "synthetic", seed=5, holdout_classes=["lesion"], overwrite=True)
    assert splits != load_splits(data_dir / "synthetic")
    dm = make(tmp_path, test_part="unseen", fold=2, samples_per_epoch=16)
    assert [it[1] for it in dm.test_dataset().items] == sorted(splits["unseen"])
    assert [it[1] for it in dm.val_dataset().items] == sorted(splits["folds"][2]["val"])
    assert dm.videos("synthetic", "train") == sorted(splits["folds"][2]["train"])
    sampled = {v for b in dm.train_dataloader() for v in b["info"]["video"]}
    assert sampled and sampled <= set(splits["folds"][2]["train"])
    dm = make(tmp_path)  # no fold: the 8:2 split, val = test part
    assert [it[1] for it in dm.test_dataset().items] == select(splits, "test")
    assert [it[1] for it in dm.val_dataset().items] == select(splits, "test")


def test_val_items_have_native_labels_and_eval_frames(data_dir):
    dm = make(data_dir, eval_size=40, test_part="unseen")
    names = dm.video_names()
    assert len(names) == 10 and names == sorted(names)
    assert dm.dataset_names() == ["synthetic"]
    assert set(dm.class_names()) <= {"polyp", "lesion", "ventricle", "atrium"}
    items = list(dm.val_dataloader()) + list(dm.test_dataloader())
    assert items
    for item in items:
        assert item["frames"].shape == (8, 32, 40, 3) and item["frames"].dtype == torch.uint8
        assert item["labels"].shape == (8, 64, 80) and item["labels"].dtype == torch.uint8
        assert item["annotated"].dtype == torch.bool and bool(item["annotated"].all())
        assert names[item["index"]] == item["video"]
        assert set(item["given_frames"]) == set(item["objects"]) and item["objects"]
        for k, t in item["given_frames"].items():
            assert (item["labels"][t] == k).any()
            assert not any((item["labels"][s] == k).any() for s in range(t))


def test_max_eval_videos_is_deterministic(data_dir):
    assert evenly_spaced(list(range(10)), 3) == [0, 4, 9]
    assert evenly_spaced([1, 2], None) == [1, 2] and evenly_spaced([1, 2], 5) == [1, 2]
    pick = [
        [it[1] for it in make(data_dir, test_part="unseen", max_eval_videos=2).test_dataset().items]
        for _ in range(2)
    ]
    unseen = select(load_splits(data_dir / "synthetic"), "unseen")
    assert pick[0] == pick[1] and len(pick[0]) == min(2, len(unseen))
    assert set(pick[0]) <= set(unseen)


def test_pretrain_stage_and_pseudo_mix(data_dir):
    b = next(iter(make(data_dir, stage="pretrain").train_dataloader()))
    assert b["info"]["stage"] == ["pretrain"] * 4
    assert len(b["info"]["frames"]) > 1
    assert all(torch.equal(b["info"]["frames"][0], f) for f in b["info"]["frames"])
    dm = make(data_dir, samples_per_epoch=16, pseudo={"fraction": 0.5, "random_object_p": 1.0})
    stages = [s for b in dm.train_dataloader() for s in b["info"]["stage"]]
    assert set(stages) == {"main", "pretrain"}


def test_missing_dataset_is_one_sentence(tmp_path):
    dm = VOSDataModule(tmp_path, train=[{"name": "cvc_clinicdb", "weight": 2}])
    with pytest.raises(TCMNError) as e:
        dm.setup("fit")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'cvc_clinicdb'}: the prepared dataset 'cvc_clinicdb'")
    assert "tcmn-prepare dataset=cvc_clinicdb" in msg and msg.count(". ") == 0


def test_config_errors(tmp_path):
    with pytest.raises(TCMNError, match="data.stage"):
        VOSDataModule(tmp_path, train=["a"], stage="finetune")
    with pytest.raises(TCMNError, match="data.test_part"):
        VOSDataModule(tmp_path, train=["a"], test_part="holdout")
    with pytest.raises(TCMNError, match="data.pseudo: unknown key"):
        VOSDataModule(tmp_path, train=["a"], pseudo={"fractoin": 0.3})
    with pytest.raises(TCMNError, match="data.train"):
        VOSDataModule(tmp_path, train=[3])


class _Probe(pl.LightningModule):
    """Records a fingerprint of every training batch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, float(batch["frames"].sum())))
        return (self.w * batch["frames"].mean()).sum() + self.w.pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_sets_the_epoch_and_keeps_the_sampler(data_dir):
    dm = make(data_dir, val=[])
    probe = _Probe()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(probe, datamodule=dm)
    assert isinstance(trainer.train_dataloader.sampler, EpochSampler)
    loader = make(data_dir).train_dataloader()
    want = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        want += [(epoch, float(b["frames"].sum())) for b in loader]
    assert probe.seen == want

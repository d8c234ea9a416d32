"""Training and evaluation through the config tree: steps, experiments, resume, init_from, eval tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, TINY_DATA, compose_cfg

from tcmn.experiment import run_eval, run_train

# tiny everything: the smallest model, 64 px crops, a handful of steps
TINY = [
    "model=tiny",
    "logger=none",
    "data.crop_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.samples_per_epoch=4",
    "data.eval_size=64",
    "data.max_eval_videos=2",
    "trainer.max_steps=2",
    "trainer.log_every_n_steps=1",
    "extras.print_config=false",
]

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
TRAIN_EXPERIMENTS = [e for e in EXPERIMENTS if e != "paper_unseen"]


def _batch(module, stage: str, seed: int = 0):
    import os

    from tcmn.data.datamodule import VOSDataModule

    dm = VOSDataModule(
        os.environ["TCMN_TEST_DATA"],
        train=["synthetic"],
        stage=stage,
        crop_size=64,
        batch_size=2,
        num_workers=0,
        samples_per_epoch=2,
        seed=seed,
    )
    dm.prepare_data()
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("stage", ["pretrain", "main"])
def test_one_training_step_changes_parameters(stage, tmp_path):
    from tcmn.lit_module import TCMNModule

    cfg = compose_cfg("train", TINY + [f"stage={stage}"], tmp_path)
    module = TCMNModule(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    batch = _batch(module, stage)
    assert batch["frames"].shape == (2, 3, 3, 64, 64)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in module.parameters()]
    module.train()
    _, res = module(batch)
    assert torch.isfinite(res.loss)
    opt.zero_grad()
    res.loss.backward()
    opt.step()
    after = list(module.parameters())
    assert len(before) == len(after) > 0
    changed = sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert changed > 0.9 * len(before)
    # frozen BatchNorm: statistics unchanged by a training forward
    bn = next(m for m in module.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not bn.training


def test_beta_zero_means_ltc_has_no_effect_on_gradients(tmp_path):
    from tcmn.lit_module import TCMNModule

    grads = {}
    for beta in (0.0, 0.5):
        cfg = compose_cfg("train", TINY + [f"model.loss.beta={beta}"], tmp_path)
        torch.manual_seed(0)
        module = TCMNModule(**{k: v for k, v in cfg.model.items() if k != "_target_"})
        batch = _batch(module, "main")
        module.train()
        _, res = module(batch)
        module.zero_grad()
        res.loss.backward()
        grads[beta] = [p.grad.clone() for p in module.parameters() if p.grad is not None]
        if beta == 0.0:
            # the loss is exactly alpha * L_bce although L_tc is computed and logged
            assert res.loss.item() == pytest.approx(res.loss_bce.item(), rel=1e-6)
            assert res.loss_tc.item() > 0
            torch.manual_seed(0)
            ref = TCMNModule(**{k: v for k, v in cfg.model.items() if k != "_target_"})
            ref.train()
            out = ref.net(batch["frames"], batch["masks"][:, 0], batch["valid"], last_value=False)
            bce = ref.criterion.bce
            loss = torch.stack(
                [
                    bce(out.logits[:, i], batch["labels"][:, i + 1], 0)[0]
                    for i in range(out.logits.shape[1])
                ]
            ).mean()
            ref.zero_grad()
            loss.backward()
            ref_grads = [p.grad for p in ref.parameters() if p.grad is not None]
            assert len(grads[0.0]) == len(ref_grads) > 0
            for a, b in zip(grads[0.0], ref_grads, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert len(grads[0.0]) == len(grads[0.5]) > 0
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0], grads[0.5], strict=True))


@pytest.mark.parametrize("experiment", TRAIN_EXPERIMENTS)
def test_every_experiment_composes_and_runs_fast_dev_run(experiment, tmp_path):
    overrides = [
        f"experiment={experiment}",
        "+trainer.fast_dev_run=true",
        "logger=none",
        "callbacks=none",
    ]
    overrides += [
        "data.train=[{name: synthetic, weight: 1.0}]",
        "data.val=[synthetic]",
        "data.test=[synthetic]",
        *TINY_DATA,
        "data.synthetic={n_videos: 40, n_frames: 20, size: [128, 128], seed: 0, max_objects: 2, holdout_classes: [atrium]}",
        "model.net.pretrained=null",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "extras.print_config=false",
    ]
    cfg = compose_cfg("train", overrides, tmp_path)
    summary = run_train(cfg)
    assert summary["status"] == "ok"
    assert np.isfinite(summary["val"]["train/loss"])


def test_paper_experiments_trace_to_the_paper(tmp_path):
    main = compose_cfg("train", ["experiment=paper_main"], tmp_path)
    assert main.data.batch_size == 8 and main.data.clip_len == 3 and main.data.max_skip == 5
    assert main.data.crop_size == 384
    assert [d.name for d in main.data.train] == ["asu_mayo", "cvc_clinicdb", "hmc_qu"]
    assert (
        main.model.net.query_backbone == "resnet50" and main.model.net.value_backbone == "resnet18"
    )
    assert main.model.propagation.mem_every == 5 and main.model.propagation.policy == "unbounded"
    assert main.model.loss.beta > 0
    ablation = compose_cfg("train", ["experiment=paper_main_no_ltc"], tmp_path)
    assert ablation.model.loss.beta == 0
    pre = compose_cfg("train", ["experiment=paper_pretrain"], tmp_path)
    assert pre.data.stage == "pretrain" and pre.data.batch_size == 16 and pre.data.crop_size == 384
    unseen = compose_cfg("eval", ["experiment=paper_unseen", "ckpt=x"], tmp_path)
    assert list(unseen.classes) == ["LV", "LA"] and unseen.split == "unseen"


def test_wrong_key_fails_with_hydras_message(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_cfg("train", ["data.not_a_key=1"], tmp_path)


def _run(tmp_path, name, extra):
    cfg = compose_cfg(
        "train", TINY + ["callbacks=default", "~callbacks.lr_monitor"] + extra, tmp_path / name
    )
    return run_train(cfg), cfg


def _net_state(path):
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path):
    common = ["data.samples_per_epoch=4", "trainer.check_val_every_n_epoch=100", "test=false"]
    full, _ = _run(tmp_path, "full", common + ["trainer.max_steps=6"])
    half, _ = _run(tmp_path, "half", common + ["trainer.max_steps=2"])
    ck = torch.load(half["last_ckpt"], map_location="cpu", weights_only=False)
    assert ck["global_step"] == 2
    resumed, _ = _run(
        tmp_path, "resumed", common + ["trainer.max_steps=6", f"ckpt_path={half['last_ckpt']}"]
    )
    a, b = _net_state(full["last_ckpt"]), _net_state(resumed["last_ckpt"])
    assert torch.load(resumed["last_ckpt"], weights_only=False)["global_step"] == 6
    assert a and a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # and the run did move away from the half-way state
    h = _net_state(half["last_ckpt"])
    assert any(not torch.allclose(a[k], h[k]) for k in a if a[k].is_floating_point())


def test_init_from_loads_the_previous_stage(tmp_path):
    pre, _ = _run(
        tmp_path, "pre", ["stage=pretrain", "test=false", "trainer.check_val_every_n_epoch=100"]
    )
    from tcmn.lit_module import TCMNModule

    cfg = compose_cfg(
        "train", TINY + ["stage=main", f"init_from={pre['last_ckpt']}"], tmp_path / "main"
    )
    module = TCMNModule(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    pre_state = _net_state(pre["last_ckpt"])
    assert pre_state and pre_state.keys() <= module.state_dict().keys()
    for k, v in pre_state.items():
        torch.testing.assert_close(module.state_dict()[k], v)
    with pytest.raises(Exception, match="init_from=.*file not found"):
        TCMNModule(
            **{
                **{k: v for k, v in cfg.model.items() if k != "_target_"},
                "init_from": str(tmp_path / "x.ckpt"),
            }
        )


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from tcmn.lit_module import NonFiniteLossError
    from tcmn.losses import TCMNLoss

    original = TCMNLoss.forward

    def poisoned(self, logits, labels, values, valid, step):
        out = original(self, logits, labels, values, valid, step)
        if step >= 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(TCMNLoss, "forward", poisoned)
    cfg = compose_cfg(
        "train",
        TINY
        + [
            "callbacks=default",
            "~callbacks.lr_monitor",
            "trainer.max_steps=6",
            "trainer.check_val_every_n_epoch=100",
            "test=false",
        ],
        tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is .*last.ckpt"):
        run_train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ck = torch.load(last, map_location="cpu", weights_only=False)
    assert ck["global_step"] == 2
    weights = [v for v in ck["state_dict"].values() if v.is_floating_point()]
    assert weights and all(torch.isfinite(v).all() for v in weights)


def test_eval_writes_tables_that_match_a_direct_computation(tmp_path):
    from tcmn.evaluation import numpy_item, predict_video
    from tcmn.inference.session import InferenceSession
    from tcmn.metrics import frame_scores

    train, _ = _run(tmp_path, "train", ["test=false", "trainer.check_val_every_n_epoch=100"])
    cfg = compose_cfg(
        "eval",
        [
            f"ckpt={train['last_ckpt']}",
            "data.eval_size=64",
            "data.max_eval_videos=2",
            "controls=true",
            "n_overlays=1",
        ],
        tmp_path / "eval",
    )
    summary = run_eval(cfg)
    out = Path(cfg.paths.output_dir)
    per_video = pd.read_csv(out / "per_video.csv")
    per_dataset = pd.read_csv(out / "per_dataset.csv")
    assert {"method", "dataset", "video", "object", "class", "J", "F", "Dice", "J&F"} <= set(
        per_video.columns
    )
    assert {"method", "dataset", "J", "F", "Dice", "J&F"} <= set(per_dataset.columns)
    assert set(per_dataset["method"]) == {
        "tcmn",
        "copy_first_mask",
        "control_empty",
        "control_flip",
        "control_shift",
    }
    assert set(per_dataset["dataset"]) == {"synthetic", "mean"}
    assert (out / "per_class.csv").exists() and (out / "per_frame.csv").exists()
    assert len(list((out / "overlays").glob("*.png"))) == 1
    assert "synthetic" in summary["mask_dependence"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["methods"]["tcmn"]["J"] == pytest.approx(summary["methods"]["tcmn"]["J"])
    # the first video's J recomputed directly
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all", test_part="test", num_workers=0, max_eval_videos=2)
    dm.prepare_data()
    dm.setup("test")
    item = numpy_item(next(iter(dm.test_dataloader())))
    pred = predict_video(InferenceSession.load(train["last_ckpt"]), item)
    row = per_video[(per_video.method == "tcmn") & (per_video.video == item["video"])]
    assert len(row) == len(item["objects"]) > 0
    for _, r in row.iterrows():
        oid = int(r["object"])
        scored = item["annotated"].copy()
        scored[: item["given_frames"][oid] + 1] = False
        direct = frame_scores(pred, item["labels"], oid, scored)
        assert r["J"] == pytest.approx(float(np.mean(direct["J"])), abs=1e-6)
        assert r["Dice"] == pytest.approx(float(np.mean(direct["Dice"])), abs=1e-6)


def test_eval_summary_has_the_memory_diagnostics_of_every_video(tmp_path):
    from hydra.utils import instantiate

    from tcmn.diagnostics import mean_statistics
    from tcmn.evaluation import numpy_item, predict_video, video_diagnostics
    from tcmn.inference.session import InferenceSession
    from tcmn.lit_module import load_module

    train, _ = _run(tmp_path, "train", ["test=false", "trainer.check_val_every_n_epoch=100"])
    cfg = compose_cfg(
        "eval",
        [f"ckpt={train['last_ckpt']}", "data.eval_size=64", "data.max_eval_videos=2"],
        tmp_path / "eval",
    )
    run_eval(cfg)
    diag = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())["diagnostics"]
    assert diag["n_videos"] == 2
    # recomputed directly: propagate each video, then read its memory bank
    module = load_module(train["last_ckpt"])
    dm = instantiate(cfg.data, _convert_="all", test_part="test", num_workers=0, max_eval_videos=2)
    dm.prepare_data()
    dm.setup("test")
    rows = []
    for item in dm.test_dataloader():
        item = numpy_item(item)
        session = InferenceSession.from_network(module.net, module.propagation)
        predict_video(session, item)
        rows.append(video_diagnostics(session, item, module.criterion.eps))
        assert rows[-1]["memory_frames"] >= 3
    assert len(rows) == diag["n_videos"]
    direct = mean_statistics(rows)
    for k in ("d12", "d23", "d13", "value_norm", "tc_term", "mask_signal"):
        assert np.isfinite(diag[k]) and diag[k] == pytest.approx(direct[k], rel=1e-5), k
    assert diag["mask_signal"] > 0

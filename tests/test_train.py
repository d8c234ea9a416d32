"""Training and evaluation through the config tree: steps, experiments, resume, init_from, eval tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO, compose_cfg

from tcmn.experiment import run_train

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
    changed = sum(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
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
            for a, b in zip(grads[0.0], ref_grads):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0], grads[0.5]))


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
        "data.crop_size=64",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.samples_per_epoch=2",
        "data.eval_size=64",
        "data.max_eval_videos=1",
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

"""Value diagnostics (d12 / d23 / d13, value norm, mask signal, collapse) against hand-computed
cases, in a training run's log and in tcmn-eval's summary."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_NET, compose_cfg

from tcmn.diagnostics import (
    COLLAPSE_BELOW,
    collapse_message,
    mask_signal,
    mean_statistics,
    relative_change,
    value_statistics,
)


def _vals(*vecs):
    """[1, T, C, 1, 1] values from T vectors."""
    return torch.tensor(vecs, dtype=torch.float32)[None, :, :, None, None]


def test_statistics_by_hand():
    c = math.cos(math.pi / 4)
    s = value_statistics(_vals([2.0, 0.0], [2 * c, 2 * c], [0.0, 2.0]), eps=1e-3)
    assert s["d12"] == pytest.approx(1 - c, rel=1e-5)
    assert s["d23"] == pytest.approx(1 - c, rel=1e-5)
    assert s["d13"] == pytest.approx(1.0, rel=1e-5)
    assert s["value_norm"] == pytest.approx(2.0, rel=1e-6)
    assert s["tc_term"] == pytest.approx(2 * (1 - c) / (1 + 1e-3), rel=1e-5)
    assert s["n"] == 1 and s["collapsed"] is False


def test_a_collapsed_set_is_flagged_and_a_healthy_one_is_not():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 1, 32, 4, 4, generator=g)
    # eight clips whose three values point the same way (tiny differences): collapsed
    collapsed = base.expand(8, 3, 1, 32, 4, 4) + 1e-4 * torch.randn(8, 3, 1, 32, 4, 4, generator=g)
    s = value_statistics(collapsed, torch.ones(8, 1, dtype=torch.bool), eps=1e-3)
    assert s["tc_term"] < COLLAPSE_BELOW and s["collapsed"] is True
    assert s["d13"] < 1e-3
    # independent values: every term near (1 + 1) / 1 = 2, far from the floor
    healthy = torch.randn(8, 3, 1, 32, 4, 4, generator=g)
    h = value_statistics(healthy, None, eps=1e-3)
    assert h["collapsed"] is False and 1.5 < h["tc_term"] < 2.5
    # values on a smooth path (v2 between v1 and v3), not collapsed: just above the 0.5 floor
    t = torch.linspace(0, 0.6, 3)
    arc = torch.stack([torch.cos(t), torch.sin(t)], -1)[None, :, :, None, None]
    a = value_statistics(arc, eps=1e-3)
    assert 0.5 <= a["tc_term"] < 0.6 and a["collapsed"] is False
    # fewer than three frames: nothing to judge
    two = value_statistics(healthy[:, :2], None)
    assert math.isnan(two["d13"]) and two["collapsed"] is False


def test_relative_change_and_mean_statistics_by_hand():
    v_true = torch.tensor([3.0, 4.0]).view(1, 1, 2, 1, 1)
    v_other = torch.tensor([3.0, 0.0]).view(1, 1, 2, 1, 1)
    assert relative_change(v_true, v_other) == pytest.approx(0.8)
    two = torch.cat([v_true, 2 * v_true], 1)  # [1, O=2, ...]: 0.8 and 1.0 (the other is v_other)
    other = torch.cat([v_other, torch.zeros_like(v_other)], 1)
    assert relative_change(two, other) == pytest.approx(0.9)
    assert relative_change(two, other, torch.tensor([[False, True]])) == pytest.approx(1.0)
    m = mean_statistics(
        [
            dict(d12=0.1, d23=0.3, d13=0.2, value_norm=2.0, tc_term=2.0, mask_signal=0.5),
            dict(d12=0.3, d23=0.1, d13=math.nan, value_norm=4.0, tc_term=math.nan, mask_signal=0.1),
        ]
    )
    assert m["n_videos"] == 2
    assert m["d12"] == pytest.approx(0.2) and m["d13"] == pytest.approx(0.2)
    assert m["value_norm"] == pytest.approx(3.0) and m["mask_signal"] == pytest.approx(0.3)
    assert m["collapsed"] is False


def test_mask_signal_of_a_network():
    from test_losses import _moving_square_clip, _tiny_tcmn

    torch.manual_seed(0)
    net = _tiny_tcmn().eval()
    frames, masks = _moving_square_clip(h=48, w=48)
    assert mask_signal(net, frames[:, 0], masks[:, 0]) > 0.01
    # an empty true mask: replacing it by an empty one changes nothing
    assert mask_signal(net, frames[:, 0], torch.zeros_like(masks[:, 0])) == pytest.approx(0.0)


def test_collapse_is_warned_once_in_one_sentence(caplog):
    from test_losses import _moving_square_clip

    from tcmn.lit_module import TCMNModule

    module = TCMNModule(net={**TINY_NET, "pretrained": None})
    frames, masks = _moving_square_clip(h=48, w=48)
    batch = dict(frames=frames, masks=masks, valid=torch.ones(1, 1, dtype=torch.bool))
    same = torch.randn(1, 1, 1, 32, 3, 3).expand(1, 3, 1, 32, 3, 3)
    with caplog.at_level(logging.WARNING, logger="tcmn.lit_module"):
        stats = module.log_diagnostics(batch, same)
        module.log_diagnostics(batch, same)
    assert stats["collapsed"] is True
    warnings = [r.getMessage() for r in caplog.records if "collapse" in r.getMessage()]
    assert len(warnings) == 1 and "below its floor of 0.5" in warnings[0]
    assert warnings[0].count(". ") == 0 and "\n" not in warnings[0]
    healthy = torch.randn(1, 3, 1, 32, 3, 3)
    assert module.log_diagnostics(batch, healthy)["collapsed"] is False
    assert "mask signal" in collapse_message(stats)


def test_a_collapsed_projection_head_is_warned_once(caplog):
    from test_losses import _moving_square_clip

    from tcmn.lit_module import TCMNModule

    module = TCMNModule(net={**TINY_NET, "pretrained": None}, loss={"tc_on": "head"})
    frames, masks = _moving_square_clip(h=48, w=48)
    batch = dict(frames=frames, masks=masks, valid=torch.ones(1, 1, dtype=torch.bool))
    healthy = torch.randn(1, 3, 1, 32, 3, 3)
    with caplog.at_level(logging.WARNING, logger="tcmn.lit_module"):
        ok = module.log_diagnostics(batch, healthy, loss_tc=1.2)
        low = module.log_diagnostics(batch, healthy, loss_tc=0.01)
        module.log_diagnostics(batch, healthy, loss_tc=0.01)
    assert ok["tc_term_trained"] == pytest.approx(1.2) and low["tc_term_trained"] == 0.01
    assert low["collapsed"] is False  # the values themselves are fine
    warned = [r.getMessage() for r in caplog.records if "satisfied by a collapse" in r.getMessage()]
    assert len(warned) == 1 and "tc_on=head" in warned[0]


def test_training_logs_the_diagnostics(tmp_path):
    from tcmn.experiment import run_train

    cfg = compose_cfg(
        "train",
        [
            "model=tiny",
            "logger=csv",
            "data.crop_size=64",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.samples_per_epoch=4",
            "trainer.max_steps=3",
            "trainer.check_val_every_n_epoch=100",
            "test=false",
            "model.diag_every=2",
            "extras.print_config=false",
        ],
        tmp_path,
    )
    run_train(cfg)
    metrics = pd.read_csv(next(Path(cfg.paths.output_dir).rglob("metrics.csv")))
    diag = metrics.dropna(subset=["diag/d13"])
    assert list(diag["step"]) == [0, 2]
    for k in ("d12", "d23", "d13", "value_norm", "tc_term", "tc_term_trained", "mask_signal"):
        assert diag[f"diag/{k}"].notna().all(), k
    assert (diag["diag/value_norm"] > 0).all()

"""Losses against hand-computed values, the bootstrap schedule, and an overfitting run."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from tcmn.losses import BootstrappedCE, TCMNLoss, bootstrap_fraction, temporal_contrastive_loss


def _vals(*vecs):
    """[1, T, C, 1, 1] values from T vectors."""
    return torch.tensor(vecs, dtype=torch.float32)[None, :, :, None, None]


def test_tc_loss_identical_values_is_zero():
    v = _vals([1.0, 2.0], [1.0, 2.0], [1.0, 2.0])
    assert temporal_contrastive_loss(v, eps=1e-3).item() == pytest.approx(0.0, abs=1e-6)


def test_tc_loss_known_cosines():
    # v1 = e0, v2 = (e0+e1)/sqrt2, v3 = e1: s12 = s23 = cos45, s13 = 0
    c = math.cos(math.pi / 4)
    v = _vals([1.0, 0.0], [c, c], [0.0, 1.0])
    expected = 2 * (1 - c) / (1 - 0 + 0.01)
    assert temporal_contrastive_loss(v, eps=0.01).item() == pytest.approx(expected, rel=1e-5)
    # four frames: two inner terms summed; v4 = -e0: s23 = cos45, s34 = 0, s24 = -cos45
    v4 = _vals([1.0, 0.0], [c, c], [0.0, 1.0], [-1.0, 0.0])
    t2 = ((1 - c) + (1 - 0)) / (1 - (-c) + 0.01)
    assert temporal_contrastive_loss(v4, eps=0.01).item() == pytest.approx(expected + t2, rel=1e-5)


def test_tc_loss_eps_case_is_finite_with_finite_gradients():
    # v1 == v3 != v2: the denominator is eps, the term numerator/eps
    v = _vals([1.0, 0.0], [0.0, 1.0], [1.0, 0.0]).requires_grad_(True)
    loss = temporal_contrastive_loss(v, eps=1e-3)
    assert loss.item() == pytest.approx(2.0 / 1e-3, rel=1e-4)
    loss.backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_tc_loss_objects_and_batch_mean():
    c = math.cos(math.pi / 4)
    a = _vals([1.0, 0.0], [c, c], [0.0, 1.0])[0]  # [T, C, 1, 1]
    b = _vals([1.0, 0.0], [1.0, 0.0], [1.0, 0.0])[0]
    vals = torch.stack([torch.stack([a, b], 1)], 0)  # [1, T, O=2, C, 1, 1]
    full = temporal_contrastive_loss(vals, eps=0.01)
    assert full.item() == pytest.approx(2 * (1 - c) / 1.01 / 2, rel=1e-5)
    only_a = temporal_contrastive_loss(vals, eps=0.01, valid=torch.tensor([[True, False]]))
    assert only_a.item() == pytest.approx(2 * (1 - c) / 1.01, rel=1e-5)


def test_bootstrap_schedule():
    assert bootstrap_fraction(0, 100, 200, 0.15) == 1.0
    assert bootstrap_fraction(99, 100, 200, 0.15) == 1.0
    assert bootstrap_fraction(100, 100, 200, 0.15) == pytest.approx(1.0)
    assert bootstrap_fraction(150, 100, 200, 0.15) == pytest.approx(0.575)
    assert bootstrap_fraction(200, 100, 200, 0.15) == pytest.approx(0.15)
    assert bootstrap_fraction(10_000, 100, 200, 0.15) == pytest.approx(0.15)


def test_bootstrapped_ce_equals_ce_during_warmup_and_keeps_hardest_after():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    bce = BootstrappedCE(start_warm=10, end_warm=20, top_p=0.25)
    loss, p = bce(logits, target, step=5)
    assert p == 1.0
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))
    loss, p = bce(logits, target, step=30)
    raw = F.cross_entropy(logits, target, reduction="none").flatten().sort(descending=True).values
    assert p == 0.25
    torch.testing.assert_close(loss, raw[: int(128 * 0.25)].mean())


def test_beta_zero_removes_tc_from_the_total():
    logits = torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (1, 2, 4, 4))
    values = torch.randn(1, 3, 2, 5, 2, 2, requires_grad=True)
    out = TCMNLoss(alpha=1.0, beta=0.0)(logits, labels, values, None, step=0)
    assert out.loss_tc.item() > 0
    out.loss.backward()
    assert values.grad is None or values.grad.abs().sum() == 0
    out2 = TCMNLoss(alpha=1.0, beta=0.5)(logits, labels, values, None, step=0)
    assert out2.loss.item() == pytest.approx(
        out.loss_bce.item() + 0.5 * out2.loss_tc.item(), rel=1e-5
    )


def _moving_square_clip(h=64, w=64, t=3, seed=0):
    """A bright square moving over a noisy background, with its masks."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(1, t, 3, h, w, generator=g) * 0.3
    masks = torch.zeros(1, t, 1, h, w)
    for i in range(t):
        y, x = 16 + 4 * i, 12 + 6 * i
        frames[0, i, :, y : y + 20, x : x + 20] += 1.5
        masks[0, i, 0, y : y + 20, x : x + 20] = 1
    return frames, masks


def test_small_model_overfits_a_clip():
    from tcmn.models import TCMN

    torch.manual_seed(0)
    model = TCMN(
        query_backbone="resnet18",
        value_backbone="resnet18",
        key_dim=16,
        qfeat_dim=32,
        value_dim=32,
        decoder_dims=(32, 16, 8),
    )
    frames, masks = _moving_square_clip()
    labels = masks[:, 1:, 0].long()
    crit = TCMNLoss(alpha=1.0, beta=0.1, start_warm=10, end_warm=30)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(60):
        out = model(frames, masks[:, 0])
        # compare the plain CE part so the bootstrap schedule does not move the target
        ce = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(0, 1))
        loss = crit(out.logits, labels, out.values, None, step).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(ce.item())
        if step >= 10 and losses[-1] < 0.25 * losses[0]:
            break
    assert all(math.isfinite(x) for x in losses)
    assert min(losses[-3:]) < 0.5 * losses[0], losses

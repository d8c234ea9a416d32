"""Losses against hand-computed values, the bootstrap schedule, and an overfitting run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_NET
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
    model = TCMN(**TINY_NET)
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


# ------------------------------------------------------------------------ L_tc formulations
def test_tc_term_floor_holds_on_random_values_and_is_approached_by_a_midpoint():
    from tcmn.losses import tc_term_floor, tc_terms, triplet_distances

    g = torch.Generator().manual_seed(0)
    for dim in (2, 3, 64):
        u = F.normalize(torch.randn(500, 3, dim, generator=g), dim=-1)
        terms = tc_terms(u, eps=1e-3)[:, 0]
        floor = tc_term_floor(triplet_distances(u)[2][:, 0], 1e-3)
        assert (terms >= floor - 1e-6).all()
    # v2 midway on a small arc: the term is 1 / (1 + cos(theta)) -> 0.5 (eps = 0), just above it
    theta = 0.05
    v = _vals(
        [1.0, 0.0], [math.cos(theta), math.sin(theta)], [math.cos(2 * theta), math.sin(2 * theta)]
    )
    got = temporal_contrastive_loss(v, eps=1e-12).item()
    assert got == pytest.approx(1 / (1 + math.cos(theta)), rel=1e-3)
    assert 0.5 < got < 0.51
    # the same arc with eps = 1e-3 (d13 = 1 - cos 0.1 ~ 5e-3): below 0.5, the collapse regime
    d13 = 1 - math.cos(2 * theta)
    expected = 2 * (1 - math.cos(theta)) / (d13 + 1e-3)
    assert temporal_contrastive_loss(v, eps=1e-3).item() == pytest.approx(expected, rel=1e-3)
    assert expected < 0.45


def test_centred_formulation_by_hand_and_scale_free_per_position():
    # u1 = (1, 0), u2 = (0, 1), u3 = (-1, 0); mean (0, 1/3); centred (1, -1/3), (0, 2/3), (-1, -1/3)
    # cos(c1, c2) = cos(c2, c3) = -1/sqrt(10), cos(c1, c3) = -0.8
    eps = 1e-3
    expected = 2 * (1 + 1 / math.sqrt(10)) / (1.8 + eps)
    v = _vals([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])
    assert temporal_contrastive_loss(v, eps, tc_on="centred").item() == pytest.approx(
        expected, rel=1e-5
    )
    # each position's vector is normalised first: scaling one value changes nothing
    v_scaled = _vals([5.0, 0.0], [0.0, 0.2], [-3.0, 0.0])
    assert temporal_contrastive_loss(v_scaled, eps, tc_on="centred").item() == pytest.approx(
        expected, rel=1e-5
    )
    # a direction shared by every value is removed: the paper's form sees nearly equal values
    # (the by-hand case plus a large first channel: its part is the same in every value)
    shared = _vals([100.0, 1.0, 0.0], [100.0, 0.0, 1.0], [100.0, -1.0, 0.0])
    assert temporal_contrastive_loss(shared, eps).item() < 0.2
    assert temporal_contrastive_loss(shared, eps, tc_on="centred").item() == pytest.approx(
        expected, rel=1e-4
    )


def test_head_formulation_compares_the_pooled_projection():
    from tcmn.losses import ProjectionHead

    head = ProjectionHead(2, 2)
    with torch.no_grad():
        for lin in (head.mlp[0], head.mlp[2]):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    # values [1, T=3, C=2, 2, 2], constant over positions (non-negative: the ReLU keeps them)
    pooled = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    v = torch.tensor(pooled)[None, :, :, None, None].expand(1, 3, 2, 2, 2)
    c = 1 / math.sqrt(2)
    expected = 2 * (1 - c) / (1 + 1e-3)
    got = temporal_contrastive_loss(v, 1e-3, tc_on="head", head=head)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    crit = TCMNLoss(beta=0.1, tc_on="head", value_dim=2, head_dim=2)
    assert sum(p.numel() for p in crit.parameters()) == 2 * (2 * 2 + 2)


def test_beta_per_stage_and_warmup():
    assert TCMNLoss(beta=0.1, beta_pretrain=0.0, stage="pretrain").beta == 0.0
    assert TCMNLoss(beta=0.1, beta_pretrain=0.0, stage="main").beta == 0.1
    assert TCMNLoss(beta=0.1, stage="pretrain").beta == 0.1
    crit = TCMNLoss(beta=0.2, beta_warmup=100)
    assert [crit.beta_at(s) for s in (0, 25, 100, 500)] == pytest.approx([0.0, 0.05, 0.2, 0.2])
    logits = torch.randn(1, 2, 3, 4, 4)
    labels = torch.randint(0, 3, (1, 2, 4, 4))
    values = torch.randn(1, 3, 2, 5, 2, 2)
    out = crit(logits, labels, values, None, step=50)
    assert out.beta == pytest.approx(0.1)
    assert out.loss.item() == pytest.approx(
        out.loss_bce.item() + 0.1 * out.loss_tc.item(), rel=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        (dict(beta=-1.0), "model.loss.beta=-1.0"),
        (dict(beta=float("nan")), "model.loss.beta=nan"),
        (dict(beta_pretrain=float("inf")), "model.loss.beta_pretrain=inf"),
        (dict(eps=0.0), "model.loss.eps=0.0"),
        (dict(tc_on="bogus"), "model.loss.tc_on='bogus'"),
    ],
)
def test_bad_loss_settings_are_one_sentence(kwargs, setting):
    from tcmn.errors import TCMNError

    with pytest.raises(TCMNError) as e:
        TCMNLoss(**kwargs)
    assert setting in str(e.value) and "\n" not in str(e.value)


def _tiny_tcmn():
    from tcmn.models import TCMN

    return TCMN(**TINY_NET)


@pytest.mark.parametrize("detach_query", [False, True])
def test_tc_detach_query_keeps_l_tc_out_of_the_query_encoder(detach_query):
    torch.manual_seed(0)
    model = _tiny_tcmn()
    frames, masks = _moving_square_clip(h=48, w=48)
    out = model(frames, masks[:, 0], detach_masks=True, tc_detach_query=detach_query)
    values = out.tc_values if detach_query else out.values
    assert (out.tc_values is not None) == detach_query
    if detach_query:  # the same forward values, only the gradient path differs
        torch.testing.assert_close(out.tc_values, out.values)
    temporal_contrastive_loss(values, 1e-3).backward()
    q = sum(p.grad.abs().sum() for p in model.key_encoder.parameters() if p.grad is not None)
    v = sum(p.grad.abs().sum() for p in model.value_encoder.parameters() if p.grad is not None)
    assert v > 0
    assert (q == 0) == detach_query


@pytest.mark.parametrize(
    "dq, dm, query_grad, decoder_grad",
    [
        (False, False, True, True),
        (True, False, True, True),  # the query encoder still learns through the masks
        (False, True, True, False),  # ... or through its features the value encoder reuses
        (True, True, False, False),  # both cut: L_tc trains the value encoder alone
    ],
)
def test_tc_detach_masks_and_query_cut_the_paths_of_l_tc(dq, dm, query_grad, decoder_grad):
    torch.manual_seed(0)
    model = _tiny_tcmn()
    frames, masks = _moving_square_clip(h=48, w=48)
    out = model(frames, masks[:, 0], tc_detach_query=dq, tc_detach_masks=dm)
    values = out.tc_values if (dq or dm) else out.values
    if dq or dm:
        torch.testing.assert_close(out.tc_values, out.values)
    temporal_contrastive_loss(values, 1e-3).backward()

    def grad(m):
        return sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)

    assert grad(model.value_encoder) > 0
    assert (grad(model.key_encoder) > 0) == query_grad
    assert (grad(model.decoder) > 0) == decoder_grad

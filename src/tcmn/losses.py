"""The two losses of the paper: ``L = alpha * L_bce + beta * L_tc`` (equations 1-3).

- ``L_bce``: bootstrapped cross-entropy. The paper keeps the pixels whose predicted probability is
  below a threshold; as in STCN/MiVOS (its reference [24]) this is implemented by keeping the
  hardest fraction ``p`` of the per-pixel losses: plain CE until ``start_warm`` steps, then ``p``
  falls linearly from 1.0 to ``top_p`` at ``end_warm`` and stays there.
- ``L_tc``: the temporal contrastive loss on the memory values of consecutive frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


def bootstrap_fraction(step: int, start_warm: int, end_warm: int, top_p: float) -> float:
    """Fraction ``p`` of the hardest pixels kept at training ``step``.

    1.0 before ``start_warm``, ``top_p`` from ``end_warm`` on, linear in between.
    """
    if step < start_warm:
        return 1.0
    if step >= end_warm or end_warm <= start_warm:
        return float(top_p)
    return top_p + (1.0 - top_p) * (end_warm - step) / (end_warm - start_warm)


class BootstrappedCE(torch.nn.Module):
    """Bootstrapped cross-entropy.

    Args:
        start_warm: steps of plain cross-entropy.
        end_warm: step from which only ``top_p`` of the pixels count.
        top_p: final fraction of hardest pixels kept (0.15 in STCN / the paper's reference).

    Shapes: ``forward(logits [N, C, H, W], target [N, H, W] int64, step) -> (loss, p)``; the top-p
    selection is over all pixels of the batch.
    """

    def __init__(self, start_warm: int = 20000, end_warm: int = 70000, top_p: float = 0.15):
        super().__init__()
        self.start_warm, self.end_warm, self.top_p = start_warm, end_warm, top_p

    def forward(self, logits: Tensor, target: Tensor, step: int) -> tuple[Tensor, float]:
        p = bootstrap_fraction(step, self.start_warm, self.end_warm, self.top_p)
        raw = F.cross_entropy(logits.float(), target, reduction="none").flatten()
        if p >= 1.0:
            return raw.mean(), p
        k = max(1, int(raw.numel() * p))
        hard, _ = torch.topk(raw, k, sorted=False)
        return hard.mean(), p


def temporal_contrastive_loss(
    values: Tensor, eps: float = 1e-3, valid: Tensor | None = None
) -> Tensor:
    """Temporal contrastive loss (paper eq. 1) on the values of consecutive frames.

    For every inner frame t (1 <= t <= T-2, 0-based)::

        ((1 - s(v[t-1], v[t])) + (1 - s(v[t], v[t+1]))) / (1 - s(v[t-1], v[t+1]) + eps)

    with ``s`` the cosine similarity of the flattened values; summed over t, averaged over the
    batch (and over object slots when values carry an object dimension).

    Adjacent values are pulled together (numerator) while the values two steps apart are pushed
    apart (denominator). When ``v[t-1] == v[t+1]`` the denominator falls to ``eps``: the term is
    then ``numerator / eps``, large but finite, and its gradient pushes ``v[t-1]`` and ``v[t+1]``
    apart; with all three values equal the numerator is 0 too and the term is exactly 0.

    Args:
        values: ``[B, T, C, H, W]`` or ``[B, T, O, C, H, W]`` (T >= 3).
        eps: the small constant of the denominator.
        valid: ``[B, O]`` bool object slots to average over (with an object dimension only).
    Returns:
        scalar loss (float32).
    """
    if values.dim() == 6:  # [B, T, O, C, H, W] -> [B*O, T, C, H, W]
        b, t, o = values.shape[:3]
        values = values.transpose(1, 2).reshape(b * o, t, -1)
        if valid is not None:
            keep = valid.reshape(-1)
            values = values[keep]
    else:
        values = values.flatten(2)
    if values.shape[1] < 3:
        raise ValueError(f"temporal_contrastive_loss needs T >= 3 frames, got {values.shape[1]}")
    if values.shape[0] == 0:
        return values.sum().float() * 0
    # 1 - cos(a, b) computed as ||a/|a| - b/|b|||^2 / 2: exactly 0 for equal directions and
    # accurate for small angles, where 1 - cosine_similarity loses all precision in float32.
    u = F.normalize(values.float(), dim=-1, eps=1e-8)

    def one_minus_sim(a: Tensor, b: Tensor) -> Tensor:
        return 0.5 * (a - b).pow(2).sum(-1)

    prev, cur, nxt = u[:, :-2], u[:, 1:-1], u[:, 2:]
    num = one_minus_sim(prev, cur) + one_minus_sim(cur, nxt)
    den = one_minus_sim(prev, nxt) + eps
    return (num / den).sum(dim=1).mean()


@dataclass
class LossOutput:
    """Total loss and its parts (tensors) plus the bootstrap fraction used."""

    loss: Tensor
    loss_bce: Tensor
    loss_tc: Tensor
    p: float


class TCMNLoss(torch.nn.Module):
    """``alpha * L_bce + beta * L_tc`` (paper eq. 3).

    ``beta = 0`` is the paper's ablation "w/o L_tc": ``L_tc`` is still reported but does not enter
    the total (nor its gradient).

    Shapes: ``forward(logits [B, T-1, O+1, H, W], labels [B, T-1, H, W], values [B, T, O, C, h, w],
    valid [B, O], step) -> LossOutput``.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.1,
        eps: float = 1e-3,
        start_warm: int = 20000,
        end_warm: int = 70000,
        top_p: float = 0.15,
    ):
        super().__init__()
        self.alpha, self.beta, self.eps = alpha, beta, eps
        self.bce = BootstrappedCE(start_warm, end_warm, top_p)

    def forward(
        self, logits: Tensor, labels: Tensor, values: Tensor | None, valid: Tensor | None, step: int
    ) -> LossOutput:
        # one bootstrapped CE per predicted frame, averaged (the paper sums over the frames of D)
        losses, p = [], 1.0
        for i in range(logits.shape[1]):
            li, p = self.bce(logits[:, i], labels[:, i], step)
            losses.append(li)
        loss_bce = torch.stack(losses).mean()
        if values is not None and values.shape[1] >= 3:
            loss_tc = temporal_contrastive_loss(values, self.eps, valid)
        else:
            loss_tc = torch.zeros((), device=logits.device)
        if self.beta != 0:
            total = self.alpha * loss_bce + self.beta * loss_tc
        else:
            total = self.alpha * loss_bce
        return LossOutput(total, loss_bce.detach(), loss_tc.detach(), p)

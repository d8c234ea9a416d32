"""The two losses of the paper: ``L = alpha * L_bce + beta * L_tc`` (equations 1-3).

- ``L_bce``: bootstrapped cross-entropy. The paper keeps the pixels whose predicted probability is
  below a threshold; as in STCN/MiVOS (its reference [24]) this is implemented by keeping the
  hardest fraction ``p`` of the per-pixel losses: plain CE until ``start_warm`` steps, then ``p``
  falls linearly from 1.0 to ``top_p`` at ``end_warm`` and stays there.
- ``L_tc``: the temporal contrastive loss (eq. 1) on the memory values of consecutive frames.

Variants of ``L_tc`` (all settings of :class:`TCMNLoss`, i.e. ``model.loss.*``; the defaults are
eq. 1 exactly as the paper writes it):

- ``eps``: the paper's "small" constant of the denominator.
- ``tc_on``: what eq. 1 compares: ``values`` (the flattened memory values, the paper),
  ``centred`` (each position's channel vector normalised to unit length, then the mean over all
  values of the batch subtracted: a direction shared by every frame cannot lower the loss), or
  ``head`` (the values average-pooled and passed through a small MLP used by the loss only and
  never at inference, as the projection heads of SimCLR / MoCo).
- ``tc_detach_query`` and ``tc_detach_masks`` (used by :class:`tcmn.lit_module.TCMNModule`):
  the values fed to ``L_tc`` see the query encoder's features, or the predicted masks of frames
  2..T, detached: ``L_tc`` then does not train the query encoder through the features the value
  encoder reuses, or does not train the decoder (and what it reads) to make masks whose values
  satisfy eq. 1. With both, ``L_tc`` trains the value encoder only.
- ``beta_pretrain`` and ``beta_warmup``: ``beta`` of the pretraining stage, and a linear ramp of
  ``beta`` from 0 over the first steps.

Why the paper's form needs care (the README's results): with ``d = 1 - cos`` the triangle
inequality on unit vectors gives ``d13 <= 2 (d12 + d23)``, so every term of eq. 1 is at least
``d13 / (2 (d13 + eps))``: about 0.5 unless ``d13`` is of the order of ``eps``, i.e. unless the
three values point the same way. A term below 0.5 therefore means the values have collapsed
(:func:`tc_term_floor`, :mod:`tcmn.diagnostics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tcmn.errors import TCMNError

TC_ON = ("values", "centred", "head")


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


# ------------------------------------------------------------------------------------- L_tc
def per_object(values: Tensor, valid: Tensor | None = None) -> Tensor:
    """Values with or without an object dimension -> one sequence per (clip, object in use).

    ``[B, T, C, H, W] -> [B, T, C, H, W]``; ``[B, T, O, C, H, W] (valid [B, O]) -> [N, T, C, H, W]``
    with N the number of valid object slots (all B*O when ``valid`` is None).
    """
    if values.dim() == 6:
        b, t, o = values.shape[:3]
        values = values.transpose(1, 2).reshape(b * o, t, *values.shape[3:])
        if valid is not None:
            values = values[valid.reshape(-1)]
    return values


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - cos(a, b)`` over the last dim for unit vectors ``a``, ``b`` ``[..., D] -> [...]``.

    Computed as ``||a - b||^2 / 2``: exactly 0 for equal directions and accurate for small
    angles, where ``1 - cosine_similarity`` loses all precision in float32.
    """
    return 0.5 * (a - b).pow(2).sum(-1)


def triplet_distances(u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``u [N, T, D]`` unit vectors -> ``(d12, d23, d13)``, each ``[N, T-2]``: the ``1 - cos`` of
    (t-1, t), (t, t+1) and (t-1, t+1) for every inner frame t, as eq. 1 uses them."""
    prev, cur, nxt = u[:, :-2], u[:, 1:-1], u[:, 2:]
    return cosine_distance(prev, cur), cosine_distance(cur, nxt), cosine_distance(prev, nxt)


def tc_terms(u: Tensor, eps: float) -> Tensor:
    """The terms of eq. 1: ``u [N, T, D]`` unit vectors -> ``[N, T-2]``,
    ``(d12 + d23) / (d13 + eps)`` for every inner frame."""
    d12, d23, d13 = triplet_distances(u)
    return (d12 + d23) / (d13 + eps)


def tc_term_floor(d13: Tensor | float, eps: float) -> Tensor | float:
    """The smallest value a term of eq. 1 can take given ``d13``: ``d13 / (2 (d13 + eps))``.

    From ``d13 <= 2 (d12 + d23)`` (triangle inequality of the chordal distance on the unit sphere,
    ``d = chord^2 / 2`` and ``chord13 <= chord12 + chord23``). It tends to 0.5 for ``d13 >> eps``.
    """
    return d13 / (2 * (d13 + eps))


def centre_values(values: Tensor) -> Tensor:
    """``[N, T, C, H, W] -> [N, T, C*H*W]``: every position's channel vector normalised to unit
    length, minus the mean over all N*T values (per channel and position)."""
    u = F.normalize(values.float(), dim=2, eps=1e-8)
    u = u - u.mean(dim=(0, 1), keepdim=True)
    return u.flatten(2)


class ProjectionHead(nn.Module):
    """Pooled value -> embedding used only by ``L_tc`` (``tc_on: head``).

    Shapes: ``forward(values [N, T, C, H, W]) -> [N, T, out_dim]`` (average over H, W, then
    Linear(C, C) - ReLU - Linear(C, out_dim)).
    """

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim)
        )

    def forward(self, values: Tensor) -> Tensor:
        return self.mlp(values.float().mean(dim=(-2, -1)))


def tc_vectors(values: Tensor, tc_on: str = "values", head: nn.Module | None = None) -> Tensor:
    """The unit vectors eq. 1 compares: ``values [N, T, C, H, W] -> [N, T, D]`` (see ``tc_on``)."""
    if tc_on == "values":
        x = values.float().flatten(2)
    elif tc_on == "centred":
        x = centre_values(values)
    elif tc_on == "head":
        if head is None:
            raise ValueError("tc_on='head' needs the projection head")
        x = head(values)
    else:
        raise ValueError(f"tc_on={tc_on!r} is not known; use one of {', '.join(TC_ON)}")
    return F.normalize(x.float(), dim=-1, eps=1e-8)


def temporal_contrastive_loss(
    values: Tensor,
    eps: float = 1e-3,
    valid: Tensor | None = None,
    tc_on: str = "values",
    head: nn.Module | None = None,
) -> Tensor:
    """Temporal contrastive loss (paper eq. 1) on the values of consecutive frames.

    For every inner frame t (1 <= t <= T-2, 0-based)::

        ((1 - s(v[t-1], v[t])) + (1 - s(v[t], v[t+1]))) / (1 - s(v[t-1], v[t+1]) + eps)

    with ``s`` the cosine similarity of the flattened values (or of what ``tc_on`` makes of them);
    summed over t, averaged over the batch (and over object slots when values carry an object
    dimension).

    Adjacent values are pulled together (numerator) while the values two steps apart are pushed
    apart (denominator). When ``v[t-1] == v[t+1]`` the denominator falls to ``eps``: the term is
    then ``numerator / eps``, large but finite; with all three values equal the numerator is 0 too
    and the term is exactly 0 (the collapse, see :func:`tc_term_floor`).

    Args:
        values: ``[B, T, C, H, W]`` or ``[B, T, O, C, H, W]`` (T >= 3).
        eps: the small constant of the denominator.
        valid: ``[B, O]`` bool object slots to average over (with an object dimension only).
        tc_on: ``values`` | ``centred`` | ``head`` (module docstring).
        head: the :class:`ProjectionHead` for ``tc_on='head'``.
    Returns:
        scalar loss (float32).
    """
    seqs = per_object(values, valid)
    if seqs.shape[1] < 3:
        raise ValueError(f"temporal_contrastive_loss needs T >= 3 frames, got {seqs.shape[1]}")
    if seqs.shape[0] == 0:
        return values.sum().float() * 0
    return tc_terms(tc_vectors(seqs, tc_on, head), eps).sum(dim=1).mean()


# ------------------------------------------------------------------------------------- total
@dataclass
class LossOutput:
    """Total loss and its parts (tensors) plus the bootstrap fraction and ``beta`` used."""

    loss: Tensor
    loss_bce: Tensor
    loss_tc: Tensor
    p: float
    beta: float = 0.0


class TCMNLoss(torch.nn.Module):
    """``alpha * L_bce + beta * L_tc`` (paper eq. 3).

    ``beta = 0`` is the paper's ablation "w/o L_tc": ``L_tc`` is still reported but does not enter
    the total (nor its gradient).

    Args:
        alpha, beta: the weights of eq. 3 (the paper gives no values).
        eps: the constant of eq. 1's denominator (the paper: "small").
        start_warm, end_warm, top_p: the bootstrapped CE schedule.
        tc_on: ``values`` (paper) | ``centred`` | ``head``: what eq. 1 compares.
        tc_detach_query / tc_detach_masks: ``L_tc``'s gradient stops at the query features /
            the predicted masks that enter the values (read by the module).
        beta_pretrain: ``beta`` of the pretraining stage (None: ``beta``).
        beta_warmup: steps over which ``beta`` rises linearly from 0 (0: none).
        value_dim, head_dim: the projection head's input and output sizes (``tc_on: head``).
        stage: ``pretrain`` or ``main`` (picks ``beta_pretrain``).

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
        tc_on: str = "values",
        tc_detach_query: bool = False,
        tc_detach_masks: bool = False,
        beta_pretrain: float | None = None,
        beta_warmup: int = 0,
        value_dim: int | None = None,
        head_dim: int = 128,
        stage: str = "main",
    ):
        super().__init__()
        if tc_on not in TC_ON:
            raise TCMNError(
                f"model.loss.tc_on={tc_on!r} is not known; use one of {', '.join(TC_ON)}."
            )
        for name, v in (("alpha", alpha), ("beta", beta), ("beta_pretrain", beta_pretrain)):
            if v is not None and not (math.isfinite(float(v)) and float(v) >= 0):
                raise TCMNError(
                    f"model.loss.{name}={v} is not allowed; it must be a finite number >= 0."
                )
        if not (math.isfinite(float(eps)) and float(eps) > 0):
            raise TCMNError(f"model.loss.eps={eps} is not allowed; it must be a finite number > 0.")
        self.alpha, self.eps, self.tc_on = alpha, eps, tc_on
        self.beta = beta if stage != "pretrain" or beta_pretrain is None else beta_pretrain
        self.tc_detach_query, self.tc_detach_masks = bool(tc_detach_query), bool(tc_detach_masks)
        self.beta_warmup = int(beta_warmup)
        self.bce = BootstrappedCE(start_warm, end_warm, top_p)
        self.head = None
        if tc_on == "head":
            if not value_dim:
                raise ValueError("tc_on='head' needs value_dim, the channels of the values")
            self.head = ProjectionHead(value_dim, head_dim)

    def beta_at(self, step: int) -> float:
        """``beta`` at training ``step`` (the warm-up ramp, then constant)."""
        if self.beta_warmup > 0 and step < self.beta_warmup:
            return self.beta * step / self.beta_warmup
        return self.beta

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
            loss_tc = temporal_contrastive_loss(values, self.eps, valid, self.tc_on, self.head)
        else:
            loss_tc = torch.zeros((), device=logits.device)
        beta = self.beta_at(step)
        total = self.alpha * loss_bce
        if beta != 0:
            total = total + beta * loss_tc
        return LossOutput(total, loss_bce.detach(), loss_tc.detach(), p, beta)

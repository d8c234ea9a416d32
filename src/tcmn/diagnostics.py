"""Diagnostics of the memory values and of ``L_tc`` (paper eq. 1): is the memory still carrying
the mask, or have the values collapsed?

Statistics of a set of value sequences (training clips, or the memory bank of a propagated
video), all means over sequences and inner frames:

- ``d12``, ``d23``, ``d13``: ``1 - cos`` of the flattened values of frames (t-1, t), (t, t+1) and
  (t-1, t+1), exactly as eq. 1 uses them;
- ``value_norm``: the mean L2 norm of a flattened value;
- ``tc_term``: the mean term of eq. 1 on the raw values (whatever ``L_tc`` variant trains);
- ``collapsed``: ``tc_term`` below :data:`COLLAPSE_BELOW`. Every term of eq. 1 is at least
  ``d13 / (2 (d13 + eps))`` (:func:`tcmn.losses.tc_term_floor`), about 0.5 unless the values of
  t-1 and t+1 are within a few ``eps`` of each other in cosine distance: a term under 0.45 needs
  ``d13 < 9 eps``, i.e. three values pointing the same way;
- ``mask_signal``: ``||v(frame, true mask) - v(frame, empty mask)|| / ||v(frame, true mask)||``,
  how much the value of a frame depends on the mask it is given (near 0: the memory no longer
  carries the mask, and propagation cannot follow the annotated object).

:class:`tcmn.lit_module.TCMNModule` logs them under ``diag/`` every ``diag_every`` training
steps and warns once on collapse; ``tcmn-eval`` writes them into ``summary.json``
(``diagnostics``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor
from torch.nn import functional as F

from tcmn.losses import per_object, tc_terms, triplet_distances
from tcmn.models.network import TCMN, pad_divisible

COLLAPSE_BELOW = 0.45
STAT_KEYS = ("d12", "d23", "d13", "value_norm", "tc_term")


@torch.no_grad()
def value_statistics(values: Tensor, valid: Tensor | None = None, eps: float = 1e-3) -> dict:
    """Eq. 1's distances and the value norm of value sequences.

    Args:
        values: ``[B, T, C, h, w]`` or ``[B, T, O, C, h, w]`` (T >= 3 for the distances).
        valid: ``[B, O]`` bool object slots in use.
        eps: eq. 1's constant (for ``tc_term``).
    Returns:
        ``{d12, d23, d13, value_norm, tc_term, collapsed, n}`` as Python floats / bool / int
        (the distances and ``tc_term`` are NaN and ``collapsed`` False when T < 3; ``n`` is the
        number of sequences).
    """
    seqs = per_object(values, valid).float().flatten(2)
    out = {k: math.nan for k in STAT_KEYS}
    out["n"] = int(seqs.shape[0])
    if seqs.shape[0] == 0:
        out["collapsed"] = False
        return out
    out["value_norm"] = float(seqs.norm(dim=-1).mean())
    if seqs.shape[1] >= 3:
        u = F.normalize(seqs, dim=-1, eps=1e-8)
        for k, d in zip(("d12", "d23", "d13"), triplet_distances(u), strict=True):
            out[k] = float(d.mean())
        out["tc_term"] = float(tc_terms(u, eps).mean())
    out["collapsed"] = is_collapsed(out["tc_term"])
    return out


def is_collapsed(tc_term: float) -> bool:
    """A mean eq.-1 term below :data:`COLLAPSE_BELOW` (NaN: not collapsed, nothing to judge)."""
    return bool(math.isfinite(tc_term) and tc_term < COLLAPSE_BELOW)


def relative_change(v_true: Tensor, v_other: Tensor, valid: Tensor | None = None) -> float:
    """``||v_true - v_other|| / ||v_true||`` per object, averaged over the valid objects.

    ``v_true``, ``v_other``: ``[B, O, C, h, w]`` (or ``[B, C, h, w]``); ``valid`` ``[B, O]``.
    """
    if v_true.dim() == 4:
        v_true, v_other = v_true[:, None], v_other[:, None]
    a, b = v_true.float().flatten(2), v_other.float().flatten(2)
    rel = (a - b).norm(dim=-1) / a.norm(dim=-1).clamp_min(1e-12)  # [B, O]
    if valid is not None:
        rel = rel[valid]
    return float(rel.mean()) if rel.numel() else math.nan


@torch.no_grad()
def mask_signal(net: TCMN, frames: Tensor, masks: Tensor, valid: Tensor | None = None) -> float:
    """How much the value of a frame changes when its true mask is replaced by an empty one.

    Args:
        frames: ``[B, 3, H, W]`` normalised frames; masks: ``[B, O, H, W]`` their true masks.
        valid: ``[B, O]`` bool object slots in use.
    Returns:
        the mean relative change (see :func:`relative_change`).
    """
    frames, _ = pad_divisible(frames)
    masks, _ = pad_divisible(masks)
    f16 = net.encode_key(frames).f16
    v_true = net.encode_value(frames, f16, masks.to(frames.dtype))
    v_empty = net.encode_value(frames, f16, torch.zeros_like(masks, dtype=frames.dtype))
    return relative_change(v_true, v_empty, valid)


def collapse_message(stats: Mapping, step: int | None = None, eps: float | None = None) -> str:
    """One sentence for the log when the values have collapsed."""
    at = f" at step {step}" if step is not None else ""
    e = f" (eps={eps:g})" if eps is not None else ""
    return (
        f"L_tc collapse{at}: the mean eq.-1 term on the memory values is {stats['tc_term']:.3g}, "
        f"below its floor of 0.5{e} (d13={stats['d13']:.2g}, value norm "
        f"{stats['value_norm']:.3g}, mask signal {stats.get('mask_signal', math.nan):.2g}): the "
        "values of a clip point the same way and may stop carrying the mask; see the README "
        "(temporal contrastive loss) for model.loss.tc_on / eps / beta."
    )


def trained_collapse_message(tc_term: float, tc_on: str, step: int | None = None) -> str:
    """One sentence for the log when what ``L_tc`` compares (not the values) has collapsed."""
    at = f" at step {step}" if step is not None else ""
    return (
        f"L_tc is satisfied by a collapse{at}: its mean eq.-1 term on what model.loss.tc_on="
        f"{tc_on} compares is {tc_term:.3g}, below the floor of 0.5 that any non-collapsed "
        "triple of vectors keeps, so the loss no longer shapes the memory values."
    )


def mean_statistics(rows: Iterable[Mapping]) -> dict:
    """Mean of per-video statistics (NaN entries ignored); ``collapsed`` re-judged on the mean
    ``tc_term``; ``n_videos`` counts the rows."""
    rows = list(rows)
    out: dict = {"n_videos": len(rows)}
    for k in (*STAT_KEYS, "mask_signal"):
        vals = [float(r[k]) for r in rows if k in r and math.isfinite(float(r[k]))]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    out["collapsed"] = is_collapsed(out["tc_term"])
    return out


def format_statistics(stats: Mapping) -> str:
    """One line for the console: the statistics of :func:`mean_statistics`."""
    parts = [f"{k} {float(stats[k]):.3g}" for k in (*STAT_KEYS, "mask_signal") if k in stats]
    flag = " - COLLAPSED (tc_term < 0.45)" if stats.get("collapsed") else ""
    return "memory values: " + ", ".join(parts) + flag

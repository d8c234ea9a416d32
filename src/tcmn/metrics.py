"""Evaluation metrics of the paper: region J, boundary F and Dice, with the DAVIS 2017 definitions.

Per-frame scores (numpy, no loops over pixels):

* :func:`jaccard` -- region similarity J = |A ∩ B| / |A ∪ B| (1 when both masks are empty).
* :func:`dice` -- 2 |A ∩ B| / (|A| + |B|) (1 when both masks are empty).
* :func:`boundary_f` -- the DAVIS contour accuracy F (see :func:`boundary_precision_recall`).

Per-video statistics (:func:`video_stats`): mean, recall (fraction of frames scoring > 0.5) and
decay (first quarter minus last quarter). :func:`frame_scores` scores one object of a video.

:class:`VOSMetric` is a torchmetrics ``Metric`` that scores whole videos (one row per video and
object), synchronises under DDP and builds the paper's tables: per video, per dataset with the
mean over datasets (Table 1) and per class with the mean over classes (Table 2). All values are
fractions in [0, 1]; ``J&F = (J + F) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from tcmn.errors import TCMNError

__all__ = [
    "VOSMetric",
    "VOSResult",
    "boundary_f",
    "boundary_map",
    "boundary_precision_recall",
    "bound_pix",
    "dice",
    "disk",
    "frame_scores",
    "jaccard",
    "video_stats",
]

MEAN_ROW = "mean"
"""Name of the row that holds the unweighted mean over datasets / classes."""

TABLE_COLUMNS = ["J", "F", "Dice", "J&F", "n_videos", "n_objects"]
"""Columns of :attr:`VOSResult.per_dataset` and :attr:`VOSResult.per_class`."""

VIDEO_COLUMNS = [
    "dataset",
    "video",
    "object",
    "class",
    "n_frames",
    "J",
    "J_recall",
    "J_decay",
    "F",
    "F_recall",
    "F_decay",
    "Dice",
    "J&F",
]
"""Columns of :attr:`VOSResult.per_video`."""

# Columns of one stored row of VOSMetric (all exact in float64).
_ROW_FIELDS = (
    "dataset_idx",
    "class_idx",
    "video_idx",
    "object",
    "n_frames",
    "J",
    "J_recall",
    "J_decay",
    "F",
    "F_recall",
    "F_decay",
    "Dice",
)
_N_ROW = len(_ROW_FIELDS)

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or a nested sequence."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _mask_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays (non-zero = foreground) of one shape, ``[H, W]`` or ``[T, H, W]``."""
    p = _to_numpy(pred)
    g = _to_numpy(gt)
    if p.shape != g.shape:
        raise TCMNError(
            f"the predicted mask has shape {tuple(p.shape)} but the ground truth has shape "
            f"{tuple(g.shape)}; resize the prediction to the ground truth's size before scoring it"
        )
    if p.ndim not in (2, 3):
        raise TCMNError(
            f"masks to score must be [H, W] or [T, H, W] but have shape {tuple(p.shape)}; "
            "pass one mask or a stack of masks per frame"
        )
    return p.astype(bool, copy=False), g.astype(bool, copy=False)


def _as_result(values: np.ndarray, ndim: int) -> float | np.ndarray:
    """A Python float for a single mask, the ``[T]`` float64 array for a stack."""
    values = np.asarray(values, dtype=np.float64)
    return float(values) if ndim == 2 else values


# --------------------------------------------------------------------------------------------
# Region scores
# --------------------------------------------------------------------------------------------


def jaccard(pred: ArrayLike, gt: ArrayLike) -> float | np.ndarray:
    """Region similarity J (intersection over union), DAVIS definition.

    Args:
        pred: predicted mask, ``[H, W]`` or ``[T, H, W]``, bool (or any dtype: non-zero is
            foreground), numpy or torch.
        gt: ground-truth mask of the same shape.

    Returns:
        ``|pred ∩ gt| / |pred ∪ gt|``, 1.0 where both masks are empty: a ``float`` for ``[H, W]``
        input, a ``[T]`` float64 numpy array for ``[T, H, W]`` input.
    """
    p, g = _mask_pair(pred, gt)
    inter = np.count_nonzero(p & g, axis=(-2, -1))
    union = np.count_nonzero(p | g, axis=(-2, -1))
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return _as_result(j, p.ndim)


def dice(pred: ArrayLike, gt: ArrayLike) -> float | np.ndarray:
    """Dice coefficient ``2 |pred ∩ gt| / (|pred| + |gt|)``; 1.0 where both masks are empty.

    Args:
        pred: predicted mask, ``[H, W]`` or ``[T, H, W]``, bool (non-zero is foreground),
            numpy or torch.
        gt: ground-truth mask of the same shape.

    Returns:
        a ``float`` for ``[H, W]`` input, a ``[T]`` float64 numpy array for ``[T, H, W]`` input.
        ``dice == 2 J / (1 + J)`` always holds.
    """
    p, g = _mask_pair(pred, gt)
    inter = np.count_nonzero(p & g, axis=(-2, -1))
    total = np.count_nonzero(p, axis=(-2, -1)) + np.count_nonzero(g, axis=(-2, -1))
    d = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return _as_result(d, p.ndim)


# --------------------------------------------------------------------------------------------
# Boundary score
# --------------------------------------------------------------------------------------------


def bound_pix(height: int, width: int, bound_th: float = 0.008) -> float:
    """The boundary tolerance in pixels, DAVIS rule.

    ``bound_th`` itself when ``bound_th >= 1`` (a distance in pixels), otherwise
    ``ceil(bound_th * hypot(height, width))`` (a fraction of the image diagonal). For example the
    default 0.008 gives 4 px on a 384x288 frame and 1 px on a 64x64 frame.
    """
    if bound_th <= 0:
        raise TCMNError(
            f"bound_th must be positive (a fraction of the image diagonal below 1, or pixels from "
            f"1 up) but is {bound_th}; use the DAVIS default 0.008"
        )
    if bound_th >= 1:
        return float(bound_th)
    return float(math.ceil(bound_th * math.hypot(height, width)))


def disk(radius: float) -> np.ndarray:
    """Disk structuring element: ``uint8 [2k+1, 2k+1]``, ``k = floor(radius)``, 1 where ``x²+y² <= r²``.

    The same element as scikit-image's ``morphology.disk`` for integer radii (DAVIS's choice).
    """
    k = int(math.floor(radius))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


def boundary_map(mask: ArrayLike) -> np.ndarray:
    """One-pixel boundary map of a mask, DAVIS ``seg2bmap`` semantics (vectorised).

    A pixel is on the boundary when its value differs from its east, south or south-east
    neighbour; on the last row only the east neighbour counts, on the last column only the south
    one, and the bottom-right pixel never counts. So the boundary of a filled ``n x n`` square
    is the ``4n``-pixel outline made of its right column and bottom row plus the background
    column left of it and the background row above it. Pixels outside the image are not
    background: a mask filling the whole image has no boundary.

    Args:
        mask: ``[H, W]`` or ``[T, H, W]`` (any leading axes), non-zero is foreground.

    Returns:
        bool array of the same shape.
    """
    seg = _to_numpy(mask).astype(bool, copy=False)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[..., :, :-1] = seg[..., :, 1:]
    south[..., :-1, :] = seg[..., 1:, :]
    south_east[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[..., -1, :] = seg[..., -1, :] ^ east[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ south[..., :, -1]
    b[..., -1, -1] = False
    return b


def _dilate(bmaps: np.ndarray, element: np.ndarray) -> np.ndarray:
    """Binary dilation of each ``[H, W]`` map of a ``[T, H, W]`` bool stack by ``element``."""
    out = np.zeros_like(bmaps)
    for t in range(bmaps.shape[0]):  # a loop over frames, the pixels are cv2's
        if bmaps[t].any():
            out[t] = cv2.dilate(bmaps[t].view(np.uint8), element).view(bool)
    return out


def boundary_precision_recall(
    pred: ArrayLike, gt: ArrayLike, bound_th: float = 0.008
) -> tuple[float | np.ndarray, float | np.ndarray, float | np.ndarray]:
    """Boundary precision, recall and F-measure, the DAVIS 2017 contour accuracy.

    Definition: ``Bp = boundary_map(pred)``, ``Bg = boundary_map(gt)``; each is dilated by a disk
    of radius ``r = bound_pix(H, W, bound_th)`` (:func:`disk`). Precision is the fraction of
    ``Bp`` pixels within the dilated ``Bg`` (that is, within distance ``r`` of the ground-truth
    boundary), recall the fraction of ``Bg`` pixels within the dilated ``Bp``, and
    ``F = 2 P R / (P + R)``. Empty boundaries (DAVIS conventions): ``Bp`` empty and ``Bg`` not:
    P=1, R=0; ``Bp`` not empty and ``Bg`` empty: P=0, R=1; both empty: P=R=1; ``F = 0`` when
    ``P + R = 0``. F is symmetric in ``pred`` and ``gt``.

    Args:
        pred: predicted mask, ``[H, W]`` or ``[T, H, W]``, non-zero is foreground, numpy or torch.
        gt: ground-truth mask of the same shape.
        bound_th: tolerance, a fraction of the image diagonal (< 1) or pixels (>= 1).

    Returns:
        ``(P, R, F)``: floats for ``[H, W]`` input, ``[T]`` float64 arrays for ``[T, H, W]``.
    """
    p, g = _mask_pair(pred, gt)
    ndim = p.ndim
    if ndim == 2:
        p, g = p[None], g[None]
    height, width = p.shape[-2:]
    element = disk(bound_pix(height, width, bound_th))

    bp = boundary_map(p)
    bg = boundary_map(g)
    n_p = np.count_nonzero(bp, axis=(-2, -1))
    n_g = np.count_nonzero(bg, axis=(-2, -1))
    p_match = np.count_nonzero(bp & _dilate(bg, element), axis=(-2, -1))
    g_match = np.count_nonzero(bg & _dilate(bp, element), axis=(-2, -1))

    precision = np.where(n_p == 0, 1.0, p_match / np.maximum(n_p, 1))
    recall = np.where(n_g == 0, 1.0, g_match / np.maximum(n_g, 1))
    # DAVIS: an empty predicted boundary against a non-empty one scores P=1, R=0 (and mirrored).
    recall = np.where((n_p == 0) & (n_g > 0), 0.0, recall)
    precision = np.where((n_p > 0) & (n_g == 0), 0.0, precision)
    denom = precision + recall
    f = np.where(denom == 0, 0.0, 2.0 * precision * recall / np.where(denom == 0, 1.0, denom))

    if ndim == 2:
        precision, recall, f = precision[0], recall[0], f[0]
    return _as_result(precision, ndim), _as_result(recall, ndim), _as_result(f, ndim)


def boundary_f(pred: ArrayLike, gt: ArrayLike, bound_th: float = 0.008) -> float | np.ndarray:
    """DAVIS contour accuracy F; the F of :func:`boundary_precision_recall` (see it for the definition).

    Args:
        pred: predicted mask, ``[H, W]`` or ``[T, H, W]``, non-zero is foreground, numpy or torch.
        gt: ground-truth mask of the same shape.
        bound_th: tolerance, a fraction of the image diagonal (< 1) or pixels (>= 1).

    Returns:
        a ``float`` for ``[H, W]`` input, a ``[T]`` float64 numpy array for ``[T, H, W]`` input.
    """
    return boundary_precision_recall(pred, gt, bound_th)[2]


# --------------------------------------------------------------------------------------------
# Per-video statistics
# --------------------------------------------------------------------------------------------


def _quarter_weights(n: int) -> np.ndarray:
    """Weight of each of ``n`` frames in the first quarter of the video, summing to ``n / 4``."""
    start = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(start + 1.0, n / 4.0) - start, 0.0, 1.0)


def video_stats(scores: ArrayLike) -> dict[str, float]:
    """DAVIS per-video statistics of per-frame scores (J or F).

    Args:
        scores: 1-D array ``[n]`` of per-frame scores in temporal order (numpy or torch).

    Returns:
        ``{"mean": ..., "recall": ..., "decay": ...}`` (floats):

        * ``mean``: the mean score;
        * ``recall``: the fraction of frames scoring strictly above 0.5;
        * ``decay``: mean score over the first quarter of the video minus mean score over the
          last quarter. Every frame is a unit time slot and the quarter is ``n / 4`` slots
          long; a frame straddling the quarter's end counts with the fraction of it inside. So
          with ``n`` divisible by 4 it is the plain mean of the first ``n/4`` frames minus that
          of the last ``n/4``; with ``n <= 4`` it is the first frame's score minus the last
          frame's (0 for a single frame); with 5 frames the first quarter is frame 0 plus a
          quarter of frame 1 (``(s0 + s1/4) / 1.25``). Never NaN for ``n >= 1``, unlike the
          DAVIS toolkit's rounded, overlapping bins.

        With no frames at all (``n = 0``) the three values are NaN.
    """
    s = _to_numpy(scores).astype(np.float64).reshape(-1)
    n = s.size
    if n == 0:
        return {"mean": math.nan, "recall": math.nan, "decay": math.nan}
    w = _quarter_weights(n)
    quarter = n / 4.0
    first = float(np.dot(w, s) / quarter)
    last = float(np.dot(w[::-1], s) / quarter)
    return {
        "mean": float(s.mean()),
        "recall": float(np.mean(s > 0.5)),
        "decay": first - last,
    }


def frame_scores(
    pred_labels: ArrayLike,
    gt_labels: ArrayLike,
    object_id: int,
    scored: ArrayLike,
    bound_th: float = 0.008,
) -> dict[str, np.ndarray]:
    """Per-frame J, F and Dice of one object over the frames selected by ``scored``.

    Args:
        pred_labels: predicted integer label map ``[T, H, W]`` (0 background, k object k),
            numpy or torch.
        gt_labels: ground-truth label map of the same shape.
        object_id: the object's label; its mask is ``labels == object_id``.
        scored: bool ``[T]``, the frames to score.
        bound_th: boundary tolerance of :func:`boundary_f`.

    Returns:
        ``{"J": [n], "F": [n], "Dice": [n], "frames": [n]}``: float64 scores and the int64
        indices of the ``n`` scored frames, in temporal order.
    """
    pred = _to_numpy(pred_labels)
    gt = _to_numpy(gt_labels)
    sel = _to_numpy(scored).astype(bool).reshape(-1)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise TCMNError(
            f"the predicted label maps have shape {tuple(pred.shape)} and the ground truth "
            f"{tuple(gt.shape)}; both must be [T, H, W] of the same size, so resize the prediction"
        )
    if sel.size != pred.shape[0]:
        raise TCMNError(
            f"`scored` has {sel.size} entries but the video has {pred.shape[0]} frames; "
            "pass one flag per frame"
        )
    frames = np.flatnonzero(sel).astype(np.int64)
    p = pred[frames] == object_id
    g = gt[frames] == object_id
    return {
        "J": np.asarray(jaccard(p, g), dtype=np.float64),
        "F": np.asarray(boundary_f(p, g, bound_th), dtype=np.float64),
        "Dice": np.asarray(dice(p, g), dtype=np.float64),
        "frames": frames,
    }


# --------------------------------------------------------------------------------------------
# torchmetrics Metric
# --------------------------------------------------------------------------------------------


@dataclass
class VOSResult:
    """What :meth:`VOSMetric.compute` returns; all scores are fractions in [0, 1].

    Attributes:
        per_video: one row per (video, object), columns :data:`VIDEO_COLUMNS` (dataset, video,
            object, class, n_frames, J, J_recall, J_decay, F, F_recall, F_decay, Dice, J&F),
            sorted in the order of the metric's vocabularies.
        per_dataset: index = dataset names then ``"mean"`` (the unweighted mean over datasets,
            the paper's Table 1), columns :data:`TABLE_COLUMNS` (J, F, Dice, J&F, n_videos,
            n_objects). A dataset's value is the mean over its (video, object) rows; the mean
            row's counts are the distinct videos and the objects of the whole evaluation.
        per_class: the same per class, with ``"mean"`` = unweighted mean over classes (Table 2).
        summary: flat ``str -> float`` for logging: ``J``, ``F``, ``Dice``, ``J&F`` (the mean
            over datasets) and ``n_videos``, ``n_objects``; ``<dataset>/J`` ... for every dataset
            of the vocabulary; ``class/<class>/J`` ... for every class and ``class/mean/J`` ...
            for the mean over classes. Values with no rows behind them are NaN.
    """

    per_video: pd.DataFrame
    per_dataset: pd.DataFrame
    per_class: pd.DataFrame
    summary: dict[str, float] = field(default_factory=dict)


def _vocabulary(kind: str, names: Sequence[str]) -> dict[str, int]:
    """Name -> index of a vocabulary (duplicates keep their first index)."""
    if isinstance(names, str):
        raise TCMNError(f"VOSMetric `{kind}` must be a list of names, not the string {names!r}")
    index: dict[str, int] = {}
    for name in names:
        index.setdefault(str(name), len(index))
    return index


def _summary_block(prefix: str, row: Mapping[str, float] | None) -> dict[str, float]:
    """``{prefix + "J": ..., ...}`` for the score columns of a table row (NaN when absent)."""
    return {
        f"{prefix}{col}": (math.nan if row is None else float(row[col]))
        for col in ("J", "F", "Dice", "J&F")
    }


class VOSMetric(Metric):
    """J, F and Dice of one-shot video object segmentation, as the paper's tables.

    Construction: ``VOSMetric(datasets, classes, videos, bound_th=0.008, **metric_kwargs)``.
    The three vocabularies list every dataset, class and video name that :meth:`update` will
    see (names become indices so the state is made of tensors); ``metric_kwargs`` go to
    ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ...).

    :meth:`update` scores one whole video and stores one row per object. Each row holds 12
    float64 values (dataset, class and video index, object id, number of scored frames, J mean /
    recall / decay, F mean / recall / decay, Dice mean), kept bit for bit in an ``int64 [k, 12]``
    tensor of the list state ``rows`` (``dist_reduce_fx="cat"``): int64 survives a parent
    module's ``.to(torch.bfloat16)`` or ``.half()``, moves to MPS, and every DDP rank gathers
    the same dtype. :meth:`compute` gathers the rows of all ranks, keeps one row per
    (dataset, video, object) (a distributed sampler that pads evaluates some videos twice) and
    returns a :class:`VOSResult`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        datasets: Sequence[str],
        classes: Sequence[str],
        videos: Sequence[str],
        bound_th: float = 0.008,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset_index = _vocabulary("datasets", datasets)
        self.class_index = _vocabulary("classes", classes)
        self.video_index = _vocabulary("videos", videos)
        for kind, vocab in (("dataset", self.dataset_index), ("class", self.class_index)):
            if MEAN_ROW in vocab:
                raise TCMNError(
                    f"the {kind} name {MEAN_ROW!r} is reserved for the mean row of the tables; "
                    f"rename that {kind}"
                )
        bound_pix(1, 1, bound_th)  # validates bound_th
        self.bound_th = float(bound_th)
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _lookup(kind: str, name: Any, index: Mapping[str, int], video: str) -> int:
        try:
            return index[str(name)]
        except KeyError:
            raise TCMNError(
                f"video {video!r}: the {kind} {name!r} is not among the {len(index)} {kind} names "
                f"given to VOSMetric; pass every {kind} the metric will see when creating it"
            ) from None

    # -- torchmetrics API ------------------------------------------------------------------

    def update(
        self,
        pred: ArrayLike,
        gt: ArrayLike,
        annotated: ArrayLike,
        objects: Mapping[int, str],
        video: str,
        dataset: str,
        given_frames: Mapping[int, int] | None = None,
    ) -> None:
        """Score one video and store one row per object that has a scored frame.

        Args:
            pred: predicted integer label map ``[T, H, W]`` (torch or numpy), 0 = background.
            gt: ground-truth label map ``[T, H, W]``; frames without ground truth may hold
                anything (they are not read).
            annotated: bool ``[T]``, the frames that have ground truth.
            objects: object id -> class name (ids may be ints or digit strings).
            video: the video's name (in the ``videos`` vocabulary).
            dataset: the dataset's name (in the ``datasets`` vocabulary).
            given_frames: object id -> index of the frame whose mask was given to the model;
                default 0 for every object.

        Object ``k`` is scored on the frames ``t`` with ``annotated[t] and t > given_frames[k]``
        (the given frame is never scored); an object with no such frame adds no row.
        """
        pred_np = _to_numpy(pred)
        gt_np = _to_numpy(gt)
        ann = _to_numpy(annotated).astype(bool).reshape(-1)
        if pred_np.ndim != 3 or pred_np.shape != gt_np.shape:
            raise TCMNError(
                f"video {video!r}: the prediction has shape {tuple(pred_np.shape)} but the ground "
                f"truth {tuple(gt_np.shape)}; pass [T, H, W] label maps at the ground truth's size"
            )
        n_frames = pred_np.shape[0]
        if ann.size != n_frames:
            raise TCMNError(
                f"video {video!r}: `annotated` has {ann.size} entries for {n_frames} frames; "
                "pass one flag per frame"
            )
        d_idx = self._lookup("dataset", dataset, self.dataset_index, video)
        v_idx = self._lookup("video", video, self.video_index, video)
        given = {int(k): int(v) for k, v in (given_frames or {}).items()}
        frame_idx = np.arange(n_frames)

        rows = []
        for obj, cls in objects.items():
            oid = int(obj)
            c_idx = self._lookup("class", cls, self.class_index, video)
            scored = ann & (frame_idx > given.get(oid, 0))
            if not scored.any():
                continue
            s = frame_scores(pred_np, gt_np, oid, scored, self.bound_th)
            j = video_stats(s["J"])
            f = video_stats(s["F"])
            rows.append(
                [d_idx, c_idx, v_idx, oid, int(scored.sum())]
                + [j["mean"], j["recall"], j["decay"], f["mean"], f["recall"], f["decay"]]
                + [float(s["Dice"].mean())]
            )
        if rows:
            packed = torch.from_numpy(np.asarray(rows, dtype=np.float64)).view(torch.int64)
            self.rows.append(packed.to(self.device))

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None
    ) -> None:
        # A rank without rows would otherwise send torchmetrics' placeholder, a 1-D tensor of
        # the metric's float dtype, which does not match the other ranks' int64 [k, 12].
        if isinstance(self.rows, list) and not self.rows:
            self.rows = [torch.zeros((0, _N_ROW), dtype=torch.int64, device=self.device)]
        super()._sync_dist(dist_sync_fn, process_group)

    def _gathered_rows(self) -> np.ndarray:
        """All stored rows as a float64 ``[n, 12]`` numpy array."""
        rows = self.rows
        if isinstance(rows, list):
            rows = [r for r in rows if r.numel()]
            if not rows:
                return np.zeros((0, _N_ROW), dtype=np.float64)
            rows = torch.cat(rows, dim=0)
        return rows.detach().cpu().reshape(-1, _N_ROW).contiguous().view(torch.float64).numpy()

    def compute(self) -> VOSResult:
        """The tables of every video scored so far (on all ranks).

        Returns:
            a :class:`VOSResult`; with no rows its tables are empty and its summary NaN.
        """
        raw = pd.DataFrame(self._gathered_rows(), columns=list(_ROW_FIELDS))
        keys = ["dataset_idx", "video_idx", "object"]
        raw = raw.drop_duplicates(subset=keys, keep="first")
        raw = raw.sort_values(keys, kind="stable").reset_index(drop=True)

        datasets = list(self.dataset_index)
        classes = list(self.class_index)
        videos = list(self.video_index)
        per_video = pd.DataFrame(
            {
                "dataset": [datasets[int(i)] for i in raw["dataset_idx"]],
                "video": [videos[int(i)] for i in raw["video_idx"]],
                "object": raw["object"].astype(np.int64),
                "class": [classes[int(i)] for i in raw["class_idx"]],
                "n_frames": raw["n_frames"].astype(np.int64),
                **{col: raw[col] for col in _ROW_FIELDS[5:]},
            },
            columns=VIDEO_COLUMNS[:-1],
        )
        per_video["J&F"] = (per_video["J"] + per_video["F"]) / 2.0
        per_video = per_video[VIDEO_COLUMNS]

        per_dataset = _group_table(per_video, "dataset", datasets)
        per_class = _group_table(per_video, "class", classes)

        summary = _summary_block("", _row_or_none(per_dataset, MEAN_ROW))
        summary["n_videos"] = float(per_video[["dataset", "video"]].drop_duplicates().shape[0])
        summary["n_objects"] = float(len(per_video))
        for name in datasets:
            summary.update(_summary_block(f"{name}/", _row_or_none(per_dataset, name)))
        for name in [*classes, MEAN_ROW]:
            summary.update(_summary_block(f"class/{name}/", _row_or_none(per_class, name)))
        return VOSResult(per_video, per_dataset, per_class, summary)


def _row_or_none(table: pd.DataFrame, name: str) -> pd.Series | None:
    return table.loc[name] if name in table.index else None


def _group_table(per_video: pd.DataFrame, by: str, order: Sequence[str]) -> pd.DataFrame:
    """Mean J, F, Dice, J&F and counts per value of ``by`` (in ``order``), plus the mean row."""
    rows = {}
    for name in order:
        sub = per_video[per_video[by] == name]
        if sub.empty:
            continue
        j, f = float(sub["J"].mean()), float(sub["F"].mean())
        rows[name] = {
            "J": j,
            "F": f,
            "Dice": float(sub["Dice"].mean()),
            "J&F": (j + f) / 2.0,
            "n_videos": int(sub[["dataset", "video"]].drop_duplicates().shape[0]),
            "n_objects": len(sub),
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=TABLE_COLUMNS)
    table = table.astype({"J": float, "F": float, "Dice": float, "J&F": float})
    table = table.astype({"n_videos": np.int64, "n_objects": np.int64})
    if rows:
        mean = {col: float(table[col].mean()) for col in ("J", "F", "Dice")}
        mean["J&F"] = (mean["J"] + mean["F"]) / 2.0
        table.loc[MEAN_ROW] = [
            mean["J"],
            mean["F"],
            mean["Dice"],
            mean["J&F"],
            int(per_video[["dataset", "video"]].drop_duplicates().shape[0]),
            len(per_video),
        ]
    table.index.name = by
    return table

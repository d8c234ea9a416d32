"""J, F, Dice (DAVIS definitions), per-video statistics and the VOSMetric tables."""

from __future__ import annotations

import math
import socket
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from tcmn.errors import TCMNError
from tcmn.metrics import (
    VOSMetric,
    bound_pix,
    boundary_f,
    boundary_map,
    boundary_precision_recall,
    dice,
    disk,
    frame_scores,
    jaccard,
    video_stats,
)

H = W = 64


def square(top: int, left: int, side: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top : top + side, left : left + side] = True
    return m


def lattice_disk(radius: int, center: tuple[int, int] = (32, 32)) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


# --------------------------------------------------------------------------------------------
# Hand-made masks
# --------------------------------------------------------------------------------------------


def test_overlapping_squares_j_and_dice():
    # 10x10 squares offset by (2, 4): intersection 8x6 = 48, union 200 - 48 = 152.
    a = square(10, 10, 10)
    b = square(12, 14, 10)
    assert jaccard(a, b) == pytest.approx(48 / 152)
    assert dice(a, b) == pytest.approx(2 * 48 / 200)


def test_empty_masks():
    e = np.zeros((H, W), bool)
    g = square(10, 10, 8)
    assert (jaccard(e, e), dice(e, e), boundary_f(e, e)) == (1.0, 1.0, 1.0)
    assert boundary_precision_recall(e, e) == (1.0, 1.0, 1.0)
    # Empty prediction, object in the ground truth: DAVIS gives P=1, R=0, so F=0.
    assert (jaccard(e, g), dice(e, g)) == (0.0, 0.0)
    assert boundary_precision_recall(e, g) == (1.0, 0.0, 0.0)
    # The mirror case: P=0, R=1.
    assert boundary_precision_recall(g, e) == (0.0, 1.0, 0.0)


def test_boundary_map_counts_by_hand():
    # A filled n x n square's boundary is its right column and bottom row plus the background
    # column to its left and row above it: the outline of an (n+1)x(n+1) square, 4n pixels.
    for side in (1, 2, 5, 20):
        assert boundary_map(square(10, 10, side)).sum() == 4 * side
    b = boundary_map(square(10, 10, 3))
    expected = np.zeros((H, W), bool)
    expected[9:13, 9] = expected[9:13, 12] = expected[9, 9:13] = expected[12, 9:13] = True
    np.testing.assert_array_equal(b, expected)
    # A plus of 5 pixels: 5 members differ from an E/S/SE neighbour, and 7 background pixels
    # have a member as E/S/SE neighbour (worked out on paper): 12.
    assert boundary_map(lattice_disk(1)).sum() == 12
    # A mask filling the whole image has no boundary: outside the image is not background.
    assert not boundary_map(np.ones((8, 8), bool)).any()


def test_disk_element():
    assert disk(1).sum() == 5 and disk(2).sum() == 13 and disk(3).sum() == 29
    assert disk(3).shape == (7, 7)


def test_ring_versus_filled_disk():
    # Lattice points of a disk: radius 1 -> 5 (a plus), radius 5 -> 81
    # (11 + 2*9 + 2*9 + 2*9 + 2*7 + 2*1, columns |x| = 0..5).
    full = lattice_disk(5)
    ring = full & ~lattice_disk(1)
    assert full.sum() == 81 and ring.sum() == 76
    assert jaccard(ring, full) == pytest.approx(76 / 81)
    assert dice(ring, full) == pytest.approx(152 / 157)
    # The outer boundary is shared, so every ground-truth boundary pixel is matched (R = 1);
    # the hole adds its 12 boundary pixels, all over 1 px from the outer one (P < 1), all
    # within 4 px of it (P = 1).
    n_out = int(boundary_map(full).sum())
    p, r, f = boundary_precision_recall(ring, full, bound_th=1)
    assert r == 1.0
    assert p == pytest.approx(n_out / (n_out + 12))
    assert f == pytest.approx(2 * p / (1 + p))
    assert boundary_precision_recall(ring, full, bound_th=4) == (1.0, 1.0, 1.0)


def test_square_ring_versus_filled_square_f():
    # 12x12 square with a 4x4 hole in the middle: J = 128/144, Dice = 256/272.
    full = square(10, 10, 12)
    ring = full & ~square(14, 14, 4)
    assert jaccard(ring, full) == pytest.approx(8 / 9)
    assert dice(ring, full) == pytest.approx(16 / 17)
    # Boundaries: outer 4*12 = 48 (shared), hole 4*4 = 16, every hole pixel exactly 4 px from
    # the outer outline. Tolerance 3: P = 48/64, R = 1, F = 6/7. Tolerance 4: all matched.
    p, r, f = boundary_precision_recall(ring, full, bound_th=3)
    assert (p, r) == (0.75, 1.0)
    assert f == pytest.approx(6 / 7)
    assert boundary_precision_recall(ring, full, bound_th=4) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_shift_within_tolerance_is_perfect(shift):
    gt = square(20, 20, 20)
    pred = np.roll(gt, shift, axis=1)
    assert boundary_precision_recall(pred, gt, bound_th=2) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(("shift", "matched"), [(3, 44), (4, 42), (5, 40)])
def test_shift_beyond_tolerance(shift, matched):
    # n = 20 square, outline 80 px, shifted right by d > r = 2 px. Unmatched predicted outline
    # pixels: the d - r rightmost of the top row and of the bottom row, the n - 1 inner pixels
    # of the right column, and the n - 2r - 1 inner pixels of the left column farther than r
    # from the top and bottom rows: 2n + 2d - 4r - 2 in all; the mirror holds for recall.
    n, r = 20, 2
    assert matched == 4 * n - (2 * n + 2 * shift - 4 * r - 2)
    gt = square(20, 20, n)
    pred = np.roll(gt, shift, axis=1)
    p, rec, f = boundary_precision_recall(pred, gt, bound_th=r)
    assert p == pytest.approx(matched / 80)
    assert rec == pytest.approx(matched / 80)
    assert f == pytest.approx(matched / 80)


def test_bound_pix_rule():
    assert bound_pix(288, 384) == 4  # hypot = 480, 0.008 * 480 = 3.84 -> 4
    assert bound_pix(64, 64) == 1  # 0.008 * 90.5 = 0.72 -> 1
    assert bound_pix(480, 854) == 8  # 0.008 * 979.7 = 7.84 -> 8
    assert bound_pix(64, 64, bound_th=3) == 3  # >= 1: pixels
    assert bound_pix(300, 400, bound_th=0.1) == 50
    with pytest.raises(TCMNError):
        bound_pix(64, 64, bound_th=0)
    # The default tolerance on a 384x288 frame is 4 px: a 4 px shift scores F = 1, 5 px not.
    gt = square(100, 100, 60, shape=(288, 384))
    assert boundary_f(np.roll(gt, 4, axis=1), gt) == 1.0
    assert boundary_f(np.roll(gt, 5, axis=1), gt) < 1.0


def test_stacks_and_torch_inputs():
    a = np.stack([square(10, 10, 10), np.zeros((H, W), bool), square(10, 10, 10)])
    b = np.stack([square(12, 14, 10), square(5, 5, 5), square(10, 10, 10)])
    j = jaccard(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(j, np.ndarray) and j.dtype == np.float64 and j.shape == (3,)
    np.testing.assert_allclose(j, [48 / 152, 0.0, 1.0])
    np.testing.assert_allclose(dice(a, b), [48 / 100, 0.0, 1.0])
    f = boundary_f(a, b, bound_th=2)
    np.testing.assert_allclose(f, [boundary_f(a[t], b[t], bound_th=2) for t in range(3)])
    assert isinstance(jaccard(a[0], b[0]), float)
    with pytest.raises(TCMNError, match="resize"):
        jaccard(a, b[:, :32])


def _davis_f_measure(fg: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """A literal transcription of davis2017-evaluation's ``f_measure`` (scipy dilation)."""

    def seg2bmap(seg):
        seg = seg.astype(bool)
        e = np.zeros_like(seg)
        s = np.zeros_like(seg)
        se = np.zeros_like(seg)
        e[:, :-1] = seg[:, 1:]
        s[:-1, :] = seg[1:, :]
        se[:-1, :-1] = seg[1:, 1:]
        b = seg ^ e | seg ^ s | seg ^ se
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = 0
        return b

    r = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    k = int(r)
    grid = np.arange(-k, k + 1)
    element = np.hypot(*np.meshgrid(grid, grid)) <= r
    fb, gb = seg2bmap(fg), seg2bmap(gt)
    fg_dil = ndimage.binary_dilation(fb, element)
    gt_dil = ndimage.binary_dilation(gb, element)
    n_fg, n_gt = fb.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fb & gt_dil) / float(n_fg)
        recall = np.sum(gb & fg_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def test_boundary_f_matches_davis_transcription():
    rng = np.random.default_rng(0)
    for bound_th in (0.008, 0.05, 2):
        for _ in range(10):
            gt = ndimage.binary_opening(rng.random((48, 80)) > 0.55, iterations=1)
            pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 3)))
            pred ^= rng.random(gt.shape) > 0.97
            assert boundary_f(pred, gt, bound_th) == pytest.approx(
                _davis_f_measure(pred, gt, bound_th)
            )


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

masks = arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12)))
mask_pairs = st.integers(1, 12).flatmap(
    lambda h: st.integers(1, 12).flatmap(
        lambda w: st.tuples(arrays(np.bool_, (h, w)), arrays(np.bool_, (h, w)))
    )
)


@settings(max_examples=60, deadline=None)
@given(mask_pairs)
def test_region_properties(pair):
    a, b = pair
    j, d = jaccard(a, b), dice(a, b)
    assert 0.0 <= j <= d <= 1.0
    assert jaccard(b, a) == j and dice(b, a) == d
    assert d == pytest.approx(2 * j / (1 + j))


@settings(max_examples=60, deadline=None)
@given(mask_pairs)
def test_boundary_f_symmetric_and_bounded(pair):
    a, b = pair
    f = boundary_f(a, b, bound_th=1)
    assert 0.0 <= f <= 1.0
    assert boundary_f(b, a, bound_th=1) == pytest.approx(f)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_identical_masks_score_one(m):
    assert jaccard(m, m) == 1.0 and dice(m, m) == 1.0 and boundary_f(m, m) == 1.0


# --------------------------------------------------------------------------------------------
# video_stats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "mean", "recall", "decay"),
    [
        ([0.7], 0.7, 1.0, 0.0),
        ([0.9, 0.3], 0.6, 0.5, 0.6),  # quarters: frame 0 | frame 1
        ([1.0, 0.5, 0.25], 1.75 / 3, 1 / 3, 0.75),  # 0.5 is not > 0.5; frame 0 - frame 2
        ([1.0, 0.75, 0.5, 0.25], 0.625, 0.5, 0.75),
        # 5 frames: a quarter is 1.25 frames: (1 + 0.75/4)/1.25 - (0.25/4 + 0)/1.25 = 0.95 - 0.05
        ([1.0, 0.75, 0.5, 0.25, 0.0], 0.5, 0.4, 0.9),
        # 8 frames: (0.9 + 0.7)/2 - (0.2 + 0.0)/2
        ([0.9, 0.7, 0.6, 0.6, 0.4, 0.4, 0.2, 0.0], 0.475, 0.5, 0.7),
    ],
)
def test_video_stats(scores, mean, recall, decay):
    s = video_stats(np.array(scores))
    assert s == pytest.approx({"mean": mean, "recall": recall, "decay": decay})


def test_video_stats_constant_and_empty():
    for n in range(1, 30):
        s = video_stats(torch.full((n,), 0.4))
        assert s["decay"] == pytest.approx(0.0, abs=1e-12)
        assert s["mean"] == pytest.approx(0.4) and s["recall"] == 0.0
    empty = video_stats(np.zeros(0))
    assert set(empty) == {"mean", "recall", "decay"} and all(math.isnan(v) for v in empty.values())


# --------------------------------------------------------------------------------------------
# frame_scores and VOSMetric
# --------------------------------------------------------------------------------------------


def test_frame_scores_selects_frames_and_object():
    gt = np.zeros((4, H, W), np.int64)
    gt[:, 10:20, 10:20] = 1
    gt[:, 40:50, 40:50] = 2
    pred = gt.copy()
    pred[2][pred[2] == 1] = 0  # object 1 lost on frame 2
    s = frame_scores(pred, gt, 1, np.array([False, True, True, False]))
    np.testing.assert_array_equal(s["frames"], [1, 2])
    np.testing.assert_array_equal(s["J"], [1.0, 0.0])
    np.testing.assert_array_equal(s["F"], [1.0, 0.0])
    np.testing.assert_array_equal(s["Dice"], [1.0, 0.0])
    np.testing.assert_array_equal(frame_scores(pred, gt, 2, np.ones(4, bool))["J"], [1.0] * 4)


DATASETS = ["alpha", "beta"]
CLASSES = ["polyp", "ventricle"]
VIDEOS = ["a1", "a2", "b1"]
T = 6


def _video(shifts: list[int], label: int = 1, side: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """gt: a square of ``label`` on every frame; pred: the same square shifted right by shifts[t]."""
    gt = np.zeros((T, H, W), np.int64)
    pred = np.zeros((T, H, W), np.int64)
    for t in range(T):
        gt[t][square(20, 20, side)] = label
        pred[t][np.roll(square(20, 20, side), shifts[t], axis=1)] = label
    return pred, gt


VIDEO_SPECS = {
    # video: (dataset, class, per-frame shifts)
    "a1": ("alpha", "polyp", [0, 2, 4, 6, 8, 10]),
    "a2": ("alpha", "ventricle", [0, 1, 1, 1, 1, 1]),
    "b1": ("beta", "polyp", [0, 3, 3, 6, 6, 12]),
}


def _direct(video: str) -> dict[str, float]:
    """J, F, Dice of a video computed straight from the functions (frames 1..T-1)."""
    pred, gt = _video(VIDEO_SPECS[video][2])
    j = float(np.mean(jaccard(pred[1:] == 1, gt[1:] == 1)))
    f = float(np.mean(boundary_f(pred[1:] == 1, gt[1:] == 1)))
    d = float(np.mean(dice(pred[1:] == 1, gt[1:] == 1)))
    return {"J": j, "F": f, "Dice": d}


def _filled_metric() -> VOSMetric:
    metric = VOSMetric(DATASETS, CLASSES, VIDEOS)
    for video, (dataset, cls, shifts) in VIDEO_SPECS.items():
        pred, gt = _video(shifts)
        metric.update(pred, gt, np.ones(T, bool), {1: cls}, video, dataset)
    return metric


def test_vos_metric_tables_equal_direct_computation():
    result = _filled_metric().compute()
    direct = {v: _direct(v) for v in VIDEOS}
    assert len({round(d["J"], 6) for d in direct.values()}) == 3  # the videos differ

    pv = result.per_video.set_index("video")
    for v in VIDEOS:
        for k in ("J", "F", "Dice"):
            assert pv.loc[v, k] == pytest.approx(direct[v][k])
        assert pv.loc[v, "n_frames"] == T - 1

    pd_ = result.per_dataset
    assert list(pd_.index) == ["alpha", "beta", "mean"]
    alpha = {k: (direct["a1"][k] + direct["a2"][k]) / 2 for k in ("J", "F", "Dice")}
    beta = direct["b1"]
    for k in ("J", "F", "Dice"):
        assert pd_.loc["alpha", k] == pytest.approx(alpha[k])
        assert pd_.loc["beta", k] == pytest.approx(beta[k])
        # The mean row is the unweighted mean over datasets, not over videos.
        assert pd_.loc["mean", k] == pytest.approx((alpha[k] + beta[k]) / 2)
    assert list(pd_["n_videos"]) == [2, 1, 3]
    jf = ((alpha["J"] + alpha["F"]) / 2 + (beta["J"] + beta["F"]) / 2) / 2
    assert pd_.loc["mean", "J&F"] == pytest.approx(jf)
    assert result.summary["J&F"] == pytest.approx(jf)
    assert result.summary["beta/J"] == pytest.approx(beta["J"])

    pc = result.per_class
    assert list(pc.index) == ["polyp", "ventricle", "mean"]
    polyp_j = (direct["a1"]["J"] + direct["b1"]["J"]) / 2
    assert pc.loc["polyp", "J"] == pytest.approx(polyp_j)
    assert pc.loc["mean", "J"] == pytest.approx((polyp_j + direct["a2"]["J"]) / 2)
    assert result.summary["class/mean/J"] == pytest.approx(pc.loc["mean", "J"])

    # J decay of a1: per-frame J falls with the shift, so the first quarter beats the last.
    assert pv.loc["a1", "J_decay"] > 0
    assert pv.loc["a1", "J&F"] == pytest.approx((direct["a1"]["J"] + direct["a1"]["F"]) / 2)


def test_given_and_unannotated_frames_are_not_scored():
    # Frames 0-2 are wrong and frame 4 is wrong: scoring any of them would lower J below 1.
    pred, gt = _video([0, 0, 0, 0, 0, 0])
    pred[0:3] = 0
    pred[4] = 0
    annotated = np.array([True, True, True, True, False, True])
    gt[4] = 0  # no ground truth: whatever the label map holds there is not read
    metric = VOSMetric(DATASETS, CLASSES, VIDEOS)
    metric.update(pred, gt, annotated, {1: "polyp"}, "a1", "alpha", given_frames={1: 2})
    row = metric.compute().per_video.iloc[0]
    assert row["n_frames"] == 2  # frames 3 and 5
    assert (row["J"], row["F"], row["Dice"]) == (1.0, 1.0, 1.0)

    # The same call with the given frame at 0 scores frames 1, 2 (empty predictions): J = 1/2.
    metric = VOSMetric(DATASETS, CLASSES, VIDEOS)
    metric.update(pred, gt, annotated, {1: "polyp"}, "a1", "alpha")
    row = metric.compute().per_video.iloc[0]
    assert row["n_frames"] == 4 and row["J"] == pytest.approx(0.5)


def test_object_without_scored_frames_is_skipped():
    pred, gt = _video([0] * T)
    gt[gt == 1] = 0
    gt[:, 50:60, 50:60] = 2
    pred[:, 50:60, 50:60] = 2
    metric = VOSMetric(DATASETS, CLASSES, VIDEOS)
    # Object 1 is given on the last frame: nothing left to score, so no row (not a 0).
    metric.update(pred, gt, np.ones(T, bool), {1: "polyp", 2: "ventricle"}, "a1", "alpha",
                  given_frames={1: T - 1})  # fmt: skip
    result = metric.compute()
    assert list(result.per_video["object"]) == [2]
    assert list(result.per_class.index) == ["ventricle", "mean"]
    assert result.summary["J"] == 1.0
    assert math.isnan(result.summary["class/polyp/J"])


def test_duplicate_updates_are_deduplicated():
    once = _filled_metric().compute()
    metric = _filled_metric()
    pred, gt = _video(VIDEO_SPECS["a1"][2])
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt), torch.ones(T, dtype=torch.bool),
                  {"1": "polyp"}, "a1", "alpha")  # fmt: skip
    twice = metric.compute()
    assert len(twice.per_video) == 3
    assert twice.per_dataset.equals(once.per_dataset)
    assert twice.summary == once.summary


def test_empty_metric_gives_empty_tables_and_nan():
    metric = VOSMetric(DATASETS, CLASSES, VIDEOS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchmetrics: compute before update
        result = metric.compute()
    assert result.per_video.empty and result.per_dataset.empty and result.per_class.empty
    assert "J&F" in result.per_video.columns and "J&F" in result.per_dataset.columns
    for key in ("J&F", "J", "F", "Dice", "alpha/J", "class/polyp/F"):
        assert math.isnan(result.summary[key])


def test_reset_and_dtype_robustness():
    metric = _filled_metric()
    before = metric.compute().summary
    # A parent module cast to bfloat16 must not round the stored rows (they are int64).
    metric.to(dtype=torch.bfloat16)
    assert metric.compute().summary == before
    metric.reset()
    pred, gt = _video([0] * T)
    metric.update(pred, gt, np.ones(T, bool), {1: "polyp"}, "b1", "beta")
    assert list(metric.compute().per_dataset.index) == ["beta", "mean"]


def test_clear_errors():
    metric = VOSMetric(DATASETS, CLASSES, VIDEOS)
    pred, gt = _video([0] * T)
    ones = np.ones(T, bool)
    with pytest.raises(TCMNError, match="'gamma'"):
        metric.update(pred, gt, ones, {1: "polyp"}, "a1", "gamma")
    with pytest.raises(TCMNError, match="'zz'"):
        metric.update(pred, gt, ones, {1: "polyp"}, "zz", "alpha")
    with pytest.raises(TCMNError, match="'tumour'"):
        metric.update(pred, gt, ones, {1: "tumour"}, "a1", "alpha")
    with pytest.raises(TCMNError, match="'a1'.*shape"):
        metric.update(pred[:, :32], gt, ones, {1: "polyp"}, "a1", "alpha")
    with pytest.raises(TCMNError, match="one flag per frame"):
        metric.update(pred, gt, ones[:3], {1: "polyp"}, "a1", "alpha")
    with pytest.raises(TCMNError, match="reserved"):
        VOSMetric(["mean"], CLASSES, VIDEOS)


# --------------------------------------------------------------------------------------------
# DDP: two gloo processes on the CPU
# --------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        metric = VOSMetric(DATASETS, CLASSES, VIDEOS)
        # Rank 0 scores a1 and b1; rank 1 scores a1 again (a padded sampler) and a2. A second
        # metric has rows on rank 0 only (rank 1 had no data).
        mine = {0: ["a1", "b1"], 1: ["a1", "a2"]}[rank]
        lonely = VOSMetric(DATASETS, CLASSES, VIDEOS)
        for video in mine:
            dataset, cls, shifts = VIDEO_SPECS[video]
            pred, gt = _video(shifts)
            metric.update(pred, gt, np.ones(T, bool), {1: cls}, video, dataset)
            if rank == 0:
                lonely.update(pred, gt, np.ones(T, bool), {1: cls}, video, dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = metric.compute()
            lonely_result = lonely.compute()
        torch.save(
            {
                "summary": result.summary,
                "videos": list(result.per_video["video"]),
                "lonely": list(lonely_result.per_video["video"]),
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gathers_and_deduplicates(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2,
                       start_method="spawn")  # fmt: skip
    expected = _filled_metric().compute().summary
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["videos"] == VIDEOS
        assert got["lonely"] == ["a1", "b1"]
        assert got["summary"] == pytest.approx(expected, nan_ok=True)

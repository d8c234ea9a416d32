"""Training samples: main-stage clips, pretraining pseudo-clips, transforms, the epoch sampler."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate

from tcmn.data.clips import (
    EpochSampler,
    VideoClipDataset,
    WholeVideoDataset,
    collate_single,
    sample_gaps,
)
from tcmn.data.layout import LayoutWriter, PreparedDataset
from tcmn.data.static import ImageMaskPairs, StaticClipDataset
from tcmn.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_compose,
    choose_crop,
    eval_shape,
    normalize,
    resize_frames,
)
from tcmn.errors import TCMNError

H, W, T = 64, 80, 30
RED, GREEN = (255, 0, 0), (0, 255, 0)
#: annotated frames of the sparse video (gaps of 1..4 frames)
SPARSE = [0, 1, 3, 4, 7, 8, 9, 13, 15, 16, 20, 22, 25, 28, 29]
NO_AUG = {"spatial": [], "color": [], "zoom": [1.0, 1.0]}
STRONG_SPATIAL = {
    "spatial": [
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "VerticalFlip", "p": 0.5},
        {"name": "Affine", "rotate": [-40, 40], "scale": [0.8, 1.3], "shear": [-10, 10], "p": 1},
    ],
    "color": [],
    "zoom": [1.0, 1.5],
}


def background(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    """Dark noisy texture: R, G in 20..60 (far from the object colours), B in 40..120."""
    bg = rng.integers(20, 61, (h, w, 3)).astype(np.uint8)
    bg[..., 2] = rng.integers(40, 121, (h, w))
    return bg


def square_video(t_frames: int, rng: np.random.Generator, absent: set[int] = frozenset()):
    """Red square (object 1) moving right; green square (object 2) absent in ``absent`` frames."""
    frames, labels = [], []
    for t in range(t_frames):
        f = background(rng)
        m = np.zeros((H, W), np.uint8)
        y, x = 8 + (t % 10), 4 + t
        f[y : y + 20, x : x + 20] = RED
        m[y : y + 20, x : x + 20] = 1
        if t not in absent:
            f[38:58, 50:70] = GREEN
            m[38:58, 50:70] = 2
        frames.append(f)
        labels.append(m)
    return frames, labels


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> PreparedDataset:
    """Three videos: sparse annotations, one with only 2 annotated frames, one dense."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    w = LayoutWriter(root, "toy")
    frames, labels = square_video(T, rng, absent=set(range(0, 8)))
    w.add_video("sparse", frames, {t: labels[t] for t in SPARSE}, {1: "red", 2: "green"}, "p1")
    frames, labels = square_video(6, rng)
    w.add_video("short", frames, {0: labels[0], 5: labels[5]}, {1: "red", 2: "green"}, "p2")
    frames, labels = square_video(12, rng)
    # the first annotated frames are empty: a clip may not start there
    labels[0][:] = 0
    labels[1][:] = 0
    w.add_video("dense", frames, dict(enumerate(labels)), {1: "red", 2: "green"}, "p3")
    return PreparedDataset(root)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Undo ``normalize``: float ``[T, 3, H, W]`` -> uint8 ``[T, H, W, 3]``."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = ((frames * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def colour_masks(img: np.ndarray) -> dict[tuple, np.ndarray]:
    """Pixels closer to pure red / pure green than to the dark background."""
    r, g, b = (img[..., c].astype(int) for c in range(3))
    return {RED: (r > 150) & (g < 100) & (b < 110), GREEN: (g > 150) & (r < 100) & (b < 110)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# --------------------------------------------------------------------------- frame choice
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    clip_len=st.integers(1, 5),
    max_skip=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_sample_gaps_fit_and_respect_max_skip(n, clip_len, max_skip, seed):
    if n < clip_len:
        return
    g = sample_gaps(n, clip_len, max_skip, np.random.default_rng(seed))
    assert g.shape == (clip_len - 1,)
    assert np.all(g >= 1) and np.all(g <= max_skip + 1)
    assert g.sum() <= n - 1


@settings(max_examples=40, deadline=None)
@given(
    i=st.integers(0, 10_000),
    clip_len=st.integers(1, 4),
    max_skip=st.integers(0, 5),
    seed=st.integers(0, 100),
)
def test_clip_frames_are_ordered_annotated_and_within_skip_bounds(toy, i, clip_len, max_skip, seed):
    ds = VideoClipDataset(
        [(toy, ["sparse", "dense"], 1.0)],
        clip_len=clip_len,
        max_skip=max_skip,
        crop_size=32,
        samples=10,
        seed=seed,
        augment=NO_AUG,
    )
    s = ds[i]
    video, idx = s["info"]["video"], s["info"]["frames"]
    annotated = toy.videos[video].annotated_indices
    assert len(idx) == clip_len
    assert all(t in annotated for t in idx)
    pos = [annotated.index(t) for t in idx]
    gaps = np.diff(pos)
    assert np.all(gaps >= 1) and np.all(gaps <= max_skip + 1)
    # the first frame shows every chosen object (and there is one)
    assert s["valid"].any()
    for k in np.flatnonzero(s["valid"].numpy()):
        assert s["masks"][0, k].sum() > 0


def test_short_videos_are_skipped_with_a_log_line(toy, caplog):
    with caplog.at_level(logging.INFO, logger="tcmn.data.clips"):
        ds = VideoClipDataset([(toy, ["sparse", "short"], 1.0)], clip_len=3, samples=4)
    assert "short" in caplog.text and "fewer than 3 annotated frames" in caplog.text
    assert ds.sources[0][1] == ["sparse"]
    with pytest.raises(TCMNError, match="no training video has at least 3 annotated frames"):
        VideoClipDataset([(toy, ["short"], 1.0)], clip_len=3)


def test_missing_video_is_a_clear_error(toy):
    with pytest.raises(TCMNError, match="video 'nope' is asked for training"):
        VideoClipDataset([(toy, ["nope"], 1.0)])


# --------------------------------------------------------------------------- sample content
def test_sample_format_and_object_selection(toy):
    ds = VideoClipDataset(
        [(toy, ["sparse", "dense"], 1.0)], crop_size=(48, 40), samples=30, seed=3, augment=NO_AUG
    )
    n_objects = set()
    for i in range(30):
        s = ds[i]
        assert s["frames"].shape == (3, 3, 48, 40) and s["frames"].dtype == torch.float32
        assert s["masks"].shape == (3, 2, 48, 40) and s["masks"].dtype == torch.float32
        assert s["labels"].shape == (3, 48, 40) and s["labels"].dtype == torch.int64
        assert s["valid"].dtype == torch.bool and s["info"]["stage"] == "main"
        n = int(s["valid"].sum())
        n_objects.add(n)
        assert s["valid"].tolist() == [True] * n + [False] * (2 - n)
        for k in range(2):
            assert torch.equal(s["masks"][:, k], (s["labels"] == k + 1).float())
        img = to_uint8(s["frames"])
        col = colour_masks(img[0])
        # each tracked channel is exactly one of the two squares; an unchosen square is background
        chosen = set()
        for k in range(1, n + 1):
            lab = s["labels"][0].numpy() == k
            c = max(col, key=lambda c, lab=lab: iou(col[c], lab))
            assert iou(col[c], lab) == 1.0
            chosen.add(c)
        for c in set(col) - chosen:
            assert not s["labels"][0].numpy()[col[c]].any()
    assert n_objects == {1, 2}  # random subset size


def test_spatial_augmentation_keeps_frames_and_masks_aligned(toy):
    ds = VideoClipDataset(
        [(toy, ["sparse", "dense"], 1.0)], crop_size=48, samples=12, seed=1, augment=STRONG_SPATIAL
    )
    checked = 0
    for i in range(12):
        s = ds[i]
        img = to_uint8(s["frames"])
        for t in range(3):
            col = colour_masks(img[t])
            for k in np.flatnonzero(s["valid"].numpy()):
                lab = s["labels"][t].numpy() == k + 1
                if lab.sum() < 20:
                    continue
                best = max(iou(col[c], lab) for c in col)
                assert best > 0.8, (i, t, k, best)
                checked += 1
    assert checked >= 12, f"only {checked} objects large enough to check"


def test_same_seed_same_sample_and_epoch_changes_it(toy):
    def make(seed):
        return VideoClipDataset(
            [(toy, ["sparse", "dense"], 1.0)], crop_size=48, samples=5, seed=seed
        )

    a, b, c = make(0), make(0), make(1)
    for i in (0, 3):
        assert torch.equal(a[i]["frames"], b[i]["frames"])
        assert torch.equal(a[i]["labels"], b[i]["labels"])
    assert not all(torch.equal(a[i]["frames"], c[i]["frames"]) for i in range(5))
    # global id 5 + i is sample i of epoch 1: a different draw
    assert not all(torch.equal(a[i]["frames"], a[5 + i]["frames"]) for i in range(5))


def test_default_collate_batches_samples(toy):
    ds = VideoClipDataset([(toy, ["dense"], 1.0)], crop_size=32, samples=4, max_objects=3)
    b = default_collate([ds[i] for i in range(4)])
    assert b["frames"].shape == (4, 3, 3, 32, 32)
    assert b["masks"].shape == (4, 3, 3, 32, 32)
    assert b["labels"].shape == (4, 3, 32, 32) and b["valid"].shape == (4, 3)
    assert b["info"]["video"] == ["dense"] * 4


def test_choose_crop_keeps_a_small_object():
    first = np.zeros((200, 200), np.uint8)
    first[190:195, 3:8] = 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, x = choose_crop(first, [1], (32, 32), rng, min_pixels=10, tries=3)
        assert (first[y : y + 32, x : x + 32] == 1).sum() >= 1
    big = np.zeros((200, 200), np.uint8)
    big[150:190, 10:50] = 2  # 1600 px: a 64 px window must keep at least half of it
    for _ in range(20):
        y, x = choose_crop(big, [2], (64, 64), rng, min_pixels=10, tries=3)
        assert (big[y : y + 64, x : x + 64] == 2).sum() >= 800


# --------------------------------------------------------------------------- sampler
def test_epoch_sampler_shards_and_reshuffles():
    shards = [list(EpochSampler(10, seed=4, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    s = EpochSampler(10, seed=4)
    first = list(s)
    assert sorted(first) == list(range(10)) and first == list(EpochSampler(10, seed=4))
    s.set_epoch(3)
    third = list(s)
    assert sorted(third) == list(range(30, 40))
    assert [j - 30 for j in third] != first
    odd = [list(EpochSampler(7, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert [len(o) for o in odd] == [3, 3, 3] and set(sum(odd, [])) == set(range(7))
    assert isinstance(s, torch.utils.data.DistributedSampler)  # Lightning must not re-wrap it


# --------------------------------------------------------------------------- whole videos
def test_whole_video_item(toy):
    ds = WholeVideoDataset([(toy, "sparse", 7)], eval_size=40)
    item = collate_single([ds[0]])
    assert item["frames"].shape == (T, 32, 40, 3) and item["frames"].dtype == torch.uint8
    assert item["labels"].shape == (T, H, W) and item["labels"].dtype == torch.uint8
    ann = item["annotated"].numpy()
    assert ann.dtype == bool and np.flatnonzero(ann).tolist() == SPARSE
    # object 2 (green) is absent in frames 0..7: first annotated frame showing it is 8
    assert item["given_frames"] == {1: 0, 2: 8}
    assert item["objects"] == {1: "red", 2: "green"}
    assert item["index"] == 7 and item["video"] == "sparse" and item["dataset"] == "toy"
    with pytest.raises(TCMNError, match="batch_size=1"):
        collate_single([ds[0], ds[0]])


# --------------------------------------------------------------------------- transforms
def test_normalize_known_values():
    px = np.array([[[[255, 0, 128]]]], np.uint8)  # [1, 1, 1, 3]
    x = normalize(px)
    assert x.shape == (1, 3, 1, 1) and x.dtype == torch.float32
    want = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert torch.allclose(x.flatten(), torch.tensor(want), atol=1e-6)


def test_resize_frames_long_side_and_area():
    frames = np.zeros((2, 64, 96, 3), np.uint8)
    frames[:, :, 48:] = 200
    out = resize_frames(frames, 48)
    assert out.shape == (2, 32, 48, 3) and out.dtype == np.uint8
    assert eval_shape((64, 96), 48) == (32, 48) and eval_shape((64, 96), None) == (64, 96)
    assert out[0, 0, 23, 0] == 0 and out[0, 0, 24, 0] == 200  # area: no smearing across 2x2
    same = resize_frames(frames, None)
    assert np.array_equal(same, frames) and same is not frames


def test_build_compose_errors_name_the_transform():
    with pytest.raises(TCMNError, match="'Afine' is not an albumentations"):
        build_compose([{"name": "Afine"}])
    with pytest.raises(TCMNError, match="Affine has no argument"):
        build_compose([{"name": "Affine", "rotation": 3}])
    c = build_compose([{"name": "OneOf", "transforms": [{"name": "HorizontalFlip"}], "p": 1}])
    assert type(c.transforms[0]).__name__ == "OneOf"


# --------------------------------------------------------------------------- pseudo-clips
@pytest.fixture(scope="module")
def still(tmp_path_factory) -> PreparedDataset:
    """One still frame: flat grey 100 with a red square labelled 1 at [20:40, 30:50]."""
    root = tmp_path_factory.mktemp("still")
    f = np.full((H, W, 3), 100, np.uint8)
    m = np.zeros((H, W), np.uint8)
    f[20:40, 30:50] = RED
    m[20:40, 30:50] = 1
    LayoutWriter(root, "still").add_video("img", [f], {0: m}, {1: "red"}, "p")
    return PreparedDataset(root)


def test_pseudo_clip_deformation_keeps_image_and_mask_aligned(toy):
    ds = StaticClipDataset(
        [(toy, ["sparse"], 1.0)], crop_size=48, samples=8, seed=2, augment={"color": []}
    )
    checked = 0
    for i in range(8):
        s = ds[i]
        assert s["info"]["stage"] == "pretrain" and len(set(s["info"]["frames"])) == 1
        img = to_uint8(s["frames"])
        assert not np.array_equal(img[0], img[1])  # frames are independent deformations
        for t in range(3):
            col = colour_masks(img[t])
            for k in np.flatnonzero(s["valid"].numpy()):
                lab = s["labels"][t].numpy() == k + 1
                if lab.sum() < 20:
                    continue
                assert max(iou(col[c], lab) for c in col) > 0.75
                checked += 1
    assert checked >= 8, f"only {checked} objects large enough to check"


def test_random_shape_is_pasted_where_its_mask_says(still):
    original = np.array(still.frames("img")[0])
    ds = StaticClipDataset(
        [(still, ["img"], 1.0)],
        crop_size=(H, W),
        samples=12,
        deform=[],
        augment=NO_AUG,
        random_object_p=1.0,
        random_object={"kinds": ["ellipse", "blob", "polygon"], "outline_p": 0.0},
    )
    for i in range(12):
        s = ds[i]
        img = to_uint8(s["frames"])
        assert int(s["valid"].sum()) == 1
        mask = s["labels"][0].numpy() == 1
        assert 0 < mask.sum() < H * W
        changed = np.any(img[0] != original, axis=-1)
        assert np.array_equal(changed, mask)
        assert torch.equal(s["labels"][0], s["labels"][2])  # no deformation: same mask
        # the labelled red square is background unless the shape covers it
        red = np.all(original == RED, axis=-1)
        assert not s["labels"][0].numpy()[red & ~mask].any()


def test_outlined_shape_and_cutout(still):
    original = np.array(still.frames("img")[0])
    kw = dict(crop_size=(H, W), samples=6, deform=[], augment=NO_AUG, random_object_p=1.0)
    outlined = StaticClipDataset(
        [(still, ["img"], 1.0)], random_object={"kinds": ["ellipse"], "outline_p": 1.0}, **kw
    )
    ring = np.ones((3, 3), np.uint8)
    for i in range(6):
        s = outlined[i]
        mask = (s["labels"][0].numpy() == 1).astype(np.uint8)
        changed = np.any(to_uint8(s["frames"])[0] != original, axis=-1)
        near = cv2.dilate(mask, ring, iterations=2) & ~cv2.erode(mask, ring, iterations=3)
        assert changed.any() and not (changed & ~near.astype(bool)).any()
    cutout = StaticClipDataset([(still, ["img"], 1.0)], random_object={"kinds": ["cutout"]}, **kw)
    for i in range(6):
        s = cutout[i]
        mask = s["labels"][0].numpy() == 1
        img = to_uint8(s["frames"])[0]
        assert mask.sum() > 0 and np.all(img[mask] == RED)  # the pasted square is red


def test_invisible_shape_leaves_the_image_and_only_the_mask_says_where(still):
    original = np.array(still.frames("img")[0])
    ds = StaticClipDataset(
        [(still, ["img"], 1.0)],
        crop_size=(H, W),
        samples=6,
        deform=[],
        augment=NO_AUG,
        random_object_p=1.0,
        random_object={"kinds": ["ellipse", "blob", "polygon"], "invisible_p": 1.0},
    )
    for i in range(6):
        s = ds[i]
        mask = s["labels"][0].numpy() == 1
        assert 0 < mask.sum() < H * W
        assert np.array_equal(to_uint8(s["frames"])[0], original)
        red = np.all(original == RED, axis=-1)
        assert not s["labels"][0].numpy()[red & ~mask].any()  # the labelled object: background


def test_image_mask_pairs(tmp_path):
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    img = np.full((40, 50, 3), 90, np.uint8)
    m = np.zeros((40, 50), np.uint8)
    m[5:15, 5:20] = 255
    cv2.imwrite(str(root / "images" / "a.png"), img)
    cv2.imwrite(str(root / "masks" / "a.png"), m)
    cv2.imwrite(str(root / "images" / "b.jpg"), img)
    cv2.imwrite(str(root / "masks" / "b.png"), m[:30])
    pairs = ImageMaskPairs(root)
    assert pairs.keys == ["a", "b"]
    _, lab = pairs.load("a")
    assert set(np.unique(lab).tolist()) == {0, 1} and lab.sum() == 150
    with pytest.raises(TCMNError, match=r"b\.png: the mask is 50x30 but the image b\.jpg is 50x40"):
        pairs.load("b")
    ds = StaticClipDataset(
        [{"pairs_dir": str(root), "weight": 1.0}], crop_size=32, samples=4, augment=NO_AUG
    )
    ds.sources[0][2].remove("b")
    assert ds[0]["info"]["dataset"] == "pairs" and ds[0]["masks"][0, 0].sum() > 0
    with pytest.raises(TCMNError, match="images: the folder is missing"):
        ImageMaskPairs(tmp_path)

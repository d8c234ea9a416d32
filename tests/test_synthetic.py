"""The procedural synthetic dataset: determinism, motion statistics, meta vs masks, layout."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tcmn.data.layout import PreparedDataset
from tcmn.data.synthetic import (
    CLASSES,
    GENERATOR_VERSION,
    MODALITY_CLASSES,
    generate_synthetic,
    make_video,
    video_name,
)
from tcmn.errors import TCMNError


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest), caches excluded."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> tuple[Path, float]:
    """The default synthetic set (24 videos x 20 frames x 128^2), written once, and its time."""
    root = tmp_path_factory.mktemp("synthetic") / "synthetic"
    t0 = time.perf_counter()
    out = generate_synthetic(root)
    return out, time.perf_counter() - t0


def test_default_set_is_fast_and_reads_back(default_set):
    root, seconds = default_set
    assert seconds < 30, f"generating the default set took {seconds:.1f}s (target: a few seconds)"
    ds = PreparedDataset(root)
    ds.validate()
    assert ds.name == "synthetic" and len(ds) == 24
    for name, v in ds.videos.items():
        assert v.n_frames == 20 and tuple(v.size) == (128, 128)
        assert v.annotated == v.stems  # every frame annotated
        assert v.patient == name.replace("synth_v", "synth_p")
        assert v.fps == 25.0 and v.spacing is None
        assert v.extra["generator_version"] == GENERATOR_VERSION
        assert v.extra["modality"] in MODALITY_CLASSES
    assert len({v.patient for v in ds.videos.values()}) == 24


def test_meta_objects_match_masks(default_set):
    ds = PreparedDataset(default_set[0])
    seen_classes, modalities = set(), set()
    for name, v in ds.videos.items():
        labels, _ = ds.masks(name)
        frames = ds.frames(name)
        ids = set(np.unique(labels).tolist()) - {0}
        assert sorted(v.objects) == list(range(1, len(v.objects) + 1)) and 1 <= len(v.objects) <= 2
        assert ids == set(v.objects), name  # every declared object is labelled, nothing else
        assert set(np.unique(labels[0]).tolist()) - {0} == set(v.objects), "all visible at t=0"
        modality = v.extra["modality"]
        assert set(v.objects.values()) <= set(MODALITY_CLASSES[modality])
        grey = np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(
            frames[..., 1], frames[..., 2]
        )
        assert grey == (modality == "ultrasound"), name
        seen_classes |= set(v.objects.values())
        modalities.add(modality)
    assert seen_classes == set(CLASSES) and modalities == set(MODALITY_CLASSES)


def test_motion_defeats_copy_first_mask_but_stays_smooth():
    copy_j, consecutive = [], []
    for k in range(24):
        v = make_video(0, k)
        for oid in v.objects:
            m = v.masks == oid
            copy_j.append(np.mean([_iou(m[0], m[t]) for t in range(1, len(m))]))
            consecutive += [
                _iou(m[t - 1], m[t]) for t in range(1, len(m)) if m[t - 1].any() and m[t].any()
            ]
    consecutive = np.array(consecutive)
    assert np.mean(copy_j) < 0.4, f"copy-first-mask J {np.mean(copy_j):.2f}: motion too small"
    assert (consecutive > 0.5).mean() > 0.9, "consecutive masks must mostly overlap (IoU > 0.5)"
    assert np.median(consecutive) > 0.65


def test_objects_contrast_with_a_textured_background(default_set):
    ds = PreparedDataset(default_set[0])
    contrasts = []
    for name in ds.videos:
        frame = ds.frames(name)[0].astype(np.float32)
        labels = ds.masks(name)[0][0]
        grey = frame.mean(axis=2)
        bg = grey[(labels == 0) & (grey > 20)]  # inside the field of view
        assert bg.std() > 8, f"{name}: the background is flat"
        for oid in np.unique(labels)[1:]:
            m = labels == oid
            ring = cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
            ring &= labels == 0
            contrasts.append(np.linalg.norm(frame[m].mean(0) - frame[ring].mean(0)))
    # mean RGB distance between an object and the 4-pixel band around it (0..255 scale)
    assert min(contrasts) > 12 and np.median(contrasts) > 30, sorted(contrasts)[:5]


def test_masks_respect_occluder_and_field_of_view():
    n_occluded = 0
    for k in range(24):
        v = make_video(0, k, n_frames=12)
        assert not (v.masks[v.hidden] > 0).any(), "a hidden pixel is labelled"
        assert not v.occluded[:2].any(), "the reference frames must be unoccluded"
        for t in np.flatnonzero(v.occluded):
            near = np.zeros_like(v.hidden[t])
            fg = v.masks[t] > 0
            near[1:] |= fg[:-1]
            near[:-1] |= fg[1:]
            near[:, 1:] |= fg[:, :-1]
            near[:, :-1] |= fg[:, 1:]
            occluder = v.hidden[t] & ~v.hidden[0]  # hidden now, in the field of view at t=0
            n_occluded += bool((occluder & near).any())
    assert n_occluded > 0, "no occluder ever touched an object in 24 videos"


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_videos=3, n_frames=5, size=(64, 64))
    a = _hashes(generate_synthetic(tmp_path / "a", seed=7, **kw))
    b = _hashes(generate_synthetic(tmp_path / "b", seed=7, **kw))
    c = _hashes(generate_synthetic(tmp_path / "c", seed=8, **kw))
    assert len(a) == 1 + 2 * 3 * 5 and a == b
    frames = [k for k in a if k.startswith("JPEGImages")]
    assert len(frames) == 3 * 5 and all(a[k] != c[k] for k in frames)


def test_video_k_does_not_depend_on_n_videos(tmp_path):
    kw = dict(n_frames=4, size=(48, 64), seed=3)
    small = generate_synthetic(tmp_path / "small", n_videos=2, **kw)
    large = generate_synthetic(tmp_path / "large", n_videos=5, **kw)
    hs, hl = _hashes(small), _hashes(large)
    for rel, digest in hs.items():
        if rel != "meta.json":
            assert hl[rel] == digest, rel
    ms = json.loads((small / "meta.json").read_text())["videos"]
    ml = json.loads((large / "meta.json").read_text())["videos"]
    assert set(ml) == {video_name(k) for k in range(5)}
    assert ms and set(ms) < set(ml) and all(ms[n] == ml[n] for n in ms)


def test_overwrite_and_destination_rules(tmp_path):
    root = generate_synthetic(tmp_path / "s", n_videos=3, n_frames=3, size=(32, 32))
    generate_synthetic(root, n_videos=2, n_frames=3, size=(32, 32))  # overwrite drops video 2
    assert sorted(PreparedDataset(root).videos) == [video_name(0), video_name(1)]
    assert not (root / "JPEGImages" / video_name(2)).exists()
    before = _hashes(root)
    generate_synthetic(root, n_videos=2, n_frames=3, size=(32, 32), overwrite=False)  # resume
    assert _hashes(root) == before
    with pytest.raises(TCMNError, match="other settings.*overwrite=true"):
        generate_synthetic(root, n_videos=2, n_frames=4, size=(32, 32), overwrite=False)
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "meta.json").write_text(json.dumps({"dataset": "cvc", "videos": {}}))
    with pytest.raises(TCMNError, match="holds dataset 'cvc'"):
        generate_synthetic(foreign, n_videos=1)


def test_class_subset_and_bad_arguments():
    for k in range(4):
        v = make_video(0, k, n_frames=3, size=(64, 64), classes=["polyp"], max_objects=3)
        assert set(v.objects.values()) == {"polyp"} and v.modality == "endoscopy"
        assert v.frames.shape == (3, 64, 64, 3) and v.frames.dtype == np.uint8
    with pytest.raises(TCMNError, match="choose from"):
        make_video(0, 0, classes=["kidney"])
    with pytest.raises(TCMNError, match="n_frames"):
        make_video(0, 0, n_frames=1)
    with pytest.raises(TCMNError, match="seed"):
        make_video(-1, 0)

"""Splits: patient grouping, unseen classes, 8:2 and k-fold rules, the file and its checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcmn.data.layout import LayoutWriter, PreparedDataset, VideoMeta
from tcmn.data.splits import (
    build_splits,
    check_splits,
    load_splits,
    make_splits,
    select,
    splits_path,
)
from tcmn.data.synthetic import generate_synthetic
from tcmn.errors import TCMNError

CLASS_NAMES = ("a", "b", "c", "d")


@st.composite
def datasets(draw):
    """Random patient/video structures: video name -> VideoMeta (patient, objects)."""
    n_patients = draw(st.integers(1, 9))
    videos = {}
    for p in range(n_patients):
        for k in range(draw(st.integers(1, 3))):
            classes = draw(st.lists(st.sampled_from(CLASS_NAMES), min_size=1, max_size=2))
            name = f"v{p}_{k}"
            videos[name] = VideoMeta(
                name=name,
                frames=["00000.png"],
                annotated=["00000"],
                objects={i + 1: c for i, c in enumerate(classes)},
                size=(8, 8),
                patient=f"p{p}",
            )
    return videos


def _patients(videos, names):
    return {videos[n].patient for n in names}


@settings(max_examples=150, deadline=None)
@given(
    videos=datasets(),
    holdout=st.lists(st.sampled_from(CLASS_NAMES), max_size=2, unique=True),
    test_fraction=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    n_folds=st.integers(0, 6),
    seed=st.integers(0, 2**32),
)
def test_split_properties(videos, holdout, test_fraction, n_folds, seed):
    s = build_splits(videos, "toy", test_fraction, n_folds, seed, holdout)
    assert s == build_splits(videos, "toy", test_fraction, n_folds, seed, holdout)  # deterministic
    train, test, unseen = s["train"], s["test"], s["unseen"]
    for part in (train, test, unseen, *(f[k] for f in s["folds"] for k in ("train", "val"))):
        assert part == sorted(part)
    # train, test and unseen partition the videos, and no patient straddles two of them
    assert sorted(train + test + unseen) == sorted(videos)
    assert not _patients(videos, train) & _patients(videos, test)
    assert not _patients(videos, unseen) & _patients(videos, train + test)
    # unseen is exactly the patients that have a holdout-class video
    hold_patients = {v.patient for v in videos.values() if set(v.objects.values()) & set(holdout)}
    assert set(unseen) == {n for n, v in videos.items() if v.patient in hold_patients}
    # 8:2 rule on patient groups
    n_groups = len(_patients(videos, train + test))
    expected = int(np.floor(test_fraction * n_groups + 0.5))
    if test_fraction > 0 and n_groups >= 2:
        expected = min(max(expected, 1), n_groups - 1)
    elif n_groups < 2:
        expected = 0
    assert len(_patients(videos, test)) == expected
    # folds partition the non-unseen videos by patient
    k = min(n_folds, n_groups)
    assert len(s["folds"]) == (k if k >= 2 else 0) == s["n_folds"]
    pool = set(train + test)
    if s["folds"]:
        vals = [f["val"] for f in s["folds"]]
        assert sorted(sum(vals, [])) == sorted(pool)
        for f in s["folds"]:
            assert f["val"] and set(f["train"]) == pool - set(f["val"])
            assert not _patients(videos, f["train"]) & _patients(videos, f["val"])
        sizes = [len(v) for v in vals]
        assert max(sizes) - min(sizes) <= 3  # balanced up to one patient's videos (<= 3)


def test_seed_changes_the_split_but_not_its_sizes():
    videos = {
        f"v{i}": VideoMeta(f"v{i}", ["0.png"], ["0"], {1: "x"}, (8, 8), patient=f"p{i}")
        for i in range(20)
    }
    a, b = build_splits(videos, "toy", seed=0), build_splits(videos, "toy", seed=1)
    assert len(a["test"]) == len(b["test"]) == 4  # round(0.2 * 20)
    assert a["test"] != b["test"]
    assert [len(f["val"]) for f in a["folds"]] == [4] * 5


# ----------------------------------------------------------------------------- files
def _write_dataset(root: Path, spec: dict[str, tuple[str, list[str]]]) -> Path:
    """A tiny prepared dataset: video -> (patient, classes); 2 frames of 16x16 each."""
    w = LayoutWriter(root, "toy")
    frames = [np.full((16, 16, 3), 100, np.uint8)] * 2
    for name, (patient, classes) in spec.items():
        mask = np.zeros((16, 16), np.uint8)
        for i in range(len(classes)):
            mask[i * 4 : i * 4 + 3, :4] = i + 1
        objects = {i + 1: c for i, c in enumerate(classes)}
        w.add_video(name, frames, {0: mask}, objects, patient=patient)
    return root


SPEC = {
    "cam_2ch": ("pcam", ["LV", "LA"]),
    "cam_4ch": ("pcam", ["myo"]),  # same patient as an LV video: unseen too
    **{f"cvc{i}": (f"p{i // 2}", ["polyp"]) for i in range(10)},  # 5 patients, 2 videos each
}


def test_make_load_check_round_trip(tmp_path):
    root = _write_dataset(tmp_path / "toy", SPEC)
    written = make_splits(root, n_folds=3, holdout_classes=["LV", "LA"])
    assert load_splits(root) == written
    assert written["dataset"] == "toy" and written["holdout_classes"] == ["LA", "LV"]
    assert written["unseen"] == ["cam_2ch", "cam_4ch"]
    assert len(written["test"]) == 2  # one patient group of 2 videos: round(0.2 * 5) = 1
    assert len(written["folds"]) == 3
    check_splits(root, written)
    # same inputs in another folder: identical bytes
    other = _write_dataset(tmp_path / "toy2", SPEC)
    make_splits(other, n_folds=3, holdout_classes=["LV", "LA"])
    assert splits_path(other).read_bytes() == splits_path(root).read_bytes()


def test_all_unseen_dataset_like_camus(tmp_path):
    spec = {f"patient{i}_{v}": (f"patient{i}", ["LV", "LA"]) for i in range(3) for v in "24"}
    root = _write_dataset(tmp_path / "camus", spec)
    s = make_splits(root, holdout_classes=["LV", "LA"])
    assert s["unseen"] == sorted(spec) and s["train"] == s["test"] == [] and s["folds"] == []


def test_existing_file_is_never_overwritten_silently(tmp_path):
    root = _write_dataset(tmp_path / "toy", SPEC)
    make_splits(root, seed=0)
    before = splits_path(root).read_bytes()
    with pytest.raises(TCMNError, match=r"splits\.json.*already exists.*overwrite=true"):
        make_splits(root, seed=5)
    assert splits_path(root).read_bytes() == before
    new = make_splits(root, seed=5, overwrite=True)
    assert load_splits(root) == new and new["seed"] == 5


def test_missing_file_names_the_command(tmp_path):
    root = _write_dataset(tmp_path / "toy", SPEC)
    with pytest.raises(TCMNError) as e:
        load_splits(root)
    msg = str(e.value)
    assert str(splits_path(root)) in msg and f"run `tcmn-prepare splits root={root}`" in msg


def test_check_splits_catches_tampering(tmp_path):
    root = _write_dataset(tmp_path / "toy", SPEC)
    good = make_splits(root, n_folds=2, holdout_classes=["LV"])
    bad = json.loads(json.dumps(good))
    bad["train"].append("ghost")
    with pytest.raises(TCMNError, match="'ghost'.*not in"):
        check_splits(root, bad)
    bad = json.loads(json.dumps(good))  # move one video of a test patient to train
    moved = bad["test"].pop()
    bad["train"] = sorted(bad["train"] + [moved])
    with pytest.raises(TCMNError, match="patient .* both 'train' and 'test'"):
        check_splits(root, bad)
    bad = json.loads(json.dumps(good))  # a holdout-class video leaks into train
    bad["unseen"] = []
    bad["train"] = sorted(bad["train"] + ["cam_2ch", "cam_4ch"])
    with pytest.raises(TCMNError, match="holdout class"):
        check_splits(root, bad)
    splits_path(root).write_text('{"version": 1}')
    with pytest.raises(TCMNError, match="lacks"):
        load_splits(root)


def test_select_semantics():
    s = {
        "train": ["a", "b", "c"],
        "test": ["d"],
        "unseen": ["u"],
        "folds": [
            {"train": ["c", "d"], "val": ["a", "b"]},
            {"train": ["a", "b"], "val": ["c", "d"]},
        ],
    }
    assert select(s, "train") == ["a", "b", "c"]
    assert select(s, "val") == select(s, "test") == ["d"]  # no separate validation set
    assert select(s, "unseen") == select(s, "unseen", fold=1) == ["u"]
    assert select(s, "train", fold=1) == ["a", "b"]
    assert select(s, "val", fold=1) == select(s, "test", fold=1) == ["c", "d"]
    select(s, "train").append("x")
    assert s["train"] == ["a", "b", "c"]  # a copy
    with pytest.raises(TCMNError, match="2 folds"):
        select(s, "val", fold=2)
    with pytest.raises(TCMNError, match="unknown"):
        select(s, "validation")


def test_synthetic_holdout_atrium(tmp_path):
    root = generate_synthetic(tmp_path / "syn", n_videos=8, n_frames=2, size=(32, 32))
    s = make_splits(root, holdout_classes=["atrium"])
    ds = PreparedDataset(root)
    with_atrium = sorted(n for n, v in ds.videos.items() if "atrium" in v.objects.values())
    assert with_atrium and s["unseen"] == with_atrium
    assert len(s["train"]) + len(s["test"]) == 8 - len(with_atrium)
    check_splits(root, s)


def test_writer_on_a_corrupt_meta_json_is_one_sentence(tmp_path, caplog):
    """Without overwrite a corrupt meta.json is one sentence saying to use overwrite=true; with
    it the index is rebuilt from the videos converted then."""
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(TCMNError, match=r"meta\.json: not valid JSON .*overwrite=true"):
        LayoutWriter(tmp_path, "toy", overwrite=False)
    (tmp_path / "meta.json").write_text('{"videos": []}')
    with pytest.raises(TCMNError, match=r"meta\.json: no 'videos' mapping.*overwrite=true"):
        LayoutWriter(tmp_path, "toy", overwrite=False)
    writer = LayoutWriter(tmp_path, "toy", overwrite=True)
    assert not writer.has_video("anything") and "rebuilt" in caplog.text

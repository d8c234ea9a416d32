"""Dataset converters: each on a tiny fake copy of its source format built here, plus real data.

Every fake frame holds a bright square exactly where its mask is, so alignment of frames and
masks (and of axes) can be checked through the prepared layout.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from tcmn.data.converters import CONVERTERS, asu_mayo, camus, cvc_clinicdb, echonet, generic, hmc_qu
from tcmn.data.layout import IMAGE_DIR, MASK_DIR, PreparedDataset
from tcmn.errors import TCMNError

H, W = 40, 48  # non-square on purpose: a transposed axis changes the shape


# ---------------------------------------------------------------------------------- helpers
def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hex), caches excluded."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def square_mask(t: int, h: int = H, w: int = W, side: int = 12) -> np.ndarray:
    """uint8 0/255 mask of a square that moves one pixel right per frame ``t``."""
    m = np.zeros((h, w), np.uint8)
    y, x = 6 + t % 5, 4 + t
    m[y : y + side, x : x + side] = 255
    return m


def frame_with(mask: np.ndarray, seed: int, base: int = 30) -> np.ndarray:
    """RGB uint8 frame: dark noisy background, value 220 where ``mask`` is on."""
    rng = np.random.default_rng(seed)
    img = rng.integers(base, base + 20, size=(*mask.shape, 3), dtype=np.uint8)
    img[mask > 127] = 220
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 image with cv2 (any extension cv2 knows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    assert cv2.imwrite(str(path), arr)


def check_alignment(ds: PreparedDataset, video: str, label: int = 1, margin: int = 100) -> None:
    """Frames are bright where the mask has ``label`` and dark elsewhere (annotated frames)."""
    frames = ds.frames(video)
    masks, annotated = ds.masks(video)
    checked = 0
    for i in np.flatnonzero(annotated):
        on = masks[i] == label
        if on.any():
            assert frames[i][on].mean() > frames[i][~on].mean() + margin, (video, i)
            checked += 1
    assert checked, f"{video}: no annotated frame shows label {label}"


# ---------------------------------------------------------------------------------- registry
def test_registry_lists_every_converter():
    assert {"cvc_clinicdb", "asu_mayo", "hmc_qu", "camus", "echonet", "generic"} <= set(CONVERTERS)
    assert all(callable(f) for f in CONVERTERS.values())


# ---------------------------------------------------------------------------------- CVC-ClinicDB
def make_cvc(root: Path, layout: str = "official", n: int = 8) -> Path:
    """Fake CVC-ClinicDB: frames 1..n, sequences 1..5 and 6..n, grey anti-aliased mask edges."""
    img_dir, mask_dir, ext = (
        ("Original", "Ground Truth", ".tif")
        if layout == "official"
        else ("images", "masks", ".png")
    )
    for k in range(1, n + 1):
        m = square_mask(k)
        edge = cv2.dilate(m, np.ones((3, 3), np.uint8)) - m
        m_grey = m.copy()
        m_grey[edge > 0] = 100  # anti-aliased edge below the threshold: background
        write_image(root / img_dir / f"{k}{ext}", frame_with(m, seed=k))
        write_image(root / mask_dir / f"{k}{ext}", m_grey)
    with open(root / "sequences.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence_id", "first_frame", "last_frame", "num_frames"])
        w.writerow([1, 1, 5, 5])
        w.writerow([2, 6, n, n - 5])
    return root


@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_cvc_clinicdb_fake(tmp_path, layout):
    src = make_cvc(tmp_path / "src", layout)
    dst = cvc_clinicdb.convert(src, tmp_path / "dst")
    ds = PreparedDataset(dst)
    assert sorted(ds.videos) == ["seq01", "seq02"]
    v1, v2 = ds.videos["seq01"], ds.videos["seq02"]
    assert (v1.n_frames, v2.n_frames) == (5, 3)
    assert v1.annotated == v1.stems and v2.annotated == v2.stems  # every frame annotated
    assert v1.objects == {1: "polyp"} and v1.patient == "seq01" and v2.patient == "seq02"
    assert v1.size == (H, W)
    assert v2.extra == {"first_frame": 6, "last_frame": 8}
    masks, _ = ds.masks("seq02")
    assert set(np.unique(masks).tolist()) == {0, 1}
    # frame 7 of the source is the second frame of seq02; grey edge pixels (100) are background
    np.testing.assert_array_equal(masks[1], (square_mask(7) > 127).astype(np.uint8))
    check_alignment(ds, "seq01")
    check_alignment(ds, "seq02")


def test_cvc_clinicdb_is_deterministic(tmp_path):
    src = make_cvc(tmp_path / "src")
    a = tree_hashes(cvc_clinicdb.convert(src, tmp_path / "a"))
    b = tree_hashes(cvc_clinicdb.convert(src, tmp_path / "b"))
    assert a == b and len(a) == 1 + 2 * 8  # meta.json + frames + masks
    again = tree_hashes(cvc_clinicdb.convert(src, tmp_path / "a"))  # in place, overwrite=True
    assert again == a


def test_cvc_clinicdb_interrupted_video_is_not_listed(tmp_path, monkeypatch):
    src = make_cvc(tmp_path / "src")
    real_read = cvc_clinicdb.read_frame
    calls = {"n": 0}

    def flaky(path):
        calls["n"] += 1
        if calls["n"] == 9:  # seq01 takes 6 reads (size + 5 frames); fail inside seq02
            raise RuntimeError("simulated crash")
        return real_read(path)

    monkeypatch.setattr(cvc_clinicdb, "read_frame", flaky)
    dst = tmp_path / "dst"
    with pytest.raises(RuntimeError, match="simulated crash"):
        cvc_clinicdb.convert(src, dst)
    ds = PreparedDataset(dst)
    assert sorted(ds.videos) == ["seq01"]
    assert sorted(p.name for p in (dst / IMAGE_DIR).iterdir()) == ["seq01"]
    assert sorted(p.name for p in (dst / MASK_DIR).iterdir()) == ["seq01"]
    # re-running finishes the job and gives the same bytes as an uninterrupted run
    monkeypatch.setattr(cvc_clinicdb, "read_frame", real_read)
    cvc_clinicdb.convert(src, dst)
    assert tree_hashes(dst) == tree_hashes(cvc_clinicdb.convert(src, tmp_path / "clean"))


def test_cvc_clinicdb_overwrite_false_keeps_existing_videos(tmp_path):
    src = make_cvc(tmp_path / "src")
    dst = cvc_clinicdb.convert(src, tmp_path / "dst")
    before = tree_hashes(dst)
    write_image(src / "Original" / "2.tif", np.zeros((H, W, 3), np.uint8))  # source changes
    cvc_clinicdb.convert(src, dst, overwrite=False)
    assert tree_hashes(dst) == before
    cvc_clinicdb.convert(src, dst, overwrite=True)
    after = tree_hashes(dst)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"JPEGImages/seq01/00001.png"}


def test_cvc_clinicdb_missing_frame_names_it(tmp_path):
    src = make_cvc(tmp_path / "src")
    (src / "Original" / "7.tif").unlink()
    with pytest.raises(TCMNError, match=r"Original: frame 7 of sequence 2 is missing"):
        cvc_clinicdb.convert(src, tmp_path / "dst")


def test_cvc_clinicdb_builtin_table_is_29_contiguous_sequences():
    seqs = cvc_clinicdb.SEQUENCES
    assert [s for s, _, _ in seqs] == list(range(1, 30))
    assert seqs[0][1] == 1 and seqs[-1][2] == 612
    assert all(nxt[1] == cur[2] + 1 for cur, nxt in zip(seqs, seqs[1:]))
    lengths = [last - first + 1 for _, first, last in seqs]
    assert sum(lengths) == 612 and min(lengths) == 6 and max(lengths) == 26


@pytest.mark.real_data
def test_cvc_clinicdb_builtin_table_matches_real_csv(real_data):
    table = cvc_clinicdb.read_sequences(real_data / "cvc_clinicdb" / "sequences.csv")
    assert table == list(cvc_clinicdb.SEQUENCES)


@pytest.mark.real_data
def test_cvc_clinicdb_real(real_data, tmp_path):
    src = real_data / "cvc_clinicdb"
    ds = PreparedDataset(cvc_clinicdb.convert(src, tmp_path / "cvc"))
    with open(src / "sequences.csv", newline="") as f:
        expected = {
            f"seq{int(r['sequence_id']):02d}": int(r["num_frames"]) for r in csv.DictReader(f)
        }
    assert len(ds) == 29
    assert {k: v.n_frames for k, v in ds.videos.items()} == expected
    assert sum(v.n_frames for v in ds.videos.values()) == 612
    for name, v in ds.videos.items():
        assert v.annotated == v.stems and v.size == (288, 384)
        masks, annotated = ds.masks(name)
        assert annotated.all()
        assert masks.reshape(len(masks), -1).max(axis=1).min() == 1  # no empty mask
        assert masks.max() == 1


# ---------------------------------------------------------------------------------- ASU-Mayo
def make_asu(root: Path) -> Path:
    """Fake ASU-Mayo with both accepted layouts and one negative video.

    - ``vidA/images/frame_00k.png`` + ``vidA/masks/frame_00k.png``, k = 1..6: frames 1-2 empty
      masks, frame 5 without a mask file;
    - ``12/<k>.png`` + ``12_GT/<k>.tif``, k = 1..11 (natural order matters), all positive;
    - ``neg/images`` + ``neg/masks``: every mask empty.
    """
    for k in range(1, 7):
        m = square_mask(k) if k >= 3 else np.zeros((H, W), np.uint8)
        write_image(root / "vidA" / "images" / f"frame_{k:03d}.png", frame_with(m, seed=k))
        if k != 5:
            write_image(root / "vidA" / "masks" / f"frame_{k:03d}.png", m)
    for k in range(1, 12):
        m = square_mask(k)
        write_image(root / "12" / f"{k}.png", frame_with(m, seed=100 + k, base=k * 8))
        write_image(root / "12_GT" / f"{k}.tif", m)
    for k in range(1, 4):
        m = np.zeros((H, W), np.uint8)
        write_image(root / "neg" / "images" / f"{k}.png", frame_with(m, seed=k))
        write_image(root / "neg" / "masks" / f"{k}.png", m)
    return root


def test_asu_mayo_fake(tmp_path):
    src = make_asu(tmp_path / "src")
    ds = PreparedDataset(asu_mayo.convert(src, tmp_path / "dst"))
    assert sorted(ds.videos) == ["12", "vidA"]  # the negative video is skipped
    a, b = ds.videos["vidA"], ds.videos["12"]
    assert a.n_frames == 6 and b.n_frames == 11
    assert a.annotated == ["00000", "00001", "00002", "00003", "00005"]  # frame 5 had no mask
    assert a.objects == {1: "polyp"} and a.patient == "vidA" and b.patient == "12"
    assert a.extra["n_positive"] == 3 and b.extra["n_positive"] == 11
    masks, annotated = ds.masks("vidA")
    assert masks[0].max() == 0 and masks[1].max() == 0 and annotated[0]  # annotated-empty
    np.testing.assert_array_equal(masks[2], (square_mask(3) > 0).astype(np.uint8))
    # natural order: 2.png before 10.png; the background level encodes the frame number
    frames = ds.frames("12")
    corner = frames[:, :4, -4:, 0].reshape(11, -1).mean(axis=1)
    assert np.all(np.diff(corner) > 0)
    check_alignment(ds, "vidA")
    check_alignment(ds, "12")


def test_asu_mayo_negative_and_max_size(tmp_path):
    src = make_asu(tmp_path / "src")
    ds = PreparedDataset(
        asu_mayo.convert(src, tmp_path / "dst", include_negative=True, max_size=24)
    )
    assert sorted(ds.videos) == ["12", "neg", "vidA"]
    assert ds.videos["neg"].extra["n_positive"] == 0
    for v in ds.videos.values():
        assert v.size == (20, 24)  # 40x48 scaled by 1/2
    masks, _ = ds.masks("vidA")
    expected = cv2.resize((square_mask(3) > 0).astype(np.uint8), (24, 20), interpolation=0)
    np.testing.assert_array_equal(masks[2], expected)
    check_alignment(ds, "vidA", margin=60)  # area interpolation blurs the square's border


def test_asu_mayo_is_deterministic(tmp_path):
    src = make_asu(tmp_path / "src")
    a = tree_hashes(asu_mayo.convert(src, tmp_path / "a"))
    assert a == tree_hashes(asu_mayo.convert(src, tmp_path / "b"))


# ---------------------------------------------------------------------------------- CAMUS
def camus_sequence(t_len: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """(image [T, H, W] float64 in 0..255, labels [T, H, W] uint8) in display orientation.

    Labels: LV (1) a box that shrinks over time, MYO (2) a frame around it, LA (3) a box below.
    The image has intensity 200 / 120 / 60 on labels 1 / 2 / 3, 10 elsewhere, and an "apex"
    marker (value 250) in the top rows, outside every label.
    """
    img = np.full((t_len, h, w), 10.0)
    lab = np.zeros((t_len, h, w), np.uint8)
    for t in range(t_len):
        lab[t, 6:24, 10:30] = 2
        lab[t, 8 + t // 2 : 22, 12:28] = 1
        lab[t, 26:36, 12:28] = 3
    img[lab == 1], img[lab == 2], img[lab == 3] = 200, 120, 60
    img[:, 0:3, w // 2 - 3 : w // 2 + 3] = 250  # apex at the top
    return img, lab


def make_camus(root: Path) -> Path:
    """Fake CAMUS: patient0001 dense NIfTI (nested), patient0002 sparse MetaImage (2CH only)."""
    import nibabel as nib
    import SimpleITK as sitk

    pdir = root / "CAMUS_public" / "database_nifti" / "patient0001"
    pdir.mkdir(parents=True)
    affine = np.diag([0.3, 0.2, 1.0, 1.0])  # x (column) 0.3 mm, y (row) 0.2 mm
    for view, t_len in (("2CH", 4), ("4CH", 5)):
        img, lab = camus_sequence(t_len)
        # nibabel stores (x, y, t) = (W, H, T): the transpose of the display array
        nib.save(nib.Nifti1Image(img.T, affine), pdir / f"patient0001_{view}_half_sequence.nii.gz")
        nib.save(
            nib.Nifti1Image(lab.T, affine), pdir / f"patient0001_{view}_half_sequence_gt.nii.gz"
        )
    (pdir / "Info_2CH.cfg").write_text("ED: 1\nES: 4\nNbFrame: 4\nImageQuality: Good\n")

    pdir = root / "patient0002"
    pdir.mkdir(parents=True)
    img, lab = camus_sequence(6)
    seq = sitk.GetImageFromArray(img.astype(np.uint8))  # (T, H, W) -> x=W, y=H, z=T
    seq.SetSpacing((0.3, 0.2, 1.0))
    sitk.WriteImage(seq, str(pdir / "patient0002_2CH_sequence.mhd"))
    for phase, t in (("ED", 0), ("ES", 5)):
        gt = sitk.GetImageFromArray(lab[t])
        gt.SetSpacing((0.3, 0.2))
        sitk.WriteImage(gt, str(pdir / f"patient0002_2CH_{phase}_gt.mhd"))
    return root


def test_camus_fake(tmp_path):
    src = make_camus(tmp_path / "src")
    ds = PreparedDataset(camus.convert(src, tmp_path / "dst"))
    assert sorted(ds.videos) == ["patient0001_2CH", "patient0001_4CH", "patient0002_2CH"]
    d2, d4, s2 = (ds.videos[k] for k in sorted(ds.videos))
    assert (d2.n_frames, d4.n_frames, s2.n_frames) == (4, 5, 6)
    assert d2.annotated == d2.stems and d4.annotated == d4.stems  # dense
    assert s2.annotated == ["00000", "00005"]  # sparse: ED first, ES last
    for v in (d2, d4, s2):
        assert v.objects == {1: "LV", 2: "MYO", 3: "LA"}
        assert v.size == (H, W)  # upright: not transposed
        assert v.spacing == pytest.approx([0.2, 0.3])  # [row, column]
    assert d2.patient == d4.patient == "patient0001" and s2.patient == "patient0002"
    assert d2.extra == {"view": "2CH", "ED": 0, "ES": 3, "annotation": "dense", "quality": "Good"}
    assert s2.extra["annotation"] == "sparse" and s2.extra["ES"] == 5
    for name in ds.videos:
        frames = ds.frames(name)
        masks, annotated = ds.masks(name)
        _, lab = camus_sequence(len(frames))
        np.testing.assert_array_equal(masks[annotated], lab[annotated])
        # the intensities sit on the labels (image and GT had the same axis handling)
        for k, value in ((1, 200), (2, 120), (3, 60)):
            assert np.all(frames[..., 0][masks == k] == value)
        assert np.all(frames[:, 0:3, W // 2 - 3 : W // 2 + 3] == 250)  # apex at the top


def test_camus_is_deterministic_and_rejects_bad_labels(tmp_path):
    import nibabel as nib

    src = make_camus(tmp_path / "src")
    a = tree_hashes(camus.convert(src, tmp_path / "a"))
    assert a == tree_hashes(camus.convert(src, tmp_path / "b"))
    pdir = src / "CAMUS_public" / "database_nifti" / "patient0001"
    _, lab = camus_sequence(4)
    lab[0, 0, 0] = 7
    bad = pdir / "patient0001_2CH_half_sequence_gt.nii.gz"
    nib.save(nib.Nifti1Image(lab.T, np.eye(4)), bad)
    with pytest.raises(TCMNError, match=r"half_sequence_gt\.nii\.gz: label value\(s\) \[7\]"):
        camus.convert(src, tmp_path / "c")


def test_camus_intensities_to_uint8():
    v = np.array([[[0.0, 0.5], [1.0, 0.25]]])
    np.testing.assert_array_equal(camus.to_uint8(v), [[[0, 128], [255, 64]]])
    w = np.array([[[0, 17], [255, 3]]], np.int16)
    np.testing.assert_array_equal(camus.to_uint8(w), w)


# ---------------------------------------------------------------------------------- videos
def write_avi(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> None:
    """Write RGB uint8 frames as an MJPG AVI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


# ---------------------------------------------------------------------------------- EchoNet
def echonet_rect_rows(x0: int, x1: int, y0: int) -> list[list[float]]:
    """21 tracing rows of a rectangle: long axis, then 20 rows y0..y0+19 of (x0, y) - (x1, y).

    Rasterised, the polygon is the rectangle x0..x1 by y0..y0+19, both ends included: its area
    is (x1 - x0 + 1) * 20 pixels. Coordinates carry +-0.3 offsets that rounding must remove.
    """
    rows = [[(x0 + x1) / 2, y0 + 0.2, (x0 + x1) / 2, y0 + 18.8]]
    rows += [[x0 + 0.3, y + 0.2, x1 - 0.3, y - 0.2] for y in range(y0, y0 + 20)]
    return rows


def make_echonet(root: Path, size: int = 48, n_frames: int = 12) -> Path:
    """Fake EchoNet-Dynamic: video A (in FileList, ES listed before ED, ED the later frame, one
    tracing beyond the video's end) and video B (not in FileList)."""
    ed_rect, es_rect = (10, 30, 10), (14, 26, 12)  # areas 21*20 = 420 and 13*20 = 260
    traced = {"A": {2: es_rect, 9: ed_rect, 40: es_rect}, "B": {1: ed_rect, 7: es_rect}}
    lines = ["FileName,X1,Y1,X2,Y2,Frame"]
    for vid, frames in traced.items():
        video = []
        for t in range(n_frames):
            img = np.full((size, size, 3), 20, np.uint8)
            if t in frames:
                x0, x1, y0 = frames[t]
                img[y0 : y0 + 20, x0 : x1 + 1] = 230
            video.append(img)
        write_avi(root / "Videos" / f"{vid}.avi", video, fps=30.0)
        for t, (x0, x1, y0) in frames.items():
            for r in echonet_rect_rows(x0, x1, y0):
                lines.append(f"{vid}.avi,{r[0]},{r[1]},{r[2]},{r[3]},{t}")
    (root / "VolumeTracings.csv").write_text("\n".join(lines) + "\n")
    (root / "FileList.csv").write_text(
        "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"
        f"A,38.1,1,2,{size},{size},50,{n_frames},TEST\n"
    )
    return root


def test_echonet_rasterise_rectangle():
    rows = np.asarray(echonet_rect_rows(10, 30, 10))
    m = echonet.rasterise(rows, (48, 48))
    expected = np.zeros((48, 48), np.uint8)
    expected[10:30, 10:31] = 1
    np.testing.assert_array_equal(m, expected)


def test_echonet_fake(tmp_path):
    src = make_echonet(tmp_path / "src")
    ds = PreparedDataset(echonet.convert(src, tmp_path / "dst"))
    assert sorted(ds.videos) == ["A", "B"]
    a, b = ds.videos["A"], ds.videos["B"]
    assert a.n_frames == b.n_frames == 12  # every frame is written
    assert a.annotated == ["00002", "00009"] and b.annotated == ["00001", "00007"]
    assert a.objects == {1: "LV"} and a.patient == "A"
    # ED / ES by area, not by row order or frame order
    assert (a.extra["ED"], a.extra["ES"]) == (9, 2) and (b.extra["ED"], b.extra["ES"]) == (1, 7)
    assert a.extra["areas"] == {"2": 260, "9": 420}
    assert a.fps == 50.0 and b.fps == pytest.approx(30.0)  # FileList first, else the container
    assert a.extra["EF"] == 38.1 and a.extra["Split"] == "TEST"
    check_alignment(ds, "A", margin=150)
    check_alignment(ds, "B", margin=150)
    only_test = PreparedDataset(echonet.convert(src, tmp_path / "test", split="TEST"))
    assert sorted(only_test.videos) == ["A"]
    assert tree_hashes(tmp_path / "dst") == tree_hashes(echonet.convert(src, tmp_path / "again"))


@pytest.mark.real_data
def test_echonet_real(real_data, tmp_path):
    src = real_data / "echonet_dynamic_sample"
    ds = PreparedDataset(echonet.convert(src, tmp_path / "echonet"))
    assert len(ds) == 10
    with open(src / "FileList.csv", newline="") as f:
        n_frames = {r["FileName"]: int(r["NumberOfFrames"]) for r in csv.DictReader(f)}
    for name, v in ds.videos.items():
        assert len(v.annotated) == 2 and v.n_frames == n_frames[name] and v.size == (112, 112)
        ed, es = v.extra["ED"], v.extra["ES"]
        masks, annotated = ds.masks(name)
        area_ed, area_es = int(masks[ed].sum()), int(masks[es].sum())
        assert area_ed > area_es
        assert ed < es  # README: in all 10 videos the earlier traced frame is end-diastole
        assert 900 <= area_ed <= 2800 and 550 <= area_es <= 1700, (name, area_ed, area_es)
        assert v.extra["areas"] == {str(ed): area_ed, str(es): area_es}
        assert v.fps in (50.0, 54.0)


# ---------------------------------------------------------------------------------- HMC-QU
def save_mat73(path: Path, name: str, matlab_array: np.ndarray) -> None:
    """Save ``matlab_array`` (MATLAB's H x W x T order) as MATLAB v7.3 does: an HDF5 file with a
    512-byte MATLAB header and the dataset's axes reversed."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        d = f.create_dataset(name, data=np.ascontiguousarray(matlab_array.transpose(2, 1, 0)))
        d.attrs["MATLAB_class"] = np.bytes_(b"logical")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116, b" ")
    header += b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header)


def make_hmc_qu(root: Path, version: str) -> Path:
    """Fake HMC-QU: one 10-frame 48x40 video, masks at half resolution over frames 3..6."""
    import scipy.io

    stem = "ES0001 _4CH_1"
    t_len, start = 4, 3
    small = np.zeros((H // 2, W // 2, t_len), np.uint8)  # MATLAB order H x W x T
    for t in range(t_len):
        small[4 + t : 12 + t, 3 : 9 + t, t] = 1
    frames = []
    for i in range(10):
        img = np.full((H, W, 3), 25, np.uint8)
        if start <= i < start + t_len:
            big = cv2.resize(small[..., i - start], (W, H), interpolation=cv2.INTER_NEAREST)
            img[big > 0] = 230
        frames.append(img)
    write_avi(root / "A4C" / f"{stem}.avi", frames, fps=25.0)
    write_avi(root / "A4C" / "ES0002 _4CH_1.avi", frames[:3], fps=25.0)  # no mask: skipped
    mat = root / "LV Ground-truth Segmentation Masks" / f"Mask_{stem}.mat"
    mat.parent.mkdir(parents=True)
    if version == "v5":
        scipy.io.savemat(mat, {"predicted": small, "other": np.eye(3)})
    else:
        save_mat73(mat, "predicted", small)
    (root / "starts.csv").write_text(f"video,start_frame\n{stem},{start}\n")
    return root


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_hmc_qu_fake(tmp_path, version):
    src = make_hmc_qu(tmp_path / "src", version)
    raw = hmc_qu.read_mat_masks(next((src / "LV Ground-truth Segmentation Masks").iterdir()))
    assert raw.shape == (4, H // 2, W // 2)  # [T, H, W] for both versions
    ds = PreparedDataset(hmc_qu.convert(src, tmp_path / "dst", start_frames=src / "starts.csv"))
    assert sorted(ds.videos) == ["ES0001_4CH_1"]
    v = ds.videos["ES0001_4CH_1"]
    assert v.n_frames == 4 and v.annotated == v.stems  # annotated cycle only
    assert v.objects == {1: "lv_wall"} and v.patient == "ES0001" and v.size == (H, W)
    assert v.extra["start_frame"] == 3 and v.extra["source"] == "ES0001 _4CH_1"
    masks, _ = ds.masks("ES0001_4CH_1")
    expected = cv2.resize(raw[2], (W, H), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(masks[2], expected)
    check_alignment(ds, "ES0001_4CH_1", margin=150)
    again = hmc_qu.convert(src, tmp_path / "again", start_frames=src / "starts.csv")
    assert tree_hashes(again) == tree_hashes(tmp_path / "dst")

    full = PreparedDataset(
        hmc_qu.convert(
            src, tmp_path / "full", start_frames=src / "starts.csv", annotated_only=False
        )
    )
    f = full.videos["ES0001_4CH_1"]
    assert f.n_frames == 10 and f.annotated == ["00003", "00004", "00005", "00006"]
    check_alignment(full, "ES0001_4CH_1", margin=150)


def test_hmc_qu_start_past_the_end_names_the_mat(tmp_path):
    src = make_hmc_qu(tmp_path / "src", "v5")
    (src / "starts.csv").write_text("video,start_frame\nES0001 _4CH_1,8\n")
    with pytest.raises(TCMNError, match=r"Mask_ES0001 _4CH_1\.mat: 4 mask frames from start"):
        hmc_qu.convert(src, tmp_path / "dst", start_frames=src / "starts.csv")


# ---------------------------------------------------------------------------------- generic
def test_generic_frame_folder(tmp_path):
    for k in range(1, 7):  # 1-based frame names 1.png .. 6.png
        write_image(tmp_path / "frames" / f"{k}.png", frame_with(square_mask(k), seed=k))
    write_image(tmp_path / "masks" / "3.png", square_mask(3))  # 0/255 -> label 1
    two = (square_mask(5) > 0).astype(np.uint8)
    two[30:36, 30:40] = 2
    write_image(tmp_path / "masks" / "5.png", two)
    ds = PreparedDataset(
        generic.convert(
            tmp_path / "frames",
            tmp_path / "dst",
            masks=tmp_path / "masks",
            classes={1: "lesion"},
            name="my video",
        )
    )
    v = ds.videos["my_video"]
    assert v.n_frames == 6 and v.annotated == ["00002", "00004"]  # frames named 3 and 5
    assert v.objects == {1: "lesion", 2: "object"} and v.patient == "my_video"
    masks, _ = ds.masks("my_video")
    np.testing.assert_array_equal(masks[4], two)
    check_alignment(ds, "my_video")
    again = generic.convert(
        tmp_path / "frames",
        tmp_path / "again",
        masks=tmp_path / "masks",
        classes={1: "lesion"},
        name="my video",
    )
    assert tree_hashes(again) == tree_hashes(tmp_path / "dst")


def test_generic_video_file_and_mask_frames(tmp_path):
    frames = [frame_with(square_mask(t), seed=t) for t in range(8)]
    write_avi(tmp_path / "clip.avi", frames)
    write_image(tmp_path / "first.png", square_mask(0))  # no number: the first frame
    write_image(tmp_path / "later.png", square_mask(6))
    dst = tmp_path / "dst"
    generic.convert(tmp_path / "clip.avi", dst, masks=tmp_path / "first.png")
    generic.convert(
        tmp_path / "clip.avi",
        dst,
        masks=[tmp_path / "first.png", tmp_path / "later.png"],
        mask_frames=[0, 6],
        name="clip2",
    )
    seq = np.stack([(square_mask(t) > 0).astype(np.uint8) for t in range(8)])
    np.save(tmp_path / "seq.npy", seq)
    generic.convert(
        tmp_path / "clip.avi", dst, masks=tmp_path / "seq.npy", mask_frames=[1, 5], name="clip3"
    )
    ds = PreparedDataset(dst)
    assert sorted(ds.videos) == ["clip", "clip2", "clip3"]  # calls add videos to one dataset
    assert ds.videos["clip"].annotated == ["00000"]
    assert ds.videos["clip2"].annotated == ["00000", "00006"]
    assert ds.videos["clip3"].annotated == ["00001", "00005"]
    assert all(v.n_frames == 8 and v.objects == {1: "object"} for v in ds.videos.values())
    masks, _ = ds.masks("clip3")
    np.testing.assert_array_equal(masks[5], seq[5])
    for name in ds.videos:
        check_alignment(ds, name)


def test_generic_unmatched_mask_asks_for_mask_frames(tmp_path):
    write_avi(tmp_path / "clip.avi", [frame_with(square_mask(t), seed=t) for t in range(4)])
    write_image(tmp_path / "a.png", square_mask(0))
    write_image(tmp_path / "b.png", square_mask(1))
    with pytest.raises(TCMNError, match=r"a\.png: cannot tell which frame .*options\.mask_frames"):
        generic.convert(
            tmp_path / "clip.avi", tmp_path / "dst", masks=[tmp_path / "a.png", tmp_path / "b.png"]
        )

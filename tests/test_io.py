"""Inference I/O: every input format read back, masks of every format and error, the prediction
writer's outputs and atomicity, prefetching, and the drawing helpers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from tcmn.errors import TCMNError
from tcmn.io import (
    PredictionWriter,
    check_writable,
    load_mask,
    open_video,
    prefetch,
)
from tcmn.viz import PALETTE, colorize, figure2_panel, overlay, strip

H, W, T = 40, 56, 12


def _frames(n: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Distinct smooth RGB frames: a bright square moving right over a gradient that brightens."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        base = (xx * 2 + yy + 10 * t) % 200
        f = np.stack([base, 255 - base, np.full_like(base, 15 * t % 256)], axis=2)
        x0 = 2 + (3 * t) % (w - 12)
        f[8:20, x0 : x0 + 10] = (250, 250, 30)
        out[t] = f
    return out


def _write_video(path: Path, frames: np.ndarray, fourcc: str, fps: float = 10.0) -> None:
    h, w = frames.shape[1:3]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def _nearest(decoded: np.ndarray, originals: np.ndarray) -> int:
    d = np.abs(originals.astype(np.int16) - decoded.astype(np.int16)).mean(axis=(1, 2, 3))
    return int(np.argmin(d))


def _labels(n: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Label maps with two objects; object 2 appears from frame 2 on."""
    out = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        out[t, 5:15, 3 + t : 13 + t] = 1
        if t >= 2:
            out[t, 25:35, 30:40] = 2
    return out


# ------------------------------------------------------------------------------- inputs
def test_frame_folder_natural_order_and_exact_pixels(tmp_path):
    frames = _frames()
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(frames):  # names 1..12: lexical order would put 10, 11, 12 before 2
        cv2.imwrite(str(folder / f"{t + 1}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    with open_video(folder) as src:
        assert len(src) == T and src.size == (H, W) and src.fps is None and src.geometry is None
        assert src.frame_names == [str(t + 1) for t in range(T)]
        np.testing.assert_array_equal(src.read_all(), frames)
        np.testing.assert_array_equal(src[-1], frames[-1])


def test_frame_folder_grey_and_16bit_scaled_by_volume_range(tmp_path):
    folder = tmp_path / "grey16"
    folder.mkdir()
    # frame t is constant 1000 + 1000 t: the volume range 1000..3000 maps to 0..255, so the
    # middle frame is 127.5 -> 128 (a per-frame scaling would give all zeros)
    for t in range(3):
        cv2.imwrite(str(folder / f"f{t}.png"), np.full((8, 10), 1000 + 1000 * t, np.uint16))
    src = open_video(folder)
    values = [np.unique(src[t]).tolist() for t in range(3)]
    assert values == [[0], [128], [255]]
    assert src[1].shape == (8, 10, 3)


def test_avi_lossless_round_trip(tmp_path):
    frames = _frames()
    path = tmp_path / "clip.avi"
    _write_video(path, frames, "FFV1", fps=12.0)
    with open_video(path) as src:
        assert len(src) == T and src.size == (H, W)
        assert src.fps == pytest.approx(12.0)
        assert src.frame_names[0] == "00000" and len(src.frame_names) == T
        np.testing.assert_array_equal(src.read_all(), frames)
        np.testing.assert_array_equal(src[7], frames[7])  # random access after a full read
        np.testing.assert_array_equal(src[2], frames[2])


def test_mp4_count_order_seek_and_backward(tmp_path):
    n = 40
    frames = _frames(n)
    path = tmp_path / "clip.mp4"
    _write_video(path, frames, "mp4v", fps=20.0)
    src = open_video(path)
    assert len(src) == n and src.size == (H, W) and src.fps == pytest.approx(20.0)
    fwd = src.read_all()
    assert [_nearest(f, frames) for f in fwd] == list(range(n))  # lossy: order by nearest frame
    assert np.abs(fwd.astype(int) - frames.astype(int)).mean() < 8
    src.backward_block = 7  # several blocks, each decoded forward after a seek
    back = list(src.iter(start=n - 1, step=-1))
    assert [i for i, _ in back] == list(range(n - 1, -1, -1))
    np.testing.assert_array_equal(np.stack([f for _, f in back]), fwd[::-1])
    for i in (33, 5, 6, 20):  # random access: backward seeks and a short forward skip
        np.testing.assert_array_equal(src[i], fwd[i])
    assert [i for i, _ in src.iter(start=9, stop=2, step=-3)] == [9, 6, 3]
    src.close()


def _nifti(data: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def test_nifti_axis_convention_and_backward_iteration(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 256, size=(W, H, T), dtype=np.uint8)  # (X, Y, T): X runs along columns
    src = open_video(_nifti(vol, tmp_path / "seq.nii.gz"))
    assert len(src) == T and src.size == (H, W) and src.geometry is not None
    for t in (0, 5, T - 1):
        np.testing.assert_array_equal(src[t][..., 0], vol[:, :, t].T)
        np.testing.assert_array_equal(src[t][..., 2], vol[:, :, t].T)
    fwd = [f for _, f in src.iter()]
    back = list(src.iter(step=-1))
    assert [i for i, _ in back] == list(range(T - 1, -1, -1))
    np.testing.assert_array_equal(np.stack([f for _, f in back]), np.stack(fwd[::-1]))
    assert [i for i, _ in src.iter(start=4, step=-1)] == [4, 3, 2, 1, 0]


def test_nifti_float_scaled_and_4d_time_axis_with_fps(tmp_path):
    vol = np.zeros((6, 4, 1, 3), np.float32)  # (X, Y, 1, T), values -1..3 -> 0..255
    vol[..., 0], vol[..., 1], vol[..., 2] = -1.0, 1.0, 3.0
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 20.0  # 20 ms per frame -> 50 fps
    nib.save(img, str(tmp_path / "v4.nii"))
    src = open_video(tmp_path / "v4.nii")
    assert len(src) == 3 and src.size == (4, 6)
    assert [int(src[t][0, 0, 0]) for t in range(3)] == [0, 128, 255]
    assert src.fps == pytest.approx(50.0)


def test_metaimage_round_trip_and_16bit_scaling(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 256, size=(5, H, W), dtype=np.uint8)  # (T, H, W)
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "seq.mhd"))
    src = open_video(tmp_path / "seq.mhd")
    assert len(src) == 5 and src.size == (H, W) and src.geometry is None
    np.testing.assert_array_equal(src.read_all()[..., 1], vol)
    v16 = np.stack([np.full((4, 4), v, np.uint16) for v in (0, 2000, 4000)])
    sitk.WriteImage(sitk.GetImageFromArray(v16), str(tmp_path / "s16.mha"))
    s16 = open_video(tmp_path / "s16.mha")
    assert [int(s16[t][0, 0, 0]) for t in range(3)] == [0, 128, 255]


def test_open_video_missing_path(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(TCMNError, match="no such file") as e:
        open_video(path)
    assert str(path) in str(e.value)


def test_open_video_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_bytes(b"x")
    with pytest.raises(TCMNError) as e:
        open_video(path)
    msg = str(e.value)
    assert str(path) in msg and "'.dcm'" in msg
    assert all(ext in msg for ext in (".mp4", ".avi", ".nii.gz", ".mhd", ".png"))


def test_open_video_unreadable_video(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 10)
    with pytest.raises(TCMNError) as e:
        open_video(path)
    assert str(path) in str(e.value) and "export its frames" in str(e.value)


def test_open_video_empty_video_and_empty_folder(tmp_path):
    empty = tmp_path / "empty.avi"
    _write_video(empty, np.zeros((0, 16, 16, 3), np.uint8), "FFV1")
    with pytest.raises(TCMNError) as e:
        open_video(empty)
    assert str(empty) in str(e.value)
    folder = tmp_path / "no_frames"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(TCMNError, match="holds no frames") as e:
        open_video(folder)
    assert str(folder) in str(e.value)


def test_frame_folder_size_change_is_an_error(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(folder / "1.png"), np.zeros((9, 8, 3), np.uint8))
    src = open_video(folder)
    with pytest.raises(TCMNError) as e:
        src[1]
    assert str(folder / "1.png") in str(e.value) and "8x9" in str(e.value)


# ------------------------------------------------------------------------------- masks
def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _blob(h: int = 16, w: int = 20) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[3:9, 4:12] = 1
    return m


def test_mask_png_binary_and_label_maps(tmp_path):
    b = _blob()
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "a.png", b * 255)), b)
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "b.png", b)), b)
    lab = b.copy()
    lab[12:15, 1:5] = 2
    lab[0, 0] = 7
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "c.png", lab), size=(16, 20)), lab)
    # RGB with equal channels is a grey mask
    rgb = np.repeat((b * 255)[..., None], 3, axis=2)
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "d.png", rgb)), b)
    # 1-bit PNG
    Image.fromarray(b.astype(bool)).save(tmp_path / "e.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "e.png"), b)


def test_mask_palette_png_keeps_indices(tmp_path):
    lab = _blob() * 3
    lab[12:15, 1:5] = 5
    im = Image.fromarray(lab, mode="P")
    im.putpalette(PALETTE.flatten().tolist())
    im.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P"
    np.testing.assert_array_equal(load_mask(tmp_path / "p.png"), lab)


def test_mask_colour_png_is_an_error(tmp_path):
    rgb = np.zeros((16, 20, 3), np.uint8)
    rgb[3:9, 4:12] = (255, 0, 0)
    path = _png(tmp_path / "colour.png", rgb)
    with pytest.raises(TCMNError, match="colour image") as e:
        load_mask(path)
    assert str(path) in str(e.value)


def test_mask_jpeg_is_binarised(tmp_path):
    b = _blob(32, 32)
    path = tmp_path / "m.jpg"
    cv2.imwrite(str(path), b * 255, [cv2.IMWRITE_JPEG_QUALITY, 70])
    out = load_mask(path)
    assert set(np.unique(out).tolist()) == {0, 1}
    assert (out != b).mean() < 0.02


def test_mask_nifti_2d_and_sequence_frame(tmp_path):
    lab = np.zeros((3, H, W), np.uint8)  # (T, H, W) labels
    lab[0, 2:6, 30:40] = 1
    lab[1, 20:30, 5:9] = 2
    _nifti(lab[0].T, tmp_path / "m2d.nii.gz")
    np.testing.assert_array_equal(load_mask(tmp_path / "m2d.nii.gz", size=(H, W)), lab[0])
    seq = _nifti(lab.transpose(2, 1, 0), tmp_path / "mseq.nii.gz")  # stored (X, Y, T)
    np.testing.assert_array_equal(load_mask(seq, size=(H, W), frame=1), lab[1])
    with pytest.raises(TCMNError, match="mask_frame") as e:
        load_mask(seq)
    assert str(seq) in str(e.value)
    with pytest.raises(TCMNError, match="out of range") as e:
        load_mask(seq, frame=3)
    assert str(seq) in str(e.value)


def test_mask_numpy_and_metaimage(tmp_path):
    b = _blob()
    np.save(tmp_path / "m.npy", b.astype(np.int64) * 255)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.npy"), b)
    np.savez(tmp_path / "m.npz", first=b * 2, second=b * 3)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.npz"), b * 2)
    np.save(tmp_path / "f.npy", b.astype(np.float32) * 4)  # whole-number floats are fine
    np.testing.assert_array_equal(load_mask(tmp_path / "f.npy"), b * 4)
    stack = np.stack([b * 0, b * 6])
    sitk.WriteImage(sitk.GetImageFromArray(stack), str(tmp_path / "m.mha"))
    np.testing.assert_array_equal(load_mask(tmp_path / "m.mha", frame=1), b * 6)


def test_mask_size_mismatch_error_and_nearest_resize(tmp_path):
    m = np.zeros((4, 6), np.uint8)
    m[1:3, 2:4] = 1
    m[0, 0] = 2
    path = _png(tmp_path / "small.png", m)
    with pytest.raises(TCMNError) as e:
        load_mask(path, size=(8, 12))
    msg = str(e.value)
    assert str(path) in msg and "6x4" in msg and "12x8" in msg
    assert "pass resize_mask=true to resize it (nearest neighbour)" in msg
    big = load_mask(path, size=(8, 12), resize=True)
    np.testing.assert_array_equal(big, np.kron(m, np.ones((2, 2), np.uint8)))  # no new labels


def test_mask_empty_is_an_error(tmp_path):
    path = _png(tmp_path / "empty.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(TCMNError, match="empty") as e:
        load_mask(path)
    assert str(path) in str(e.value)


def test_mask_more_than_255_labels_is_an_error(tmp_path):
    lab = np.arange(300, dtype=np.uint16).reshape(15, 20)
    path = tmp_path / "many.npy"
    np.save(path, lab)
    with pytest.raises(TCMNError, match="299 labels") as e:
        load_mask(path)
    assert str(path) in str(e.value)


def test_mask_non_integer_values_is_an_error(tmp_path):
    m = _blob().astype(np.float32) * 0.7
    path = tmp_path / "prob.npy"
    np.save(path, m)
    with pytest.raises(TCMNError, match="non-integer") as e:
        load_mask(path)
    assert str(path) in str(e.value)


def test_mask_negative_values_is_an_error(tmp_path):
    m = _blob().astype(np.int16)
    m[0, 0] = -1
    path = _nifti(m.T, tmp_path / "neg.nii.gz")
    with pytest.raises(TCMNError, match="negative") as e:
        load_mask(path)
    assert str(path) in str(e.value)


def test_mask_missing_and_unsupported(tmp_path):
    with pytest.raises(TCMNError, match="no such file") as e:
        load_mask(tmp_path / "nope.png")
    assert str(tmp_path / "nope.png") in str(e.value)
    path = tmp_path / "mask.txt"
    path.write_text("1")
    with pytest.raises(TCMNError, match="unsupported mask type") as e:
        load_mask(path)
    assert str(path) in str(e.value) and ".npz" in str(e.value)


# ------------------------------------------------------------------------------- prefetch
class _Boom(RuntimeError):
    pass


def test_prefetch_preserves_order_and_propagates_exceptions():
    assert list(prefetch(range(50), depth=3)) == list(range(50))

    def producer():
        yield from range(3)
        raise _Boom("decoder failed")

    got = []
    with pytest.raises(_Boom, match="decoder failed"):
        for x in prefetch(producer(), depth=2):
            got.append(x)
    assert got == [0, 1, 2]


def test_prefetch_stops_the_thread_when_the_consumer_stops_early():
    closed = threading.Event()
    produced = []

    def producer():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    gen = prefetch(producer(), depth=2)
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    assert closed.is_set()  # the source was closed
    assert not any(t.name == "tcmn-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10  # it did not run ahead to the end


# ------------------------------------------------------------------------------- writer
def _folder_source(tmp_path: Path, n: int = T) -> tuple:
    frames = _frames(n)
    folder = tmp_path / "in"
    folder.mkdir()
    for t, f in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{t}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return open_video(folder), frames


def test_writer_outputs_in_frame_order_when_written_backwards(tmp_path):
    src, frames = _folder_source(tmp_path)
    labels = _labels()
    out = tmp_path / "pred"
    with PredictionWriter(out, src, settings={"model": "tiny", "mem_every": 5}) as w:
        for i in range(T - 1, -1, -1):  # backward propagation order
            w.write(i, labels[i], frames[i])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "masks", "overlay.mp4"]
    for t in range(T):
        png = cv2.imread(str(out / "masks" / f"img_{t}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(png, labels[t])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["objects"] == [1, 2]
    assert manifest["frames_with_object"] == {"1": T, "2": T - 2}
    assert manifest["frames"] == [f"img_{t}.png" for t in range(T)]
    assert manifest["settings"] == {"model": "tiny", "mem_every": 5}
    assert manifest["source"] == str(src.path.absolute())
    expected = np.stack([overlay(frames[t], labels[t]) for t in range(T)])
    video = open_video(out / "overlay.mp4")
    assert len(video) == T and video.fps == pytest.approx(25.0)
    assert [_nearest(f, expected) for f in video.read_all()] == list(range(T))
    assert not list(tmp_path.glob(".pred.*"))  # no temporary folder left


def test_writer_exception_leaves_nothing_and_keeps_existing_output(tmp_path):
    src, frames = _folder_source(tmp_path)
    labels = _labels()
    with pytest.raises(_Boom), PredictionWriter(tmp_path / "fresh", src) as w:
        for i in range(5):
            w.write(i, labels[i], frames[i])
        raise _Boom("network crashed")
    assert not (tmp_path / "fresh").exists()
    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "keep.txt").write_text("previous run")
    with pytest.raises(_Boom), PredictionWriter(existing, src) as w:
        w.write(0, labels[0], frames[0])
        raise _Boom("network crashed")
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "old"]  # no temporary folders


def test_writer_incomplete_run_is_an_error_and_saves_nothing(tmp_path):
    src, frames = _folder_source(tmp_path)
    labels = _labels()
    out = tmp_path / "pred"
    with (
        pytest.raises(TCMNError, match=f"only {T - 1} of {T} frames") as e,
        PredictionWriter(out, src) as w,
    ):
        for i in range(T - 1):
            w.write(i, labels[i], frames[i])
    assert str(out) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_check_writable_rejects_an_unwritable_location(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(TCMNError, match="cannot be written") as e:
        check_writable(blocker / "out")
    assert str(blocker / "out") in str(e.value)
    with pytest.raises(TCMNError, match="is a file"):
        PredictionWriter(blocker, open_video(_folder_source(tmp_path)[0].path))
    assert check_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a" / "b").exists()


def test_writer_nifti_keeps_geometry_and_axis_convention(tmp_path):
    affine = np.array(
        [[0.0, -0.3, 0.0, 12.0], [0.5, 0.0, 0.0, -4.0], [0.0, 0.0, 2.0, 7.5], [0, 0, 0, 1]]
    )
    vol = np.random.default_rng(2).integers(0, 4000, size=(W, H, T)).astype(np.int16)
    img = nib.Nifti1Image(vol, affine)
    img.header.set_zooms((0.5, 0.3, 2.0))
    img.set_qform(affine, code=1)
    nib.save(img, str(tmp_path / "echo.nii.gz"))
    src = open_video(tmp_path / "echo.nii.gz")
    labels = _labels()
    out = tmp_path / "pred"
    with PredictionWriter(out, src, write_png=False, write_overlay=False) as w:
        for i in [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 10, 11]:  # bidirectional order
            w.write(i, labels[i])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "masks.nii.gz"]
    res = nib.load(str(out / "masks.nii.gz"))
    np.testing.assert_allclose(res.affine, nib.load(str(tmp_path / "echo.nii.gz")).affine)
    assert res.shape == vol.shape and res.get_data_dtype() == np.uint8
    assert int(res.header["qform_code"]) == 1
    np.testing.assert_allclose(res.header.get_zooms(), (0.5, 0.3, 2.0), rtol=1e-6)
    data = np.asanyarray(res.dataobj)
    for t in range(T):
        np.testing.assert_array_equal(data[:, :, t].T, labels[t])
    # the written masks read back as masks with the same convention
    np.testing.assert_array_equal(load_mask(out / "masks.nii.gz", frame=4), labels[4])


def test_writer_rejects_nifti_output_for_a_video_input(tmp_path):
    src, _ = _folder_source(tmp_path)
    with pytest.raises(TCMNError, match="write_nifti=false"):
        PredictionWriter(tmp_path / "pred", src, write_nifti=True)


# ------------------------------------------------------------------------------- real data
def test_real_echo_toolkit_nifti_is_upright_and_complete(real_data):
    folder = real_data / "echo_toolkit_examples"
    if not folder.is_dir():
        pytest.skip("echo_toolkit_examples not present")
    src = open_video(folder / "a4c_sequence.nii.gz")
    assert len(src) == 20 and src.size == (480, 560)  # stored (W=560, H=480, T=20)
    raw = np.asanyarray(nib.load(str(folder / "a4c_sequence.nii.gz")).dataobj)
    first = src[0][..., 0]
    np.testing.assert_array_equal(first > 0, raw[:, :, 0].T > 0)
    # upright A4C echo: the sector's apex is at the top centre and the fan widens downwards
    fan = np.stack([f[..., 0] for _, f in src.iter()]).max(axis=0) > 10
    width = [int(fan[int(r * fan.shape[0])].sum()) for r in (0.1, 0.3, 0.6)]
    assert width[0] < width[1] < width[2] and width[2] > 4 * width[0]
    top = np.flatnonzero(fan[int(0.1 * fan.shape[0])])
    assert abs(top.mean() - fan.shape[1] / 2) < 0.1 * fan.shape[1]
    # the label sequences read as masks with the same convention: LV (1) inside myocardium (2)
    ref = folder / "segmentation_reference.nii.gz"
    m = load_mask(ref, size=(416, 513), frame=0)
    assert set(np.unique(m).tolist()) == {0, 1, 2}
    rows_lv = np.flatnonzero((m == 1).any(axis=1))
    assert rows_lv.size > 0 and rows_lv.max() - rows_lv.min() > np.ptp(
        np.flatnonzero((m == 1).any(axis=0))
    )


# ------------------------------------------------------------------------------- drawing
def test_colorize_and_palette():
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert PALETTE[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert len({tuple(c) for c in PALETTE.tolist()}) == 256
    lab = np.array([[0, 1], [2, 3]], np.uint8)
    np.testing.assert_array_equal(colorize(lab), PALETTE[lab])


def test_overlay_tints_objects_and_draws_contours():
    frame = np.full((32, 32, 3), 100, np.uint8)
    lab = np.zeros((32, 32), np.uint8)
    lab[8:24, 8:24] = 1
    out = overlay(frame, lab, alpha=0.5)
    np.testing.assert_array_equal(out[:4], frame[:4])  # background away from the object
    assert out[16, 16].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2
    assert out[8, 16].tolist() == PALETTE[1].tolist()  # the contour in the object's colour
    np.testing.assert_array_equal(frame, 100)  # input untouched


def test_figure2_panel_colours():
    frame = np.zeros((40, 40), np.uint8)  # grey input
    given = np.zeros((40, 40), np.uint8)
    given[2:10, 2:10] = 1
    pred = np.zeros((40, 40), np.uint8)
    pred[20:36, 20:36] = 1
    gt = np.zeros((40, 40), np.uint8)
    gt[22:34, 22:34] = 1
    out = figure2_panel(frame, pred=pred, gt=gt, given=given)
    assert out.shape == (40, 40, 3)
    assert out[5, 5].tolist() == [0, 128, 0]  # given: green fill
    assert out[21, 21].tolist() == [128, 0, 0]  # prediction: red fill
    assert out[22, 28].tolist() == [255, 255, 255]  # ground-truth contour: white
    assert out[28, 28].tolist() == [128, 0, 0]  # inside the contour stays red
    assert out[15, 15].tolist() == [0, 0, 0]


def test_strip_tiles_in_rows():
    a = np.full((4, 6, 3), 10, np.uint8)
    b = np.full((3, 5), 20, np.uint8)
    c = np.full((4, 6, 3), 30, np.uint8)
    out = strip([a, b, c], ncols=2, gap=1, background=255)
    assert out.shape == (4 * 2 + 1, 6 * 2 + 1, 3)
    assert out[0, 0, 0] == 10 and out[0, 7, 0] == 20 and out[5, 0, 0] == 30
    assert out[3, 7, 0] == 255  # padding below the smaller image
    assert out[4, 0, 0] == 255 and out[0, 6, 0] == 255  # gaps
    assert (out[5:, 7:] == 255).all()  # empty last cell

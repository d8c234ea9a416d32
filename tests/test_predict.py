"""``tcmn-predict`` as a user runs it: every input and mask format round-trips through the real
console script (or, for the rarer formats and the error paths, through the same Hydra config and
the same error wrapper in-process), every bad input gives its one-sentence error with a non-zero
exit and leaves no output folder, and a real CVC-ClinicDB sequence is segmented end to end.

The untrained network is ``model=tiny``; where the weights matter, the test writes a tiny
checkpoint whose decoder says "object everywhere", so the expected masks are known exactly.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from tcmn.io import open_video

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "tcmn-predict"
H, W = 48, 64


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a 2-core machine shared with other jobs, two OpenMP threads wait on
    each other and run the tiny network several times slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """``[n, h, w, 3]`` uint8: a reddish disc moving right over a textured background."""
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([(xx * 3 + yy) % 90 + 40, (yy * 2) % 70 + 50, np.full_like(xx, 60)], axis=2)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        f = base.astype(np.uint8).copy()
        cv2.circle(f, (14 + 2 * t, h // 2), 9, (220, 90, 80), -1)
        out[t] = f
    return out


def _disc(t: int, label: int = 1, h: int = H, w: int = W) -> np.ndarray:
    """The disc of frame ``t`` as a uint8 label map with value ``label``."""
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (14 + 2 * t, h // 2), 9, label, -1)
    return m


def _two_objects(t: int) -> np.ndarray:
    """Label map with objects 1 (the disc) and 3 (a corner square)."""
    m = _disc(t)
    m[2:10, W - 12 : W - 2] = 3
    return m


def _write_folder(path: Path, frames: np.ndarray, names: list[str]) -> Path:
    path.mkdir(parents=True)
    for f, name in zip(frames, names, strict=True):
        cv2.imwrite(str(path / f"{name}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return path


def _write_video(path: Path, frames: np.ndarray, fourcc: str) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, frames.shape[2:0:-1])
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def _affine() -> np.ndarray:
    return np.array([[0.0, -0.4, 0.0, 11.0], [0.6, 0.0, 0.0, -3.0], [0, 0, 1.5, 2.0], [0, 0, 0, 1]])


def _write_nifti(path: Path, volume_thw: np.ndarray, dtype=np.int16) -> Path:
    """``[T, H, W]`` -> NIfTI stored ``(X, Y, T)`` (the io module's axis convention)."""
    img = nib.Nifti1Image(volume_thw.transpose(2, 1, 0).astype(dtype), _affine())
    img.set_qform(_affine(), code=1)
    nib.save(img, str(path))
    return path


def _tiny_checkpoint(path: Path, bias: float) -> Path:
    """A Lightning-style checkpoint of ``conf/model/tiny.yaml`` whose decoder outputs the logit
    ``bias`` at every pixel (zero weights): with a large bias every object covers every pixel."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tcmn.lit_module import TCMNModule

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("predict", overrides=["model=tiny", "input=x", "mask=x", "out=x"])
    part = {k: OmegaConf.to_container(cfg.model[k]) for k in ("net", "loss", "optimizer")}
    module = TCMNModule(**part, propagation=OmegaConf.to_container(cfg.model.propagation))
    with torch.no_grad():
        module.net.decoder.pred.weight.zero_()
        module.net.decoder.pred.bias.fill_(bias)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


# ------------------------------------------------------------------------------------ runners
def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the installed console script (untrained ``model=tiny`` unless ``ckpt=`` is given)."""
    env = {**os.environ, "TCMN_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [str(CLI), "model=tiny", f"hydra.run.dir={tmp_path / 'hydra'}", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _in_process(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    """Compose ``conf/predict.yaml`` like the CLI and run it behind the CLI's error wrapper.

    Returns ``(exit status, stderr)``: 0 on success, the ``SystemExit`` code on a user error.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tcmn.cli._common import user_errors
    from tcmn.cli.predict import predict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("predict", overrides=["model=tiny", *args])
    capsys.readouterr()
    try:
        user_errors(predict)(cfg)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _masks(out: Path, names: list[str]) -> np.ndarray:
    """The written label maps, in the order of ``names`` (exactly these files must exist)."""
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(f"{n}.png" for n in names)
    return np.stack([np.asarray(Image.open(out / "masks" / f"{n}.png")) for n in names])


def _assert_overlay(out: Path, n: int, size: tuple[int, int]) -> None:
    with open_video(out / "overlay.mp4") as video:
        assert len(video) == n
        assert video.size == (size[0] + size[0] % 2, size[1] + size[1] % 2)


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary folder was left behind"


# ------------------------------------------------------------------------ console script: paths
def test_frame_folder_binary_png_and_checkpoint(tmp_path):
    """Folder + 0/255 PNG + a checkpoint: names kept, given frame exact, the weights are used."""
    names = ["frame_2", "frame_10", "frame_7", "frame_1", "frame_30", "frame_4"]
    order = sorted(names, key=lambda s: int(s.split("_")[1]))  # natural order of the frame files
    frames = _frames(len(order))
    inp = _write_folder(tmp_path / "in", frames, order)
    cv2.imwrite(str(tmp_path / "mask.png"), _disc(0) * 255)
    ckpt = _tiny_checkpoint(tmp_path / "tiny.ckpt", bias=30.0)
    out = tmp_path / "pred"
    res = _cli(
        tmp_path, f"input={inp}", f"mask={tmp_path / 'mask.png'}", f"ckpt={ckpt}", f"out={out}"
    )
    assert res.returncode == 0, res.stderr
    assert "UNTRAINED" not in res.stdout + res.stderr
    masks = _masks(out, order)
    np.testing.assert_array_equal(masks[0], _disc(0))  # the given mask, as labels 0/1
    assert (masks[1:] == 1).all()  # the checkpoint's decoder says "object" everywhere
    m = _manifest(out)
    assert m["frames"] == [f"{n}.png" for n in order] and m["n_frames"] == len(order)
    assert m["settings"]["weights"] == str(ckpt) and m["objects"] == [1]
    _assert_overlay(out, len(order), (H, W))
    assert not (out / "masks.nii.gz").exists()


def test_mp4_numpy_label_map_from_a_middle_frame(tmp_path):
    """mp4 + .npy label map given at a middle frame: both directions, every frame written."""
    n, k = 9, 4
    inp = _write_video(tmp_path / "clip.mp4", _frames(n), "mp4v")
    np.save(tmp_path / "mask.npy", _two_objects(k).astype(np.int64))
    out = tmp_path / "pred"
    res = _cli(
        tmp_path, f"input={inp}", f"mask={tmp_path / 'mask.npy'}", f"mask_frame={k}", f"out={out}"
    )
    assert res.returncode == 0, res.stderr
    assert "UNTRAINED" in res.stdout + res.stderr  # the log and the final note say so
    names = [f"{i:05d}" for i in range(n)]
    masks = _masks(out, names)
    np.testing.assert_array_equal(masks[k], _two_objects(k))
    assert set(np.unique(masks).tolist()) <= {0, 1, 3}  # the user's ids are kept
    m = _manifest(out)
    assert m["settings"]["direction"] == "both" and m["settings"]["mask_frame"] == k
    assert m["settings"]["objects_given"] == [1, 3] and m["settings"]["weights"] == "untrained"
    _assert_overlay(out, n, (H, W))


def test_nifti_sequence_and_nifti_mask_keep_the_geometry(tmp_path):
    """NIfTI in -> PNGs, overlay and a NIfTI label sequence with the input's affine and shape."""
    n, k = 6, 2
    frames = _frames(n)[..., 0].astype(np.int16) * 7  # 16-bit intensities, scaled on reading
    inp = _write_nifti(tmp_path / "echo.nii.gz", frames)
    labels = np.stack([_disc(t, 2) for t in range(n)])
    mask = _write_nifti(tmp_path / "gt.nii.gz", labels, np.uint8)  # a sequence: frame k chosen
    out = tmp_path / "pred"
    res = _cli(tmp_path, f"input={inp}", f"mask={mask}", f"mask_frame={k}", f"out={out}")
    assert res.returncode == 0, res.stderr
    masks = _masks(out, [f"{i:05d}" for i in range(n)])
    np.testing.assert_array_equal(masks[k], labels[k])
    seg = nib.load(str(out / "masks.nii.gz"))
    ref = nib.load(str(inp))
    np.testing.assert_allclose(seg.affine, ref.affine)
    assert seg.shape == ref.shape and seg.get_data_dtype() == np.uint8
    data = np.asanyarray(seg.dataobj)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), masks)  # same as the PNGs
    _assert_overlay(out, n, (H, W))
    assert _manifest(out)["outputs"]["nifti"] == "masks.nii.gz"


def test_cli_error_is_one_sentence_exit_2_and_writes_nothing(tmp_path):
    inp = _write_folder(tmp_path / "in", _frames(3), ["a", "b", "c"])
    cv2.imwrite(str(tmp_path / "mask.png"), _disc(0, 255, 30, 40))  # 40x30, frames are 64x48
    out = tmp_path / "pred"
    res = _cli(tmp_path, f"input={inp}", f"mask={tmp_path / 'mask.png'}", f"out={out}")
    assert res.returncode == 2
    line = _error_line(res.stderr)
    assert str(tmp_path / "mask.png") in line and "resize_mask=true" in line
    assert "Traceback" not in res.stderr
    _assert_nothing_written(out)


# ------------------------------------------------------------ same config in-process: formats
def test_avi_with_a_palette_png_and_resize_mask(tmp_path, capsys):
    n = 5
    inp = _write_video(tmp_path / "clip.avi", _frames(n), "MJPG")
    small = cv2.resize(_two_objects(0), (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    img = Image.frombytes("P", (W // 2, H // 2), small.tobytes())
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    img.save(tmp_path / "mask.png")
    out = tmp_path / "pred"
    args = [f"input={inp}", f"mask={tmp_path / 'mask.png'}", f"out={out}"]
    code, err = _in_process(tmp_path, capsys, *args)
    assert code == 2 and "resize_mask=true" in _error_line(err)
    _assert_nothing_written(out)
    code, err = _in_process(tmp_path, capsys, *args, "resize_mask=true")
    assert code == 0, err
    masks = _masks(out, [f"{i:05d}" for i in range(n)])
    expected = cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(masks[0], expected)  # palette indices kept as labels 1, 3
    assert set(np.unique(masks[0]).tolist()) == {0, 1, 3}
    _assert_overlay(out, n, (H, W))


def test_metaimage_with_an_npz_mask_on_the_last_frame_goes_backward(tmp_path, capsys):
    n = 5
    vol = _frames(n)[..., 1]  # [T, H, W] uint8
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "seq.mhd"))
    np.savez(tmp_path / "mask.npz", m=_disc(n - 1).astype(bool))
    out = tmp_path / "pred"
    code, err = _in_process(
        tmp_path,
        capsys,
        f"input={tmp_path / 'seq.mhd'}",
        f"mask={tmp_path / 'mask.npz'}",
        f"mask_frame={n - 1}",
        f"out={out}",
    )
    assert code == 0, err
    masks = _masks(out, [f"{i:05d}" for i in range(n)])
    np.testing.assert_array_equal(masks[n - 1], _disc(n - 1))
    assert _manifest(out)["settings"]["direction"] == "backward"
    assert not (out / "masks.nii.gz").exists()  # NIfTI output only for NIfTI input
    _assert_overlay(out, n, (H, W))


def test_forward_only_from_a_middle_frame_leaves_earlier_frames_empty(tmp_path, capsys):
    n, k = 6, 3
    inp = _write_folder(tmp_path / "in", _frames(n), [f"{i}" for i in range(n)])
    np.save(tmp_path / "mask.npy", _disc(k))
    out = tmp_path / "pred"
    code, err = _in_process(
        tmp_path,
        capsys,
        f"input={inp}",
        f"mask={tmp_path / 'mask.npy'}",
        f"mask_frame={k}",
        "direction=forward",
        f"out={out}",
    )
    assert code == 0, err
    masks = _masks(out, [f"{i}" for i in range(n)])
    assert not masks[:k].any()  # never propagated to: empty, and said so in the log
    np.testing.assert_array_equal(masks[k], _disc(k))
    _assert_overlay(out, n, (H, W))


def test_grey_mask_with_soft_edges_is_one_object_but_a_label_map_is_kept(tmp_path):
    from tcmn.io import load_mask

    soft = _disc(0, 255)
    ring = cv2.dilate(soft, np.ones((3, 3), np.uint8)) & ~soft  # anti-aliased edge pixels
    soft[ring > 0] = 90
    soft[np.nonzero(ring)[0][:5], np.nonzero(ring)[1][:5]] = 200  # a few bright ones
    cv2.imwrite(str(tmp_path / "soft.png"), soft)
    np.testing.assert_array_equal(load_mask(tmp_path / "soft.png"), (soft > 127).astype(np.uint8))
    labels = _two_objects(0)  # 0, 1, 3: a label map, not a soft binary mask
    cv2.imwrite(str(tmp_path / "labels.png"), labels)
    np.testing.assert_array_equal(load_mask(tmp_path / "labels.png"), labels)
    wide = _disc(0, 255)
    wide[:, :20] = np.where(wide[:, :20] == 0, 7, wide[:, :20])  # label 7 bigger than 255's
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    assert set(np.unique(load_mask(tmp_path / "wide.png")).tolist()) == {0, 7, 255}


# ------------------------------------------------------------------------------ user errors
def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], Path, str]]:
    """name -> (overrides, path named by the error, words of the fix)."""
    inp = _write_folder(tmp_path / "in", _frames(4), ["0", "1", "2", "3"])
    good = tmp_path / "good.npy"
    np.save(good, _disc(0))
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(3000))
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no frames here")
    cv2.imwrite(str(tmp_path / "small.png"), _disc(0, 255, 30, 40))  # 40x30, frames are 64x48
    np.save(tmp_path / "empty.npy", np.zeros((H, W), np.uint8))
    many = np.arange(H * W, dtype=np.int32).reshape(H, W) % 300  # 299 labels
    np.save(tmp_path / "many.npy", many)
    Image.fromarray(many.astype(np.uint16)).save(tmp_path / "many16.png")
    np.save(tmp_path / "soft.npy", _disc(0).astype(np.float32) * 0.7)
    (tmp_path / "blocker").write_text("a file where the output's parent should be")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "thesis.tex").write_text("precious")
    i, g = f"input={inp}", f"mask={good}"
    return {
        "unreadable video": (
            [f"input={tmp_path / 'garbage.mp4'}", g],
            tmp_path / "garbage.mp4",
            "re-encode",
        ),
        "no frames": ([f"input={tmp_path / 'nothing'}", g], tmp_path / "nothing", "frame images"),
        "mask size": (
            [i, f"mask={tmp_path / 'small.png'}"],
            tmp_path / "small.png",
            "resize_mask=true",
        ),
        "16-bit labels": (
            [i, f"mask={tmp_path / 'many16.png'}"],
            tmp_path / "many16.png",
            "at most 255",
        ),
        "empty mask": (
            [i, f"mask={tmp_path / 'empty.npy'}"],
            tmp_path / "empty.npy",
            "at least one",
        ),
        "too many labels": (
            [i, f"mask={tmp_path / 'many.npy'}"],
            tmp_path / "many.npy",
            "at most 255",
        ),
        "non-integer": (
            [i, f"mask={tmp_path / 'soft.npy'}"],
            tmp_path / "soft.npy",
            "whole-number",
        ),
        "mask_frame": ([i, g, "mask_frame=4"], inp, "mask_frame=N"),
        "negative mask_frame": ([i, g, "mask_frame=-1"], inp, "mask_frame=N"),
        "unwritable": (
            [i, g, f"out={tmp_path / 'blocker' / 'pred'}"],
            tmp_path / "blocker",
            "writable",
        ),
        "other files": ([i, g, f"out={taken}"], taken, "new or empty"),
        "holds the input": ([i, g, f"out={tmp_path}"], tmp_path, "outside the inputs"),
    }


def test_every_bad_input_gives_its_error_and_writes_nothing(tmp_path, capsys):
    cases = _bad_cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, (args, path, fix) in cases.items():
        if not any(a.startswith("out=") for a in args):
            args = [*args, f"out={tmp_path / 'pred'}"]
        code, err = _in_process(tmp_path, capsys, *args)
        assert code == 2, f"{name}: exit {code}, {err}"
        line = _error_line(err)
        assert str(path) in line and fix in line, f"{name}: {line}"
        assert line.rstrip().endswith("."), f"{name}: {line}"
    # nothing appeared (no output, no temporary folder), nothing was replaced or removed
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "taken" / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [
        "0.png",
        "1.png",
        "2.png",
        "3.png",
    ]


def test_failure_mid_video_leaves_no_output_and_keeps_the_previous_one(tmp_path, capsys):
    n = 5
    inp = _write_folder(tmp_path / "in", _frames(n), [f"{i}" for i in range(n)])
    np.save(tmp_path / "mask.npy", _disc(0))
    out = tmp_path / "pred"
    args = [f"input={inp}", f"mask={tmp_path / 'mask.npy'}", f"out={out}", "write_overlay=false"]
    assert _in_process(tmp_path, capsys, *args)[0] == 0
    first = (out / "masks" / "4.png").read_bytes()
    (inp / "3.png").write_bytes(b"not a png")  # frame 3 fails to decode during propagation
    code, err = _in_process(tmp_path, capsys, *args)
    assert code == 2 and str(inp / "3.png") in _error_line(err)
    assert (out / "masks" / "4.png").read_bytes() == first  # the earlier complete output is kept
    assert not list(tmp_path.glob(".pred.*"))
    fresh = tmp_path / "fresh"
    code, _ = _in_process(tmp_path, capsys, *args[:2], f"out={fresh}")
    assert code == 2
    _assert_nothing_written(fresh)


# ------------------------------------------------------------------------------- real data
@pytest.mark.real_data
def test_real_cvc_clinicdb_sequence(real_data, tmp_path):
    """The first CVC-ClinicDB sequence (frames symlinked into tmp_path), its first mask (0/255
    with soft edges): one mask per frame, named after the frames, and the overlay video."""
    cvc = real_data / "cvc_clinicdb"
    with open(cvc / "sequences.csv") as f:
        seq = next(csv.DictReader(f))
    first, last = int(seq["first_frame"]), int(seq["last_frame"])
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(first, last + 1):
        (frames / f"{i}.png").symlink_to(cvc / "images" / f"{i}.png")
    out = tmp_path / "pred"
    mask = cvc / "masks" / f"{first}.png"
    # the network sees 192x144 (speed); the masks come back at the frames' 384x288
    res = _cli(tmp_path, f"input={frames}", f"mask={mask}", f"out={out}", "propagation.size=192")
    assert res.returncode == 0, res.stderr
    names = [str(i) for i in range(first, last + 1)]
    masks = _masks(out, names)
    assert masks.shape == (len(names), 288, 384)
    gt = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 127
    given = masks[0] == 1  # one object (the soft edges binarised), back at native size
    assert set(np.unique(masks[0]).tolist()) == {0, 1}
    assert (given & gt).sum() / (given | gt).sum() > 0.9
    assert _manifest(out)["settings"]["objects_given"] == [1]
    _assert_overlay(out, len(names), (288, 384))

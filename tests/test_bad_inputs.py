"""Bad inputs through the real console scripts, as a user types them: each exits non-zero with
one sentence that names the setting or the file (never a traceback), and writes nothing that
looks complete; inputs that are fine but unusual (no logger, a truncated video, a corrupt
meta.json with overwrite=true, leftovers of a killed save) work and say what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_DATA, TINY_NET, small_synthetic

from tcmn.models.network import TCMN

BIN = Path(sys.executable).parent
H, W = 48, 64


def run(tmp_path: Path, cmd: str, *args: str, env: dict | None = None):
    """Run ``tcmn-<cmd> args`` in ``tmp_path``; returns the completed process."""
    e = {**os.environ, "WANDB_MODE": "disabled", "NO_ALBUMENTATIONS_UPDATE": "1"}
    e.pop("HYDRA_FULL_ERROR", None)
    e.pop("TCMN_DEBUG", None)
    e.update(env or {})
    return subprocess.run(
        [str(BIN / f"tcmn-{cmd}"), *args],
        cwd=tmp_path,
        env=e,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def entry(tmp_path, monkeypatch, capsys):
    """Run a command's entry point (the ``main`` its console script calls) in this process, in
    ``tmp_path``: ``entry("train", "a=b", ...)`` -> an object with returncode, stdout, stderr.
    Much faster than a new interpreter; each command also has a console-script test below."""
    import importlib
    import types

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("TCMN_DEBUG", raising=False)

    def call(cmd: str, *args: str):
        main = importlib.import_module(f"tcmn.cli.{cmd}").main
        monkeypatch.setattr(sys, "argv", [f"tcmn-{cmd}", *args])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call


def assert_one_sentence(p: subprocess.CompletedProcess, *words: str) -> str:
    """Non-zero exit, no traceback, and an ``error:`` line naming every word."""
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of 4 frames and its first frame's mask (PNG)."""
    root = tmp_path_factory.mktemp("video")
    frames = root / "frames"
    frames.mkdir()
    for t in range(4):
        f = np.full((H, W, 3), 60, np.uint8)
        cv2.circle(f, (14 + 3 * t, H // 2), 8, (220, 90, 80), -1)
        cv2.imwrite(str(frames / f"{t:03d}.png"), f)
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (14, H // 2), 8, 1, -1)
    cv2.imwrite(str(root / "mask.png"), m)
    return frames, root / "mask.png"


def checkpoint(path: Path, net: dict | None = None) -> Path:
    """A tcmn-train-like checkpoint of the tiny network; ``net`` changes the weights' shapes
    (while the stored settings stay TINY_NET's), as a checkpoint edited or mixed up would."""
    model = TCMN(**{**TINY_NET, **(net or {})})
    state = {f"net.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {"hyper_parameters": {"net": TINY_NET, "propagation": {}}, "state_dict": state}, path
    )
    return path


# ------------------------------------------------------------------------- tcmn-predict
@pytest.mark.parametrize(
    "override, words",
    [
        ("device=cuda", ["device=cuda", "no CUDA GPU"]),
        ("device=tpu9", ["device=tpu9"]),
        ("propagation.capacity_frames=0", ["capacity_frames=0"]),
        ("propagation.capacity_frames=-3", ["capacity_frames=-3"]),
        ("propagation.mem_every=0", ["propagation.mem_every=0"]),
        ("propagation.precision=fp8", ["propagation.precision"]),
    ],
)
def test_predict_refuses_bad_settings_up_front(tmp_path, entry, video, override, words):
    if torch.cuda.is_available() and override == "device=cuda":
        pytest.skip("this machine has a GPU")
    frames, mask = video
    out = tmp_path / "out"
    p = entry("predict", f"input={frames}", f"mask={mask}", f"out={out}", "model=tiny", override)
    assert_one_sentence(p, *words)
    assert not out.exists()


def test_predict_and_eval_refuse_a_checkpoint_whose_weights_do_not_match(tmp_path, video):
    frames, mask = video
    ck = checkpoint(tmp_path / "mixed.ckpt", net={"value_dim": 16})
    p = run(
        tmp_path,
        "predict",
        f"input={frames}",
        f"mask={mask}",
        f"out={tmp_path / 'o'}",
        f"ckpt={ck}",
    )
    assert_one_sentence(p, "mixed.ckpt", "do not match")
    assert not (tmp_path / "o").exists()
    p = run(tmp_path, "eval", f"ckpt={ck}", "hydra.run.dir=ev")
    assert_one_sentence(p, "mixed.ckpt", "do not match")
    assert not (tmp_path / "ev" / "summary.json").exists()


def test_non_ascii_path_gets_the_quoting_hint(tmp_path, video):
    _, mask = video
    p = run(tmp_path, "predict", "input=/data/vidéo.mp4", f"mask={mask}", "out=o")
    assert_one_sentence(p, "input=/data/vidéo.mp4", "quote", "\"'/data/vidéo.mp4'\"")


def test_truncated_video_is_reported_and_recorded(tmp_path):
    """An AVI whose header declares 6 frames with only some decodable: a warning with both
    counts, and both in the manifest."""
    path = tmp_path / "six.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for t in range(6):
        f = np.full((H, W, 3), 30 * t, np.uint8)
        cv2.circle(f, (14 + 3 * t, H // 2), 8, (220, 90, 80), -1)
        w.write(f)
    w.release()
    data = path.read_bytes()
    movi, index = data.index(b"movi"), data.index(b"idx1")
    chunks = [i for i in range(movi, index) if data[i : i + 4] == b"00dc"]  # one per frame
    assert len(chunks) == 6
    path.write_bytes(data[: chunks[3]])  # frames 3-5 and the index cut off
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 6
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    assert 0 < n < 6
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (14, H // 2), 8, 1, -1)
    cv2.imwrite(str(tmp_path / "m.png"), m)
    p = run(
        tmp_path,
        "predict",
        f"input={path}",
        "mask=m.png",
        "out=o",
        "model=tiny",
        "write_overlay=false",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"declares 6 frames but {n} can be decoded" in p.stdout + p.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["settings"]["frames_declared"] == 6
    assert manifest["settings"]["frames_read"] == manifest["n_frames"] == n


def test_large_frames_get_the_size_hint(tmp_path):
    frames = tmp_path / "big"
    frames.mkdir()
    for t in range(2):
        f = np.full((700, 1100, 3), 50 + 20 * t, np.uint8)
        cv2.circle(f, (300, 300), 80, (220, 90, 80), -1)
        cv2.imwrite(str(frames / f"{t}.png"), f)
    m = np.zeros((700, 1100), np.uint8)
    cv2.circle(m, (300, 300), 80, 1, -1)
    cv2.imwrite(str(tmp_path / "m.png"), m)
    p = run(
        tmp_path,
        "predict",
        f"input={frames}",
        "mask=m.png",
        "out=o",
        "model=tiny",
        "write_overlay=false",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "propagation.size=512" in p.stdout + p.stderr


# ---------------------------------------------------------------------------- tcmn-train
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_synthetic(tmp_path_factory.mktemp("bad_inputs_data"), 4, test_fraction=0.25)


def train_args(data: Path, *extra: str) -> list[str]:
    return [
        "experiment=cpu_small",
        "model=tiny",
        *TINY_DATA,
        "trainer.max_steps=2",
        "test=false",
        "trainer.check_val_every_n_epoch=100",
        "extras.print_config=false",
        f"paths.data_dir={data}",
        *extra,
    ]


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.optimizer.lr=nan", ["model.optimizer.lr=nan", "finite number > 0"]),
        ("model.loss.beta=-1", ["model.loss.beta=-1", ">= 0"]),
        ("model.loss.beta=nan", ["model.loss.beta=nan"]),
        ("data.batch_size=0", ["data.batch_size=0"]),
        ("trainer.max_steps=abc", ["trainer.max_steps=abc", "whole number"]),
        ("seed=1.5", ["seed=1.5", "whole number"]),
        ("data.crop_size=8", ["data.crop_size=8", ">= 16"]),
    ],
)
def test_train_refuses_bad_settings_up_front(entry, data, override, words):
    p = entry("train", *train_args(data, override))
    assert_one_sentence(p, *words)


def test_train_names_an_unreadable_checkpoint(tmp_path, data):
    good = checkpoint(tmp_path / "good.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:2000])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(5000))
    p = run(tmp_path, "train", *train_args(data, f"ckpt_path={cut}"))
    assert_one_sentence(p, "ckpt_path=", "cut.ckpt", "truncated")
    p = run(tmp_path, "train", *train_args(data, f"init_from={junk}"))
    assert_one_sentence(p, "init_from=", "junk.ckpt")


def test_train_without_a_logger_and_leftovers_are_removed(tmp_path, data):
    """``logger=none`` (a choice the README lists) trains; the temporary file a killed
    checkpoint save left behind is removed when the next run starts."""
    run_dir = tmp_path / "run"
    leftover = run_dir / "checkpoints" / ".last.ckpt.ab12cd34.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a checkpoint")
    p = run(
        tmp_path,
        "train",
        *train_args(data, "logger=none", f"hydra.run.dir={run_dir}"),
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not leftover.exists()


def test_the_console_scripts_answer_in_one_sentence(tmp_path, video, data):
    """The same checks through the installed console scripts (a new interpreter each)."""
    frames, mask = video
    p = run(
        tmp_path,
        "predict",
        f"input={frames}",
        f"mask={mask}",
        "out=o",
        "model=tiny",
        "propagation.mem_every=0",
    )
    assert_one_sentence(p, "propagation.mem_every=0")
    p = run(tmp_path, "train", *train_args(data, "model.optimizer.lr=nan"))
    assert_one_sentence(p, "model.optimizer.lr=nan")
    p = run(tmp_path, "eval", f"ckpt={checkpoint(tmp_path / 'm.ckpt')}", "split=tset")
    assert_one_sentence(p, "split=tset")


@pytest.mark.parametrize(
    "args, words",
    [
        (["data_root=/no/such/folder"], ["data_root=/no/such/folder", "no such folder"]),
        (["port=99999"], ["port=99999"]),
        (["upload_max_mb=0"], ["upload_max_mb=0"]),
        (["device=tpu9"], ["device=tpu9"]),
    ],
)
def test_annotate_refuses_bad_settings_before_serving(tmp_path, entry, args, words):
    extra = [] if any(a.startswith("data_root=") for a in args) else [f"data_root={tmp_path}"]
    p = entry("annotate", *extra, *args)
    assert_one_sentence(p, *words)


# ------------------------------------------------------------------ eval, cv, prepare
@pytest.mark.parametrize(
    "override, words",
    [
        ("split=tset", ["split=tset", "test"]),  # the setting the user typed, not data.test_part
        ("n_overlays=-1", ["n_overlays=-1"]),
        ("max_videos=0", ["max_videos=0"]),
        ("propagation.top_k=0", ["propagation.top_k=0"]),
    ],
)
def test_eval_refuses_bad_settings(tmp_path, entry, override, words):
    ck = checkpoint(tmp_path / "m.ckpt")
    p = entry("eval", f"ckpt={ck}", override, "hydra.run.dir=ev")
    assert_one_sentence(p, *words)
    assert not (tmp_path / "ev" / "summary.json").exists()


def test_cv_refuses_a_group_key_no_run_has(tmp_path):
    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    summary = {
        "status": "ok",
        "seed": 0,
        "config": {"seed": 0, "model": {"loss": {"beta": 0.1}}},
        "test": {"test/J": 0.5, "test/F": 0.5, "test/Dice": 0.6},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    p = run(tmp_path, "cv", f"dir={tmp_path / 'runs'}", "group_by=[data.bogus]")
    assert_one_sentence(p, "group_by=data.bogus", "no run")


def test_prepare_overwrite_rebuilds_a_corrupt_meta_json(tmp_path):
    dst = tmp_path / "synth"
    p = run(tmp_path, "prepare", "dataset=synthetic", f"dst={dst}", "n_videos=2", "seed=0")
    assert p.returncode == 0, p.stderr[-2000:]
    (dst / "meta.json").write_text("{not json")
    p = run(tmp_path, "prepare", "dataset=synthetic", f"dst={dst}", "n_videos=2", "seed=0")
    assert_one_sentence(p, "meta.json", "overwrite=true")
    p = run(
        tmp_path,
        "prepare",
        "dataset=synthetic",
        f"dst={dst}",
        "n_videos=2",
        "seed=0",
        "overwrite=true",
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-2000:]
    assert len(json.loads((dst / "meta.json").read_text())["videos"]) == 2


def test_an_unexpected_error_is_one_sentence_and_the_trace_is_one_flag_away(capsys, monkeypatch):
    from tcmn.cli._common import user_errors

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("TCMN_DEBUG", raising=False)

    def broken():
        raise RuntimeError("something\nunforeseen")

    with pytest.raises(SystemExit) as e:
        user_errors(broken)()
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1
    assert "unexpected RuntimeError: something unforeseen" in err and "TCMN_DEBUG=1" in err
    monkeypatch.setenv("TCMN_DEBUG", "1")
    with pytest.raises(RuntimeError):
        user_errors(broken)()


def test_a_closed_output_pipe_stops_quietly(tmp_path):
    """`tcmn-cv ... | head`: the reader goes away; the command stops without an error line."""
    code = (
        "from tcmn.cli._common import user_errors\n"
        "def show():\n"
        "    for i in range(200000):\n"
        "        print('row', i)\n"
        "user_errors(show)()\n"
    )
    proc = subprocess.run(
        f'{sys.executable} -c "{code}" | head -n 1',
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        executable="/bin/bash",
    )
    assert proc.stdout == "row 0\n"
    assert proc.stderr == "", proc.stderr

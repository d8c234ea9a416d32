"""``tcmn-prepare`` end to end, as a user runs it (a subprocess), on a tiny fake CVC-ClinicDB."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tcmn.cli.prepare import translate_argv

SCRIPT = Path(sys.executable).with_name("tcmn-prepare")


def prepare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``tcmn-prepare ARGS`` (the installed script, else ``python -m``) in ``cwd``."""
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tcmn.cli.prepare"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def make_cvc(root: Path, n: int = 6) -> Path:
    """Fake CVC-ClinicDB (``images/`` + ``masks/``, 32x32) in three sequences of two frames."""
    rng = np.random.default_rng(0)
    for k in range(1, n + 1):
        mask = np.zeros((32, 32), np.uint8)
        mask[4 + k : 14 + k, 6:16] = 255
        img = rng.integers(0, 40, size=(32, 32, 3), dtype=np.uint8)
        img[mask > 0] = 220
        for sub, arr in (("images", img), ("masks", mask)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / sub / f"{k}.png"), arr)
    with open(root / "sequences.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence_id", "first_frame", "last_frame", "num_frames"])
        for s in range(n // 2):
            w.writerow([s + 1, 2 * s + 1, 2 * s + 2, 2])
    return root


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line a user error must print (and nothing like a traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


def test_translate_argv():
    assert translate_argv(["tcmn-prepare", "splits", "root=x"]) == [
        "tcmn-prepare",
        "dataset=splits",
        "root=x",
    ]
    assert translate_argv(["tcmn-prepare", "dataset=camus"]) == ["tcmn-prepare", "dataset=camus"]
    assert translate_argv(["tcmn-prepare", "root=splits"]) == ["tcmn-prepare", "root=splits"]


def test_unknown_dataset_exits_2_with_one_line(tmp_path):
    proc = prepare("dataset=kvasir", f"src={tmp_path}", f"dst={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "dataset=kvasir: unknown dataset" in line
    for name in ("cvc_clinicdb", "asu_mayo", "hmc_qu", "camus", "echonet", "generic", "synthetic"):
        assert name in line
    assert not (tmp_path / "out").exists()


def test_missing_src_and_bad_option_exit_2(tmp_path):
    proc = prepare("dataset=camus", f"src={tmp_path / 'nowhere'}", "dst=out", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{tmp_path / 'nowhere'}: the source of dataset 'camus' does not exist" in (
        one_error_line(proc)
    )
    src = make_cvc(tmp_path / "cvc")
    proc = prepare("dataset=cvc_clinicdb", f"src={src}", "dst=out", "+options.fps=3", cwd=tmp_path)
    assert proc.returncode == 2
    assert "options.fps: not an option of the cvc_clinicdb converter" in one_error_line(proc)
    assert not list(tmp_path.glob("outputs")) and not (tmp_path / "out").exists()


def test_convert_writes_dataset_and_splits_then_splits_command(tmp_path):
    src = make_cvc(tmp_path / "cvc")
    dst = tmp_path / "prepared"
    proc = prepare("dataset=cvc_clinicdb", f"src={src}", f"dst={dst}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((dst / "meta.json").read_text())
    assert meta["dataset"] == "cvc_clinicdb"
    assert sorted(meta["videos"]) == ["seq01", "seq02", "seq03"]
    assert all(v["annotated"] == ["00000", "00001"] for v in meta["videos"].values())
    splits_path = dst / "splits.json"
    assert splits_path.is_file(), proc.stdout + proc.stderr
    assert "splits.json" in proc.stdout
    first = json.loads(splits_path.read_text())
    assert first["seed"] == 0 and first["n_folds"] <= 5
    assert sorted(first["train"] + first["test"]) == ["seq01", "seq02", "seq03"]
    assert not (tmp_path / "outputs").exists()  # Hydra writes no run folder

    before = hashes(dst)
    proc = prepare("dataset=cvc_clinicdb", f"src={src}", f"dst={dst}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "kept the existing" in proc.stdout
    assert hashes(dst) == before  # same videos kept, splits not recomputed

    # `splits` as a bare first word: refuses to overwrite, then rewrites with overwrite=true
    proc = prepare("splits", f"root={dst}", "seed=7", cwd=tmp_path)
    assert proc.returncode == 2
    assert str(splits_path) in one_error_line(proc)
    proc = prepare(
        "splits", f"root={dst}", "seed=7", "test_fraction=0.34", "overwrite=true", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    again = json.loads(splits_path.read_text())
    assert again["seed"] == 7 and len(again["test"]) == 1


def test_splits_of_missing_root_exits_2(tmp_path):
    proc = prepare("splits", f"root={tmp_path / 'none'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "the prepared dataset folder does not exist" in one_error_line(proc)


def test_synthetic(tmp_path):
    n_videos = 2
    dst = tmp_path / "synth"
    proc = prepare(
        "dataset=synthetic",
        f"dst={dst}",
        f"n_videos={n_videos}",
        "n_frames=4",
        "size=[32,48]",
        "seed=3",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((dst / "meta.json").read_text())
    assert len(meta["videos"]) == n_videos
    assert all(v["size"] == [32, 48] and v["n_frames"] == 4 for v in meta["videos"].values())
    assert json.loads((dst / "splits.json").read_text())["seed"] == 3

"""``tcmn-bench`` at tiny settings: the tables' structure and the invariants that do not depend
on timing (memory-bank sizes worked out by hand, policies that must agree when the capacity
never binds, ratios consistent with their parts), and the reports written to the run folder.
No timing threshold is asserted: the machine is shared."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, compose_cfg

from tcmn.cli.bench import run, translate_argv

CLI = Path(sys.executable).parent / "tcmn-bench"
SYNTH = [
    "data.synthetic.n_videos=5",
    "data.synthetic.n_frames=12",
    "data.synthetic.size=[64,64]",
    "data.max_eval_videos=1",
]


def _tiny_checkpoint(path: Path) -> Path:
    """A Lightning-style checkpoint of an (untrained) ``conf/model/tiny.yaml`` network."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from tcmn.lit_module import TCMNModule

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("bench", overrides=["model=tiny"])
    part = {k: OmegaConf.to_container(cfg.model[k]) for k in ("net", "loss", "optimizer")}
    module = TCMNModule(**part, propagation=OmegaConf.to_container(cfg.model.propagation))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def _bench_cfg(tmp_path: Path, overrides: list[str]):
    """The composed bench config at tiny settings. One torch thread: on a 2-core machine shared
    with other jobs, two OpenMP threads wait on each other and run several times slower."""
    from omegaconf import open_dict

    cfg = compose_cfg("bench", ["model=tiny", "threads=1", *overrides], tmp_path)
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")  # a small synthetic set of its own
    return cfg


def _by(rows, key, value):
    return [r for r in rows if r[key] == value]


def test_translate_argv():
    assert translate_argv(["tcmn-bench", "data", "threads=1"]) == [
        "tcmn-bench",
        "task=data",
        "threads=1",
    ]
    assert translate_argv(["tcmn-bench", "inference"]) == ["tcmn-bench", "task=inference"]
    assert translate_argv(["tcmn-bench", "task=data"]) == ["tcmn-bench", "task=data"]
    assert translate_argv(["tcmn-bench"]) == ["tcmn-bench"]


def test_inference_tables_invariants_and_report(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "tiny.ckpt")
    cfg = _bench_cfg(
        tmp_path,
        [
            "task=inference",
            f"ckpt={ckpt}",
            "inference.precision.size=48",
            "inference.precision.repeats=1",
            "inference.policies.size=48",
            "inference.policies.n_frames=30",
            "inference.policies.at=[10,20,30]",
            "inference.policies.capacity_frames=3",
            "inference.policies.precision=fp32",
            # every synthetic val video (12 frames) stores at most 3 memory frames: a capacity
            # of 10 never binds, so every policy must give the same masks
            "inference.accuracy.capacity_frames=10",
            *SYNTH,
        ],
    )
    res = run(cfg)
    tables = res["tables"]
    assert list(tables) == ["precision", "policies", "accuracy"]

    prec = tables["precision"]
    assert [r["precision"] for r in prec] == ["fp32", "bf16+channels_last"]
    assert prec[0]["speedup_vs_fp32"] == 1.0
    for r in prec:
        assert r["encoder_ms"] > 0 and r["frame_ms"] > 0
        assert r["frame_over_encoder"] == pytest.approx(r["frame_ms"] / r["encoder_ms"])
        assert r["frame_ms"] == pytest.approx(r["step_ms"] + r["value_ms"] / 5)
        assert r["memory_frames"] == 4 and r["size"] == 48
        assert r["speedup_vs_fp32"] == pytest.approx(prec[0]["frame_ms"] / r["frame_ms"])

    pol = tables["policies"]
    # memory: the given frame, then every 5th frame: 1 + (f - 1) // 5 frames after frame f
    unbounded = [1 + (f - 1) // 5 for f in (10, 20, 30)]
    for policy in ("unbounded", "fifo", "dynamic"):
        rows = _by(pol, "policy", policy)
        assert [r["frame"] for r in rows] == [10, 20, 30]
        assert rows[0]["growth"] == 1.0
        for r in rows:
            assert r["over_encoder"] == pytest.approx(r["ms_min"] / r["encoder_ms"])
            assert r["growth"] == pytest.approx(r["over_encoder"] / rows[0]["over_encoder"])
            assert r["ms_min"] <= r["ms"]
        expected = unbounded if policy == "unbounded" else [min(n, 3) for n in unbounded]
        assert [r["memory_frames"] for r in rows] == expected, policy
        assert [r["evicted"] for r in rows] == [
            u - e for u, e in zip(unbounded, expected, strict=True)
        ]
        assert rows[0]["capacity"] == (None if policy == "unbounded" else 3)
        per_frame = {round(r["memory_mb"] / r["memory_frames"], 12) for r in rows}
        assert len(per_frame) == 1  # bank bytes are proportional to its frames
        assert all(r["rss_mb"] > 0 for r in rows)
    grows = [r["memory_mb"] for r in _by(pol, "policy", "unbounded")]
    assert grows == sorted(grows) and grows[-1] > grows[0]

    acc = tables["accuracy"]
    assert [r["method"] for r in acc] == ["unbounded", "fifo", "dynamic", "copy_first_mask"]
    js = [r["J"] for r in acc[:3]]
    assert all(0.0 <= j <= 1.0 for j in js) and js[0] == js[1] == js[2]
    assert len({r["n_videos"] for r in acc}) == 1 and acc[0]["n_videos"] >= 1
    assert acc[3]["ms_per_frame"] is None and acc[0]["ms_per_frame"] > 0

    out = Path(cfg.paths.output_dir)
    doc = json.loads((out / "inference.json").read_text())
    assert doc["tables"]["policies"] == json.loads(json.dumps(pol))
    assert doc["meta"]["settings"]["accuracy"]["capacity_frames"] == 10
    assert len(doc["meta"]["machine_before"]["load_average"]) == 3
    md = (out / "inference.md").read_text()
    for title in ("## precision", "## policies", "## accuracy", "| policy | capacity |"):
        assert title in md
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_data_tables_and_ratio_to_the_training_step(tmp_path):
    cfg = _bench_cfg(
        tmp_path,
        [
            "task=data",
            "loader.crop_size=48",
            "loader.n_batches=3",
            "loader.batch_size=2",
            "loader.workers=[0,1]",
            "loader.synthetic={n_videos: 3, n_frames: 8, size: [48, 64]}",
            "train_step.batch_size=3",
            "train_step.repeats=1",
            "train_step.warmup=0",
        ],
    )
    res = run(cfg)
    loader, (step,) = res["tables"]["loader"], res["tables"]["train_step"]
    assert [(r["loader"], r["workers"]) for r in loader] == [
        ("main", 0),
        ("main", 1),
        ("pretrain", 0),
        ("pretrain", 1),
    ]
    assert (step["batch_size"], step["clip_len"], step["size"]) == (3, 3, 48)
    assert step["clips_per_s"] == pytest.approx(3 / step["step_s"])
    for r in loader:
        assert r["crop_size"] == 48 and r["batch_size"] == 2 and r["batches"] == 3
        assert r["clips_per_s"] == pytest.approx(2 / r["s_per_batch"])
        # seconds for a training batch (3 clips at 2 per loader batch) over a step's seconds
        assert r["loader_over_step"] == pytest.approx(r["s_per_batch"] * 1.5 / step["step_s"])
        assert math.isfinite(r["first_batch_s"])
    out = Path(cfg.paths.output_dir)
    doc = json.loads((out / "data.json").read_text())
    assert doc["benchmark"] == "data" and doc["tables"]["train_step"][0]["batch_size"] == 3
    assert "## loader" in (out / "data.md").read_text()


def test_console_script_translates_the_task_and_rejects_a_missing_one(tmp_path):
    env = {**os.environ, "TCMN_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    args = [
        "model=tiny",
        "inference.parts=[precision]",
        "inference.precision.size=32",
        "inference.precision.repeats=1",
        f"hydra.run.dir={run_dir}",
    ]
    ok = subprocess.run(
        [str(CLI), "inference", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr
    assert "inference: precision" in ok.stdout and "load average" in ok.stdout
    doc = json.loads((run_dir / "inference.json").read_text())
    assert [r["precision"] for r in doc["tables"]["precision"]] == ["fp32", "bf16+channels_last"]
    assert list(doc["tables"]) == ["precision"]  # the other parts were not asked for


@pytest.mark.parametrize("task", [None, "speed"])
def test_a_missing_or_unknown_task_is_one_sentence_and_exit_2(tmp_path, capsys, task):
    from tcmn.cli._common import user_errors

    cfg = _bench_cfg(tmp_path, [] if task is None else [f"task={task}"])
    with pytest.raises(SystemExit) as e:
        user_errors(run)(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "`tcmn-bench inference` or `tcmn-bench data`" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written

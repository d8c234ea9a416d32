"""The inference session: one settings path (checkpoint, then overrides, validated), propagation
from masks at any frames in any direction, correction, streaming and cancel; and tcmn-predict
runs at the checkpoint's settings, giving the label maps tcmn-eval scored."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_NET, compose_cfg, small_synthetic
from test_propagator import OracleTCMN, moving_objects

from tcmn.errors import TCMNError
from tcmn.inference.propagator import PropagatorConfig
from tcmn.inference.session import InferenceSession, read_checkpoint, settle
from tcmn.io import read_label_map
from tcmn.models.network import TCMN

EXACT = dict(mem_every=1, top_k=None)


def oracle_session(**settings) -> InferenceSession:
    return InferenceSession.from_network(OracleTCMN(), {**EXACT, **settings})


def fake_checkpoint(path: Path, propagation: dict, net: dict | None = None, seed: int = 0) -> Path:
    """A checkpoint as tcmn-train writes it (network settings, weights, propagation settings)."""
    torch.manual_seed(seed)
    model = TCMN(**{**TINY_NET, **(net or {})})
    torch.save(
        {
            "hyper_parameters": {
                "net": TINY_NET,
                "loss": {"eps": 1e-3},
                "propagation": propagation,
            },
            "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


# ------------------------------------------------------------------------------- settings
def test_settle_checkpoint_then_overrides_then_device():
    stored = PropagatorConfig(size=192, mem_every=3, top_k=10)
    s = settle(stored, {"mem_every": 1, "top_k": "ckpt", "size": "ckpt"}, "cpu")
    assert (s.size, s.mem_every, s.top_k, s.device) == (192, 1, 10, "cpu")
    assert settle(None).to_dict() == PropagatorConfig().to_dict()  # the paper's defaults


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"mem_every": 0}, ["propagation.mem_every=0", ">= 1"]),
        ({"capacity_frames": -3, "policy": "fifo"}, ["capacity_frames=-3", "positive"]),
        ({"capacity_frames": 0}, ["capacity_frames=0"]),
        ({"policy": "fifo"}, ["fifo", "capacity_frames"]),
        ({"policy": "lru"}, ["policy 'lru'", "unbounded"]),
        ({"precision": "fp8"}, ["propagation.precision='fp8'", "bf16"]),
        ({"top_k": 0}, ["propagation.top_k=0"]),
        ({"size": 8}, ["propagation.size=8", ">= 16"]),
        ({"channels_last": "yes"}, ["channels_last"]),
        ({"memevery": 2}, ["propagation.memevery", "mem_every"]),
    ],
)
def test_bad_settings_are_one_sentence(overrides, words):
    with pytest.raises(TCMNError) as e:
        settle(None, overrides)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device, words", [("cuda", ["no CUDA GPU"]), ("tpu9", ["device=tpu9"])])
def test_missing_or_unknown_device_is_refused_up_front(device, words):
    with pytest.raises(TCMNError) as e:
        settle(None, None, device)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_read_checkpoint_loads_weights_and_settings(tmp_path):
    ck = fake_checkpoint(tmp_path / "a.ckpt", {"size": 48, "mem_every": 2})
    net, hp = read_checkpoint(ck)
    torch.manual_seed(0)
    ref = TCMN(**TINY_NET)
    pairs = list(zip(net.state_dict().values(), ref.state_dict().values(), strict=True))
    assert pairs and all(torch.equal(a, b) for a, b in pairs)
    assert hp["propagation"] == {"size": 48, "mem_every": 2}
    s = InferenceSession.load(ck, {"mem_every": "ckpt"}, "cpu")
    assert (s.settings.size, s.settings.mem_every, s.weights) == (48, 2, str(ck))


def test_bad_checkpoints_are_one_sentence(tmp_path):
    good = fake_checkpoint(tmp_path / "good.ckpt", {})
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:1000])
    other = fake_checkpoint(tmp_path / "other.ckpt", {}, net={"value_dim": 16})  # weights differ
    junk = tmp_path / "junk.ckpt"
    torch.save({"state_dict": {}}, junk)
    for path, words in [
        (cut, ["cut.ckpt", "truncated"]),
        (other, ["other.ckpt", "do not match"]),
        (junk, ["junk.ckpt", "not a TCMN checkpoint"]),
        (tmp_path / "none.ckpt", ["none.ckpt", "not found"]),
    ]:
        with pytest.raises(TCMNError) as e:
            read_checkpoint(path)
        assert all(w in str(e.value) for w in words) and "\n" not in str(e.value), str(e.value)


# ---------------------------------------------------------------------------- propagation
def test_forward_from_the_first_mask_recovers_the_motion():
    frames, labels = moving_objects()
    res = list(oracle_session().propagate(frames, {0: (labels[0], None)}))
    assert [r.index for r in res] == list(range(len(frames)))
    assert res[0].given and not any(r.given for r in res[1:])
    for r in res:
        assert np.array_equal(r.labels, labels[r.index]), r.index
        assert r.confidence > 0.9 and r.area == pytest.approx((labels[r.index] > 0).mean())


def test_backward_and_both_ways_from_a_middle_frame():
    frames, labels = moving_objects()
    s = oracle_session()
    back = [r.index for r in s.propagate(frames, {5: (labels[5], None)}, "backward")]
    assert back == list(range(5, -1, -1))
    both = list(s.propagate(frames, {5: (labels[5], None)}, "both"))
    assert sorted(r.index for r in both) == list(range(len(frames)))  # frame 5 once
    assert all(np.array_equal(r.labels, labels[r.index]) for r in both)


def test_a_mask_added_later_propagates_again_from_its_frame():
    """Object 1 given at frame 0 and propagated; object 2 drawn at frame 6 afterwards:
    propagating again from 6 segments both objects there on, with frame 0 still in memory."""
    frames, labels = moving_objects()
    only1 = np.where(labels[0] == 1, 1, 0).astype(np.uint8)
    s = oracle_session()
    first = {r.index: r.labels for r in s.propagate(frames, {0: (only1, None)})}
    assert not (first[8] == 2).any() and (first[8] == 1).any()
    only2 = np.where(labels[6] == 2, 2, 0).astype(np.uint8)
    given = {0: (only1, None), 6: (only2, None)}
    again = list(s.propagate(frames, given, start=6))
    assert [r.index for r in again] == list(range(6, len(frames)))
    assert again[0].given and not any(r.given for r in again[1:])
    assert all(np.array_equal(r.labels, labels[r.index]) for r in again)
    assert s.engine.memory.frame_ids[0] == 0 and s.engine.object_ids == [1, 2]


def test_results_stream_to_a_callback_and_cancel_stops():
    frames, labels = moving_objects()
    s = oracle_session()
    seen = []

    def on_frame(r):
        seen.append(r.index)
        if len(seen) == 3:
            s.cancel()

    out = [r.index for r in s.propagate(frames, {0: (labels[0], None)}, on_frame=on_frame)]
    assert out == seen == [0, 1, 2]
    assert not s.busy
    assert len(list(s.propagate(frames, {0: (labels[0], None)}))) == len(frames)  # usable again


def test_one_propagation_at_a_time():
    frames, labels = moving_objects()
    s = oracle_session()
    it = s.propagate(frames, {0: (labels[0], None)})
    next(it)
    assert s.busy
    with pytest.raises(TCMNError, match="already running"):
        next(s.propagate(frames, {0: (labels[0], None)}))
    it.close()
    assert not s.busy


@pytest.mark.parametrize(
    "given, kw, words",
    [
        ({}, {}, ["at least one frame"]),
        ({20: None}, {}, ["frame 20", "beyond"]),
        ({3: None}, {"start": 1}, ["start=1", "before it"]),
        ({3: None}, {"direction": "sideways"}, ["direction=sideways"]),
    ],
)
def test_bad_propagation_requests(given, kw, words):
    frames, labels = moving_objects()
    g = {k: (labels[min(k, len(frames) - 1)], None) for k in given}
    with pytest.raises(TCMNError) as e:
        next(oracle_session().propagate(frames, g, **kw))
    assert all(w in str(e.value) for w in words), str(e.value)


# ------------------------------------------------------------------- predict == eval masks
def test_predict_uses_the_checkpoint_settings_and_equals_eval_masks(tmp_path):
    """A checkpoint validated at 48 px: tcmn-predict runs at 48 px (its manifest says so) and
    writes the label maps tcmn-eval save_masks=true writes for the same video."""
    from tcmn.cli.predict import predict
    from tcmn.data.layout import PreparedDataset
    from tcmn.experiment import compose_config, run_eval

    data = small_synthetic(tmp_path / "data", 5, test_fraction=0.4)
    ck = fake_checkpoint(tmp_path / "m.ckpt", {"size": 48, "mem_every": 2, "top_k": 20})
    ev = compose_config(
        "eval", [f"ckpt={ck}", "save_masks=true", "data.eval_size=48"], tmp_path / "eval", data
    )
    summary = run_eval(ev)
    assert summary["propagation"]["size"] == 48
    masks = Path(summary["masks"])
    videos = sorted(p.name for p in masks.iterdir())
    assert videos
    ds = PreparedDataset(data / "synthetic")
    video = videos[0]
    meta = ds.videos[video]
    first = meta.annotated_indices[0]
    pr = compose_cfg(
        "predict",
        [
            f"input={ds.root / 'JPEGImages' / video}",
            f"mask={ds.mask_path(video, meta.stems[first])}",
            f"mask_frame={first}",
            f"ckpt={ck}",
            f"out={tmp_path / 'pred'}",
            "write_overlay=false",
        ],
        tmp_path / "predict",
    )
    predict(pr)
    manifest = json.loads((tmp_path / "pred" / "manifest.json").read_text())
    assert manifest["settings"]["propagation"]["size"] == 48
    assert manifest["settings"]["propagation"]["mem_every"] == 2
    stems = meta.stems
    assert sorted(p.stem for p in (masks / video).iterdir()) == sorted(stems)
    compared = 0
    for t, stem in enumerate(stems):
        if t < first:
            continue
        a = read_label_map(masks / video / f"{stem}.png")
        b = read_label_map(tmp_path / "pred" / "masks" / f"{stem}.png")
        assert a.shape == b.shape == ds.read_mask(video, meta.annotated[0]).shape
        assert np.array_equal(a, b), stem
        compared += 1
    assert compared == len(stems) - first > 2


def test_cancel_from_another_thread():
    """The app cancels from its request thread while a worker thread propagates."""
    frames, labels = moving_objects(t=40)
    s = oracle_session()
    reached, gate = threading.Event(), threading.Event()
    got: list[int] = []

    def on_frame(r):
        if r.index == 2:
            reached.set()
            gate.wait(10)

    def run():
        got.extend(r.index for r in s.propagate(frames, {0: (labels[0], None)}, on_frame=on_frame))

    th = threading.Thread(target=run)
    th.start()
    assert reached.wait(10)
    s.cancel()
    gate.set()
    th.join(10)
    assert not th.is_alive() and got == [0, 1, 2] and not s.busy

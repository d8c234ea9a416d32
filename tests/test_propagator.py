"""Streaming propagation: an oracle model recovers known motion; memory policies keep their capacity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tcmn.inference.memory import MemoryBank
from tcmn.inference.session import InferenceSession
from tcmn.models.encoders import QueryFeatures
from tcmn.models.network import TCMN

CELL = 16
COLORS = {0: (20, 20, 20), 1: (250, 30, 30), 2: (30, 250, 30)}


class OracleTCMN(TCMN):
    """A TCMN whose features make the right answer unique: the key of a 16x16 cell is the one-hot
    colour of the cell (background / red / green), the value the object's mask in the cell, and
    the decoder turns the readout into a sharp logit. Propagation through memory is then exact."""

    def __init__(self):
        super().__init__("resnet18", "resnet18", 3, 8, 8, (8, 8, 8))

    def encode_key(self, frames):
        f = F.avg_pool2d(frames, CELL)
        red, green = f[:, 0] > 1.0, f[:, 1] > 1.0
        bg = ~(red | green)
        key = torch.stack([bg, red, green], 1).float() * 10
        z = torch.zeros_like(key[:, :1])
        return QueryFeatures(key, z, z, z, z)

    def encode_value(self, frames, f16, masks, others=None):
        return F.avg_pool2d(masks.float(), CELL).unsqueeze(2)  # [B, O, 1, h, w]

    def decode(self, qf, memory_readout):
        r = memory_readout[:, :, 0]
        r = F.interpolate(r, scale_factor=CELL, mode="nearest")
        return 40 * (r - 0.5)


def moving_objects(t=12, h=96, w=128, reverse=False):
    """Two coloured squares (one cell big) moving one cell per frame on a dark background."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    labels = np.zeros((t, h, w), np.uint8)
    frames[:] = COLORS[0]
    for i in range(t):
        for oid, (y0, x0, dy, dx) in {1: (0, 0, 1, 1), 2: (4, 6, -1, 0)}.items():
            y = (y0 + dy * (i // 2)) % (h // CELL) * CELL
            x = (x0 + dx * (i // 2)) % (w // CELL) * CELL
            frames[i, y : y + CELL, x : x + CELL] = COLORS[oid]
            labels[i, y : y + CELL, x : x + CELL] = oid
    if reverse:
        return frames[::-1].copy(), labels[::-1].copy()
    return frames, labels


def oracle(**settings) -> InferenceSession:
    """An inference session over the oracle network."""
    return InferenceSession.from_network(OracleTCMN(), settings)


def labels_by_frame(session: InferenceSession, frames, given, **kw) -> dict[int, np.ndarray]:
    """frame index -> predicted label map of one propagation."""
    return {r.index: r.labels for r in session.propagate(frames, given, **kw)}


@pytest.mark.parametrize("policy", ["unbounded", "fifo", "dynamic"])
def test_oracle_recovers_known_motion(policy):
    frames, labels = moving_objects()
    s = oracle(policy=policy, capacity_frames=3, mem_every=1, top_k=None)
    out = labels_by_frame(s, frames, {0: (labels[0], None)})
    assert sorted(out) == list(range(len(frames)))
    for i in range(1, len(frames)):
        np.testing.assert_array_equal(out[i], labels[i], err_msg=f"frame {i}")
    assert s.engine.object_ids == [1, 2]


def test_backward_mirrors_forward_on_reversed_video():
    frames, labels = moving_objects()
    rf, rl = frames[::-1].copy(), labels[::-1].copy()
    cfg = dict(mem_every=2, top_k=None)
    fwd = labels_by_frame(oracle(**cfg), rf, {0: (rl[0], None)})
    n = len(frames)
    bwd = labels_by_frame(
        oracle(**cfg), frames, {n - 1: (labels[n - 1], None)}, direction="backward"
    )
    assert len(fwd) == len(bwd) == n
    for i in range(n):
        np.testing.assert_array_equal(bwd[n - 1 - i], fwd[i])
        np.testing.assert_array_equal(bwd[n - 1 - i], labels[n - 1 - i])


def test_both_directions_from_a_middle_frame():
    frames, labels = moving_objects()
    out = labels_by_frame(
        oracle(mem_every=1, top_k=None), frames, {5: (labels[5], None)}, direction="both"
    )
    assert sorted(out) == list(range(len(frames)))
    for i, lab in out.items():
        np.testing.assert_array_equal(lab, labels[i])


def test_mask_at_a_later_frame_adds_an_object():
    frames, labels = moving_objects()
    only1 = np.where(labels[0] == 1, 1, 0).astype(np.uint8)
    only2 = np.where(labels[4] == 2, 2, 0).astype(np.uint8)
    given = {0: (only1, None), 4: (only2, None)}
    out = labels_by_frame(oracle(mem_every=1, top_k=None), frames, given)
    for i in range(1, 4):
        np.testing.assert_array_equal(out[i], np.where(labels[i] == 1, 1, 0))
    for i in range(5, len(frames)):
        np.testing.assert_array_equal(out[i], labels[i])


def test_empty_given_mask_for_a_declared_object():
    frames, labels = moving_objects()
    s = oracle(mem_every=1, top_k=None)
    out = list(s.propagate(frames, {0: (np.zeros_like(labels[0]), [1, 2])}))
    assert len(out) == len(frames)
    assert all((r.labels == 0).all() for r in out)


def test_resized_processing_returns_native_size():
    frames, labels = moving_objects(h=96, w=128)
    out = labels_by_frame(oracle(mem_every=1, top_k=None, size=256), frames, {0: (labels[0], None)})
    assert out[3].shape == (96, 128)
    np.testing.assert_array_equal(out[3], labels[3])


def test_bf16_matches_fp32_on_the_oracle():
    frames, labels = moving_objects()
    given = {0: (labels[0], None)}
    a = list(labels_by_frame(oracle(top_k=None), frames, given).values())
    bf16 = oracle(top_k=None, precision="bf16", channels_last=True)
    b = list(labels_by_frame(bf16, frames, given).values())
    assert len(a) == len(frames) > 1
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _kv(i, o=1):
    return torch.full((1, 4, 2, 2), float(i)), torch.full((1, o, 8, 2, 2), float(i))


@pytest.mark.parametrize("policy", ["fifo", "dynamic"])
def test_bounded_policies_respect_capacity_over_a_long_stream(policy):
    bank = MemoryBank(policy, capacity_frames=5)
    k, v = _kv(0)
    bank.add(k, v, 0, permanent=True)
    for i in range(1, 500):
        if policy == "dynamic" and bank.size:
            usage = torch.ones(1, bank.size * 4)
            usage.view(1, bank.size, 4)[:, -1] = 5.0  # the newest frame is read most
            bank.record_usage(usage)
        bank.add(*_kv(i), i)
        assert bank.size <= 5
    assert bank.frame_ids[0] == 0 and bank.permanent[0]
    assert bank.evicted == 500 - 5
    if policy == "fifo":
        assert bank.frame_ids == [0, 496, 497, 498, 499]
    # keys / values stay aligned with the frame ids
    assert bank.keys[0, 0, :, 0, 0].tolist() == [float(i) for i in bank.frame_ids]
    assert bank.values[0, 0, 0, :, 0, 0].tolist() == [float(i) for i in bank.frame_ids]


def test_dynamic_policy_evicts_the_least_used_frame():
    bank = MemoryBank("dynamic", capacity_frames=3)
    for i in range(3):
        bank.add(*_kv(i), i, permanent=(i == 0))
    usage = torch.tensor([[1.0] * 4 + [0.1] * 4 + [3.0] * 4])  # frame 1 used least
    bank.record_usage(usage)
    bank.add(*_kv(3), 3)
    assert bank.frame_ids == [0, 2, 3]


def test_capacity_in_bytes():
    k, v = _kv(0)
    per_frame = k.numel() * 4 + v.numel() * 4
    bank = MemoryBank("fifo", capacity_bytes=3 * per_frame + 10)
    for i in range(10):
        bank.add(*_kv(i), i, permanent=(i == 0))
        assert bank.nbytes() <= 3 * per_frame + 10
    assert bank.size == 3 and bank.capacity() == 3


def test_unbounded_policy_keeps_everything_and_new_objects_pad_old_frames():
    bank = MemoryBank("unbounded")
    for i in range(20):
        bank.add(*_kv(i), i)
    assert bank.size == 20 and bank.capacity() is None
    bank.add(*_kv(20, o=2), 20)
    assert bank.values.shape[1] == 2
    assert bank.values[0, 1, :, :20].abs().sum() == 0

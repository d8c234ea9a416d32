"""Speed and memory benchmarks of inference (``tcmn-bench inference``).

Everything is measured in one process and reported as ratios against a baseline measured in the
same run (timings on a shared machine drift; ratios much less):

- ``precision``: time per frame of the model at ``size`` for fp32 and for bf16 + channels-last
  (GPU: fp16 too), and the ratio of a whole propagation step to the query encoder alone;
- ``policies``: per-frame time and resident memory around frames 10, 100 and 1000 of a long
  synthetic video for each memory policy (bounded policies must stay flat);
- ``accuracy``: J of each memory policy on the synthetic validation set (optional checkpoint).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil
import torch

from tcmn.inference.propagator import Propagator, PropagatorConfig
from tcmn.models.network import TCMN, pad_divisible


def _timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` smooth random RGB frames ``[n, size, size, 3]`` with a drifting bright disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
    import cv2

    base = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        cx = size / 2 + size / 4 * np.sin(i / 15)
        cy = size / 2 + size / 4 * np.cos(i / 20)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < (size / 8) ** 2
        f = base.copy()
        f[disc] = (230, 120, 110)
        out[i] = f
    return out


def _first_mask(frame_size: int) -> np.ndarray:
    size = frame_size
    yy, xx = np.mgrid[:size, :size]
    cx, cy = size / 2, size / 2 + size / 4
    return (((xx - cx) ** 2 + (yy - cy) ** 2) < (size / 8) ** 2).astype(np.uint8)


def bench_precision(
    model: TCMN, size: int = 384, device: str = "cpu", repeats: int = 5, memory_frames: int = 4
) -> list[dict[str, Any]]:
    """Per-frame time of one propagation step with ``memory_frames`` in memory, per precision.

    Each row: precision, query-encoder ms, step ms (encoder + readout + decoder, plus a value
    encoding amortised over ``mem_every`` = 5 frames), step / encoder ratio, and speed-up
    against fp32 of the same run.
    """
    modes = [("fp32", False), ("bf16", True)]
    if device.startswith("cuda"):
        modes = [("fp32", False), ("fp16", True), ("bf16", True)]
    rows = []
    frame = _frames(1, size)[0]
    mask = _first_mask(size)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for precision, channels_last in modes:
        prop = Propagator(
            model,
            PropagatorConfig(
                precision=precision, channels_last=channels_last, device=device, mem_every=1
            ),
        )
        for _ in range(memory_frames):
            prop.step(frame, mask)
        x, _ = pad_divisible(prop._frame_tensor(frame))

        def enc(prop=prop, x=x):
            with torch.inference_mode(), prop._autocast():
                prop.model.encode_key(x)
            sync()

        def step(prop=prop):
            prop.cfg.mem_every = 10**9  # no value pass here: measured separately
            prop.step(frame)
            sync()

        def value(prop=prop, x=x):
            with torch.inference_mode(), prop._autocast():
                qf = prop.model.encode_key(x)
                prop.model.encode_value(x, qf.f16, torch.ones(1, 1, *x.shape[-2:], device=x.device))
            sync()

        t_enc = _timeit(enc, repeats)
        t_step = _timeit(step, repeats)
        t_val = _timeit(value, repeats) - t_enc
        per_frame = t_step + t_val / 5
        rows.append(
            dict(
                precision=precision + ("+channels_last" if channels_last else ""),
                size=size,
                encoder_ms=1000 * t_enc,
                frame_ms=1000 * per_frame,
                frame_over_encoder=per_frame / t_enc,
            )
        )
        model.to_channels_last(False)
    base = rows[0]["frame_ms"]
    for r in rows:
        r["speedup_vs_fp32"] = base / r["frame_ms"]
    return rows


def bench_policies(
    model: TCMN,
    size: int = 192,
    n_frames: int = 1000,
    at: Sequence[int] = (10, 100, 1000),
    window: int = 5,
    capacity_frames: int = 10,
    precision: str = "bf16",
    policies: Sequence[str] = ("unbounded", "fifo", "dynamic"),
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Per-frame time and resident memory around the frames ``at`` of an ``n_frames`` video.

    Time at frame f is the median over frames ``f-window+1..f``; RSS is read at frame f; the
    memory size is the bank's keys + values. Bounded policies use ``capacity_frames``.
    """
    frames = _frames(n_frames, size)
    mask = _first_mask(size)
    proc = psutil.Process()
    rows = []
    for policy in policies:
        cfg = PropagatorConfig(
            policy=policy,
            capacity_frames=None if policy == "unbounded" else capacity_frames,
            precision=precision,
            channels_last=precision != "fp32",
            device=device,
        )
        prop = Propagator(model, cfg)
        times = []
        marks = {}
        for i in range(n_frames):
            t = time.perf_counter()
            prop.step(frames[i], mask if i == 0 else None)
            times.append(time.perf_counter() - t)
            if i + 1 in at:
                marks[i + 1] = dict(
                    ms=1000 * float(np.median(times[max(1, i + 1 - window) : i + 1])),
                    rss_mb=proc.memory_info().rss / 2**20,
                    memory_frames=prop.memory.size,
                    memory_mb=prop.memory.nbytes() / 2**20,
                )
        first = marks[min(marks)]["ms"]
        for f, m in sorted(marks.items()):
            rows.append(dict(policy=policy, frame=f, **m, time_vs_first=m["ms"] / first))
        model.to_channels_last(False)
        del prop
    return rows


def format_rows(rows: list[dict[str, Any]], title: str) -> str:
    """A small fixed-width table."""
    if not rows:
        return f"{title}: (no rows)"
    cols = list(rows[0])
    fmt = {c: (lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)) for c in cols}
    cells = [[fmt[c](r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


@contextlib.contextmanager
def threads(n: int | None):
    """Temporarily set torch's intra-op threads."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)

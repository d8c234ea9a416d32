"""Speed, memory and accuracy benchmarks of inference (``tcmn-bench inference``), the training
step measured against the data pipeline (``tcmn-bench data``), and their reports.

Everything is measured in one process and reported as ratios against a baseline measured in the
same run (timings on a shared machine drift; ratios much less):

- ``precision``: time per frame of the model at ``size`` for fp32 and for bf16 + channels-last
  (GPU: fp16 too), and the ratio of a whole propagation step to the query encoder alone;
- ``policies``: per-frame time and resident memory around frames 10, 100 and 1000 of a long
  synthetic video for each memory policy (bounded policies must stay flat);
- ``accuracy``: J / F / Dice of each memory policy on the validation set (needs a checkpoint),
  beside the copy-first-mask baseline;
- ``train step``: seconds of one optimisation step (forward, backward, Adam) of the model on a
  batch of training clips, the yardstick of the data loader's clips per second.

:func:`run_inference` and :func:`run_data` turn a composed ``conf/bench.yaml`` into these tables;
:func:`write_report` saves them as JSON and Markdown (atomically) in the run folder.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import json
import logging
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from tcmn.errors import TCMNError
from tcmn.inference.memory import POLICIES
from tcmn.inference.propagator import Propagator
from tcmn.inference.session import InferenceSession
from tcmn.models.network import TCMN, pad_divisible
from tcmn.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: Memory policies, in the order the tables list them.


def _timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Fastest seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    The minimum, not the median: on a shared machine other processes only ever add time, so the
    fastest run is the least disturbed estimate of the cost itself.
    """
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.min(ts))


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


def _encoder_fn(prop: Propagator, frame: np.ndarray, sync) -> Any:
    """A closure running the query encoder alone on ``frame`` as ``prop`` would."""
    x, _ = pad_divisible(prop._frame_tensor(frame))

    def enc() -> None:
        with torch.inference_mode(), prop._autocast():
            prop.model.encode_key(x)
        sync()

    return enc


def _sync(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def bench_precision(
    model: TCMN,
    size: int = 384,
    device: str = "cpu",
    repeats: int = 5,
    memory_frames: int = 4,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """Per-frame time of one propagation step with ``memory_frames`` in memory, per precision.

    The precisions (fp32; bf16 + channels-last; on a GPU also fp16 + channels-last) each get
    their own copy of ``model`` and are timed *interleaved*: every repeat runs the encoder, the
    step and the value encoding of each precision in turn, so a change of machine load hits
    every column alike and the ratios stay meaningful. Times are the fastest of ``repeats``.

    Returns:
        One dict per precision: ``precision``, ``size``, ``memory_frames``, ``encoder_ms``
        (query encoder alone), ``step_ms`` (a whole step that stores nothing: encoder + readout
        + decoder + pre/post processing), ``value_ms`` (one value encoding), ``frame_ms``
        (``step_ms`` + ``value_ms`` / 5: the paper stores every 5th frame),
        ``frame_over_encoder`` and ``speedup_vs_fp32`` (fp32's ``frame_ms`` over this row's).
    """
    modes = [("fp32", False), ("bf16", True)]
    if device.startswith("cuda"):
        modes = [("fp32", False), ("fp16", True), ("bf16", True)]
    frame = _frames(1, size)[0]
    mask = _first_mask(size)
    sync = _sync(device)
    setups = []
    for j, (precision, channels_last) in enumerate(modes):
        net = model if j == 0 and not channels_last else copy.deepcopy(model)
        prop = InferenceSession.from_network(
            net, dict(precision=precision, channels_last=channels_last, device=device, mem_every=1)
        ).engine
        for _ in range(memory_frames):
            prop.step(frame, mask)
        prop.cfg.mem_every = 10**9  # timed steps store nothing: the value pass is timed apart
        x, _ = pad_divisible(prop._frame_tensor(frame))
        ones = torch.ones(1, 1, *x.shape[-2:], device=x.device)

        def step(prop=prop) -> None:
            prop.step(frame)
            sync()

        def value(prop=prop, x=x, ones=ones) -> None:
            with torch.inference_mode(), prop._autocast():
                qf = prop.model.encode_key(x)
                prop.model.encode_value(x, qf.f16, ones)
            sync()

        label = precision + ("+channels_last" if channels_last else "")
        setups.append(
            (label, {"enc": _encoder_fn(prop, frame, sync), "step": step, "value": value})
        )
    times = {label: {k: [] for k in fns} for label, fns in setups}
    for r in range(warmup + repeats):
        for label, fns in setups:
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                if r >= warmup:
                    times[label][k].append(time.perf_counter() - t)
    rows = []
    for label, _ in setups:
        t_enc, t_step, t_encval = (min(times[label][k]) for k in ("enc", "step", "value"))
        t_val = max(0.0, t_encval - t_enc)  # noise can make it negative
        per_frame = t_step + t_val / 5
        rows.append(
            dict(
                precision=label,
                size=size,
                memory_frames=memory_frames,
                encoder_ms=1000 * t_enc,
                step_ms=1000 * t_step,
                value_ms=1000 * t_val,
                frame_ms=1000 * per_frame,
                frame_over_encoder=per_frame / t_enc,
            )
        )
    base = rows[0]["frame_ms"]
    for r in rows:
        r["speedup_vs_fp32"] = base / r["frame_ms"]
    return rows


def bench_policies(
    model: TCMN,
    size: int = 192,
    n_frames: int = 1000,
    at: Sequence[int] = (10, 100, 1000),
    window: int = 9,
    capacity_frames: int = 10,
    precision: str = "bf16",
    policies: Sequence[str] = tuple(POLICIES),
    device: str = "cpu",
    mem_every: int = 5,
) -> list[dict[str, Any]]:
    """Per-frame time and resident memory around the frames ``at`` of an ``n_frames`` video.

    Time at frame f is taken over the steps of frames ``f-window+1..f`` (frame 1, which stores
    the given mask, excluded): their median (``ms``) and their minimum (``ms_min``). After each
    of these steps the query encoder alone is timed on the same frame (``encoder_ms``, the
    minimum), so ``over_encoder`` = ``ms_min`` / ``encoder_ms`` is a cost measured against a
    yardstick taken at the same moment: it does not drift with the machine's load, and
    ``growth`` (``over_encoder`` over its value at the first reported frame of the same policy)
    is how much a step costs more along the video. RSS is the process's resident memory read at
    frame f (the policies run one after the other, the freed heap given back to the OS between
    them); the memory size is the bank's keys + values. Bounded policies use
    ``capacity_frames``.

    Args:
        model: the network (its weights do not change the timing).
        size: side of the square synthetic frames.
        n_frames: length of the synthetic video.
        at: 1-based frame numbers to report, each within ``2..n_frames``.
        window: steps per estimate (at most the first reported frame - 1).
        capacity_frames: capacity of the bounded policies.
        precision: ``fp32`` or ``bf16`` / ``fp16`` (then channels-last as well).
        policies: memory policies to run.
        device: torch device.
        mem_every: a frame enters memory every ``mem_every`` frames (the paper: 5).
    Returns:
        One dict per (policy, frame): ``policy``, ``capacity`` (None: unbounded), ``frame``,
        ``ms``, ``ms_min``, ``encoder_ms``, ``over_encoder``, ``growth``, ``rss_mb``,
        ``memory_frames``, ``memory_mb``, ``evicted``.
    """
    at = sorted({int(f) for f in at})
    if not at or at[0] < 2 or at[-1] > n_frames:
        raise ValueError(f"frames to report {at} must lie within 2..n_frames={n_frames}")
    frames = _frames(n_frames, size)
    mask = _first_mask(size)
    sync = _sync(device)
    timed = {i for f in at for i in range(max(1, f - window), f)}  # 0-based steps in windows
    proc = psutil.Process()
    rows = []
    for policy in policies:
        prop = InferenceSession.from_network(
            model,
            dict(
                policy=policy,
                capacity_frames=capacity_frames if POLICIES[policy][0] else None,
                precision=precision,
                channels_last=precision != "fp32",
                device=device,
                mem_every=mem_every,
            ),
        ).engine
        steps: list[float] = []
        encs: list[float] = []
        marks = {}
        t_policy = time.perf_counter()
        for i in range(n_frames):
            t = time.perf_counter()
            prop.step(frames[i], mask if i == 0 else None)
            sync()
            if i in timed:
                steps.append(time.perf_counter() - t)
                enc = _encoder_fn(prop, frames[i], sync)
                t = time.perf_counter()
                enc()
                encs.append(time.perf_counter() - t)
            if i + 1 in at:
                marks[i + 1] = dict(  # the steps of this window (cleared after each mark)
                    ms=1000 * float(np.median(steps)),
                    ms_min=1000 * float(np.min(steps)),
                    encoder_ms=1000 * float(np.min(encs)),
                    rss_mb=proc.memory_info().rss / 2**20,
                    memory_frames=prop.memory.size,
                    memory_mb=prop.memory.nbytes() / 2**20,
                    evicted=prop.memory.evicted,
                )
                steps.clear()
                encs.clear()
        log.info(
            "policies: %s, %d frames in %.0fs", policy, n_frames, time.perf_counter() - t_policy
        )
        first = None
        for f, m in sorted(marks.items()):
            over = m["ms_min"] / m["encoder_ms"]
            first = over if first is None else first
            rows.append(
                dict(
                    policy=policy,
                    capacity=prop.memory.capacity(),
                    frame=f,
                    ms=m["ms"],
                    ms_min=m["ms_min"],
                    encoder_ms=m["encoder_ms"],
                    over_encoder=over,
                    growth=over / first,
                    **{k: m[k] for k in ("rss_mb", "memory_frames", "memory_mb", "evicted")},
                )
            )
        model.to_channels_last(False)
        del prop
        _release_memory()
    return rows


def _release_memory() -> None:
    """Give freed heap back to the OS (glibc ``malloc_trim``; elsewhere only ``gc.collect``), so
    that the next policy's RSS does not include the heap the previous one kept."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def bench_accuracy(
    model: TCMN,
    items: Iterable[Mapping[str, Any]],
    vocab: Mapping[str, Sequence[str]],
    propagation: Mapping[str, Any] | None = None,
    policies: Sequence[str] = tuple(POLICIES),
    capacity_frames: int = 3,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """J, F and Dice of each memory policy on whole validation videos, with the same network.

    Args:
        model: the (trained) network.
        items: re-iterable whole-video items (the data module's val loader: ``frames``,
            ``labels``, ``annotated``, ``objects``, ``given_frames``, ``video``, ``dataset``).
        vocab: ``datasets`` / ``classes`` / ``videos`` names for :class:`~tcmn.metrics.VOSMetric`.
        propagation: base :class:`PropagatorConfig` settings (the checkpoint's, with overrides);
            ``policy`` and ``capacity_frames`` are set per row.
        policies: memory policies to compare.
        capacity_frames: capacity of the bounded policies (small, so that it binds on short
            videos: the synthetic ones have 20 frames, 4-5 memory frames at ``mem_every`` 5).
        device: torch device.
    Returns:
        One dict per policy, then one for the ``copy_first_mask`` baseline: ``method``,
        ``capacity``, ``mem_every``, ``J``, ``F``, ``Dice``, ``J&F``, ``n_videos``,
        ``ms_per_frame`` (None for the baseline).
    """
    from tcmn.evaluation import copy_first_mask, metric_args, numpy_item, predict_video
    from tcmn.metrics import VOSMetric

    base = {**dict(propagation or {}), "device": device, "capacity_bytes": None}
    metrics = {p: VOSMetric(**vocab) for p in [*policies, "copy_first_mask"]}
    seconds = dict.fromkeys(policies, 0.0)
    n_frames = 0
    sessions = {
        p: InferenceSession.from_network(
            model,
            base,
            {"policy": p, "capacity_frames": capacity_frames if POLICIES[p][0] else None},
        )
        for p in policies
    }
    for raw in items:
        item = numpy_item(raw)
        if not item["given_frames"]:
            continue
        args = metric_args(item)
        n_frames += len(item["labels"])
        for p, session in sessions.items():
            t = time.perf_counter()
            pred = predict_video(session, item)
            seconds[p] += time.perf_counter() - t
            metrics[p].update(pred, **args)
        metrics["copy_first_mask"].update(copy_first_mask(item), **args)
    if n_frames == 0:
        raise TCMNError(
            "the validation set has no video with a given mask; check data= and its splits."
        )
    rows = []
    for name, metric in metrics.items():
        s = metric.compute().summary
        session = sessions.get(name)
        prop = None if session is None else session.engine
        rows.append(
            dict(
                method=name,
                capacity=None if prop is None else prop.memory.capacity(),
                mem_every=None if prop is None else prop.cfg.mem_every,
                J=s["J"],
                F=s["F"],
                Dice=s["Dice"],
                **{"J&F": s["J&F"]},
                n_videos=int(s["n_videos"]),
                ms_per_frame=None if prop is None else 1000 * seconds[name] / n_frames,
            )
        )
    return rows


def bench_train_step(
    module: torch.nn.Module,
    batch: Mapping[str, Any],
    repeats: int = 2,
    warmup: int = 1,
    precision: str = "32-true",
) -> dict[str, Any]:
    """Seconds of one training step (forward, loss, backward, optimiser step) on ``batch``.

    Args:
        module: a :class:`~tcmn.lit_module.TCMNModule` (``module(batch)`` returns the network
            output and the loss; ``configure_optimizers`` gives its optimiser).
        batch: a training batch (``frames [B, T, 3, S, S]`` ...), as the train loader yields.
        repeats: timed steps (the median is reported).
        warmup: untimed steps first (allocations, oneDNN kernel selection).
        precision: ``32-true`` or ``bf16-mixed`` (autocast, as Lightning's trainer would).
    Returns:
        ``batch_size``, ``clip_len``, ``size``, ``precision``, ``step_s``, ``clips_per_s``,
        ``peak_rss_mb`` (the process's peak resident memory so far).
    """
    if precision not in ("32-true", "32", "bf16-mixed"):
        raise TCMNError(f"train_step.precision={precision}: use 32-true or bf16-mixed.")
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, Mapping) else opt
    module.train()
    device = next(module.parameters()).device
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else contextlib.nullcontext()
    )

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            _, res = module(batch)
        res.loss.backward()
        opt.step()

    t = _timeit(step, repeats, warmup)
    b, clip_len = batch["frames"].shape[:2]
    return dict(
        batch_size=int(b),
        clip_len=int(clip_len),
        size=int(batch["frames"].shape[-1]),
        precision=precision,
        step_s=t,
        clips_per_s=b / t,
        peak_rss_mb=_peak_rss_mb(),
    )


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB; ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10


def machine_info() -> dict[str, Any]:
    """What the timings depend on: CPU, cores, torch threads and version, load average, GPU."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": _load(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS does not say)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def format_rows(rows: list[dict[str, Any]], title: str) -> str:
    """A small fixed-width table (the columns of the first row; floats to 3 significant digits)."""
    if not rows:
        return f"{title}: (no rows)"
    cols = list(rows[0])
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
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


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as a GitHub-flavoured Markdown table."""
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | os.PathLike,
    name: str,
    tables: Mapping[str, list[dict[str, Any]]],
    meta: Mapping[str, Any],
    notes: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (atomically) into ``out_dir``.

    Args:
        out_dir: the run folder.
        name: file stem (``inference`` or ``data``).
        tables: title -> rows.
        meta: settings and machine information (stored in both files).
        notes: optional title -> sentence printed under that table in the Markdown.
    Returns:
        The paths of the JSON and the Markdown file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "meta": dict(meta), "tables": {k: list(v) for k, v in tables.items()}}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_text(json_path, json.dumps(doc, indent=1, default=str, allow_nan=True) + "\n")
    md = [f"# tcmn-bench {name}", ""]
    md += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    for title, rows in tables.items():
        md += [f"## {title}", "", markdown_table(list(rows))]
        if notes and title in notes:
            md += [notes[title], ""]
    atomic_write_text(md_path, "\n".join(md))
    return json_path, md_path


# ------------------------------------------------------------------------------- runs from config
def _container(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def timing_network(net_cfg: Mapping[str, Any]) -> TCMN:
    """The network of ``net_cfg`` with random weights (timings do not depend on weights, and no
    backbone weights are downloaded)."""
    kw = {**dict(net_cfg), "pretrained": None, "query_weights": None, "value_weights": None}
    return TCMN(**kw)


def run_inference(cfg: Any) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """``tcmn-bench inference``: the precision, policies and (with ``ckpt``) accuracy tables.

    Args:
        cfg: the composed ``conf/bench.yaml`` (``model``, ``data``, ``device``, ``ckpt`` and the
            ``inference`` section).
    Returns:
        ``(tables, settings)``: title -> rows, and the settings used (for the report).
    """
    c = _container(cfg.inference)
    parts = list(c["parts"])
    unknown = sorted(set(parts) - {"precision", "policies", "accuracy"})
    if unknown:
        raise TCMNError(
            f"inference.parts: unknown part(s) {unknown}; choose from precision, policies, accuracy."
        )
    device = str(cfg.device)
    net_cfg = _container(cfg.model.net)
    settings: dict[str, Any] = {"device": device, "model": net_cfg}
    tables: dict[str, list[dict[str, Any]]] = {}
    if "precision" in parts or "policies" in parts:
        net = timing_network(net_cfg).eval()
        if "precision" in parts:
            p = c["precision"]
            log.info("precision: %s", p)
            tables["precision"] = bench_precision(net, device=device, **p)
            settings["precision"] = p
        if "policies" in parts:
            p = c["policies"]
            log.info("policies: %s", p)
            tables["policies"] = bench_policies(net, device=device, **p)
            settings["policies"] = p
        del net
    if "accuracy" in parts:
        if not cfg.get("ckpt"):
            log.warning("accuracy: skipped, it needs a trained network; pass ckpt=PATH.")
        else:
            tables["accuracy"], settings["accuracy"] = _accuracy(cfg, c["accuracy"], device)
    return tables, settings


def _accuracy(cfg: Any, a: Mapping[str, Any], device: str):
    from hydra.utils import instantiate

    session = InferenceSession.load(cfg.ckpt, a.get("propagation"), device)
    propagation = session.settings.to_dict()
    extra = {} if a.get("max_videos") is None else {"max_eval_videos": int(a["max_videos"])}
    dm = instantiate(cfg.data, _convert_="all", num_workers=0, **extra)
    dm.prepare_data()
    dm.setup("validate")
    vocab = dict(datasets=dm.dataset_names(), classes=dm.class_names(), videos=dm.video_names())
    log.info("accuracy: %s on %s (val)", a, vocab["datasets"])
    rows = bench_accuracy(
        session.net,
        dm.val_dataloader(),
        vocab,
        propagation,
        policies=a["policies"],
        capacity_frames=int(a["capacity_frames"]),
        device=device,
    )
    return rows, {**dict(a), "ckpt": str(cfg.ckpt), "propagation": propagation}


def run_data(cfg: Any) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """``tcmn-bench data``: loader clips/s (``bench_data``) against one training step of
    ``model`` on a batch of the same loader, measured in this process.

    Args:
        cfg: the composed ``conf/bench.yaml`` (``model``, ``seed`` and the ``loader`` and
            ``train_step`` sections).
    Returns:
        ``(tables, settings)``: ``loader`` rows (with ``loader_over_step``: seconds the loader
        takes per batch over seconds of a training step; below 1 the loader keeps up) and the
        ``train_step`` row.
    """
    from tcmn.data.bench import BENCH_SYNTHETIC, bench_data, training_batch
    from tcmn.lit_module import TCMNModule

    lc = _container(cfg.loader)
    tc = _container(cfg.train_step)
    synthetic = dict(lc.pop("synthetic", None) or BENCH_SYNTHETIC)
    seed = int(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="tcmn-bench-") as tmp:
        log.info("loader: %s", lc)
        loader_rows = bench_data(data_dir=tmp, synthetic=synthetic, seed=seed, **lc)
        batch = training_batch(
            tmp,
            crop_size=int(lc.get("crop_size", 384)),
            batch_size=int(tc["batch_size"]),
            synthetic=synthetic,
            seed=seed,
        )
    model = {k: v for k, v in _container(cfg.model).items() if k not in ("_target_", "init_from")}
    model["net"] = {
        **model["net"],
        "pretrained": None,
        "query_weights": None,
        "value_weights": None,
    }
    module = TCMNModule(**model).to(cfg.device)
    batch = {k: v.to(cfg.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    log.info("train step: %s", tc)
    step = bench_train_step(
        module,
        batch,
        repeats=int(tc["repeats"]),
        warmup=int(tc["warmup"]),
        precision=str(tc["precision"]),
    )
    for r in loader_rows:
        r["loader_over_step"] = (
            r["s_per_batch"] * step["batch_size"] / r["batch_size"] / step["step_s"]
        )
    settings = {"loader": {**lc, "synthetic": synthetic}, "train_step": tc, "seed": seed}
    return {"loader": loader_rows, "train_step": [step]}, settings

"""Data-pipeline throughput: clips per second of the training loaders (``tcmn-bench data``).

Measures the main-stage loader (video clips) and the pretraining loader (pseudo-clips with
random objects), both with the full default augmentation, on a generated synthetic dataset, for
each number of workers. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tcmn.data.datamodule import VOSDataModule

#: The synthetic set measured by default: CVC-ClinicDB-sized frames (288 x 384).
BENCH_SYNTHETIC: dict[str, Any] = {"n_videos": 6, "n_frames": 20, "size": (288, 384)}


def bench_data(
    crop_size: int = 384,
    workers: Sequence[int] = (0, 2),
    n_batches: int = 20,
    batch_size: int = 8,
    stages: Sequence[str] = ("main", "pretrain"),
    data_dir: str | os.PathLike | None = None,
    synthetic: Mapping[str, Any] | None = None,
    random_object_p: float = 0.5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time ``n_batches`` training batches of each loader (one fresh loader per measurement).

    The first batch (worker start-up, cache filling) is timed apart (``first_batch_s``);
    ``clips_per_s`` counts the batches after it, so with workers it is a steady-state rate
    (batches prefetched while the first was being made bias it by at most ``workers - 1``
    batches: keep ``n_batches`` well above the worker count).

    Args:
        crop_size: training crop (pixels).
        workers: loader worker counts to measure.
        n_batches: batches per measurement (>= 2).
        batch_size: clips per batch.
        stages: ``main`` (video clips) and/or ``pretrain`` (pseudo-clips).
        data_dir: where the synthetic dataset lives (generated when missing); default a
            temporary folder removed afterwards.
        synthetic: ``generate_synthetic`` arguments (default :data:`BENCH_SYNTHETIC`).
        random_object_p: share of random-object pseudo-clips in the pretrain loader.
        seed: sampling seed.
    Returns:
        One dict per (stage, workers): ``loader``, ``workers``, ``crop_size``, ``batch_size``,
        ``batches``, ``first_batch_s``, ``s_per_batch``, ``clips_per_s``.
    """
    if n_batches < 2:
        raise ValueError("n_batches must be at least 2")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tcmn-bench-data-") as tmp:
        root = Path(data_dir) if data_dir is not None else Path(tmp)
        for stage in stages:
            for w in workers:
                dm = VOSDataModule(
                    root,
                    train=["synthetic"],
                    stage=stage,
                    crop_size=crop_size,
                    batch_size=batch_size,
                    num_workers=int(w),
                    samples_per_epoch=n_batches * batch_size,
                    pseudo={"random_object_p": random_object_p},
                    synthetic=dict(synthetic or BENCH_SYNTHETIC),
                    seed=seed,
                )
                dm.prepare_data()
                dm.setup("fit")
                loader = dm.train_dataloader()
                t0 = time.perf_counter()
                it = iter(loader)
                next(it)
                t1 = time.perf_counter()
                for _ in range(n_batches - 1):
                    next(it)
                dt = time.perf_counter() - t1
                del it, loader
                rows.append(
                    {
                        "loader": stage,
                        "workers": int(w),
                        "crop_size": crop_size,
                        "batch_size": batch_size,
                        "batches": n_batches,
                        "first_batch_s": t1 - t0,
                        "s_per_batch": dt / (n_batches - 1),
                        "clips_per_s": (n_batches - 1) * batch_size / dt,
                    }
                )
    return rows


def training_batch(
    data_dir: str | os.PathLike,
    crop_size: int = 384,
    batch_size: int = 8,
    stage: str = "main",
    synthetic: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One training batch of the ``stage`` loader on the synthetic set in ``data_dir``
    (generated there when missing), for timing a training step on real-looking input.

    Returns:
        The batch dict of :mod:`tcmn.data.clips` (``frames`` float ``[B, T, 3, S, S]``,
        ``masks``, ``labels``, ``valid`` ...), made in this process (no workers).
    """
    dm = VOSDataModule(
        Path(data_dir),
        train=["synthetic"],
        stage=stage,
        crop_size=crop_size,
        batch_size=batch_size,
        num_workers=0,
        samples_per_epoch=batch_size,
        synthetic=dict(synthetic or BENCH_SYNTHETIC),
        seed=seed,
    )
    dm.prepare_data()
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))

"""``tcmn-bench``: speed, memory and accuracy benchmarks (``conf/bench.yaml``).

::

    tcmn-bench inference [ckpt=PATH] [threads=N] [inference.parts=[precision,policies]]
    tcmn-bench data [loader.n_batches=10] [train_step.precision=bf16-mixed]

``inference``: time per frame at 384x384 in fp32 and bf16 + channels-last, a frame against the
query encoder alone, per-frame time and memory along a long video for each memory policy, and
(with ``ckpt=``) J of each policy on the validation set. ``data``: clips per second of the
training loaders against one training step of the model. Tables are printed and saved as
``<task>.json`` and ``<task>.md`` in the run folder, with the machine and its load average.
Hydra parses only ``key=value`` arguments, so :func:`main` turns a first argument ``inference``
or ``data`` into ``task=...`` before Hydra reads ``sys.argv``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tcmn.cli._common import setup_env, user_errors
from tcmn.errors import TCMNError
from tcmn.utils.paths import CONF_DIR

log = logging.getLogger("tcmn.bench")

TASKS = ("inference", "data")


def translate_argv(argv: list[str]) -> list[str]:
    """Return ``argv`` with a first argument ``inference`` / ``data`` replaced by ``task=...``."""
    if len(argv) > 1 and argv[1] in TASKS:
        return [argv[0], f"task={argv[1]}", *argv[2:]]
    return list(argv)


def run(cfg: DictConfig) -> dict:
    """Run the benchmark ``cfg.task``, print its tables and write them into the run folder.

    Args:
        cfg: the composed ``conf/bench.yaml``.
    Returns:
        ``{"tables": {title: rows}, "meta": {...}, "files": [json path, markdown path]}``.
    Raises:
        TCMNError: no or an unknown task, or a bad setting.
    """
    from tcmn import bench

    if OmegaConf.is_missing(cfg, "task") or cfg.task not in TASKS:
        got = "nothing" if OmegaConf.is_missing(cfg, "task") else f"task={cfg.task}"
        raise TCMNError(
            f"{got}: choose the benchmark with `tcmn-bench inference` or `tcmn-bench data`."
        )
    task = str(cfg.task)
    meta = {"task": task, "machine_before": bench.machine_info()}
    with bench.threads(cfg.get("threads")):
        meta["machine_before"]["torch_threads"] = _threads()
        if task == "inference":
            tables, settings = bench.run_inference(cfg)
        else:
            tables, settings = bench.run_data(cfg)
    meta["load_average_after"] = bench.machine_info()["load_average"]
    meta["settings"] = settings
    for title, rows in tables.items():
        print(bench.format_rows(rows, f"\n{task}: {title}"))
    load = (meta["machine_before"]["load_average"], meta["load_average_after"])
    print(f"\nload average (1, 5, 15 min) before / after: {load[0]} / {load[1]}")
    out_dir = Path(cfg.paths.output_dir)
    files = bench.write_report(out_dir, task, tables, meta, notes=_NOTES)
    print(f"tables written to {files[0]} and {files[1]}")
    return {"tables": tables, "meta": meta, "files": [str(f) for f in files]}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


_NOTES = {
    "precision": (
        "frame_ms: one propagation step with the memory filled (query encoder, readout, "
        "decoder) plus a value encoding every 5th frame; frame_over_encoder: that over the "
        "query encoder alone (target below 2 on CPU)."
    ),
    "policies": (
        "ms / ms_min: median / fastest step over the frames up to `frame`; over_encoder: "
        "ms_min over the query encoder timed in the same window (immune to load drift); "
        "growth: over_encoder relative to the first frame reported. Bounded policies should "
        "stay flat (growth near 1, memory_frames at capacity); the unbounded one grows."
    ),
    "accuracy": "One-shot J / F / Dice on the validation videos, same network for each policy.",
    "loader": (
        "loader_over_step: seconds the loader takes per training batch over the seconds of "
        "one training step (below 1: the loader keeps up without workers competing for cores)."
    ),
}


@hydra.main(config_path=CONF_DIR, config_name="bench", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    user_errors(run)(cfg)


def main() -> None:
    """Entry point of ``tcmn-bench`` (translates a leading task word, then runs Hydra)."""
    setup_env()
    sys.argv = translate_argv(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()

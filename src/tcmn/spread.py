"""The spread of a recipe over seeds, and where one run falls in it (``make demo``'s range).

One training run is one draw: on a 2-core CPU the same recipe with another seed, or the same seed
on another CPU, follows another trajectory. A recipe's result is therefore its range over seeds.

A *seeds folder* (``tools/demo_seeds.sh`` writes ``results/demo/<recipe>/``) holds one folder per
seed, ``seed_<k>/``, with the ``tcmn-eval`` summaries of its evaluations, one file per split
(``test.json``: held-out videos, ``unseen.json``: the unseen class) and optionally ``run.json``
(``seconds``, ``cpu``, ``cores`` of the run).

* :func:`read_seeds` reads it; :func:`seed_spread` gives, per split and metric, the per-seed
  values, their mean, sample std (``ddof=1``; 0 for one seed), min and max;
  :func:`write_spread` writes ``spread.json`` and ``spread.md`` into the folder.
* :func:`place` says where one run (a ``make demo`` folder with ``eval_test/`` and
  ``eval_unseen/``) falls in that range: ``tcmn-cv seeds=FOLDER place=RUN`` prints it.

Scores are fractions in the files and percentage points in the tables.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcmn.errors import TCMNError
from tcmn.utils.atomic import atomic_write_text

#: split -> (its file in a seed folder, its folder in a ``make demo`` run, its name in tables)
SPLITS: dict[str, tuple[str, str, str]] = {
    "test": ("test.json", "eval_test", "held-out videos"),
    "unseen": ("unseen.json", "eval_unseen", "unseen class"),
}
#: metric -> path into a ``tcmn-eval`` summary
METRICS: dict[str, tuple[str, ...]] = {
    "J": ("methods", "tcmn", "J"),
    "F": ("methods", "tcmn", "F"),
    "Dice": ("methods", "tcmn", "Dice"),
    "mask dependence": ("mask_dependence", "mean"),
    "copy-first-mask J": ("methods", "copy_first_mask", "J"),
}
#: the metrics :func:`place` reports a run's position for
PLACED = ("J", "mask dependence")
SPREAD_FILES = ("spread.json", "spread.md")
_SEED_DIR = re.compile(r"^seed_(\d+)$")


def _metric(summary: Mapping[str, Any], path: tuple[str, ...], source: Path) -> float:
    value: Any = summary
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise TCMNError(
                f"{source}: no {'.'.join(path)} in this summary; it must be a tcmn-eval "
                "summary.json written with controls=true."
            )
        value = value[key]
    return float(value)


def _read_summary(path: Path, metrics: Mapping[str, tuple[str, ...]]) -> dict[str, float]:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TCMNError(
            f"{path}: cannot read this summary ({e}); run the evaluation again."
        ) from None
    if summary.get("status", "ok") != "ok":
        raise TCMNError(f"{path}: the evaluation failed (status {summary.get('status')!r}).")
    return {name: _metric(summary, p, path) for name, p in metrics.items()}


def read_seeds(
    folder: str | Path, metrics: Mapping[str, tuple[str, ...]] = METRICS
) -> dict[int, dict[str, Any]]:
    """Read a seeds folder: the ``metrics`` (name -> path into a summary) of every split.

    Returns:
        ``{seed: {split: {metric: value}, "run": run.json content or {}}}`` for every
        ``seed_<k>/`` that holds all splits' summaries, sorted by seed.

    Raises:
        TCMNError: the folder is missing or holds no complete seed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise TCMNError(
            f"{root}: no such seeds folder; bash tools/demo_seeds.sh measures the demo recipe's "
            "range into results/demo/recipe."
        )
    seeds: dict[int, dict[str, Any]] = {}
    for sub in sorted(root.iterdir()):
        m = _SEED_DIR.match(sub.name)
        if not m or not sub.is_dir():
            continue
        files = {split: sub / spec[0] for split, spec in SPLITS.items()}
        if not all(f.is_file() for f in files.values()):
            continue
        entry: dict[str, Any] = {split: _read_summary(f, metrics) for split, f in files.items()}
        run = sub / "run.json"
        entry["run"] = json.loads(run.read_text()) if run.is_file() else {}
        seeds[int(m.group(1))] = entry
    if not seeds:
        raise TCMNError(
            f"{root}: no seed_<k>/ folder with {' and '.join(s[0] for s in SPLITS.values())}; "
            "bash tools/demo_seeds.sh writes them."
        )
    return dict(sorted(seeds.items()))


def _stats(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def seed_spread(seeds: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample std, min and max over seeds of every metric that :func:`read_seeds` read.

    Returns:
        ``{"seeds": [...], "splits": {split: {metric: {"values", "mean", "std", "min", "max"}}},
        "seconds": stats of the runs' wall times or None, "cpu": the CPUs named by the runs}``.
    """
    order = sorted(seeds)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        splits[split] = {}
        for metric in seeds[order[0]][split]:
            values = [float(seeds[s][split][metric]) for s in order]
            splits[split][metric] = {"values": values, **_stats(values)}
    seconds = [float(seeds[s]["run"]["seconds"]) for s in order if "seconds" in seeds[s]["run"]]
    cpus = sorted({str(seeds[s]["run"]["cpu"]) for s in order if seeds[s]["run"].get("cpu")})
    return {
        "seeds": order,
        "splits": splits,
        "seconds": _stats(seconds) if seconds else None,
        "cpu": cpus,
    }


def _pp(x: float) -> str:
    return f"{100 * x:.1f}"


def spread_markdown(spread: Mapping[str, Any]) -> str:
    """The spread as a Markdown table: one row per split and metric, in percentage points."""
    seeds = spread["seeds"]
    head = ["test set", "metric", "mean ± std", "min - max", *(f"seed {s}" for s in seeds)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split, metrics in spread["splits"].items():
        for metric, st in metrics.items():
            cells = [
                SPLITS[split][2],
                metric,
                f"{_pp(st['mean'])} ± {_pp(st['std'])}",
                f"{_pp(st['min'])} - {_pp(st['max'])}",
                *(_pp(v) for v in st["values"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    note = f"{len(seeds)} seeds; std is the sample standard deviation (ddof=1)"
    if spread.get("seconds"):
        sec = spread["seconds"]
        note += f"; wall time {sec['mean'] / 60:.1f} min a seed ({sec['min'] / 60:.1f}-{sec['max'] / 60:.1f})"
    if spread.get("cpu"):
        note += f"; {', '.join(spread['cpu'])}"
    return "\n".join(lines) + "\n\n" + note + ".\n"


def write_spread(folder: str | Path) -> dict[str, Any]:
    """Read a seeds folder, write its ``spread.json`` and ``spread.md`` (atomically), return the
    spread."""
    root = Path(folder)
    spread = seed_spread(read_seeds(root))
    atomic_write_text(root / "spread.json", json.dumps(spread, indent=2) + "\n")
    atomic_write_text(root / "spread.md", spread_markdown(spread))
    return spread


def read_run(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """The scores of one ``make demo`` run folder: ``{split: {metric: value}}``."""
    root = Path(run_dir)
    out = {}
    for split, (_, sub, _) in SPLITS.items():
        path = root / sub / "summary.json"
        if not path.is_file():
            raise TCMNError(f"{path}: no such evaluation summary; run make demo to the end first.")
        out[split] = _read_summary(path, METRICS)
    return out


def place(run: Mapping[str, Mapping[str, float]], spread: Mapping[str, Any]) -> list[str]:
    """One line per split: the run's J and mask dependence against the seeds' range.

    A value is ``within`` the range when it lies between the seeds' min and max, else ``below``
    or ``above`` it.
    """
    n = len(spread["seeds"])
    lines = []
    for split, (_, _, name) in SPLITS.items():
        parts = []
        for metric in PLACED:
            st = spread["splits"][split][metric]
            v = run[split][metric]
            where = "below" if v < st["min"] else "above" if v > st["max"] else "within"
            parts.append(
                f"{metric} {_pp(v)} ({where} {_pp(st['min'])}-{_pp(st['max'])}, "
                f"mean {_pp(st['mean'])} ± {_pp(st['std'])})"
            )
        lines.append(f"{name}: " + "; ".join(parts))
    machine = f" on {', '.join(spread['cpu'])}" if spread.get("cpu") else ""
    head = f"this run against the recipe's range (min-max over {n} seeds{machine}):"
    return [head, *lines]

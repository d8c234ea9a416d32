"""Cross-validation and sweeps: the runs of a sweep folder summarised as mean ± std tables.

A sweep folder (``tcmn-train -m data.fold=0,1,2,3,4 seed=0,1``, ``-m data=lodo
data.leave_out=...``, ``tcmn-eval -m ...``) holds one sub-folder per job, each with the
``summary.json`` that :func:`tcmn.experiment.run_train` or :func:`tcmn.experiment.run_eval` wrote
(``status: failed`` for a job that crashed) and Hydra's ``.hydra/overrides.yaml``.

* :func:`find_runs` collects them: one :class:`Run` per job, ``ok``, ``failed`` or ``missing`` (a
  job folder without ``summary.json``, or a job of the sweep's ``multirun.yaml`` that never
  started).
* :func:`aggregate` turns the test scores of the ``ok`` runs into the mean, the sample standard
  deviation (``ddof=1``; NaN for a single run) and the count over runs, per dataset and per class,
  for every method (the model ``tcmn``, the ``copy_first_mask`` baseline, the controls of
  ``tcmn-eval``) and metric (J, F, Dice, J&F; ``mask_dependence`` J), the way nnU-Net summarises
  its folds: per-run means first, then their mean and spread.
* :func:`write_cv` writes ``cv_per_dataset.csv``, ``cv_per_class.csv``, ``cv_per_run.csv`` (each
  run's own scores, for paired comparisons), ``cv_summary.md`` and ``cv_summary.json`` (which
  also lists the failed and missing runs); ``tcmn-cv`` calls it.
* :class:`SweepReport` is a Hydra callback: at the end of every multirun it logs which jobs failed
  or are missing, writes the tables, and exits with status 1 when a job failed (grid sweeps).
* :func:`bootstrap_schedule` is the Optuna custom search space of the bootstrapped-CE schedule.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from tcmn.errors import TCMNError

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
MODEL = "tcmn"
BASELINE = "copy_first_mask"
MASK_DEPENDENCE = "mask_dependence"
METRICS = ("J", "F", "Dice", "J&F")
LEVELS = ("dataset", "class")
STD_NOTE = "sample standard deviation over runs (ddof=1); NaN when a value comes from one run"
OUTPUT_FILES = (
    "cv_per_dataset.csv",
    "cv_per_class.csv",
    "cv_per_run.csv",
    "cv_summary.md",
    "cv_summary.json",
)
# the columns of the per-run Markdown table (dataset mean of each run)
RUN_COLUMNS = (*((MODEL, k) for k in ("J", "F", "Dice")), (BASELINE, "J"), (MASK_DEPENDENCE, "J"))


@dataclass
class Run:
    """One job of a sweep.

    Attributes:
        path: the job's folder (relative paths in reports are relative to the sweep folder).
        status: ``ok``, ``failed`` (its summary says so) or ``missing`` (no summary).
        kind: ``train`` (a ``run_train`` summary), ``eval`` (``run_eval``) or None.
        fold, seed: of the run, when known.
        overrides: the job's Hydra overrides (``.hydra/overrides.yaml``), e.g. ``["seed=1"]``.
        error: why it failed or is missing.
        rows: long-form scores ``{level, name, method, metric, value}`` (``ok`` runs only).
        config: the run's resolved config (train summaries; else ``.hydra/config.yaml``).
    """

    path: Path
    status: str
    kind: str | None = None
    fold: int | None = None
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    def describe(self, root: Path) -> dict[str, Any]:
        """The run as a JSON-ready dict (without rows and config), its path relative to root."""
        d = asdict(self)
        d.pop("rows")
        d.pop("config")
        d["path"] = _rel(self.path, root)
        return d


# --------------------------------------------------------------------------------------------
# reading runs
# --------------------------------------------------------------------------------------------


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # unreadable: treated as absent
        return None


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _records_rows(records: Iterable[Mapping], level: str, method: str | None) -> list[dict]:
    """Rows of a per_dataset / per_class table given as records (``method`` column or fixed)."""
    rows = []
    for r in records or []:
        name = r.get(level)
        m = r.get("method", method)
        if name is None or m is None:
            continue
        for metric in METRICS:
            v = r.get(metric)
            if v is not None:
                rows.append(
                    dict(level=level, name=str(name), method=str(m), metric=metric, value=v)
                )
    return rows


def _flat_rows(test: Mapping[str, Any], prefix: str = "test/") -> list[dict]:
    """Rows from flat metrics (``test/J``, ``test/<dataset>/J``, ``test/class/<c>/J``)."""
    rows = []
    for key, v in test.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix) :].split("/")
        if parts[-1] not in METRICS:
            continue
        if len(parts) == 1:
            level, name = "dataset", "mean"
        elif len(parts) == 2 and not parts[0].startswith("baseline"):
            level, name = "dataset", parts[0]
        elif len(parts) == 3 and parts[0] == "class":
            level, name = "class", parts[1]
        else:
            continue
        rows.append(dict(level=level, name=name, method=MODEL, metric=parts[-1], value=v))
    return rows


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Long-form test scores of one summary: ``{level, name, method, metric, value}`` dicts.

    ``run_train`` summaries: ``test_tables`` (model and baseline, per dataset and per class), or
    the flat ``test`` metrics when the tables are absent. ``run_eval`` summaries: every method of
    ``per_dataset`` / ``per_class`` and ``mask_dependence`` (as method ``mask_dependence``,
    metric ``J``). Names include the ``mean`` row of the tables.
    """
    rows: list[dict[str, Any]] = []
    if "methods" in summary:  # run_eval
        rows += _records_rows(summary.get("per_dataset", []), "dataset", None)
        rows += _records_rows(summary.get("per_class", []), "class", None)
        for key, v in (summary.get("mask_dependence") or {}).items():
            level, name = (
                ("class", key[len("class/") :]) if key.startswith("class/") else ("dataset", key)
            )
            rows.append(dict(level=level, name=name, method=MASK_DEPENDENCE, metric="J", value=v))
    elif summary.get("test_tables"):
        t = summary["test_tables"]
        rows += _records_rows(t.get("per_dataset", []), "dataset", MODEL)
        rows += _records_rows(t.get("per_class", []), "class", MODEL)
        rows += _records_rows(t.get("baseline_per_dataset", []), "dataset", BASELINE)
        rows += _records_rows(t.get("baseline_per_class", []), "class", BASELINE)
    elif summary.get("test"):
        rows += _flat_rows(summary["test"])
    out = []
    for r in rows:
        try:
            r["value"] = float(r["value"])
        except (TypeError, ValueError):
            continue
        out.append(r)
    return out


def _first_set(*values: Any) -> Any:
    """The first value that is not None (None when all are)."""
    return next((v for v in values if v is not None), None)


def read_run(folder: str | Path) -> Run:
    """The :class:`Run` of one job folder (``summary.json`` and ``.hydra/`` inside)."""
    folder = Path(folder)
    overrides = _read_yaml(folder / ".hydra" / "overrides.yaml") or []
    path = folder / SUMMARY_NAME
    if not path.is_file():
        return Run(
            folder,
            "missing",
            overrides=[str(o) for o in overrides],
            error="no summary.json: the job was killed, is still running or never wrote it",
        )
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return Run(folder, "missing", overrides=list(overrides), error=f"unreadable summary ({e})")
    config = summary.get("config")
    if not isinstance(config, dict):
        config = _read_yaml(folder / ".hydra" / "config.yaml") or {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    # tcmn-train sets data.fold, tcmn-eval its own top-level fold (its data.fold stays null)
    fold = _first_set(summary.get("fold"), data.get("fold"), config.get("fold"))
    seed = _first_set(summary.get("seed"), config.get("seed"))
    # a summary without a status (another command's) is not a failure
    status = "ok" if summary.get("status", "ok") == "ok" else "failed"
    kind = "eval" if "methods" in summary else ("train" if status == "ok" else None)
    error = (
        None if status == "ok" else str(summary.get("error") or f"status {summary.get('status')!r}")
    )
    rows = summary_rows(summary) if status == "ok" else []
    if status == "ok" and not rows:
        error = "no test scores in summary.json (test=false?)"
    return Run(
        folder,
        status,
        kind,
        _int_or_none(fold),
        _int_or_none(seed),
        [str(o) for o in overrides],
        error,
        rows,
        config,
    )


def expected_jobs(sweep_dir: str | Path) -> list[list[str]] | None:
    """The override lists of every job of a basic-sweeper multirun (from ``multirun.yaml``).

    None when the folder has no ``multirun.yaml`` or another sweeper (Optuna) chose the jobs.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = _read_yaml(Path(sweep_dir) / "multirun.yaml")
    if not isinstance(cfg, dict):
        return None
    hydra = cfg.get("hydra") or {}
    target = str((hydra.get("sweeper") or {}).get("_target_", ""))
    if not target.endswith("BasicSweeper"):
        return None
    task = list((hydra.get("overrides") or {}).get("task") or [])
    params = (hydra.get("sweeper") or {}).get("params") or {}
    task = [f"{k}={v}" for k, v in params.items()] + task
    try:
        parsed = OverridesParser.create().parse_overrides(task)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as e:  # an override the parser cannot read without the config
        log.warning("cannot expand the sweep of %s (%s); missing jobs not checked", sweep_dir, e)
        return None
    return [list(job) for batch in batches for job in batch]


def find_runs(root: str | Path) -> list[Run]:
    """Every job under ``root``: folders with a ``summary.json`` or a Hydra ``.hydra`` folder,
    plus the jobs of ``root/multirun.yaml`` that have no folder (``missing``), sorted by path.
    """
    root = Path(root)
    if not root.is_dir():
        raise TCMNError(f"{root}: no such folder; pass dir= the folder of a sweep (or one run).")
    folders = {p.parent for p in root.rglob(SUMMARY_NAME)}
    folders |= {p.parent.parent for p in root.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    folders = {
        f for f in folders if not ({"wandb", "checkpoints"} & set(f.relative_to(root).parts))
    }
    if root in folders and len(folders) > 1 and not (root / SUMMARY_NAME).exists():
        folders.discard(root)  # the sweep folder's own .hydra, not a job
    runs = [read_run(f) for f in sorted(folders)]
    seen = {frozenset(r.overrides) for r in runs}
    for job in expected_jobs(root) or []:
        if frozenset(job) not in seen:
            runs.append(Run(root / "?", "missing", overrides=job, error="the job never started"))
    return runs


# --------------------------------------------------------------------------------------------
# aggregating
# --------------------------------------------------------------------------------------------


def _lookup(config: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted ``key`` in a nested config."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _has_key(config: Mapping[str, Any], key: str) -> bool:
    return _lookup(config, key)[0]


def _group_value(config: Mapping[str, Any], key: str) -> Any:
    node = _lookup(config, key)[1]
    return node if isinstance(node, str | int | float | bool) or node is None else str(node)


def aggregate(runs: Sequence[Run], group_by: Sequence[str] = ()):
    """Mean, sample std (``ddof=1``) and count over the ``ok`` runs.

    Args:
        runs: from :func:`find_runs`.
        group_by: config keys (e.g. ``model.loss.beta``) whose values split the runs into
            separately aggregated groups (a sweep over a setting and seeds).
    Returns:
        a pandas DataFrame with columns ``*group_by, level, name, method, metric, mean, std, n``
        (values are fractions in [0, 1]; ``std`` NaN where ``n == 1``).
    """
    import pandas as pd

    group_by = list(group_by)
    ok = [r for r in runs if r.status == "ok"]
    for k in group_by:
        if ok and not any(_has_key(r.config, k) for r in ok):
            raise TCMNError(
                f"group_by={k}: no run's config has this key; use a dotted key of the runs' "
                "configs, e.g. group_by=[model.loss.beta]."
            )
    recs = []
    for i, run in enumerate(ok):
        groups = {k: _group_value(run.config, k) for k in group_by}
        recs += [{**groups, **row, "run": i} for row in run.rows]
    cols = [*group_by, "level", "name", "method", "metric"]
    if not recs:
        return pd.DataFrame(columns=[*cols, "mean", "std", "n"])
    df = pd.DataFrame(recs)
    df = df.drop_duplicates(subset=[*cols, "run"], keep="first")
    g = df.groupby(cols, sort=False, dropna=False)["value"]
    out = g.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    out["n"] = out["n"].astype(int)
    return out


def _pm(mean: float, std: float) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    s = f"{100 * mean:.2f}"
    return s + (f" ± {100 * std:.2f}" if std is not None and math.isfinite(std) else "")


def markdown_table(agg, level: str) -> str:
    """One level (``dataset`` or ``class``) of :func:`aggregate` as a Markdown table in percent.

    Columns: J, F, Dice and J&F of the model (``mean ± std``), then those of the copy-first-mask
    baseline and the mask dependence J when present, then ``n`` (runs). Other methods are in the
    CSV / JSON files only.
    """
    sub = agg[agg["level"] == level]
    if sub.empty:
        return ""
    methods = [m for m in (MODEL, BASELINE, MASK_DEPENDENCE) if m in set(sub["method"])]
    columns = [
        (m, k)
        for m in methods
        for k in METRICS
        if ((sub["method"] == m) & (sub["metric"] == k)).any()
    ]
    names = list(dict.fromkeys(sub["name"]))
    names = [n for n in names if n != "mean"] + (["mean"] if "mean" in names else [])
    header = [level] + [f"{m} {k}" for m, k in columns] + ["n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells, n = [name], 0
        for m, k in columns:
            hit = sub[(sub["name"] == name) & (sub["method"] == m) & (sub["metric"] == k)]
            if hit.empty:
                cells.append("-")
                continue
            r = hit.iloc[0]
            cells.append(_pm(float(r["mean"]), float(r["std"])))
            n = max(n, int(r["n"]))
        lines.append("| " + " | ".join(cells + [str(n)]) + " |")
    return "\n".join(lines)


def per_run(runs: Sequence[Run], root: Path):
    """Every score of every ``ok`` run with test scores, one row each (the folds side by side,
    for paired comparisons between variants).

    Returns:
        a pandas DataFrame with columns ``run, fold, seed, level, name, method, metric, value``
        (``run`` is the job folder relative to ``root``; values are fractions in [0, 1]).
    """
    import pandas as pd

    recs = [
        {"run": _rel(r.path, root), "fold": r.fold, "seed": r.seed, **row}
        for r in runs
        if r.status == "ok"
        for row in r.rows
    ]
    cols = ["run", "fold", "seed", "level", "name", "method", "metric", "value"]
    return pd.DataFrame(recs, columns=cols)


def per_run_markdown(table) -> str:
    """The dataset mean of each run (``name == "mean"``, else its one dataset) as a Markdown
    table in percent: J, F, Dice of the model, the copy-first-mask J and the mask dependence J."""
    import pandas as pd

    if table.empty:
        return ""
    lines = [
        "| run | fold | seed | " + " | ".join(f"{m} {k}" for m, k in RUN_COLUMNS) + " |",
        "|" + "---|" * (3 + len(RUN_COLUMNS)),
    ]
    for run, sub in table[table["level"] == "dataset"].groupby("run", sort=False):
        names = set(sub["name"])
        sub = sub[sub["name"] == ("mean" if "mean" in names else sorted(names)[0])]
        value = {(m, k): v for m, k, v in zip(sub["method"], sub["metric"], sub["value"])}
        first = sub.iloc[0]
        cells = [
            run,
            *("-" if pd.isna(first[c]) else str(int(first[c])) for c in ("fold", "seed")),
        ]
        cells += [_pm(value.get(c, math.nan), math.nan) for c in RUN_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _records(df) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in df.to_dict(orient="records")
    ]


def report_lines(runs: Sequence[Run], root: Path) -> list[str]:
    """Human-readable lines: counts, then one line per failed or missing run."""
    counts = {s: sum(r.status == s for r in runs) for s in ("ok", "failed", "missing")}
    scored = sum(r.status == "ok" and bool(r.rows) for r in runs)
    lines = [
        f"{len(runs)} runs under {root}: {counts['ok']} ok ({scored} with test scores, the n of "
        f"the tables), {counts['failed']} failed, {counts['missing']} missing"
    ]
    for r in runs:
        if r.status != "ok" or r.error:
            what = " ".join(r.overrides) or _rel(r.path, root)
            lines.append(f"  {r.status}: {_rel(r.path, root)} [{what}]: {r.error}")
    return lines


def write_cv(
    root: str | Path, out_dir: str | Path | None = None, group_by: Sequence[str] = ()
) -> dict[str, Any]:
    """Collect the runs under ``root``, aggregate them and write the tables.

    Writes (atomically) ``cv_per_dataset.csv`` and ``cv_per_class.csv`` (long form: group keys,
    name, method, metric, mean, std, n), ``cv_per_run.csv`` (:func:`per_run`), ``cv_summary.md``
    (Markdown tables in percent, one row per run, the run list) and ``cv_summary.json``
    (everything, failed and missing runs listed) into ``out_dir`` (default ``root``).

    Returns:
        the content of ``cv_summary.json``.
    """
    from tcmn.utils.atomic import atomic_write, atomic_write_text

    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root
    runs = find_runs(root)
    if not runs:
        raise TCMNError(
            f"{root}: no run found (no summary.json or .hydra folder below it); pass dir= a "
            "sweep folder of tcmn-train -m or tcmn-eval -m."
        )
    agg = aggregate(runs, group_by)
    out.mkdir(parents=True, exist_ok=True)
    tables = {}
    for level in LEVELS:
        t = agg[agg["level"] == level].drop(columns="level")
        tables[level] = t
        with atomic_write(out / f"cv_per_{level}.csv", "w") as f:
            t.to_csv(f, index=False)
    runs_table = per_run(runs, root)
    with atomic_write(out / "cv_per_run.csv", "w") as f:
        runs_table.to_csv(f, index=False)
    md = [f"# Cross-validation summary of `{root}`", "", f"mean ± std in % ({STD_NOTE}).", ""]
    group_by = list(group_by)
    groups = [((), agg)] if not group_by else list(agg.groupby(group_by, sort=False, dropna=False))
    for key, sub in groups:
        if group_by:
            key = key if isinstance(key, tuple) else (key,)
            md += [
                "## " + ", ".join(f"{k}={v}" for k, v in zip(group_by, key, strict=True)),
                "",
            ]
        for level in LEVELS:
            text = markdown_table(sub, level)
            if text:
                md += [f"**per {level}**", "", text, ""]
    text = per_run_markdown(runs_table)
    if text:
        md += ["## Per run", "", "dataset mean of each run with test scores, in %.", "", text, ""]
    md += ["## Runs", "", "```", *report_lines(runs, root), "```", ""]
    summary = {
        "dir": str(root),
        "std": STD_NOTE,
        "group_by": group_by,
        "n_runs": {s: sum(r.status == s for r in runs) for s in ("ok", "failed", "missing")},
        "runs": [r.describe(root) for r in runs],
        "failed": [r.describe(root) for r in runs if r.status == "failed"],
        "missing": [r.describe(root) for r in runs if r.status == "missing"],
        "per_dataset": _records(tables["dataset"]),
        "per_class": _records(tables["class"]),
        "per_run": _records(runs_table),
    }
    atomic_write_text(out / "cv_summary.md", "\n".join(md))
    atomic_write_text(out / "cv_summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    return summary


# --------------------------------------------------------------------------------------------
# sweeps: Hydra callback and Optuna search space
# --------------------------------------------------------------------------------------------


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks.sweep_report``): the end-of-multirun report.

    After the last job of a multirun it reads every job's ``summary.json`` under
    ``hydra.sweep.dir``, logs which jobs failed or are missing (with their overrides and error),
    and writes the :func:`write_cv` tables when runs have test scores. With ``exit_on_failure``
    the process then exits with status 1 if any job failed or is missing, so a grid sweep that
    ran every job despite a failure still reports it to the shell; an Optuna search sets it to
    false (a failed trial is scored ``failed_value`` and the search goes on).

    Args:
        exit_on_failure: exit with status 1 after the report when a job failed or is missing.
        aggregate: write the ``cv_*`` tables into the sweep folder.
    """

    def __init__(self, exit_on_failure: bool = True, aggregate: bool = True):
        self.exit_on_failure = bool(exit_on_failure)
        self.aggregate = bool(aggregate)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        if not root.is_dir():
            return
        runs = find_runs(root)
        if not any(r.status != "missing" for r in runs):
            return  # jobs that write no summary.json (not tcmn-train / tcmn-eval): nothing to say
        bad = [r for r in runs if r.status != "ok"]
        for line in report_lines(runs, root):
            (log.warning if bad else log.info)(line)
        if self.aggregate and any(r.rows for r in runs):
            write_cv(root)
            log.info("mean ± std tables: %s", root / "cv_summary.md")
        if self.exit_on_failure and bad:
            names = ", ".join(" ".join(r.overrides) or _rel(r.path, root) for r in bad)
            print(
                f"error: {len(bad)} of {len(runs)} jobs of the sweep in {root} failed or are "
                f"missing ({names}); see their summary.json / log and re-run those jobs.",
                file=sys.stderr,
            )
            sys.exit(1)


def bootstrap_schedule(cfg: Any, trial: Any) -> None:
    """Optuna custom search space (``hydra.sweeper.custom_search_space``) of the bootstrapped-CE
    schedule, kept consistent: ``model.loss.start_warm`` in ``[0, max_steps / 2]`` and
    ``model.loss.end_warm`` in ``[start_warm, max_steps]`` (integers, steps of training).

    Args:
        cfg: the sweep's config (``trainer.max_steps`` must be positive).
        trial: the ``optuna.trial.Trial`` being configured.
    """
    steps = int(cfg.trainer.max_steps)
    if steps <= 0:
        raise TCMNError(
            f"trainer.max_steps={steps}: the bootstrap schedule search needs a positive "
            "max_steps; set trainer.max_steps or drop hydra.sweeper.custom_search_space."
        )
    start = trial.suggest_int("model.loss.start_warm", 0, steps // 2)
    trial.suggest_int("model.loss.end_warm", start, steps)


__all__ = [
    "Run",
    "SweepReport",
    "aggregate",
    "bootstrap_schedule",
    "expected_jobs",
    "find_runs",
    "markdown_table",
    "read_run",
    "report_lines",
    "summary_rows",
    "write_cv",
]

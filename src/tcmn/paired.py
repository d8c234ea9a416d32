"""Paired comparison of two variant folders: the same folds and seeds, A minus B.

Two variants of an experiment (``logs/results/cvc/tcmn`` and ``logs/results/cvc/no_ltc``) each hold
one run folder per fold and seed (``tcmn-eval`` or ``tcmn-train`` runs with a ``summary.json``,
read by :func:`tcmn.cv.find_runs`). Fold-to-fold spread is usually larger than the difference
between variants, so comparing their mean ± std tables hides it; pairing the runs by fold and seed
removes the shared part.

* :func:`paired_comparison` pairs the runs of folder A and folder B by ``(fold, seed)``, takes
  each run's dataset-level mean score (the row :func:`tcmn.cv.per_run_markdown` shows: ``mean``,
  else the run's one dataset) and returns, per pair, ``Δ = A − B`` of J, F and Dice beside A's
  and B's own values, copy-first-mask J and mask dependence J; per metric, the mean and sample
  std of Δ, how many pairs are positive / negative, and a two-sided Wilcoxon signed-rank p-value.
  Runs whose fold and seed appear in one folder only are listed as unpaired, not dropped.
* :func:`write_paired` writes ``paired_per_run.csv``, ``paired_summary.csv``,
  ``paired_summary.md`` and ``paired_summary.json`` (:data:`PAIRED_FILES`); ``tcmn-cv dir=A
  compare=B`` calls it.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcmn.cv import BASELINE, MASK_DEPENDENCE, METRICS, MODEL, Run, _pm, _rel, find_runs, per_run
from tcmn.errors import TCMNError

log = logging.getLogger(__name__)

PAIRED_FILES = (
    "paired_per_run.csv",
    "paired_summary.csv",
    "paired_summary.md",
    "paired_summary.json",
)
# the extra per-run values shown beside the compared metrics (labels of the long table)
BASELINE_J = f"{BASELINE} J"
MASK_DEPENDENCE_J = f"{MASK_DEPENDENCE} J"
EXTRAS = ((BASELINE, "J", BASELINE_J), (MASK_DEPENDENCE, "J", MASK_DEPENDENCE_J))
# differences are rounded to this many decimals before the test, so that roundoff in A − B does
# not split values that are tied (or zero) in exact arithmetic
ROUND = 12
# above this many non-zero differences (or with ties above PERMUTATION_MAX) the normal
# approximation is used, as scipy's method="auto" does
EXACT_MAX = 50
PERMUTATION_MAX = 13
DELTA_NOTE = "Δ = A − B per pair (same fold and seed); fractions in files, percent points in tables"
STD_NOTE = "sample standard deviation of Δ over pairs (ddof=1); NaN for one pair"
TEST_NOTE = (
    "two-sided Wilcoxon signed-rank test of Δ (scipy.stats.wilcoxon, zero_method='wilcox': zero "
    "differences are dropped); 'exact' null distribution when the non-zero differences have no "
    "ties, else the exact 'permutation' distribution (n <= 13) or the 'asymptotic' normal "
    "approximation; NaN with fewer than 2 pairs or all differences zero. min_p = 2 / 2**n (n "
    "non-zero differences) is the smallest p the exact test can reach: 0.0625 for 5 pairs, "
    "0.03125 for 6"
)
SUMMARY_COLUMNS = (
    "metric",
    "n",
    "mean",
    "std",
    "positive",
    "negative",
    "zero",
    "p",
    "test",
    "min_p",
)
PER_RUN_COLUMNS = ("fold", "seed", "run_a", "run_b", "metric", "a", "b", "delta")


@dataclass
class RunScores:
    """The scores of one run that the comparison uses.

    Attributes:
        run: the run folder relative to its variant folder.
        fold, seed: of the run (None when unknown; None is a value of the pairing key).
        dataset: the dataset row the values come from (``mean``, else the run's one dataset).
        values: ``{label: fraction}``: the compared metrics of the method (``J``, ``F``,
            ``Dice``), ``copy_first_mask J`` and ``mask_dependence J`` when present.
    """

    run: str
    fold: int | None
    seed: int | None
    dataset: str
    values: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int | None, int | None]:
        return (self.fold, self.seed)


@dataclass
class PairedComparison:
    """The result of :func:`paired_comparison`.

    Attributes:
        a_dir, b_dir: the variant folders (Δ = A − B).
        method: the compared method (``tcmn``); metrics: its compared metrics.
        pairs: ``(A's run, B's run)`` for every ``(fold, seed)`` present in both, sorted by key.
        unpaired: ``{folder, dir, run, fold, seed}`` of each run whose key is in one folder only.
        skipped: ``{folder, dir, run, status, error}`` of the runs without test scores (failed,
            missing, ``test=false``); they take no part in the pairing.
        summary: one dict per metric with the keys of :data:`SUMMARY_COLUMNS`.
    """

    a_dir: Path
    b_dir: Path
    method: str
    metrics: tuple[str, ...]
    pairs: list[tuple[RunScores, RunScores]]
    unpaired: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    summary: list[dict[str, Any]]

    @property
    def labels(self) -> list[str]:
        """The compared metrics, then the extra values present in any run."""
        extras = [
            label
            for *_, label in EXTRAS
            if label not in self.metrics
            and any(label in r.values for pair in self.pairs for r in pair)
        ]
        return [*self.metrics, *extras]

    def long_rows(self) -> list[dict[str, Any]]:
        """One row per pair and label: the columns of :data:`PER_RUN_COLUMNS`."""
        rows = []
        for a, b in self.pairs:
            for label in self.labels:
                va, vb = a.values.get(label, math.nan), b.values.get(label, math.nan)
                rows.append(
                    dict(
                        fold=a.fold,
                        seed=a.seed,
                        run_a=a.run,
                        run_b=b.run,
                        metric=label,
                        a=va,
                        b=vb,
                        delta=va - vb,
                    )
                )
        return rows


# --------------------------------------------------------------------------------------------
# reading the two folders
# --------------------------------------------------------------------------------------------


def _key_value(v: Any) -> int | None:
    """A fold or seed cell of :func:`tcmn.cv.per_run` (NaN for None) as an int or None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def _run_scores(run: str, sub: Any, method: str, metrics: Sequence[str]) -> RunScores | None:
    """The :class:`RunScores` of one run's rows of :func:`tcmn.cv.per_run` (None without any
    dataset-level row)."""
    ds = sub[sub["level"] == "dataset"]
    if ds.empty:
        return None
    names = set(ds["name"])
    name = "mean" if "mean" in names else sorted(names)[0]
    ds = ds[ds["name"] == name]
    value = {(m, k): float(v) for m, k, v in zip(ds["method"], ds["metric"], ds["value"])}
    values = {k: value[(method, k)] for k in metrics if (method, k) in value}
    values |= {label: value[(m, k)] for m, k, label in EXTRAS if (m, k) in value}
    first = sub.iloc[0]
    return RunScores(run, _key_value(first["fold"]), _key_value(first["seed"]), name, values)


def _describe_key(key: tuple[int | None, int | None]) -> str:
    return f"fold={key[0]} seed={key[1]}"


def read_variant(
    folder: Path, label: str, method: str = MODEL, metrics: Sequence[str] = METRICS[:3]
) -> tuple[dict[tuple[int | None, int | None], RunScores], list[dict[str, Any]]]:
    """The scored runs of one variant folder by ``(fold, seed)``, and its runs without scores.

    Args:
        folder: the variant folder (read with :func:`tcmn.cv.find_runs`).
        label: ``A`` or ``B``, for the lists and messages.
    Returns:
        ``({(fold, seed): RunScores}, skipped)``, skipped as in :class:`PairedComparison`.
    Raises:
        TCMNError: two scored runs of the folder have the same fold and seed.
    """
    runs: list[Run] = find_runs(folder)
    table = per_run(runs, folder)
    by_key: dict[tuple[int | None, int | None], RunScores] = {}
    scored = set()
    for run, sub in table.groupby("run", sort=False):
        scores = _run_scores(str(run), sub, method, metrics)
        if scores is None:
            continue
        scored.add(scores.run)
        other = by_key.get(scores.key)
        if other is not None:
            raise TCMNError(
                f"{folder}: runs {folder / other.run} and {folder / scores.run} both have "
                f"{_describe_key(scores.key)}; keep one scored run per fold and seed in the "
                "folder (e.g. only the tcmn-eval runs) and compare again."
            )
        by_key[scores.key] = scores
    skipped = [
        dict(
            folder=label,
            dir=str(folder),
            run=_rel(r.path, folder),
            status=r.status,
            error=r.error or "no dataset-level test score",
        )
        for r in runs
        if _rel(r.path, folder) not in scored
    ]
    return by_key, skipped


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def wilcoxon_p(deltas: Sequence[float]) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences, and the method used.

    Zero differences are dropped (scipy's ``zero_method="wilcox"``). The method is ``exact``
    when at most :data:`EXACT_MAX` non-zero differences have no ties, ``permutation`` (the exact
    distribution by enumeration) with ties and at most :data:`PERMUTATION_MAX` of them, else
    ``asymptotic``. ``(NaN, reason)`` with fewer than 2 differences, all of them zero, or when
    scipy fails.
    """
    from scipy import stats

    d = [round(float(x), ROUND) for x in deltas if math.isfinite(x)]
    if len(d) < 2:
        return math.nan, "none (fewer than 2 pairs)"
    nonzero = [x for x in d if x != 0]
    if not nonzero:
        return math.nan, "none (all differences zero)"
    n = len(nonzero)
    ties = len({abs(x) for x in nonzero}) < n
    if not ties and n <= EXACT_MAX:
        method, name = "exact", "exact"
    elif n <= PERMUTATION_MAX:  # 2**n sign patterns: enumerated, not sampled
        method, name = stats.PermutationMethod(n_resamples=2**n), "permutation"
    else:
        method, name = "asymptotic", "asymptotic"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.wilcoxon(
                nonzero, zero_method="wilcox", alternative="two-sided", method=method
            )
    except (ValueError, FloatingPointError) as e:
        return math.nan, f"none (scipy: {e})"
    return float(res.pvalue), name


def min_p(n_nonzero: int) -> float:
    """The smallest two-sided p the exact signed-rank test reaches with ``n_nonzero``
    differences (all of one sign): ``2 / 2**n``, at most 1; NaN for none."""
    return math.nan if n_nonzero < 1 else min(1.0, 2.0 / 2**n_nonzero)


def delta_summary(metric: str, deltas: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (``ddof=1``), sign counts and Wilcoxon p of one metric's differences.

    Non-finite differences (a metric missing in a run) are left out, so ``n`` may be smaller than
    the number of pairs. Returns a dict with the keys of :data:`SUMMARY_COLUMNS`.
    """
    d = [float(x) for x in deltas if math.isfinite(x)]
    n = len(d)
    mean = sum(d) / n if n else math.nan
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else math.nan
    signs = [round(x, ROUND) for x in d]
    p, test = wilcoxon_p(d)
    return dict(
        metric=metric,
        n=n,
        mean=mean,
        std=std,
        positive=sum(x > 0 for x in signs),
        negative=sum(x < 0 for x in signs),
        zero=sum(x == 0 for x in signs),
        p=p,
        test=test,
        min_p=min_p(sum(x != 0 for x in signs)),
    )


# --------------------------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------------------------


def _sort_key(key: tuple[int | None, int | None]) -> tuple:
    return tuple((v is not None, v if v is not None else 0) for v in key)


def _unpaired(label: str, folder: Path, scores: RunScores) -> dict[str, Any]:
    return dict(folder=label, dir=str(folder), run=scores.run, fold=scores.fold, seed=scores.seed)


def paired_comparison(
    a_dir: str | Path,
    b_dir: str | Path,
    metrics: Sequence[str] = ("J", "F", "Dice"),
    method: str = MODEL,
) -> PairedComparison:
    """Pair the runs of two variant folders by ``(fold, seed)`` and compare them, A − B.

    Args:
        a_dir: folder of variant A (one run folder per fold and seed, each with summary.json).
        b_dir: folder of variant B, the reference (Δ = A − B).
        metrics: the compared metrics of ``method`` (of J, F, Dice, J&F).
        method: the compared method of the summaries (the model ``tcmn``).
    Returns:
        a :class:`PairedComparison`; the statistics use the paired runs only.
    Raises:
        TCMNError: a folder does not exist, has two scored runs with the same fold and seed, a metric
            is unknown, or no fold and seed has a scored run in both folders.
    """
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise TCMNError(
            f"metrics={list(metrics)}: compare {a_dir} and {b_dir} on metrics of {list(METRICS)}."
        )
    for label, arg, folder in (("A", "dir", a_dir), ("B", "compare", b_dir)):
        if not folder.is_dir():
            raise TCMNError(
                f"{folder}: no such folder; pass as variant {label} ({arg}= of tcmn-cv) a "
                "folder holding one run folder per fold and seed."
            )
    a, skipped_a = read_variant(a_dir, "A", method, metrics)
    b, skipped_b = read_variant(b_dir, "B", method, metrics)
    keys = sorted(a.keys() & b.keys(), key=_sort_key)
    if not keys:
        raise TCMNError(
            f"no fold and seed has a scored run in both {a_dir} (scored runs: {len(a)}) and "
            f"{b_dir} (scored runs: {len(b)}); pass dir= and compare= two variant folders whose "
            "summary.json files (tcmn-eval runs) cover the same folds and seeds."
        )
    unpaired = [_unpaired("A", a_dir, a[k]) for k in sorted(a.keys() - b.keys(), key=_sort_key)]
    unpaired += [_unpaired("B", b_dir, b[k]) for k in sorted(b.keys() - a.keys(), key=_sort_key)]
    pairs = [(a[k], b[k]) for k in keys]
    for ra, rb in pairs:
        if ra.dataset != rb.dataset:
            log.warning(
                "%s: A's score is dataset %r, B's %r", _describe_key(ra.key), ra.dataset, rb.dataset
            )
    summary = [
        delta_summary(
            m, [ra.values.get(m, math.nan) - rb.values.get(m, math.nan) for ra, rb in pairs]
        )
        for m in metrics
    ]
    return PairedComparison(
        a_dir, b_dir, method, metrics, pairs, unpaired, skipped_a + skipped_b, summary
    )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _signed_pp(x: float) -> str:
    """A difference of fractions in percent points with its sign (``-`` when NaN)."""
    return "-" if not math.isfinite(x) else f"{100 * x:+.2f}"


def _p_text(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.4g}"


def _key_cells(fold: int | None, seed: int | None) -> list[str]:
    return ["-" if v is None else str(v) for v in (fold, seed)]


def pairs_markdown(result: PairedComparison) -> str:
    """One row per pair: A's and B's values and Δ of each metric in %, then the extra values."""
    extras = [x for x in result.labels if x not in result.metrics]
    header = ["fold", "seed", "run A", "run B"]
    header += [f"{h} {m}" for m in result.metrics for h in ("A", "B", "Δ")]
    header += [f"{h} {x}" for x in extras for h in ("A", "B")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a, b in result.pairs:
        cells = [*_key_cells(a.fold, a.seed), a.run, b.run]
        for m in result.metrics:
            va, vb = a.values.get(m, math.nan), b.values.get(m, math.nan)
            cells += [_pm(va, math.nan), _pm(vb, math.nan), _signed_pp(va - vb)]
        for x in extras:
            cells += [_pm(r.values.get(x, math.nan), math.nan) for r in (a, b)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(result: PairedComparison) -> str:
    """One row per metric: mean ± std of Δ in percent points, signs, Wilcoxon p, min_p."""
    lines = [
        "| metric | Δ mean ± std (pp) | positive / n | negative | zero | Wilcoxon p | test | min_p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result.summary:
        pm = _signed_pp(s["mean"])
        if math.isfinite(s["std"]):
            pm += f" ± {100 * s['std']:.2f}"
        cells = [
            s["metric"],
            pm,
            f"{s['positive']} / {s['n']}",
            str(s["negative"]),
            str(s["zero"]),
            _p_text(s["p"]),
            s["test"],
            _p_text(s["min_p"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_markdown(result: PairedComparison) -> str:
    """The whole ``paired_summary.md``: folders, the summary table, the pairs, the leftovers."""
    a, b = result.a_dir, result.b_dir
    md = [
        f"# Paired comparison of `{a}` (A) and `{b}` (B)",
        "",
        f"Method `{result.method}`, dataset-level mean of each run. {DELTA_NOTE}. "
        f"{len(result.pairs)} pairs.",
        "",
        summary_markdown(result),
        "",
        f"Δ mean ± {STD_NOTE}. p: {TEST_NOTE}.",
        "",
        "## Pairs",
        "",
        "values in %, Δ = A − B in percent points.",
        "",
        pairs_markdown(result),
        "",
    ]
    differ = [(ra, rb) for ra, rb in result.pairs if ra.dataset != rb.dataset]
    if differ:
        md += [
            "warning: the two runs of these pairs report different datasets: "
            + "; ".join(
                f"{_describe_key(ra.key)} (A {ra.dataset}, B {rb.dataset})" for ra, rb in differ
            ),
            "",
        ]
    if result.unpaired:
        md += ["## Unpaired runs (excluded from the statistics)", ""]
        md += [
            f"* {u['folder']}: {u['run']} (fold {u['fold']}, seed {u['seed']}): no run of the "
            f"other folder has this fold and seed"
            for u in result.unpaired
        ]
        md.append("")
    if result.skipped:
        md += ["## Runs without test scores (not compared)", ""]
        md += [f"* {s['folder']}: {s['run']} ({s['status']}): {s['error']}" for s in result.skipped]
        md.append("")
    return "\n".join(md)


def _clean(v: Any) -> Any:
    """NaN -> None, recursively, for JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def paired_json(result: PairedComparison) -> dict[str, Any]:
    """The content of ``paired_summary.json`` (NaN written as null)."""
    pairs = [
        dict(
            fold=a.fold,
            seed=a.seed,
            run_a=a.run,
            run_b=b.run,
            dataset_a=a.dataset,
            dataset_b=b.dataset,
            a=a.values,
            b=b.values,
            delta={k: a.values.get(k, math.nan) - b.values.get(k, math.nan) for k in result.labels},
        )
        for a, b in result.pairs
    ]
    return _clean(
        dict(
            a=str(result.a_dir),
            b=str(result.b_dir),
            delta="A - B",
            method=result.method,
            metrics=list(result.metrics),
            note=DELTA_NOTE,
            std=STD_NOTE,
            test=TEST_NOTE,
            n_pairs=len(result.pairs),
            summary=result.summary,
            pairs=pairs,
            unpaired=result.unpaired,
            skipped=result.skipped,
        )
    )


def write_paired(
    a_dir: str | Path,
    b_dir: str | Path,
    out_dir: str | Path,
    metrics: Sequence[str] = ("J", "F", "Dice"),
    method: str = MODEL,
) -> dict[str, Any]:
    """Compare ``a_dir`` with ``b_dir`` (:func:`paired_comparison`) and write the tables.

    Writes (atomically) into ``out_dir``: ``paired_per_run.csv`` (one row per pair and metric:
    fold, seed, run_a, run_b, metric, a, b, delta; fractions), ``paired_summary.csv`` (one row
    per metric: :data:`SUMMARY_COLUMNS`), ``paired_summary.md`` (:func:`paired_markdown`) and
    ``paired_summary.json`` (:func:`paired_json`).

    Returns:
        the content of ``paired_summary.json``.
    """
    import pandas as pd

    from tcmn.utils.atomic import atomic_write, atomic_write_text

    result = paired_comparison(a_dir, b_dir, metrics, method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    long = pd.DataFrame(result.long_rows(), columns=list(PER_RUN_COLUMNS))
    long[["fold", "seed"]] = long[["fold", "seed"]].astype("Int64")
    with atomic_write(out / "paired_per_run.csv", "w") as f:
        long.to_csv(f, index=False)
    with atomic_write(out / "paired_summary.csv", "w") as f:
        pd.DataFrame(result.summary, columns=list(SUMMARY_COLUMNS)).to_csv(f, index=False)
    atomic_write_text(out / "paired_summary.md", paired_markdown(result))
    summary = paired_json(result)
    atomic_write_text(out / "paired_summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


__all__ = [
    "PAIRED_FILES",
    "PairedComparison",
    "RunScores",
    "delta_summary",
    "min_p",
    "paired_comparison",
    "paired_json",
    "paired_markdown",
    "read_variant",
    "wilcoxon_p",
    "write_paired",
]

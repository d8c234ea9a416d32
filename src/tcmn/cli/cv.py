"""``tcmn-cv``: mean ± std over the folds / seeds / left-out datasets of a sweep folder, and the
paired comparison of two variant folders.

Examples::

    tcmn-cv dir=logs/train_main/multirun/2026-01-31_10-00-00
    tcmn-cv dir=logs/... out=results/cv group_by=[model.loss.beta]
    tcmn-cv dir=logs/results/cvc/tcmn compare=logs/results/cvc/no_ltc out=results/tcmn_vs_no_ltc

Reads every job's ``summary.json`` under ``dir`` (``tcmn-train`` and ``tcmn-eval`` runs) and
writes ``cv_per_dataset.csv``, ``cv_per_class.csv``, ``cv_per_run.csv``, ``cv_summary.md`` and
``cv_summary.json`` into ``out`` (default ``dir``); failed and missing runs are listed, never
skipped silently. The logic is :func:`tcmn.cv.write_cv`.

With ``compare=B`` it also pairs the runs of ``dir`` (A) and ``B`` by fold and seed and writes
Δ = A − B of J, F and Dice per pair with its mean ± std, sign counts and Wilcoxon signed-rank p
(``paired_per_run.csv``, ``paired_summary.csv``, ``paired_summary.md``,
``paired_summary.json``) into ``out``; runs whose fold and seed are in one folder only are
listed as unpaired. The logic is :func:`tcmn.paired.write_paired`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from tcmn.cli._common import setup_env, user_errors
from tcmn.errors import TCMNError


@dataclass
class CVArgs:
    """Arguments of ``tcmn-cv`` (``key=value`` on the command line).

    Attributes:
        dir: the sweep folder (or any folder holding run folders).
        out: where the tables go (default: ``dir``).
        group_by: config keys whose values are aggregated separately (e.g. ``[model.loss.beta]``).
        compare: a second variant folder (B): pair its runs with those of ``dir`` (A) by fold
            and seed and write the paired comparison (Δ = A − B) into ``out``.
    """

    dir: str = "???"
    out: str | None = None
    group_by: list[str] = field(default_factory=list)
    compare: str | None = None


def parse_args(argv: list[str]) -> CVArgs:
    """``key=value`` arguments (OmegaConf dot-list syntax) -> :class:`CVArgs`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    bad = [a for a in argv if "=" not in a]
    if bad:
        raise TCMNError(f"argument {bad[0]!r} is not key=value; usage: tcmn-cv dir=SWEEP_FOLDER.")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(CVArgs), OmegaConf.from_dotlist(argv))
        args = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise TCMNError(
            f"{msg}; tcmn-cv takes dir=, out=, group_by=[...] and compare=, e.g. tcmn-cv "
            "dir=SWEEP_FOLDER."
        ) from None
    return args


def cv(argv: list[str]) -> dict:
    """Run ``tcmn-cv`` on ``argv``; print the Markdown summaries; return the JSON summary.

    With ``compare=`` the returned ``cv_summary.json`` content of ``dir`` also holds the paired
    comparison (the content of ``paired_summary.json``) under ``paired``.
    """
    from pathlib import Path

    from tcmn.cv import OUTPUT_FILES, write_cv
    from tcmn.paired import PAIRED_FILES, write_paired

    args = parse_args(argv)
    summary = write_cv(args.dir, args.out, args.group_by)
    out = Path(args.out or args.dir)
    print((out / "cv_summary.md").read_text())
    print(f"tables written to {out} ({', '.join(OUTPUT_FILES)})")
    if args.compare is not None:
        summary["paired"] = write_paired(args.dir, args.compare, out)
        print((out / "paired_summary.md").read_text())
        print(f"paired comparison written to {out} ({', '.join(PAIRED_FILES)})")
    return summary


def main() -> None:
    setup_env()
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    user_errors(cv)(argv)


if __name__ == "__main__":
    main()

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

With ``seeds=FOLDER`` (a seeds folder of ``tools/demo_seeds.sh``, e.g. ``results/demo/recipe``)
it writes and prints the recipe's range over seeds (``spread.json``, ``spread.md``); with
``place=RUN`` as well it prints where that ``make demo`` run falls in the range (what ``make
demo`` ends with). The logic is :mod:`tcmn.spread`::

    tcmn-cv seeds=results/demo/recipe
    tcmn-cv seeds=results/demo/recipe place=logs/demo
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
        seeds: a seeds folder (``seed_<k>/test.json`` and ``unseen.json``): write and print its
            range over seeds instead (``dir`` is then not needed).
        place: with ``seeds``, a ``make demo`` run folder: print where it falls in the range.
    """

    dir: str | None = None
    out: str | None = None
    group_by: list[str] = field(default_factory=list)
    compare: str | None = None
    seeds: str | None = None
    place: str | None = None


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
            f"{msg}; tcmn-cv takes dir=, out=, group_by=[...], compare=, seeds= and place=, e.g. "
            "tcmn-cv dir=SWEEP_FOLDER."
        ) from None
    if args.place is not None and args.seeds is None:
        raise TCMNError("place=RUN needs seeds=SEEDS_FOLDER, the range to place the run in.")
    if args.dir is None and args.seeds is None:
        raise TCMNError(
            "tcmn-cv needs dir=SWEEP_FOLDER (or seeds=SEEDS_FOLDER for a recipe's range)."
        )
    return args


def seed_range(args: CVArgs) -> dict:
    """``seeds=`` (and ``place=``): write and print a recipe's range over seeds; return it."""
    from pathlib import Path

    from tcmn.spread import place, read_run, read_seeds, seed_spread, spread_markdown, write_spread

    if args.place is not None:  # read only: make demo places its run without writing anything
        spread = seed_spread(read_seeds(args.seeds))
        print("\n".join(place(read_run(args.place), spread)))
        return spread
    spread = write_spread(args.seeds)
    print(spread_markdown(spread))
    print(f"range written to {Path(args.seeds)} (spread.json, spread.md)")
    return spread


def cv(argv: list[str]) -> dict:
    """Run ``tcmn-cv`` on ``argv``; print the Markdown summaries; return the JSON summary.

    With ``compare=`` the returned ``cv_summary.json`` content of ``dir`` also holds the paired
    comparison (the content of ``paired_summary.json``) under ``paired``.
    """
    from pathlib import Path

    from tcmn.cv import OUTPUT_FILES, write_cv
    from tcmn.paired import PAIRED_FILES, write_paired

    args = parse_args(argv)
    if args.seeds is not None:
        return seed_range(args)
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

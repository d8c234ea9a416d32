"""The README's paired table of a results group (not a test): the recipe (``tcmn``) against
beta = 0 (``no_ltc``), one row per fold and seed, from the kept summaries of ``tools/results.sh``.

Usage: python tools/pairs_table.py [results/cvc] [--a tcmn] [--b no_ltc]

Prints the Markdown table (J / F / mask dependence of both, ΔJ, the copy-first-mask J, the memory
statistics d13 and mask signal of both) and a line of counts; the paired statistics (mean ± std
of ΔJ / ΔF / ΔDice, Wilcoxon p) are ``tcmn-cv dir=<group>/tcmn compare=<group>/no_ltc``.
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path


def scores(path: Path) -> dict[str, float]:
    s = json.loads(path.read_text())
    model = s["methods"]["tcmn"]
    return {
        "fold": s["fold"],
        "seed": s["seed"],
        "J": 100 * model["J"],
        "F": 100 * model["F"],
        "dep": 100 * s["mask_dependence"]["mean"],
        "copy": 100 * s["methods"]["copy_first_mask"]["J"],
        "d13": s["diagnostics"]["d13"],
        "signal": s["diagnostics"]["mask_signal"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("group", nargs="?", default="results/cvc")
    ap.add_argument("--a", default="tcmn")
    ap.add_argument("--b", default="no_ltc")
    args = ap.parse_args()
    root = Path(args.group)
    pairs = []
    for run in sorted((root / args.a).iterdir()):
        other = root / args.b / run.name / "summary.json"
        if (run / "summary.json").is_file() and other.is_file():
            pairs.append((scores(run / "summary.json"), scores(other)))
    if not pairs:
        raise SystemExit(f"{root}: no run of {args.a} with its pair in {args.b}")
    pairs.sort(key=lambda p: (p[0]["seed"], p[0]["fold"]))
    print(
        "| fold, seed | recipe J / F / dep | β = 0 J / F / dep | ΔJ | copy-first-mask J "
        "| memory d13 recipe / β=0 | mask signal recipe / β=0 |"
    )
    print("|---|---|---|---|---|---|---|")
    for a, b in pairs:
        print(
            f"| {a['fold']}, {a['seed']} | {a['J']:.1f} / {a['F']:.1f} / {a['dep']:.1f} "
            f"| {b['J']:.1f} / {b['F']:.1f} / {b['dep']:.1f} | {a['J'] - b['J']:+.1f} "
            f"| {a['copy']:.1f} | {a['d13']:.2f} / {b['d13']:.2f} "
            f"| {a['signal']:.2f} / {b['signal']:.2f} |"
        )

    def col(side: int, key: str) -> list[float]:
        return [p[side][key] for p in pairs]

    dj = [a["J"] - b["J"] for a, b in pairs]
    n = len(pairs)
    print(
        f"| **mean ± std ({n} pairs)** "
        f"| **{st.mean(col(0, 'J')):.1f} ± {st.stdev(col(0, 'J')):.1f}** / "
        f"{st.mean(col(0, 'F')):.1f} / {st.mean(col(0, 'dep')):.1f} "
        f"| **{st.mean(col(1, 'J')):.1f} ± {st.stdev(col(1, 'J')):.1f}** / "
        f"{st.mean(col(1, 'F')):.1f} / {st.mean(col(1, 'dep')):.1f} "
        f"| {st.mean(dj):+.1f} ± {st.stdev(dj):.1f} | {st.mean(col(0, 'copy')):.1f} "
        f"| {st.mean(col(0, 'd13')):.2f} / {st.mean(col(1, 'd13')):.2f} "
        f"| {st.mean(col(0, 'signal')):.2f} / {st.mean(col(1, 'signal')):.2f} |"
    )
    lower = sum(a["signal"] < b["signal"] for a, b in pairs)
    print(
        f"\n{n} pairs: ΔJ > 0 in {sum(d > 0 for d in dj)}; mask signal lower with L_tc in "
        f"{lower}; min mask dependence {min(col(0, 'dep')):.1f} (recipe), "
        f"{min(col(1, 'dep')):.1f} (β = 0); fold means of the recipe's J: "
        + ", ".join(
            f"{f}: {st.mean(a['J'] for a, _ in pairs if a['fold'] == f):.1f}"
            for f in sorted({a["fold"] for a, _ in pairs})
        )
    )


if __name__ == "__main__":
    main()

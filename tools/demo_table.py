"""The README's `make demo` tables from the kept per-seed summaries (not a test).

Usage: python tools/demo_table.py [results/demo/recipe] [--compare results/demo/before ...]

Prints the recipe's table (mean ± std over seeds, min-max, per held-out set), its per-seed rows
and, with --compare, one summary row per other seeds folder (a lever measured against the recipe).
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path

SPLITS = {
    "test": "held-out videos (8, seen classes)",
    "unseen": "unseen class `atrium` (21 videos)",
}
CONTROLS = ("control_empty", "control_flip", "control_shift")


def runs(folder: Path) -> list[tuple[int, dict, dict]]:
    out = []
    for d in sorted(folder.glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
        if (d / "test.json").is_file() and (d / "unseen.json").is_file():
            out.append(
                (
                    int(d.name.split("_")[1]),
                    {s: json.loads((d / f"{s}.json").read_text()) for s in SPLITS},
                    json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {},
                )
            )
    return out


def values(summary: dict) -> dict[str, float]:
    m = summary["methods"]
    v = {k: 100 * m["tcmn"][k] for k in ("J", "F", "Dice")}
    v.update({f"copy {k}": 100 * m["copy_first_mask"][k] for k in ("J", "F", "Dice")})
    v.update({c: 100 * m[c]["J"] for c in CONTROLS})
    v["dep"] = 100 * summary["mask_dependence"]["mean"]
    return v


def pm(xs: list[float]) -> str:
    return f"{st.mean(xs):.1f} ± {st.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default="results/demo/recipe")
    ap.add_argument("--compare", nargs="*", default=[])
    a = ap.parse_args()
    rs = runs(Path(a.folder))
    print(
        "| test set | J | F | Dice | copy-first-mask J / F / Dice "
        "| J, wrong first mask: empty / flipped / shifted | mask dependence (J) |"
    )
    print("|---|---|---|---|---|---|---|")
    for split, name in SPLITS.items():
        vs = [values(r[1][split]) for r in rs]

        def col(k: str, vs: list = vs) -> list[float]:
            return [v[k] for v in vs]

        rng = f"{min(col('J')):.1f}-{max(col('J')):.1f}"
        print(
            f"| {name} | **{pm(col('J'))}** ({rng}) | {pm(col('F'))} | {pm(col('Dice'))} "
            f"| {st.mean(col('copy J')):.1f} / {st.mean(col('copy F')):.1f} / "
            f"{st.mean(col('copy Dice')):.1f} "
            f"| {' / '.join(f'{st.mean(col(c)):.1f}' for c in CONTROLS)} "
            f"| **{pm(col('dep'))}** ({min(col('dep')):.1f}-{max(col('dep')):.1f}) |"
        )
    secs = [r[2]["seconds"] for r in rs if "seconds" in r[2]]
    if secs:
        print(
            f"\n{len(rs)} seeds ({', '.join(str(r[0]) for r in rs)}); wall time of make demo "
            f"{min(secs) / 60:.1f}-{max(secs) / 60:.1f} min a seed"
        )
    print("\n| seed | held-out J / F / Dice / dep | unseen class J / F / Dice / dep |")
    print("|---|---|---|---|")
    for seed, sm, _ in rs:
        t, u = values(sm["test"]), values(sm["unseen"])
        print(
            f"| {seed} | {t['J']:.1f} / {t['F']:.1f} / {t['Dice']:.1f} / {t['dep']:.1f} "
            f"| {u['J']:.1f} / {u['F']:.1f} / {u['Dice']:.1f} / {u['dep']:.1f} |"
        )
    if a.compare:
        print(
            "\n| seeds folder | seeds | held-out J | held-out dependence | unseen J | unseen dependence |"
        )
        print("|---|---|---|---|---|---|")
        for folder in [a.folder, *a.compare]:
            rr = runs(Path(folder))
            cells = []
            for split in SPLITS:
                for k in ("J", "dep"):
                    xs = [values(r[1][split])[k] for r in rr]
                    cells.append(f"{pm(xs)} ({min(xs):.1f}-{max(xs):.1f})")
            print(f"| `{folder}` | {len(rr)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""The README's `make demo` tables from the kept per-seed summaries (not a test).

Usage: python tools/demo_table.py [results/demo/recipe] [--compare results/demo/before ...]

Prints the recipe's table (mean ± std over seeds, min-max, per held-out set), its per-seed rows
and, with --compare, one summary row per other seeds folder (a lever measured against the recipe).
The seeds folders are read by :mod:`tcmn.spread`, with the README's columns as metrics.
"""

from __future__ import annotations

import argparse

from tcmn.spread import read_seeds, seed_spread

NAMES = {"test": "held-out videos (8, seen classes)", "unseen": "unseen class `atrium` (21 videos)"}
CONTROLS = ("control_empty", "control_flip", "control_shift")
#: the README's columns -> paths into a tcmn-eval summary
COLUMNS = {
    **{k: ("methods", "tcmn", k) for k in ("J", "F", "Dice")},
    **{f"copy {k}": ("methods", "copy_first_mask", k) for k in ("J", "F", "Dice")},
    **{c: ("methods", c, "J") for c in CONTROLS},
    "dep": ("mask_dependence", "mean"),
}


def pp(x: float) -> str:
    return f"{100 * x:.1f}"


def pm(st: dict) -> str:
    return f"{pp(st['mean'])} ± {pp(st['std'])}" if len(st["values"]) > 1 else pp(st["mean"])


def rng(st: dict) -> str:
    return f"{pp(st['min'])}-{pp(st['max'])}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default="results/demo/recipe")
    ap.add_argument("--compare", nargs="*", default=[])
    a = ap.parse_args()
    seeds = read_seeds(a.folder, COLUMNS)
    spread = seed_spread(seeds)
    print(
        "| test set | J | F | Dice | copy-first-mask J / F / Dice "
        "| J, wrong first mask: empty / flipped / shifted | mask dependence (J) |"
    )
    print("|---|---|---|---|---|---|---|")
    for split, name in NAMES.items():
        st = spread["splits"][split]
        print(
            f"| {name} | **{pm(st['J'])}** ({rng(st['J'])}) | {pm(st['F'])} | {pm(st['Dice'])} "
            f"| {' / '.join(pp(st[f'copy {k}']['mean']) for k in ('J', 'F', 'Dice'))} "
            f"| {' / '.join(pp(st[c]['mean']) for c in CONTROLS)} "
            f"| **{pm(st['dep'])}** ({rng(st['dep'])}) |"
        )
    if spread["seconds"]:
        sec = spread["seconds"]
        print(
            f"\n{len(seeds)} seeds ({', '.join(map(str, seeds))}); wall time of make demo "
            f"{sec['min'] / 60:.1f}-{sec['max'] / 60:.1f} min a seed"
        )
    print("\n| seed | held-out J / F / Dice / dep | unseen class J / F / Dice / dep |")
    print("|---|---|---|---|")
    for seed, entry in seeds.items():
        cells = [" / ".join(pp(entry[s][k]) for k in ("J", "F", "Dice", "dep")) for s in NAMES]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    if a.compare:
        print(
            "\n| seeds folder | seeds | held-out J | held-out dependence | unseen J "
            "| unseen dependence |"
        )
        print("|---|---|---|---|---|---|")
        for folder in [a.folder, *a.compare]:
            sp = seed_spread(read_seeds(folder, COLUMNS))
            cells = [
                f"{pm(sp['splits'][s][k])} ({rng(sp['splits'][s][k])})"
                for s in NAMES
                for k in ("J", "dep")
            ]
            print(f"| `{folder}` | {len(sp['seeds'])} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

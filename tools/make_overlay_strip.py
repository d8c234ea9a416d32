"""Write docs/overlay_strip.png, the README's picture, from the overlays `make demo` wrote.

Usage: python tools/make_overlay_strip.py [DEMO_FOLDER]   (default logs/demo)

Stacks the first two held-out test videos and the first unseen-class video (synthetic data only:
real datasets may not be redistributed) into one image, one Fig. 2 style strip per row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    demo = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "logs" / "demo"
    rows = sorted((demo / "eval_test" / "overlays").glob("*.png"))[:2]
    rows += sorted((demo / "eval_unseen" / "overlays").glob("*.png"))[:1]
    if not rows:
        print(f"{demo}: no overlays; run `make demo` first.", file=sys.stderr)
        return 1
    images = [cv2.imread(str(p)) for p in rows]
    width = min(im.shape[1] for im in images)
    images = [im[:, :width] for im in images]
    gap = np.full((4, width, 3), 255, np.uint8)
    out = np.concatenate([x for im in images for x in (im, gap)][:-1])
    dst = ROOT / "docs" / "overlay_strip.png"
    dst.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(dst), out)
    print(f"{dst}: {len(rows)} strips ({', '.join(p.stem for p in rows)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

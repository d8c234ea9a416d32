"""A recipe's range over seeds (``tcmn.spread``, ``tcmn-cv seeds=``) on hand-computed seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tcmn.cli.cv import cv
from tcmn.errors import TCMNError
from tcmn.spread import place, read_run, read_seeds, seed_spread, spread_markdown


def summary(j: float, dep: float, copy: float = 0.2) -> dict:
    """A tcmn-eval summary with J, F = J - 0.1, Dice = J + 0.1, a dependence and the baseline."""
    return {
        "status": "ok",
        "methods": {
            "tcmn": {"J": j, "F": j - 0.1, "Dice": j + 0.1},
            "copy_first_mask": {"J": copy},
        },
        "mask_dependence": {"synthetic": dep, "mean": dep},
    }


def write_seed(root: Path, seed: int, test: dict, unseen: dict, seconds: int | None = None) -> None:
    d = root / f"seed_{seed}"
    d.mkdir(parents=True)
    (d / "test.json").write_text(json.dumps(test))
    (d / "unseen.json").write_text(json.dumps(unseen))
    if seconds is not None:
        (d / "run.json").write_text(json.dumps({"seconds": seconds, "cpu": "Test CPU", "cores": 2}))


@pytest.fixture
def seeds_dir(tmp_path: Path) -> Path:
    root = tmp_path / "recipe"
    # held-out J 0.70, 0.74, 0.78 (mean 0.74, sample std 0.04); dependence 0.30, 0.40, 0.50
    for seed, (j, dep) in enumerate([(0.70, 0.30), (0.74, 0.40), (0.78, 0.50)]):
        write_seed(
            root, seed, summary(j, dep), summary(j - 0.05, dep - 0.1), seconds=300 + 60 * seed
        )
    # an unfinished seed (no unseen summary) and a stray folder are not counted
    (root / "seed_7").mkdir()
    (root / "seed_7" / "test.json").write_text(json.dumps(summary(0.1, 0.0)))
    (root / "notes").mkdir()
    return root


def test_spread_over_seeds_is_mean_sample_std_min_max(seeds_dir: Path) -> None:
    spread = seed_spread(read_seeds(seeds_dir))
    assert spread["seeds"] == [0, 1, 2]
    j = spread["splits"]["test"]["J"]
    assert j["values"] == pytest.approx([0.70, 0.74, 0.78])
    assert j["mean"] == pytest.approx(0.74)
    assert j["std"] == pytest.approx(0.04)  # sqrt((0.04² + 0 + 0.04²) / 2)
    assert (j["min"], j["max"]) == (pytest.approx(0.70), pytest.approx(0.78))
    dep = spread["splits"]["unseen"]["mask dependence"]
    assert dep["mean"] == pytest.approx(0.30) and dep["std"] == pytest.approx(0.10)
    assert spread["splits"]["test"]["F"]["mean"] == pytest.approx(0.64)
    assert spread["splits"]["test"]["copy-first-mask J"]["std"] == pytest.approx(0.0)
    assert spread["seconds"]["mean"] == pytest.approx(360) and spread["cpu"] == ["Test CPU"]
    table = spread_markdown(spread)
    assert "| held-out videos | J | 74.0 ± 4.0 | 70.0 - 78.0 | 70.0 | 74.0 | 78.0 |" in table
    assert "3 seeds" in table and "6.0 min a seed" in table


def test_one_seed_has_zero_std(tmp_path: Path) -> None:
    write_seed(tmp_path, 4, summary(0.6, 0.3), summary(0.5, 0.2))
    spread = seed_spread(read_seeds(tmp_path))
    assert spread["seeds"] == [4] and spread["seconds"] is None
    assert spread["splits"]["test"]["J"]["std"] == 0.0
    assert not math.isnan(spread["splits"]["unseen"]["J"]["mean"])


def test_place_says_below_within_above(seeds_dir: Path, tmp_path: Path) -> None:
    spread = seed_spread(read_seeds(seeds_dir))
    run = {
        "test": {"J": 0.69, "mask dependence": 0.45},
        "unseen": {"J": 0.80, "mask dependence": 0.2},
    }
    lines = place(run, spread)
    assert lines[0] == "this run against the recipe's range (min-max over 3 seeds on Test CPU):"
    assert lines[1].startswith("held-out videos: J 69.0 (below 70.0-78.0, mean 74.0 ± 4.0)")
    assert "mask dependence 45.0 (within 30.0-50.0" in lines[1]
    assert lines[2].startswith("unseen class: J 80.0 (above 65.0-73.0")
    assert "mask dependence 20.0 (within 20.0-40.0" in lines[2]  # the min itself is within


def test_tcmn_cv_seeds_writes_the_range_and_places_a_demo_run(
    seeds_dir: Path, tmp_path: Path, capsys
) -> None:
    spread = cv([f"seeds={seeds_dir}"])
    assert spread["splits"]["test"]["J"]["mean"] == pytest.approx(0.74)
    written = json.loads((seeds_dir / "spread.json").read_text())
    assert written["splits"]["test"]["J"]["values"] == pytest.approx([0.70, 0.74, 0.78])
    assert "74.0 ± 4.0" in (seeds_dir / "spread.md").read_text()
    run = tmp_path / "demo"
    for sub, s in (("eval_test", summary(0.75, 0.41)), ("eval_unseen", summary(0.6, 0.1))):
        (run / sub).mkdir(parents=True)
        (run / sub / "summary.json").write_text(json.dumps(s))
    assert read_run(run)["test"]["mask dependence"] == pytest.approx(0.41)
    capsys.readouterr()
    cv([f"seeds={seeds_dir}", f"place={run}"])
    out = capsys.readouterr().out
    assert "held-out videos: J 75.0 (within 70.0-78.0" in out
    assert "unseen class: J 60.0 (below 65.0-73.0" in out and "mask dependence 10.0 (below" in out


def test_bad_seeds_folders_get_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(TCMNError, match="no such seeds folder; bash tools/demo_seeds.sh"):
        read_seeds(tmp_path / "missing")
    with pytest.raises(TCMNError, match="no seed_<k>/ folder with test.json and unseen.json"):
        read_seeds(tmp_path)
    write_seed(tmp_path / "bad", 0, {"status": "ok", "methods": {}}, summary(0.5, 0.2))
    with pytest.raises(TCMNError, match=r"no methods\.tcmn\.J in this summary"):
        read_seeds(tmp_path / "bad")
    write_seed(tmp_path / "failed", 0, {"status": "failed"}, summary(0.5, 0.2))
    with pytest.raises(TCMNError, match="the evaluation failed"):
        read_seeds(tmp_path / "failed")
    with pytest.raises(TCMNError, match="no such evaluation summary; run make demo"):
        read_run(tmp_path)
    with pytest.raises(TCMNError, match="place=RUN needs seeds="):
        cv([f"place={tmp_path}"])
    with pytest.raises(TCMNError, match="tcmn-cv needs dir="):
        cv(["out=x"])


def test_other_metrics_can_be_read_and_spread(seeds_dir: Path) -> None:
    """tools/demo_table.py reads its own columns through read_seeds; the spread follows them."""
    seeds = read_seeds(seeds_dir, {"copy J": ("methods", "copy_first_mask", "J")})
    assert set(seeds[0]["test"]) == {"copy J"}
    spread = seed_spread(seeds)
    assert set(spread["splits"]["unseen"]) == {"copy J"}
    assert spread["splits"]["test"]["copy J"]["mean"] == pytest.approx(0.2)

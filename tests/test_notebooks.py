"""The notebooks: generated from tools/make_notebooks.py, committed without outputs, and run top to
bottom (quickstart, then results on the quickstart's outputs) at tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from conftest import assert_tool_check_passes
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def test_notebooks_are_generated_and_committed_without_outputs():
    assert_tool_check_passes("make_notebooks.py")
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert paths, f"no notebooks in {NOTEBOOKS}"
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path


def _execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb, timeout=400, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(
                out.get("text", "") + json.dumps(out.get("data", {}).get("text/plain", ""))
            )
    return "\n".join(parts)


def test_quickstart_then_results_run_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("TCMN_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("TCMN_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    quick = _execute("01_quickstart.ipynb")
    summary = json.loads((tmp_path / "eval" / "out" / "summary.json").read_text())
    assert {"tcmn", "copy_first_mask"} <= set(summary["methods"])
    assert (tmp_path / "main" / "out").is_dir() and list((tmp_path / "main").rglob("last.ckpt"))
    text = _text(quick)
    assert "mask dependence" in text and "checkpoint:" in text
    # every figure cell drew a figure
    images = sum(
        "image/png" in out.get("data", {}) for c in quick.cells for out in c.get("outputs", [])
    )
    assert images >= 3

    results = _execute("02_results.ipynb")
    text = _text(results)
    assert "evaluation folder:" in text and "copy_first_mask" in text
    assert (
        sum(
            "image/png" in out.get("data", {})
            for c in results.cells
            for out in c.get("outputs", [])
        )
        >= 2
    )

"""The package's layers (docs/architecture.md): every module imports, no import cycle, and no
module imports a layer above its own (e.g. ``models`` importing ``data``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "tcmn"

#: Layers from the bottom; a module may import its own layer's and lower layers' modules.
LAYERS = [
    ["errors", "utils", "viz", "checks"],
    ["io"],
    ["models", "losses", "metrics", "cv", "paired", "spread"],
    ["diagnostics", "inference"],
    ["data"],
    ["evaluation"],
    ["callbacks"],
    ["lit_module"],
    ["experiment", "bench", "wandb_offline"],
    ["app"],
    ["cli"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_names() -> list[str]:
    """Every module of the package, dotted (``tcmn.io.video``)."""
    out = []
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(SRC).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported tcmn module, line, at module level) for every import in ``module``'s source."""
    rel = Path(*module.split("."))
    path = SRC / rel.with_suffix(".py")
    if not path.exists():
        path = SRC / rel / "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    # imports under `if TYPE_CHECKING:` never run
    typing_only = {
        id(n)
        for s in tree.body
        if isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test)
        for n in ast.walk(s)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n.startswith("tcmn.") and n in ALL:
                found.append((n, node.lineno, id(node) in top))
    return found


ALL = set(module_names())


def layer(module: str) -> str:
    """The layer name of a module: its first component under ``tcmn``."""
    return module.split(".")[1]


def test_every_module_has_a_layer():
    unknown = sorted({layer(m) for m in ALL if m != "tcmn"} - set(RANK))
    assert not unknown, f"modules outside the layer table (add them to LAYERS): {unknown}"


def test_no_upward_import():
    bad = []
    for m in sorted(ALL - {"tcmn"}):
        for target, line, _ in imports_of(m):
            if RANK[layer(target)] > RANK[layer(m)]:
                bad.append(f"{m}:{line} imports {target}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    """No cycle among module-level imports (imports inside functions must not hide one either:
    those are checked by the layer rule above)."""
    graph = {m: sorted({t for t, _, top in imports_of(m) if top and t != m}) for m in ALL}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            if t.startswith(m + "."):  # a package importing its own submodules
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checks_see_a_broken_case(tmp_path, monkeypatch):
    """The layer rule flags a lower layer importing a higher one (so the tests above can fail)."""
    fake = tmp_path / "tcmn" / "models"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("from tcmn.data.layout import PreparedDataset\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "ALL", ALL | {"tcmn.models.bad"})
    found = imports_of("tcmn.models.bad")
    assert found and RANK[layer(found[0][0])] > RANK[layer("tcmn.models.bad")]


def test_every_module_imports_in_a_fresh_interpreter():
    code = (
        "import importlib, sys\n"
        f"mods = {sorted(ALL)!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "print(len(mods))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.strip()) == len(ALL) > 40

"""Every command of the README, extracted from its ``bash`` blocks.

Each ``tcmn-*`` command is run as written (placeholders such as ``<run>`` filled with real paths)
with Hydra's ``--cfg job`` appended, so its arguments go through the real entry point (argv
translation, config groups, override grammar, sweep syntax) and a renamed key or group in
``conf/`` fails here. Each command's behaviour is run at tiny size by the tests named in
``RUN_BY``; this file checks that the table covers every command family of the README and that
the ``make`` targets it names exist.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONF = ROOT / "conf"
BIN = Path(sys.executable).parent

#: command family -> the tests that run it at tiny size
RUN_BY = {
    "tcmn-prepare": ["test_prepare_cli.py", "test_converters.py"],
    "tcmn-train": ["test_train.py", "test_sweeps.py", "test_demo.py", "test_ddp.py"],
    "tcmn-eval": ["test_train.py", "test_demo.py"],
    "tcmn-predict": ["test_predict.py"],
    "tcmn-annotate": ["test_annotate.py", "test_annotate_browser.py", "test_bad_inputs.py"],
    "tcmn-cv": ["test_cv.py", "test_sweeps.py"],
    "tcmn-bench": ["test_bench.py"],
}


def readme_commands() -> list[str]:
    """The README's shell commands (``bash`` blocks, comments and line continuations removed)."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _fill(command: str, tmp: Path) -> list[str]:
    """``command`` as an argv, its placeholders replaced by paths under ``tmp``."""
    command = re.sub(r"<[^>]+>", "run", command)
    argv = []
    for tok in shlex.split(command):
        if tok.endswith("=..."):
            tok = tok[:-3] + str(tmp / "last.ckpt")
        elif tok == "...":
            continue
        argv.append(tok)
    return argv


def tcmn_commands() -> list[str]:
    """The ``tcmn-*`` commands, without leading environment assignments (``WANDB_MODE=online``)."""
    out = []
    for c in readme_commands():
        c = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", c)
        if c.startswith("tcmn-"):
            out.append(c)
    return out


def test_the_readme_names_both_commands_and_every_family_is_covered():
    commands = readme_commands()
    assert "make demo" in commands and "make test" in commands
    families = {c.split()[0] for c in tcmn_commands()}
    assert families == set(RUN_BY), f"README command families {families} vs RUN_BY {set(RUN_BY)}"
    for tests in RUN_BY.values():
        for name in tests:
            assert (ROOT / "tests" / name).exists(), name
    makefile = (ROOT / "Makefile").read_text()
    for c in commands:
        if c.startswith("make "):
            for target in c.split()[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), (
                    f"no make target {target}"
                )


def _check(argv: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe, args = str(BIN / argv[0]), argv[1:]
    if argv[0] == "tcmn-cv":  # not a Hydra app: its arguments are parsed, the folder made
        code = "import sys; from tcmn.cli.cv import parse_args; print(parse_args(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if "--help" not in args and "--cfg" not in args:
        args = [*args, "--cfg", "job"]
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, cwd=tmp, env=env, timeout=180
    )


def _jobs(argv: list[str]) -> list[list[str]]:
    """A multirun (``-m``) command as single jobs: each value of each sweep override once (the
    other sweeps at their first value); any other command as itself."""
    if "-m" not in argv and "--multirun" not in argv:
        return [argv]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv[1:] if a not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(args)
    sweeps = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [] for o in parsed]
    keys = [o.get_key_element() for o in parsed]
    first = [f"{k}={v[0]}" if v else a for k, v, a in zip(keys, sweeps, args, strict=True)]
    jobs = [[argv[0], *first]]
    for i, v in enumerate(sweeps):
        for other in v[1:]:
            jobs.append([argv[0], *first[:i], f"{keys[i]}={other}", *first[i + 1 :]])
    return jobs


def test_every_tcmn_command_of_the_readme_composes(tmp_path):
    commands = [(c, job) for c in tcmn_commands() for job in _jobs(_fill(c, tmp_path))]
    assert len(commands) >= 20
    argvs = [job for _, job in commands]
    commands = [c for c, _ in commands]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: _check(a, tmp_path), argvs))
    failed = [
        f"{c}\n  -> {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
        for c, r in zip(commands, results, strict=True)
        if r.returncode != 0
    ]
    assert not failed, "README commands that do not compose:\n" + "\n".join(failed)
    # --cfg job printed the composed config: each value override of the command is at its key
    assert len(argvs) == len(results)
    checked = 0
    for argv, r in zip(argvs, results, strict=True):
        if "--help" in argv:
            assert "experiment" in r.stdout
            continue
        if argv[0] == "tcmn-cv":
            continue
        checked += _check_values(argv, r.stdout)
    assert checked >= 20, f"only {checked} value overrides checked"


_MISSING = object()


def _value_overrides(argv: list[str]) -> list[tuple[str, object]]:
    """``(key, value)`` of each override of ``argv`` that sets a value of the job's config: not
    a config group (a folder of ``conf/``, e.g. ``experiment=...``), not ``hydra.*``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    toks = [t for t in argv[1:] if "=" in t and not t.startswith("-")]
    out = []
    for o in OverridesParser.create().parse_overrides(toks):
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or o.is_delete():
            continue
        if (CONF / key.replace(".", "/")).is_dir():
            continue
        assert not o.is_sweep_override(), (argv, key)
        out.append((key, o.value()))
    return out


def _check_values(argv: list[str], printed: str) -> int:
    """Assert that the config ``printed`` by ``--cfg job`` holds each value override of ``argv``
    at its exact key; return how many were checked."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    cfg = OmegaConf.create(printed)
    assert isinstance(cfg, DictConfig), (argv, printed[:200])
    overrides = _value_overrides(argv)
    for key, want in overrides:
        got = OmegaConf.select(cfg, key, default=_MISSING)
        assert got is not _MISSING, f"{argv}: no key {key} in the printed config"
        if isinstance(got, DictConfig | ListConfig):
            got = OmegaConf.to_container(got)
        assert got == want and type(got) is type(want), (
            f"{argv}: {key} is {got!r} in the printed config, the command sets {want!r}"
        )
    return len(overrides)

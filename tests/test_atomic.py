"""Atomic writes honour the umask like a plain open / mkdir."""

from __future__ import annotations

import os
import stat

import pytest

from tcmn.utils.atomic import atomic_dir, atomic_write_text


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_atomic_outputs_get_the_umask_modes(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "table.csv", "a,b\n")
        with atomic_dir(tmp_path / "out") as d:
            (d / "x.txt").write_text("x")
        plain = tmp_path / "plain.txt"
        plain.write_text("p")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "table.csv").stat().st_mode) == file_mode
    assert stat.S_IMODE(plain.stat().st_mode) == file_mode  # the same as a plain open
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == dir_mode
    assert (tmp_path / "table.csv").read_text() == "a,b\n"

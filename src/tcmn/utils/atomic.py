"""Atomic output: a file or folder appears complete under its final name, or not at all.

Everything the project writes for users (checkpoints, masks, tables, prepared videos) goes
through these helpers: content is written to a temporary sibling and renamed into place, so an
interrupted run never leaves a truncated file that looks valid. ``tempfile`` creates the
temporary file 0600 and folder 0700; before the rename they get the modes a plain ``open`` /
``mkdir`` would give under the process umask (0644 / 0755 under umask 022), so colleagues on a
shared machine can read the outputs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    An existing ``path`` is replaced only after the new content is complete. On an exception the
    temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove what interrupted atomic writes left in ``folder`` (``.<name>.<random>.tmp`` files
    and folders of :func:`atomic_write` / :func:`atomic_dir`). Call it when a run starts, before
    anything writes there.

    Returns:
        The paths removed.
    """
    root = Path(folder)
    removed = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if _LEFTOVER.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed

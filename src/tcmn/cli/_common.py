"""What every command-line entry point shares: where the configs live and how errors reach users."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tcmn.errors import TCMNError

#: The Hydra config tree (``conf/`` at the repository root; override with $TCMN_CONF_DIR).
CONF_DIR = str(Path(os.environ.get("TCMN_CONF_DIR", Path(__file__).resolve().parents[3] / "conf")))

log = logging.getLogger("tcmn")


def user_errors(fn: Callable) -> Callable:
    """Run ``fn``; a :class:`TCMNError` is printed as one sentence and the process exits with 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TCMNError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def setup_env() -> None:
    """Environment defaults for every command (quiet albumentations, offline W&B by default)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")

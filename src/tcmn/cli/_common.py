"""What every command-line entry point shares: where the configs live and how errors reach users."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

from tcmn.errors import TCMNError

log = logging.getLogger("tcmn")


def user_errors(fn: Callable) -> Callable:
    """Run ``fn``; a :class:`TCMNError` is printed as one sentence and the process exits with 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            cause = _user_error(e)
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def _user_error(e: BaseException | None) -> TCMNError | None:
    """The TCMNError behind ``e`` (Hydra wraps errors raised while it builds objects), or None."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, TCMNError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def setup_env() -> None:
    """Environment defaults for every command (quiet albumentations, offline W&B by default)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    # optuna 2.10 (the Hydra sweeper's) imports SQLAlchemy 1.4 APIs that warn about 2.0
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")

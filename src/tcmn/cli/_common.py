"""What every command-line entry point shares: where the configs live and how errors reach users."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

from tcmn.errors import TCMNError

log = logging.getLogger("tcmn")


def debug() -> bool:
    """True when the user asked for full tracebacks (``HYDRA_FULL_ERROR=1`` or ``TCMN_DEBUG=1``)."""
    return "1" in (os.environ.get("HYDRA_FULL_ERROR"), os.environ.get("TCMN_DEBUG"))


def user_errors(fn: Callable) -> Callable:
    """Run ``fn`` so that no traceback reaches a user.

    A :class:`TCMNError` is printed as its one sentence and the process exits with 2. Any other
    exception (a bug, or a failure we did not foresee) is printed as one sentence naming its type
    and message, with how to get the full trace, and the process exits with 1; with
    ``HYDRA_FULL_ERROR=1`` or ``TCMN_DEBUG=1`` it propagates with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # the reader of our output went away (`tcmn-cv ... | head`): stop quietly, as a
            # shell tool does; stdout goes to devnull so that Python's flush at exit is silent
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as e:
            cause = _user_error(e)
            if cause is not None:
                print(f"error: {cause}", file=sys.stderr)
                sys.exit(2)
            if debug():
                raise
            log.debug("unexpected error", exc_info=True)
            msg = " ".join(str(e).split()) or "no message"
            print(
                f"error: unexpected {type(e).__name__}: {msg[:300]} (run again with "
                "TCMN_DEBUG=1 for the full trace, and report it if the cause is not yours).",
                file=sys.stderr,
            )
            sys.exit(1)

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


def check_overrides(argv: list[str]) -> None:
    """Exit with one sentence when Hydra could not read an override of the command line.

    Hydra's own message for ``input=/data/vidéo.mp4`` is a lexer error; this one says to quote
    the value (``input="'/data/vidéo.mp4'"``: the outer quotes are the shell's, the inner ones
    reach Hydra).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for tok in argv:
        if tok.startswith("-") or "=" not in tok:
            continue
        try:
            parser.parse_overrides([tok])
        except OverrideParseException:
            key, _, value = tok.partition("=")
            print(
                f"error: {tok}: Hydra cannot read this value (non-ASCII letters and characters "
                f"such as = , [ ] {{ }} ( ) ' \" need quotes); write {key}=\"'{value}'\" (the "
                "outer quotes are the shell's, the inner ones Hydra's).",
                file=sys.stderr,
            )
            sys.exit(2)


def setup_env() -> None:
    """Environment defaults for every command (quiet albumentations, offline W&B by default)
    and a readable error for an override Hydra cannot parse."""
    check_overrides(sys.argv[1:])
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    # optuna 2.10 (the Hydra sweeper's) imports SQLAlchemy 1.4 APIs that warn about 2.0
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")

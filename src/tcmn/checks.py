"""Settings checked before any work starts: types, ranges, choices, finiteness, files.

Each command runs its rules (:data:`TRAIN`, :data:`EVAL`) on the composed config through
:func:`check_settings`; a bad value is one :class:`~tcmn.errors.TCMNError` sentence that names the
setting, the value and what is allowed (``model.optimizer.lr=nan: not allowed; use a finite
number > 0.``). Settings absent from a config are skipped. The propagation settings have their
own check (:func:`tcmn.inference.session.settle`), and so do the loss weights
(:class:`tcmn.losses.TCMNLoss`), the memory policies and the devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tcmn.errors import TCMNError
from tcmn.utils.torchfile import read_torch_file

_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """One setting: its dotted key and a check returning None (fine) or what is allowed."""

    key: str
    check: Callable[[Any], str | None]


def number(lo: float | None = None, lo_open: bool = False, optional: bool = False):
    """A finite real number, ``> lo`` (``lo_open``) or ``>= lo``."""

    def check(v) -> str | None:
        if v is None and optional:
            return None
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok:
            return None
        bound = "" if lo is None else f" {'>' if lo_open else '>='} {lo:g}"
        return f"a finite number{bound}" + (" or null" if optional else "")

    return check


def whole(lo: int | None = None, optional: bool = False, hi: int | None = None):
    """A whole number ``>= lo`` (and ``<= hi``)."""

    def check(v) -> str | None:
        if v is None and optional:
            return None
        ok = isinstance(v, int) and not isinstance(v, bool)
        if ok and (lo is None or v >= lo) and (hi is None or v <= hi):
            return None
        bound = f" {lo}..{hi}" if hi is not None else "" if lo is None else f" >= {lo}"
        return f"a whole number{bound}" + (" or null" if optional else "")

    return check


def size(lo: int = 16):
    """A size in pixels: a whole number ``>= lo``, or ``[h, w]`` of such numbers."""
    one = whole(lo)

    def check(v) -> str | None:
        if isinstance(v, list | tuple) and len(v) == 2 and all(one(x) is None for x in v):
            return None
        if one(v) is None:
            return None
        return f"a whole number >= {lo} or [h, w] of such numbers"

    return check


def choice(options: Sequence[str]):
    def check(v) -> str | None:
        return None if v in options else f"one of {', '.join(map(str, options))}"

    return check


def checkpoint_file(setting: str):
    """A readable checkpoint file (None: no checkpoint); reading it is the check. A missing or
    unreadable file is :func:`~tcmn.utils.torchfile.read_torch_file`'s one sentence."""

    def check(v) -> str | None:
        if v in (None, ""):
            return None
        ck = read_torch_file(v, setting, "pass a .ckpt written by tcmn-train", mmap=True)
        if not isinstance(ck, dict) or "state_dict" not in ck:
            return "a checkpoint written by tcmn-train; this file holds no model weights"
        return None

    return check


#: tcmn-train
TRAIN = [
    Rule("seed", whole()),
    Rule("model.optimizer.lr", number(0, lo_open=True)),
    Rule("model.optimizer.weight_decay", number(0)),
    Rule("model.optimizer.name", choice(("adam", "adamw"))),
    Rule("model.diag_every", whole(0)),
    Rule("model.loss.start_warm", whole(0)),
    Rule("model.loss.end_warm", whole(0)),
    Rule("model.loss.top_p", number(0, lo_open=True)),
    Rule("model.loss.beta_warmup", whole(0)),
    Rule("trainer.max_steps", whole(-1)),
    Rule("trainer.gradient_clip_val", number(0, optional=True)),
    Rule("data.batch_size", whole(1)),
    Rule("data.num_workers", whole(0)),
    Rule("data.crop_size", size(16)),
    Rule("data.eval_size", whole(16, optional=True)),
    Rule("data.samples_per_epoch", whole(1)),
    Rule("init_from", checkpoint_file("init_from")),
    Rule("ckpt_path", checkpoint_file("ckpt_path")),
]

#: tcmn-eval (the checkpoint and the propagation settings are checked as the session loads them)
EVAL = [
    Rule("seed", whole()),
    Rule("split", choice(("test", "unseen", "val", "all"))),
    Rule("data.eval_size", whole(16, optional=True)),
    Rule("n_overlays", whole(0)),
    Rule("overlay_frames", whole(1)),
    Rule("max_videos", whole(1, optional=True)),
]


#: tcmn-annotate (data_root, propagation and device are checked as the app is configured)
ANNOTATE = [
    Rule("port", whole(1, hi=65535)),
    Rule("upload_max_mb", number(0, lo_open=True)),
]


def check_settings(cfg: Any, rules: Sequence[Rule]) -> None:
    """Check the settings of ``cfg`` (an OmegaConf config) named by ``rules``.

    Raises:
        TCMNError: the first bad setting, in one sentence.
    """
    from omegaconf import OmegaConf

    for rule in rules:
        try:
            v = OmegaConf.select(cfg, rule.key, default=_MISSING)
        except Exception:  # an interpolation that cannot resolve: Hydra reports it later
            continue
        if v is _MISSING:
            continue
        if OmegaConf.is_config(v):
            v = OmegaConf.to_container(v, resolve=True)
        allowed = rule.check(v)
        if allowed is not None:
            raise TCMNError(f"{rule.key}={v}: not allowed; use {allowed}.")

"""Reading a PyTorch file that a user named (a checkpoint, backbone weights)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tcmn.errors import TCMNError


def read_torch_file(
    path: str | os.PathLike,
    setting: str,
    fix: str,
    weights_only: bool = False,
    mmap: bool = False,
) -> Any:
    """``torch.load`` of ``path`` on the CPU, or one sentence naming the setting and the file.

    Args:
        path: the file.
        setting: the setting that named it (``ckpt``, ``init_from``, ``weights_path``).
        fix: what the user should do, ending the sentence (``pass a .ckpt of tcmn-train``).
        weights_only: torch's safe loading (tensors and plain containers only).
        mmap: map the tensors instead of reading them (a check that the file loads).
    Raises:
        TCMNError: the file is missing ("not found") or cannot be read ("may be truncated").
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise TCMNError(f"{setting}={p}: file not found; {fix}.")
    try:
        return torch.load(p, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except Exception as e:
        raise TCMNError(
            f"{setting}={p}: cannot be read ({type(e).__name__}); it may be truncated or another "
            f"kind of file, {fix}."
        ) from e

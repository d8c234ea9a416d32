"""Single images: a frame (uint8 RGB) and the PNG writer.

The readers of the prepared dataset layout, the converters and the prediction writer all use
these, so a frame is decoded one way everywhere (label maps: :mod:`tcmn.io.masks`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tcmn.errors import TCMNError
from tcmn.utils.atomic import atomic_write


def read_frame(path: Path) -> np.ndarray:
    """Read a frame as uint8 RGB ``[H, W, 3]`` (grey images are repeated to 3 channels)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise TCMNError(
            f"{path}: the frame cannot be decoded; check the file or re-run tcmn-prepare."
        )
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def write_png(path: Path, arr: np.ndarray) -> None:
    """Write a uint8 ``[H, W]`` or RGB ``[H, W, 3]`` array as PNG, atomically and deterministically."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise TCMNError(f"{path}: PNG encoding failed; check that the folder is writable.")
    with atomic_write(path) as f:
        f.write(buf.tobytes())

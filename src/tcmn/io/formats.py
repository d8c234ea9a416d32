"""File kinds and small helpers shared by the readers and writers: extensions, natural
order of frame names, intensity scaling to uint8.

**Intensities.** Frames are uint8 RGB ``[H, W, 3]``; grey frames are repeated to 3 channels.
A volume (NIfTI, MetaImage, or a folder of 16-bit images) whose values are already whole numbers
within 0..255 is kept as is; any other volume (16-bit, float) is scaled linearly so that the
minimum and maximum *of the whole volume* map to 0 and 255 (one scale for all frames, so
brightness does not flicker).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tcmn.errors import TCMNError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".ogv")
NIFTI_EXTS = (".nii", ".nii.gz")
METAIMAGE_EXTS = (".mhd", ".mha")
MASK_IMAGE_EXTS = IMAGE_EXTS
MASK_ARRAY_EXTS = (".npy", ".npz")


def suffix(path: Path) -> str:
    """Lower-case extension, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def natural_key(name: str) -> list:
    """Sort key putting ``2.png`` before ``10.png`` (digit runs compare as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def index_names(n: int) -> list[str]:
    """Zero-padded frame names ``00000``, ``00001``, ... for sources without file names."""
    width = max(5, len(str(max(n - 1, 0))))
    return [f"{i:0{width}d}" for i in range(n)]


def is_whole(a: np.ndarray, tol: float = 1e-3) -> bool:
    """True when every value of float array ``a`` is within ``tol`` of a whole number."""
    return bool(np.all(np.abs(a - np.rint(a)) <= tol))


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """Map an intensity volume of any dtype to uint8 with one scale for the whole volume.

    Args:
        volume: array of any shape and numeric (or bool) dtype.
    Returns:
        uint8 array of the same shape: unchanged values when they are whole numbers within
        0..255, otherwise ``(v - min) / (max - min) * 255`` rounded (all zeros when constant).
    """
    if volume.dtype == np.uint8:
        return volume
    if volume.dtype == np.bool_:
        return volume.astype(np.uint8) * 255
    v = volume.astype(np.float64) if volume.dtype.kind == "f" else volume
    if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
        v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    if v.size == 0:
        return np.zeros(v.shape, np.uint8)
    lo, hi = float(v.min()), float(v.max())
    if lo >= 0 and hi <= 255 and (v.dtype.kind in "iu" or is_whole(v)):
        return np.rint(v).astype(np.uint8) if v.dtype.kind == "f" else v.astype(np.uint8)
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return np.rint((v.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` / ``[H, W, 1]`` / ``[H, W, 3]`` / ``[H, W, 4]`` -> contiguous ``[H, W, 3]``."""
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def check_exists(path: Path) -> None:
    if not path.exists():
        raise TCMNError(f"{path}: no such file or folder; check the path.")

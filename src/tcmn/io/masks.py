"""Masks given by a user: one reader (:func:`load_mask`, every format) and one validator
(:func:`validate_label_map`) of uint8 label maps (0 background, k object k)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from tcmn.errors import TCMNError
from tcmn.io.formats import (
    MASK_ARRAY_EXTS,
    MASK_IMAGE_EXTS,
    METAIMAGE_EXTS,
    NIFTI_EXTS,
    check_exists,
    is_whole,
    suffix,
)
from tcmn.io.volumes import load_metaimage, load_nifti

log = logging.getLogger(__name__)


def validate_label_map(arr: np.ndarray, path: Path, binary_255: bool = True) -> np.ndarray:
    """Check a decoded mask array and turn it into a uint8 ``[H, W]`` label map."""
    arr = np.asarray(arr)
    if arr.ndim > 2:
        arr = arr.reshape([s for s in arr.shape if s != 1] or [1])
    if arr.ndim != 2:
        raise TCMNError(
            f"{path}: the mask has shape {arr.shape}, not a 2-D label map; give one frame's mask."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "biuf":
        raise TCMNError(
            f"{path}: the mask has data type {arr.dtype}; store integer labels (0 background, "
            "k object k)."
        )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not is_whole(arr):
            raise TCMNError(
                f"{path}: the mask has non-integer values; store whole-number labels (0 "
                "background, k object k), not probabilities."
            )
        arr = np.rint(arr)
    lo = arr.min() if arr.size else 0
    if lo < 0:
        raise TCMNError(
            f"{path}: the mask has negative values (down to {lo:g}); store labels 0 (background) "
            "to 255."
        )
    hi = arr.max() if arr.size else 0
    if hi > 255:
        n = int(np.unique(arr).size) - int(lo == 0)
        if n > 255:
            raise TCMNError(
                f"{path}: the mask has {n} labels but at most 255 objects are supported; merge "
                "or drop objects."
            )
        raise TCMNError(
            f"{path}: the mask has label values up to {hi:g}; renumber the objects 1..255."
        )
    out = np.ascontiguousarray(arr.astype(np.uint8))
    if binary_255:
        ids = np.unique(out)
        if ids.size and ids[-1] == 255 and set(ids.tolist()) <= {0, 255}:
            out = (out == 255).astype(np.uint8)
    return out


def read_label_map(path: Path | BinaryIO, name: str | None = None) -> np.ndarray:
    """Read an annotation PNG as a uint8 ``[H, W]`` label map (palette indices kept as labels).

    Args:
        path: the file, or a binary file object (an upload).
        name: what the error sentences call it (default: the path).
    """
    where = path if name is None else name
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L"):
                arr = np.asarray(im)
            elif im.mode in ("I;16", "I"):
                arr = validate_label_map(np.asarray(im), where, binary_255=False)
            else:  # RGB(A) masks with identical channels
                arr = np.asarray(im.convert("RGB"))
                if not (
                    np.array_equal(arr[..., 0], arr[..., 1])
                    and np.array_equal(arr[..., 0], arr[..., 2])
                ):
                    raise TCMNError(
                        f"{where}: the mask is a colour image; store a uint8 label map "
                        "(0 background, k object k) or a palette PNG."
                    )
                arr = arr[..., 0]
    except (OSError, SyntaxError) as e:
        raise TCMNError(f"{where}: the mask cannot be read ({e}); re-export it as PNG.") from e
    return np.ascontiguousarray(arr.astype(np.uint8))


def _read_mask_image(path: Path) -> np.ndarray:
    """Decode a PNG/BMP/TIF/JPEG mask into a numeric ``[H, W]`` array (not yet validated)."""
    is_jpeg = suffix(path) in (".jpg", ".jpeg")
    if not is_jpeg:
        try:
            with Image.open(path) as im:
                mode = im.mode
                if mode in (
                    "I",
                    "I;16",
                    "I;16B",
                    "I;16L",
                    "F",
                ):  # numeric: checked by validate_label_map
                    return np.asarray(im)
        except OSError as e:
            raise TCMNError(f"{path}: the mask cannot be read ({e}); re-export it as PNG.") from e
        arr = read_label_map(path)  # palette / grey / RGB with equal channels
        return arr if mode == "P" else _soft_binary(arr, path)
    # JPEG is lossy: grey (or colourless RGB) thresholded at half its maximum -> binary mask
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB")).astype(np.int16)
    except OSError as e:
        raise TCMNError(f"{path}: the mask cannot be read ({e}); re-export it as PNG.") from e
    chroma = max(np.abs(rgb[..., 0] - rgb[..., 1]).max(), np.abs(rgb[..., 1] - rgb[..., 2]).max())
    if chroma > 48:
        raise TCMNError(
            f"{path}: the mask is a colour image; store a uint8 label map (0 background, "
            "k object k) or a palette PNG."
        )
    grey = rgb.mean(axis=2)
    top = grey.max()
    return (grey > top / 2).astype(np.uint8) if top > 0 else np.zeros(grey.shape, np.uint8)


def _soft_binary(arr: np.ndarray, path: Path) -> np.ndarray:
    """A grey 0..255 binary mask with anti-aliased or compressed edges -> 0/1 (``> 127``).

    Grey (non-palette) masks exported by drawing tools or re-saved from JPEG (CVC-ClinicDB has
    138 such masks) hold 255 for the object and a few values in 1..254 at its edges; read as a
    label map they would give dozens of objects. A uint8 mask is taken as such when its value
    255 covers more pixels than all values 1..254 together; it is then thresholded at ``> 127``
    (as the dataset converters do) with a warning. Anything else (a label map 0, 1, 2, ...; a
    0/255 mask) is returned unchanged.
    """
    if arr.dtype != np.uint8 or arr.size == 0 or int(arr.max()) != 255:
        return arr
    n_full = int(np.count_nonzero(arr == 255))
    n_mid = int(np.count_nonzero(arr)) - n_full
    if n_mid == 0 or n_full <= n_mid:
        return arr
    log.warning(
        "%s: read as a binary mask with soft edges (255 plus %d pixels of values 1..254), "
        "thresholded at >127; to give several objects, store labels 1..k instead.",
        path,
        n_mid,
    )
    return (arr > 127).astype(np.uint8)


def _select_frame(arr: np.ndarray, frame: int | None, path: Path, layout: str) -> np.ndarray:
    """Pick frame ``frame`` of a ``[T, H, W]`` stack.

    A 2-D array (or a one-frame stack) is the mask itself whatever ``frame`` is: ``frame`` then
    only names the video frame it belongs to.
    """
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise TCMNError(
            f"{path}: the mask array has shape {arr.shape}, neither 2-D nor a {layout} sequence; "
            "give one frame's label map."
        )
    if frame is None:
        raise TCMNError(
            f"{path}: the mask is a sequence of {arr.shape[0]} frames; choose one with "
            "mask_frame=<index>."
        )
    if not -arr.shape[0] <= frame < arr.shape[0]:
        raise TCMNError(
            f"{path}: mask frame {frame} is out of range for a sequence of {arr.shape[0]} frames; "
            f"choose 0..{arr.shape[0] - 1}."
        )
    return arr[frame]


def load_mask(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    resize: bool = False,
    frame: int | None = None,
) -> np.ndarray:
    """Read a first-frame mask as a uint8 label map (0 background, k object k).

    Formats: PNG/BMP/TIF (grey or palette: values kept as labels; RGB only with equal channels;
    a grey 0/255 mask with soft edges, 255 covering most of the foreground, is thresholded at
    ``> 127``),
    JPEG (lossy, so read as a binary mask thresholded at half its maximum), NIfTI (2-D, or a
    2-D+time sequence with ``frame`` choosing the frame, same axis convention as
    :func:`open_video`), MetaImage (``(T, H, W)``), NumPy ``.npy`` / ``.npz`` (first array;
    ``(H, W)`` or ``(T, H, W)``). A binary mask stored as 0/255 becomes labels 0/1.

    Args:
        path: the mask file.
        size: expected ``(H, W)`` (the frames' size); None skips the check.
        resize: when the size differs, resize it (nearest neighbour) instead of raising.
        frame: frame index for a mask sequence (NIfTI, MetaImage, 3-D NumPy).
    Returns:
        uint8 ``[H, W]`` with at least one non-zero pixel.
    Raises:
        TCMNError: missing or unsupported file, wrong size (unless ``resize``), empty mask, more
            than 255 labels, non-integer or negative values, colour image.
    """
    path = Path(path)
    check_exists(path)
    ext = suffix(path)
    if path.is_dir():
        raise TCMNError(f"{path}: is a folder, not a mask file; give the first frame's mask file.")
    if ext in MASK_IMAGE_EXTS:
        arr = _read_mask_image(path)
    elif ext in NIFTI_EXTS:
        _, data = load_nifti(path)
        if data.ndim == 4 and data.shape[2] == 1:
            data = data[:, :, 0, :]
        arr = data.T if data.ndim == 2 else data.transpose(2, 1, 0) if data.ndim == 3 else data
        arr = _select_frame(arr, frame, path, "(X, Y, T)")
    elif ext in METAIMAGE_EXTS:
        arr = _select_frame(load_metaimage(path), frame, path, "(T, H, W)")
    elif ext in MASK_ARRAY_EXTS:
        try:
            loaded = np.load(path, allow_pickle=False)
            if ext == ".npz":
                with loaded as z:
                    arr = z[z.files[0]]
            else:
                arr = loaded
        except (OSError, ValueError, IndexError, EOFError) as e:
            raise TCMNError(
                f"{path}: the NumPy file cannot be read ({e}); save the mask with numpy.save."
            ) from e
        arr = _select_frame(np.asarray(arr), frame, path, "(T, H, W)")
    else:
        raise TCMNError(
            f"{path}: unsupported mask type '{ext or path.name}'; give one of "
            f"{', '.join((*MASK_IMAGE_EXTS, *NIFTI_EXTS, *METAIMAGE_EXTS, *MASK_ARRAY_EXTS))}."
        )
    labels = validate_label_map(arr, path)
    if size is not None and labels.shape != tuple(size):
        h, w = int(size[0]), int(size[1])
        if not resize:
            raise TCMNError(
                f"{path}: the mask is {labels.shape[1]}x{labels.shape[0]} but the frame is {w}x{h}; "
                "pass resize_mask=true to resize it (nearest neighbour)."
            )
        before = set(np.unique(labels).tolist())
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        lost = sorted(before - set(np.unique(labels).tolist()))
        if lost:
            log.warning(
                "%s: object(s) %s vanished when resizing the mask to %dx%d", path, lost, w, h
            )
    if not labels.any():
        raise TCMNError(
            f"{path}: the mask is empty (no foreground pixel); give a mask with at least one "
            "object (non-zero label)."
        )
    return labels

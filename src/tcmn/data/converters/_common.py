"""Helpers shared by the dataset converters: source checks, name matching, masks, progress.

Every converter turns one source dataset into the prepared layout of :mod:`tcmn.data.layout`
through :class:`~tcmn.data.layout.LayoutWriter`; these helpers hold what they have in common so
that each converter module only knows its own source format.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from tcmn.data.layout import LayoutWriter
from tcmn.errors import TCMNError
from tcmn.io import IMAGE_EXTS, read_label_map

log = logging.getLogger("tcmn.data.converters")

#: Threshold of the binarised masks: a pixel is foreground when its grey value is above it.
BINARY_THRESHOLD = 127

_DIGITS = re.compile(r"(\d+)")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def require_dir(src: str | os.PathLike, dataset: str) -> Path:
    """Return ``src`` as a :class:`Path`; raise a :class:`TCMNError` when it is not a folder."""
    path = Path(src).expanduser()
    if not path.is_dir():
        raise TCMNError(
            f"{path}: the source folder of dataset '{dataset}' does not exist; "
            "fix src= to point at the downloaded dataset."
        )
    return path


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value (``2.png`` before ``10.png``)."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in _DIGITS.split(name))


def frame_number(path: str | os.PathLike) -> int | None:
    """The last integer in a file's stem (``1.jpg`` -> 1, ``frame_007.png`` -> 7), else None."""
    m = _LAST_NUMBER.search(Path(path).name.split(".")[0])
    return int(m.group(1)) if m else None


def safe_name(name: str) -> str:
    """A folder-safe video name: runs of characters other than ``A-Za-z0-9._-`` become one ``_``.

    ``"ES0001 _4CH_1"`` -> ``"ES0001_4CH_1"``.
    """
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    out = re.sub(r"_+", "_", out).strip("_.")
    if not out:
        raise TCMNError(f"'{name}': cannot make a video name from it; rename the file.")
    return out


def list_images(folder: Path, exts: Sequence[str] = IMAGE_EXTS) -> list[Path]:
    """Image files directly in ``folder`` (extensions ``exts``, case-insensitive), natural order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts]
    return sorted(files, key=lambda p: natural_key(p.name))


def find_child(parent: Path, names: Iterable[str]) -> Path | None:
    """The first sub-folder of ``parent`` whose name equals one of ``names`` (case-insensitive)."""
    children = {p.name.lower(): p for p in sorted(parent.iterdir()) if p.is_dir()}
    for n in names:
        if n.lower() in children:
            return children[n.lower()]
    return None


def index_by_number(
    files: Iterable[Path], what: str, ext_preference: Sequence[str] = IMAGE_EXTS
) -> dict[int, Path]:
    """Map the frame number of each file name to the file.

    When two files share a number with different extensions, the extension listed first in
    ``ext_preference`` wins (``1.png`` over ``1.tif``); two files with the same number and the
    same preference (``1.png`` and ``frame_1.png``) are an error.
    """
    rank = {e: i for i, e in enumerate(ext_preference)}
    out: dict[int, Path] = {}
    for p in files:
        n = frame_number(p)
        if n is None:
            log.warning("%s: no frame number in the name; ignored", p)
            continue
        if n in out:
            old = out[n]
            r_old, r_new = rank.get(old.suffix.lower(), 99), rank.get(p.suffix.lower(), 99)
            if r_old == r_new:
                raise TCMNError(
                    f"{p}: {what} has the same frame number ({n}) as {old.name}; "
                    "keep one file per frame number."
                )
            if r_new > r_old:
                continue
        out[n] = p
    return out


def binarise(mask: np.ndarray, threshold: int = BINARY_THRESHOLD) -> np.ndarray:
    """Binary mask -> uint8 ``[H, W]`` label map with 1 for the object.

    Grey masks (0/255 with anti-aliased or JPEG-noisy edges) are thresholded at ``> threshold``;
    masks whose maximum is 1 (0/1 masks) keep their ones.
    """
    mask = np.asarray(mask)
    if mask.size and mask.max() <= 1:
        return (mask > 0).astype(np.uint8)
    return (mask > threshold).astype(np.uint8)


def read_binary_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask image as uint8 ``[H, W]`` in {0, 1} (see :func:`binarise`).

    ``size`` (H, W) is the frame size the mask must match; a mismatch is a :class:`TCMNError`.
    """
    m = read_label_map(path)
    if size is not None and m.shape != tuple(size):
        raise TCMNError(
            f"{path}: the mask is {m.shape[1]}x{m.shape[0]} but its frame is {size[1]}x{size[0]}; "
            "resize the mask (nearest neighbour) to the frame size."
        )
    return binarise(m)


def fit_long_side(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(H, W) scaled so that the long side is at most ``max_size`` (unchanged when it already is)."""
    h, w = size
    if not max_size or max(h, w) <= max_size:
        return h, w
    if max_size < 1:
        raise TCMNError(f"max_size={max_size}: must be a positive number of pixels.")
    s = max_size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 frame to ``size`` (H, W) with area interpolation (no-op when equal)."""
    if frame.shape[:2] == tuple(size):
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 label map to ``size`` (H, W) with nearest neighbour (no-op when equal)."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


class LazyMasks(Mapping):
    """A read-only ``frame index -> uint8 [H, W] label map`` mapping that loads masks on access.

    :meth:`LayoutWriter.add_video` needs the annotated frames as a mapping; this one keeps only
    the loader in memory, so a long video's masks never all sit in RAM at once.
    """

    def __init__(self, indices: Iterable[int], load: Callable[[int], np.ndarray]):
        self._indices = sorted(set(indices))
        self._load = load

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._indices:
            raise KeyError(i)
        return self._load(i)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


def progress(items: Sequence, dataset: str) -> Iterator:
    """Iterate ``items`` (one per video) with a tqdm progress bar named after ``dataset``."""
    return iter(tqdm(items, desc=f"{dataset}", unit="video", dynamic_ncols=True))


class Conversion:
    """Book-keeping of one conversion run: the writer, and what was written or skipped.

    Args:
        dst: destination folder of the prepared dataset.
        dataset: dataset name written to ``meta.json``.
        overwrite: replace videos already in ``dst`` (True) or keep them and skip them (False).
    """

    def __init__(self, dst: str | os.PathLike, dataset: str, overwrite: bool):
        self.dst = Path(dst).expanduser()
        self.dataset = dataset
        self.writer = LayoutWriter(self.dst, dataset, overwrite=overwrite)
        self.overwrite = overwrite
        self.written: list[str] = []
        self.kept: list[str] = []
        self.skipped: list[str] = []

    def wants(self, name: str) -> bool:
        """False (and counted as kept) when ``name`` exists and overwrite is off."""
        if not self.overwrite and self.writer.has_video(name):
            self.kept.append(name)
            return False
        return True

    def add(self, name: str, **kwargs) -> None:
        """Write one video through :meth:`LayoutWriter.add_video` (same keyword arguments)."""
        if self.writer.add_video(name, **kwargs):
            self.written.append(name)
        else:
            self.kept.append(name)

    def skip(self, name: str, why: str) -> None:
        """Record a source video that is not converted, and say why in the log."""
        self.skipped.append(name)
        log.info("%s: skipped video '%s' (%s)", self.dataset, name, why)

    def finish(self, src: Path, expected: str) -> Path:
        """Log a summary and return ``dst``; raise when the source gave no video at all.

        ``expected`` describes the accepted source layout for the error message.
        """
        if not (self.written or self.kept):
            raise TCMNError(
                f"{src}: no {self.dataset} video was found to convert ({len(self.skipped)} skipped); "
                f"expected {expected}."
            )
        log.info(
            "%s: wrote %d video(s) to %s%s%s",
            self.dataset,
            len(self.written),
            self.dst,
            f", kept {len(self.kept)} already there (overwrite=false)" if self.kept else "",
            f", skipped {len(self.skipped)}" if self.skipped else "",
        )
        return self.dst

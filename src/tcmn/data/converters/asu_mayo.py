"""ASU-Mayo Clinic colonoscopy videos (frames + per-frame polyp masks) -> prepared videos.

Accepted source layouts, one video per entry of ``<src>`` (folder names case-insensitive):

- ``<src>/<video>/<frames>/`` + ``<src>/<video>/<masks>/`` where ``<frames>`` is one of
  ``images``, ``frames``, ``original``, ``img`` and ``<masks>`` one of ``masks``, ``gt``,
  ``ground truth``, ``groundtruth``, ``labels``, ``mask``;
- the original release: frames directly in ``<src>/<video>/`` and masks in ``<src>/<video>_GT/``.

Frames and masks are matched by the frame number in their names (the last integer of the
stem: ``1.jpg`` <-> ``1.tif`` <-> ``frame_001.png``); extract a video file's frames first
(e.g. ``ffmpeg -i 12.wmv 12/%d.png``). A frame with no mask file is unannotated; a mask whose
frame is missing is ignored with a warning. Masks are binarised at ``> 127`` and an empty mask is
kept as an annotated frame in which the polyp is absent. A video whose masks are all empty is a
negative (normal) video and is skipped unless ``include_negative=True``. One object, class
``polyp``; each video is its own patient (the dataset gives no patient ids).

``max_size`` downscales frames whose long side is larger (area interpolation) and their masks
(nearest neighbour) to the same size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tcmn.data.converters._common import (
    Conversion,
    LazyMasks,
    find_child,
    fit_long_side,
    index_by_number,
    list_images,
    log,
    progress,
    read_binary_mask,
    require_dir,
    resize_frame,
    resize_mask,
)
from tcmn.errors import TCMNError
from tcmn.io import read_frame

NAME = "asu_mayo"
CLASSES = {1: "polyp"}
FRAME_DIRS = ("images", "frames", "original", "img")
MASK_DIRS = ("masks", "gt", "ground truth", "groundtruth", "labels", "mask")
EXPECTED = "<src>/<video>/images/ + <src>/<video>/masks/, or <src>/<video>/ + <src>/<video>_GT/"


def find_videos(src: Path) -> list[tuple[str, Path, Path]]:
    """List ``(video name, frame folder, mask folder)`` of every video under ``src``, sorted."""
    entries = {p.name: p for p in src.iterdir() if p.is_dir()}
    lower = {k.lower(): v for k, v in entries.items()}
    out = []
    for name in sorted(entries, key=str.lower):
        d = entries[name]
        if name.lower().endswith("_gt"):
            continue
        frames, masks = find_child(d, FRAME_DIRS), find_child(d, MASK_DIRS)
        if frames is not None and masks is not None:
            out.append((name, frames, masks))
        elif f"{name.lower()}_gt" in lower:
            out.append((name, d, lower[f"{name.lower()}_gt"]))
        else:
            log.warning("%s: no mask folder found for this video; ignored", d)
    return out


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    overwrite: bool = True,
    include_negative: bool = False,
    max_size: int | None = None,
) -> Path:
    """Convert ASU-Mayo at ``src`` into the prepared layout at ``dst``.

    Args:
        src: dataset folder (see the module docstring for the layouts).
        dst: output folder.
        overwrite: replace videos already in ``dst``; when False they are kept and skipped.
        include_negative: also convert videos whose masks are all empty.
        max_size: if set, the long side (pixels) frames and masks are downscaled to.
    Returns:
        ``dst``. Frames ``[H, W, 3]`` uint8 RGB, masks uint8 {0, 1} on the frames that have a
        mask file; ``extra`` holds the source frame numbers' range and the count of frames
        showing the polyp (``n_positive``).
    """
    src = require_dir(src, NAME)
    conv = Conversion(dst, NAME, overwrite)
    for name, frame_dir, mask_dir in progress(find_videos(src), NAME):
        frames = index_by_number(list_images(frame_dir), "frame")
        masks = index_by_number(list_images(mask_dir), "mask")
        if not frames:
            conv.skip(name, f"no frame images in {frame_dir}")
            continue
        orphans = sorted(set(masks) - set(frames))
        if orphans:
            log.warning(
                "%s: %d mask(s) have no frame (first: number %d); ignored",
                mask_dir,
                len(orphans),
                orphans[0],
            )
        numbers = sorted(frames)
        annotated = [i for i, n in enumerate(numbers) if n in masks]
        if not annotated:
            conv.skip(name, f"no mask in {mask_dir} matches a frame number")
            continue
        if not conv.wants(name):
            continue
        src_size = read_frame(frames[numbers[0]]).shape[:2]
        size = fit_long_side(src_size, max_size)

        def load(i: int, numbers=numbers, masks=masks, src_size=src_size, size=size) -> np.ndarray:
            return resize_mask(read_binary_mask(masks[numbers[i]], src_size), size)

        n_positive = sum(int(load(i).any()) for i in annotated)
        if n_positive == 0 and not include_negative:
            conv.skip(name, "negative video: every mask is empty; pass include_negative=true")
            continue

        def read(n: int, frames=frames, src_size=src_size, size=size) -> np.ndarray:
            f = read_frame(frames[n])
            if f.shape[:2] != src_size:
                raise TCMNError(
                    f"{frames[n]}: the frame is {f.shape[1]}x{f.shape[0]} but the video's first "
                    f"frame is {src_size[1]}x{src_size[0]}; all frames of a video need one size."
                )
            return resize_frame(f, size)

        conv.add(
            name,
            frames=(read(n) for n in numbers),
            masks=LazyMasks(annotated, load),
            objects=CLASSES,
            patient=name,
            extra={
                "first_frame": numbers[0],
                "last_frame": numbers[-1],
                "n_positive": n_positive,
                "source_size": list(src_size),
            },
        )
    return conv.finish(src, EXPECTED)

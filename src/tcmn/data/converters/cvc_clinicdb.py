"""CVC-ClinicDB (CVC-612) colonoscopy frames -> 29 prepared videos.

Accepted source layouts (folder names case-insensitive; ``<n>`` is the frame number 1..612):

- ``<src>/Original/<n>.png|tif`` + ``<src>/Ground Truth/<n>.png|tif`` (the official release);
- ``<src>/images/<n>.png`` + ``<src>/masks/<n>.png`` (the Kaggle PNG copy).

The 612 frames form 29 video sequences given as frame ranges: by ``options.sequences`` (a CSV
``sequence_id,first_frame,last_frame[,num_frames]``), else ``<src>/sequences.csv`` when present,
else the built-in table :data:`SEQUENCES`. Masks are binarised at ``> 127`` (138 of them have
anti-aliased grey edges). Every frame is annotated with one object, class ``polyp``. Videos are
named ``seq01`` .. ``seq29``; the dataset gives no patient ids, so each sequence is its own
patient (``patient = "seq07"``). No frame rate or pixel spacing is published.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from tcmn.data.converters._common import (
    Conversion,
    LazyMasks,
    find_child,
    index_by_number,
    list_images,
    progress,
    read_binary_mask,
    require_dir,
)
from tcmn.errors import TCMNError
from tcmn.io import read_frame

NAME = "cvc_clinicdb"
CLASSES = {1: "polyp"}

#: (sequence_id, first_frame, last_frame), 1-based and inclusive: the 29 sequences of the
#: dataset (Dataset Ninja's cvc-612 converter, from the Kaggle metadata.csv).
SEQUENCES: tuple[tuple[int, int, int], ...] = (
    (1, 1, 25),
    (2, 26, 50),
    (3, 51, 67),
    (4, 68, 78),
    (5, 79, 103),
    (6, 104, 126),
    (7, 127, 151),
    (8, 152, 177),
    (9, 178, 199),
    (10, 200, 205),
    (11, 206, 227),
    (12, 228, 252),
    (13, 253, 277),
    (14, 278, 297),
    (15, 298, 317),
    (16, 318, 342),
    (17, 343, 363),
    (18, 364, 383),
    (19, 384, 408),
    (20, 409, 428),
    (21, 429, 447),
    (22, 448, 466),
    (23, 467, 478),
    (24, 479, 503),
    (25, 504, 528),
    (26, 529, 546),
    (27, 547, 571),
    (28, 572, 591),
    (29, 592, 612),
)

_LAYOUTS = (("original", "ground truth"), ("images", "masks"))
_EXTS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
EXPECTED = "Original/<n>.png|tif + 'Ground Truth'/<n>.png|tif, or images/<n>.png + masks/<n>.png"


def read_sequences(path: Path) -> list[tuple[int, int, int]]:
    """Read a ``sequence_id,first_frame,last_frame[,num_frames]`` CSV (1-based, inclusive ranges).

    Returns:
        ``[(sequence_id, first_frame, last_frame), ...]`` in the file's order.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        out = []
        for r in rows:
            sid, first, last = int(r["sequence_id"]), int(r["first_frame"]), int(r["last_frame"])
            if last < first:
                raise ValueError(f"sequence {sid} ends before it starts")
            if r.get("num_frames") not in (None, "") and int(r["num_frames"]) != last - first + 1:
                raise ValueError(f"sequence {sid}: num_frames disagrees with the range")
            out.append((sid, first, last))
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise TCMNError(
            f"{path}: cannot read the sequence table ({e}); it needs the columns "
            "sequence_id,first_frame,last_frame with 1-based inclusive frame ranges."
        ) from e
    if not out:
        raise TCMNError(f"{path}: the sequence table has no rows; list at least one sequence.")
    if len({s for s, _, _ in out}) != len(out):
        raise TCMNError(f"{path}: a sequence_id appears twice; give each sequence one row.")
    return out


def _find_folders(src: Path) -> tuple[Path, Path]:
    for img_name, mask_name in _LAYOUTS:
        img_dir, mask_dir = find_child(src, [img_name]), find_child(src, [mask_name])
        if img_dir is not None and mask_dir is not None:
            return img_dir, mask_dir
    raise TCMNError(f"{src}: no CVC-ClinicDB frames found; expected {EXPECTED}.")


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    overwrite: bool = True,
    sequences: str | os.PathLike | None = None,
) -> Path:
    """Convert CVC-ClinicDB at ``src`` into the prepared layout at ``dst``.

    Args:
        src: dataset folder (see the module docstring for the layouts).
        dst: output folder (``JPEGImages/``, ``Annotations/``, ``meta.json``).
        overwrite: replace videos already in ``dst``; when False they are kept and skipped.
        sequences: optional CSV of the sequence frame ranges (default ``<src>/sequences.csv``,
            else the built-in table of the 29 sequences).
    Returns:
        ``dst`` as a :class:`Path`. Each video ``seqNN`` has frames ``[H, W, 3]`` uint8 RGB and a
        uint8 {0, 1} mask on every frame; ``extra`` holds the source frame range.
    """
    src = require_dir(src, NAME)
    img_dir, mask_dir = _find_folders(src)
    if sequences is not None:
        table = read_sequences(Path(sequences))
    elif (src / "sequences.csv").is_file():
        table = read_sequences(src / "sequences.csv")
    else:
        table = list(SEQUENCES)
    images = index_by_number(list_images(img_dir, _EXTS), "frame", _EXTS)
    masks = index_by_number(list_images(mask_dir, _EXTS), "mask", _EXTS)

    conv = Conversion(dst, NAME, overwrite)
    for sid, first, last in progress(table, NAME):
        name = f"seq{sid:02d}"
        numbers = list(range(first, last + 1))
        for n in numbers:
            if n not in images:
                hint = "pass options.sequences=<csv>" if sequences is None else "fix the CSV"
                raise TCMNError(
                    f"{img_dir}: frame {n} of sequence {sid} is missing; restore it, or {hint} "
                    "with the frame ranges of the frames you have."
                )
            if n not in masks:
                raise TCMNError(
                    f"{mask_dir}: the mask of frame {n} (sequence {sid}) is missing; restore it."
                )
        if not conv.wants(name):
            continue
        size = read_frame(images[first]).shape[:2]
        conv.add(
            name,
            frames=(read_frame(images[n]) for n in numbers),
            masks=LazyMasks(
                range(len(numbers)),
                lambda i, ns=numbers, hw=size: read_binary_mask(masks[ns[i]], hw),
            ),
            objects=CLASSES,
            patient=name,
            extra={"first_frame": first, "last_frame": last},
        )
    return conv.finish(src, EXPECTED)

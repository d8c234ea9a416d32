"""EchoNet-Dynamic apical-4-chamber videos with sparse LV tracings -> prepared videos.

Accepted source layout: ``<src>/Videos/<FileName>.avi``, ``<src>/VolumeTracings.csv``
(``FileName,X1,Y1,X2,Y2,Frame``) and optionally ``<src>/FileList.csv`` (its ``FPS`` column gives
the frame rate, its ``Split`` column lets ``split=`` select a subset).

Each traced frame has one row per point pair: row 0 is the LV long axis, rows 1..N pair a point
on one wall (X1, Y1) with one on the other (X2, Y2). The mask is rasterised the EchoNet way
(:func:`rasterise`): the polygon runs through (X1, Y1) of rows 1..N, then (X2, Y2) of rows
1..N in reverse order; its vertices are rounded to the nearest pixel (``np.rint``, as EchoNet
does) and it is filled with ``cv2.fillPoly`` on a grid of the frame's size (pixel centres on
integer coordinates; boundary pixels included, so areas run a little larger than with
``skimage.draw.polygon``). A video has two traced frames: end-diastole (ED) and end-systole
(ES), told apart by area (ED is the larger), never by row order; their 0-based frame indices
and areas (pixels) go to ``extra``. All frames of the video are written; only the traced ones
are annotated. One object, class ``LV``. The dataset gives no patient ids: each video is its
own patient.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np

from tcmn.data.converters._common import Conversion, LazyMasks, log, progress, require_dir
from tcmn.errors import TCMNError

NAME = "echonet"
CLASSES = {1: "LV"}
EXPECTED = "Videos/<FileName>.avi with VolumeTracings.csv (and optionally FileList.csv)"


def _stem(file_name: str) -> str:
    return file_name[:-4] if file_name.lower().endswith(".avi") else file_name


def read_tracings(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """Read ``VolumeTracings.csv``.

    Returns:
        video stem -> frame index -> float64 ``[rows, 4]`` array of ``(X1, Y1, X2, Y2)`` in the
        file's row order.
    """
    out: dict[str, dict[int, list]] = {}
    try:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                key = _stem(r["FileName"].strip())
                pts = [float(r["X1"]), float(r["Y1"]), float(r["X2"]), float(r["Y2"])]
                out.setdefault(key, {}).setdefault(int(float(r["Frame"])), []).append(pts)
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise TCMNError(
            f"{path}: cannot read the tracings ({e!r}); it needs the columns "
            "FileName,X1,Y1,X2,Y2,Frame."
        ) from e
    return {k: {fr: np.asarray(v, np.float64) for fr, v in d.items()} for k, d in out.items()}


def read_file_list(path: Path) -> dict[str, dict[str, str]]:
    """Read ``FileList.csv`` as video stem -> row (strings); empty when the file is absent."""
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as f:
            return {_stem(r["FileName"].strip()): r for r in csv.DictReader(f)}
    except (OSError, KeyError) as e:
        raise TCMNError(f"{path}: cannot read it ({e!r}); it needs a FileName column.") from e


def rasterise(trace: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """EchoNet tracing -> uint8 ``[H, W]`` mask in {0, 1}.

    Args:
        trace: float ``[rows, 4]`` of ``(X1, Y1, X2, Y2)``; row 0 (the long axis) is not used.
        size: ``(H, W)`` of the frame.
    """
    if len(trace) < 3:
        raise ValueError(f"a tracing needs at least 3 rows, got {len(trace)}")
    x = np.concatenate([trace[1:, 0], trace[1:, 2][::-1]])
    y = np.concatenate([trace[1:, 1], trace[1:, 3][::-1]])
    pts = np.rint(np.stack([x, y], axis=1)).astype(np.int32)
    mask = np.zeros(size, np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    return mask


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    overwrite: bool = True,
    split: str | list[str] | None = None,
) -> Path:
    """Convert EchoNet-Dynamic at ``src`` into the prepared layout at ``dst``.

    Args:
        src: dataset folder (``Videos/``, ``VolumeTracings.csv``, optional ``FileList.csv``).
        dst: output folder.
        overwrite: replace videos already in ``dst``; when False they are kept and skipped.
        split: only the videos whose ``FileList.csv`` ``Split`` is this (or one of these), e.g.
            ``TEST``; None converts every traced video.
    Returns:
        ``dst``. Frames ``[H, W, 3]`` uint8 RGB (every frame of the video), uint8 {0, 1} LV masks
        on the traced frames; ``extra``: ``ED``, ``ES`` (frame indices), ``areas`` (frame ->
        pixels) and, when ``FileList.csv`` has them, ``EF`` and ``Split``.
    """
    from tcmn.io import open_video

    src = require_dir(src, NAME)
    tracings_path = src / "VolumeTracings.csv"
    if not tracings_path.is_file():
        raise TCMNError(f"{tracings_path}: the tracings file is missing; expected {EXPECTED}.")
    tracings = read_tracings(tracings_path)
    file_list = read_file_list(src / "FileList.csv")
    if split is not None:
        if not file_list:
            raise TCMNError(f"{src / 'FileList.csv'}: split= needs FileList.csv; add it.")
        wanted = {split.upper()} if isinstance(split, str) else {s.upper() for s in split}
        tracings = {
            k: v for k, v in tracings.items() if file_list.get(k, {}).get("Split") in wanted
        }
    video_dir = src / "Videos"
    conv = Conversion(dst, NAME, overwrite)
    for name in progress(sorted(tracings), NAME):
        path = video_dir / f"{name}.avi"
        if not path.is_file():
            conv.skip(name, f"{path} is missing")
            continue
        if not conv.wants(name):
            continue
        with open_video(path) as video:
            _convert_video(conv, name, video, tracings[name], tracings_path, file_list.get(name))
    return conv.finish(src, EXPECTED)


def _convert_video(
    conv: Conversion,
    name: str,
    video,
    tracing: dict[int, np.ndarray],
    tracings_path: Path,
    row: dict[str, str] | None,
) -> None:
    """Rasterise the tracings of one opened video and write it (see :func:`convert`)."""
    masks: dict[int, np.ndarray] = {}
    for frame, trace in sorted(tracing.items()):
        if not 0 <= frame < len(video):
            log.warning(
                "%s: traced frame %d of %s is outside its %d frames; ignored",
                tracings_path,
                frame,
                name,
                len(video),
            )
            continue
        try:
            masks[frame] = rasterise(trace, tuple(video.size))
        except ValueError as e:
            raise TCMNError(
                f"{tracings_path}: the tracing of {name} frame {frame} is malformed ({e}); "
                "fix or remove its rows."
            ) from e
    if not masks:
        conv.skip(name, "no traced frame inside the video")
        return
    areas = {f: int(m.sum()) for f, m in masks.items()}
    extra: dict = {"areas": {str(f): a for f, a in sorted(areas.items())}}
    if len(masks) >= 2:
        extra["ED"] = max(areas, key=lambda f: (areas[f], -f))
        extra["ES"] = min(areas, key=lambda f: (areas[f], f))
    row = row or {}
    if row.get("EF"):
        extra["EF"] = float(row["EF"])
    if row.get("Split"):
        extra["Split"] = row["Split"]
    conv.add(
        name,
        frames=(f for _, f in video.iter()),
        masks=LazyMasks(masks, masks.__getitem__),
        objects=CLASSES,
        patient=name,
        fps=float(row["FPS"]) if row.get("FPS") else video.fps,
        extra=extra,
    )

"""HMC-QU apical-4-chamber echo videos with LV-wall masks over one cardiac cycle -> prepared videos.

Accepted source layout: ``.avi`` videos and ``.mat`` masks anywhere under ``<src>`` (the release
has ``A4C/*.avi`` and ``LV Ground-truth Segmentation Masks/Mask_*.mat``). A mask file belongs to
the video with the same file stem once a leading ``Mask_`` is removed (case-insensitive), e.g.
``Mask_ES0001 _4CH_1.mat`` <-> ``ES0001 _4CH_1.avi``. Videos without a mask are skipped.

Each ``.mat`` holds one 3-D array (the variable with the most elements among the 3-D ones),
``H x W x T`` in MATLAB's order: MATLAB v5 files are read with ``scipy.io.loadmat`` (same axis
order), v7.3 (HDF5) files with ``h5py`` (axes reversed, ``T x W x H``): both end as ``[T, H, W]``.
Masks are binarised (0/1 kept, else ``> 127``) and resized (nearest neighbour) to the frame size
when they differ. The ``T`` mask frames cover one cardiac cycle that starts at a start frame of
the video: 0, or the value given by ``start_frames=<csv>`` with columns ``video,start_frame``
(``video`` = the video's file stem, ``start_frame`` 0-based). By default only those ``T``
annotated frames are written (``annotated_only=True``); with False every frame of the video is
written and the cycle's frames are annotated.

Video names are the file stems made folder-safe (``ES0001 _4CH_1`` -> ``ES0001_4CH_1``); the
patient is the leading letters+digits of the stem (``ES0001``), so that several recordings of
one patient stay in one split. One object, class ``lv_wall``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from tcmn.data.converters._common import (
    Conversion,
    LazyMasks,
    binarise,
    log,
    progress,
    require_dir,
    resize_mask,
    safe_name,
)
from tcmn.errors import TCMNError

NAME = "hmc_qu"
CLASSES = {1: "lv_wall"}
EXPECTED = "<video>.avi files with Mask_<video>.mat ground truth under src"
_PATIENT = re.compile(r"^[A-Za-z]*\d+")


def read_mat_masks(path: Path) -> np.ndarray:
    """Read the 3-D mask array of a MATLAB v5 or v7.3 file as ``[T, H, W]`` (dtype as stored)."""
    import scipy.io

    try:
        variables = scipy.io.loadmat(str(path))
    except NotImplementedError:  # v7.3: an HDF5 file
        variables = None
    except (ValueError, TypeError, OSError) as e:  # not a v4/v5 header
        if _is_hdf5(path):
            variables = None
        else:
            raise TCMNError(f"{path}: not a readable MATLAB file ({e}); re-export it.") from e
    if variables is not None:
        arrays = {
            k: v
            for k, v in variables.items()
            if not k.startswith("__") and isinstance(v, np.ndarray) and v.ndim == 3
        }
        order = (2, 0, 1)  # MATLAB H x W x T -> T x H x W
    else:
        arrays = _read_hdf5_arrays(path)
        order = (0, 2, 1)  # h5py gives the reversed order T x W x H -> T x H x W
    if not arrays:
        raise TCMNError(
            f"{path}: no 3-D array (H x W x frames) in the file; save the masks as one 3-D variable."
        )
    key = max(sorted(arrays), key=lambda k: arrays[k].size)
    arr = np.asarray(arrays[key])
    if arr.dtype.kind not in "biuf":
        raise TCMNError(f"{path}: variable '{key}' is {arr.dtype}, not a numeric mask array.")
    return np.ascontiguousarray(arr.transpose(order))


def _is_hdf5(path: Path) -> bool:
    import h5py

    return h5py.is_hdf5(str(path))


def _read_hdf5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(str(path), "r") as f:
            for k, v in f.items():
                if k.startswith("#") or not isinstance(v, h5py.Dataset) or v.ndim != 3:
                    continue
                out[k] = v[()]
    except OSError as e:
        raise TCMNError(f"{path}: the MATLAB v7.3 file cannot be read ({e}); re-export it.") from e
    return out


def read_start_frames(path: Path) -> dict[str, int]:
    """Read a ``video,start_frame`` CSV (0-based start frames) as video stem -> start frame."""
    try:
        with open(path, newline="") as f:
            out = {}
            for r in csv.DictReader(f):
                stem = r["video"].strip()
                stem = stem[:-4] if stem.lower().endswith(".avi") else stem
                out[stem] = int(r["start_frame"])
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise TCMNError(
            f"{path}: cannot read the start frames ({e!r}); it needs the columns video,start_frame."
        ) from e
    bad = {k: v for k, v in out.items() if v < 0}
    if bad:
        raise TCMNError(
            f"{path}: negative start_frame for {sorted(bad)[0]}; start frames are >= 0."
        )
    return out


def find_pairs(src: Path) -> list[tuple[Path, Path | None]]:
    """``(video.avi, mask.mat or None)`` for every ``.avi`` under ``src``, sorted by stem."""
    videos = sorted((p for p in src.rglob("*") if p.suffix.lower() == ".avi"), key=lambda p: p.stem)
    mats: dict[str, Path] = {}
    for p in sorted(src.rglob("*")):
        if p.suffix.lower() != ".mat" or not p.is_file():
            continue
        stem = p.stem[5:] if p.stem.lower().startswith("mask_") else p.stem
        mats[stem.lower()] = p
    return [(v, mats.get(v.stem.lower())) for v in videos]


def patient_of(stem: str) -> str:
    """The patient id of a video stem: its leading letters+digits (``ES0001 _4CH_1`` -> ``ES0001``)."""
    m = _PATIENT.match(stem)
    return m.group(0) if m else safe_name(stem)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    overwrite: bool = True,
    start_frames: str | os.PathLike | None = None,
    annotated_only: bool = True,
) -> Path:
    """Convert HMC-QU at ``src`` into the prepared layout at ``dst``.

    Args:
        src: folder holding the ``.avi`` videos and ``.mat`` masks (any depth).
        dst: output folder.
        overwrite: replace videos already in ``dst``; when False they are kept and skipped.
        start_frames: optional CSV ``video,start_frame`` (0-based) of the cycle's first frame;
            videos not listed start at 0.
        annotated_only: write only the annotated cycle (True) or every frame (False).
    Returns:
        ``dst``. Frames ``[H, W, 3]`` uint8 RGB, uint8 {0, 1} LV-wall masks; ``extra``:
        ``start_frame``, ``n_source_frames`` and ``source`` (the original stem).
    """
    from tcmn.io import open_video

    src = require_dir(src, NAME)
    starts = read_start_frames(Path(start_frames)) if start_frames is not None else {}
    pairs = find_pairs(src)
    names: dict[str, Path] = {}
    for video_path, _ in pairs:
        n = safe_name(video_path.stem)
        if n in names:
            raise TCMNError(
                f"{video_path}: its video name '{n}' is also the name of {names[n]}; rename one."
            )
        names[n] = video_path
    conv = Conversion(dst, NAME, overwrite)
    for video_path, mat_path in progress(pairs, NAME):
        name = safe_name(video_path.stem)
        if mat_path is None:
            conv.skip(name, f"no Mask_{video_path.stem}.mat found")
            continue
        if not conv.wants(name):
            continue
        with open_video(video_path) as video:
            size = tuple(video.size)
            raw = read_mat_masks(mat_path)
            t_len = raw.shape[0]
            start = starts.get(video_path.stem, 0)
            if start + t_len > len(video):
                raise TCMNError(
                    f"{mat_path}: {t_len} mask frames from start frame {start} run past the video's "
                    f"{len(video)} frames; fix its start_frame (0-based) or pair the right video."
                )
            if raw.shape[1:] != size:
                log.info(
                    "%s: masks are %dx%d, frames %dx%d: resized (nearest)",
                    mat_path.name,
                    raw.shape[2],
                    raw.shape[1],
                    size[1],
                    size[0],
                )
            offset = 0 if annotated_only else start
            first = start if annotated_only else 0
            last = start + t_len if annotated_only else len(video)

            def load(i: int, raw=raw, offset=offset, size=size) -> np.ndarray:
                return resize_mask(binarise(raw[i - offset]), size)

            conv.add(
                name,
                frames=(f for _, f in video.iter(start=first, stop=last)),
                masks=LazyMasks(range(offset, offset + t_len), load),
                objects=CLASSES,
                patient=patient_of(video_path.stem),
                fps=video.fps,
                extra={
                    "start_frame": start,
                    "n_source_frames": len(video),
                    "source": video_path.stem,
                },
            )
    return conv.finish(src, EXPECTED)

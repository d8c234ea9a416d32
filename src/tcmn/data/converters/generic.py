"""A user's own video (file, frame folder, NIfTI or MetaImage) + mask files -> one prepared video.

``src`` is anything :func:`tcmn.io.open_video` reads: a video file (``.mp4``, ``.avi``,
...), a folder of frames (natural order of names), a 2-D+time NIfTI or a MetaImage sequence.
``masks`` is one mask file, a folder of mask files, or a list of files, in any format
:func:`tcmn.io.load_mask` reads (PNG label maps, 0/255 binary masks, NIfTI, ``.npy``).
Each mask's frame is, in this order:

1. ``mask_frames[k]`` for the ``k``-th mask (0-based frame indices), when given;
2. the frame with the same name (``masks/00012.png`` -> frame ``00012.jpg`` of a folder);
3. the frame whose name carries the same number (``mask_12.png`` -> frame ``12.png``); for a
   video file the frames are named ``00000``, ``00001``, ... so the number is the 0-based index;
4. frame 0 when a single mask file has no number in its name.

A single mask-sequence file (2-D+time NIfTI or MetaImage, 3-D ``.npy``) with two or more
``mask_frames`` must be aligned with the video: frame ``i`` of the mask sequence is the mask of
video frame ``i``, for each ``i`` in ``mask_frames`` (for one frame, save a 2-D mask instead).

Object ids are the labels found in the masks; ``classes={1: "lesion"}`` names them (unnamed ids
are ``object``). Calling the converter again with another ``name`` adds another video to the
same ``dst``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tcmn.data.converters._common import (
    Conversion,
    LazyMasks,
    frame_number,
    natural_key,
    progress,
    safe_name,
)
from tcmn.errors import TCMNError

NAME = "generic"
DEFAULT_CLASS = "object"
EXPECTED = "a video file or frame folder as src= and its mask files as options.masks="
_SEQUENCE_EXTS = (".nii", ".nii.gz", ".mhd", ".mha", ".npy", ".npz")


def _mask_files(masks: str | os.PathLike | Sequence) -> list[Path]:
    from tcmn.io import MASK_ARRAY_EXTS, MASK_IMAGE_EXTS, METAIMAGE_EXTS, NIFTI_EXTS

    exts = (*MASK_IMAGE_EXTS, *NIFTI_EXTS, *METAIMAGE_EXTS, *MASK_ARRAY_EXTS)
    if isinstance(masks, str | os.PathLike):
        p = Path(masks).expanduser()
        if p.is_dir():
            files = [f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(exts)]
            files.sort(key=lambda f: natural_key(f.name))
            if not files:
                raise TCMNError(f"{p}: the mask folder has no mask file ({', '.join(exts)}).")
            return files
        if not p.is_file():
            raise TCMNError(f"{p}: the mask file does not exist; fix options.masks=.")
        return [p]
    files = [Path(m).expanduser() for m in masks]
    for f in files:
        if not f.is_file():
            raise TCMNError(f"{f}: the mask file does not exist; fix options.masks=.")
    if not files:
        raise TCMNError("options.masks=[] is empty; give at least one mask file.")
    return files


def match_frames(mask_files: list[Path], frame_names: list[str]) -> list[int]:
    """The frame index of each mask file by name (rules 2-4 of the module docstring).

    Args:
        mask_files: mask paths.
        frame_names: the video's frame names without extension, in frame order.
    Returns:
        one 0-based frame index per mask file.
    """
    by_name = {n: i for i, n in enumerate(frame_names)}
    by_number: dict[int, int] = {}
    for i, n in enumerate(frame_names):
        k = frame_number(n)
        if k is not None:
            by_number[k] = -1 if k in by_number else i  # -1: ambiguous
    out = []
    for f in mask_files:
        stem = f.name.split(".")[0]
        k = frame_number(f)
        if stem in by_name:
            out.append(by_name[stem])
        elif k is not None and by_number.get(k, -1) >= 0:
            out.append(by_number[k])
        elif k is None and len(mask_files) == 1:
            out.append(0)
        else:
            raise TCMNError(
                f"{f}: cannot tell which frame this mask belongs to (no frame named '{stem}' or "
                "numbered like it); pass options.mask_frames=[<0-based frame index>, ...]."
            )
    return out


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    overwrite: bool = True,
    masks: str | os.PathLike | Sequence | None = None,
    mask_frames: Sequence[int] | None = None,
    classes: Mapping | None = None,
    name: str | None = None,
    patient: str | None = None,
    resize_mask: bool = False,
) -> Path:
    """Convert one user video with its masks into the prepared layout at ``dst``.

    Args:
        src: video file, frame folder, NIfTI or MetaImage sequence.
        dst: output folder; other videos already there are kept.
        overwrite: replace a video of the same name in ``dst``; when False it is kept.
        masks: a mask file, a folder of mask files, or a list of files (required).
        mask_frames: 0-based frame index of each mask (same length as the files, or any length
            for a single mask-sequence file); default: derived from the names.
        classes: object id -> class name (``{1: "lesion"}``); default ``object``.
        name: video name (default: the file / folder stem, made folder-safe).
        patient: patient id for splits (default: the video name).
        resize_mask: resize masks of another size to the frame size (nearest) instead of raising.
    Returns:
        ``dst``. Frames ``[H, W, 3]`` uint8 RGB; masks uint8 label maps on the given frames.
    """
    from tcmn.io import load_mask, open_video

    if masks is None:
        raise TCMNError(
            f"{src}: the generic converter needs the masks; pass options.masks=<file, folder "
            "or list>."
        )
    src_path = Path(src).expanduser()
    files = _mask_files(masks)
    video = open_video(src_path)
    with video:
        n = len(video)
        size = tuple(video.size)
        stem = src_path.name.split(".")[0] if src_path.is_file() else src_path.name
        vname = safe_name(str(name) if name else stem)
        if mask_frames is not None:
            frames_idx = [int(i) for i in mask_frames]
            if len(files) == 1 and len(frames_idx) > 1:
                if not files[0].name.lower().endswith(_SEQUENCE_EXTS):
                    raise TCMNError(
                        f"{files[0]}: one 2-D mask file cannot cover {len(frames_idx)} "
                        "mask_frames; give one mask file per frame."
                    )
                jobs = {i: (files[0], i) for i in frames_idx}
            elif len(frames_idx) != len(files):
                raise TCMNError(
                    f"{files[0].parent}: {len(files)} mask file(s) but {len(frames_idx)} "
                    "mask_frames; give one frame index per mask file."
                )
            else:
                jobs = {i: (f, None) for f, i in zip(files, frames_idx)}
        else:
            jobs = {i: (f, None) for f, i in zip(files, match_frames(files, video.frame_names))}
        if len(jobs) != len(files) and not (len(files) == 1 and mask_frames is not None):
            raise TCMNError(
                f"{files[0].parent}: two mask files map to the same frame; "
                "pass options.mask_frames= or rename them."
            )
        bad = sorted(i for i in jobs if not 0 <= i < n)
        if bad:
            raise TCMNError(
                f"{jobs[bad[0]][0]}: mask frame {bad[0]} is outside the video's {n} frames "
                f"({src_path}); use 0-based indices 0..{n - 1}."
            )

        def load(i: int) -> np.ndarray:
            path, frame = jobs[i]
            return load_mask(path, size=size, resize=resize_mask, frame=frame)

        ids: set[int] = set()
        for i in sorted(jobs):
            ids |= set(np.unique(load(i)).tolist()) - {0}
        names = {int(k): str(v) for k, v in (classes or {}).items()}
        conv = Conversion(dst, NAME, overwrite)
        for _ in progress([vname], NAME):
            if not conv.wants(vname):
                continue
            conv.add(
                vname,
                frames=(f for _, f in video.iter()),
                masks=LazyMasks(jobs, load),
                objects={k: names.get(k, DEFAULT_CLASS) for k in sorted(ids)},
                patient=str(patient) if patient else vname,
                fps=video.fps,
                extra={"source": src_path.name, "mask_files": sorted({f.name for f in files})},
            )
    return conv.finish(src_path, EXPECTED)

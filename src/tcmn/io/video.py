"""Videos to segment, read frame by frame: :func:`open_video` returns a :class:`VideoSource` for

* a video file readable by OpenCV/FFmpeg (``.mp4``, ``.avi``, ``.mov``, ...); frames are decoded
  on demand, never the whole video unless :meth:`VideoSource.read_all` is called;
* a folder of frames (png/jpg/bmp/tif), in natural order of the names (``2.png`` before
  ``10.png``);
* a NIfTI 2-D+time sequence (``.nii`` / ``.nii.gz``, read with nibabel);
* a MetaImage sequence (``.mhd`` / ``.mha``, read with SimpleITK).

Frame intensities follow :func:`tcmn.io.formats.to_uint8`; NIfTI axes follow
:mod:`tcmn.io.volumes`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from tcmn.errors import TCMNError
from tcmn.io.capture import CaptureSource
from tcmn.io.formats import (
    IMAGE_EXTS,
    METAIMAGE_EXTS,
    NIFTI_EXTS,
    VIDEO_EXTS,
    check_exists,
    suffix,
)
from tcmn.io.source import FolderSource, VideoSource, VolumeSource
from tcmn.io.volumes import NiftiGeometry, load_metaimage, load_nifti, nifti_fps, nifti_frames

log = logging.getLogger(__name__)

__all__ = ["VideoSource", "open_video"]


def open_video(path: str | os.PathLike) -> VideoSource:
    """Open a video, frame folder, NIfTI or MetaImage sequence for reading.

    Args:
        path: a video file (``.mp4``, ``.avi``, ... any container FFmpeg reads), a folder of
            frames, a ``.nii`` / ``.nii.gz`` 2-D+time NIfTI, or a ``.mhd`` / ``.mha`` MetaImage.
    Returns:
        a :class:`VideoSource` (frames are uint8 RGB ``[H, W, 3]``; see the module docstring for
        the NIfTI axis convention and intensity scaling).
    Raises:
        TCMNError: the path is missing, unsupported, unreadable or has no frame.
    """
    path = Path(path)
    check_exists(path)
    if path.is_dir():
        return FolderSource(path)
    ext = suffix(path)
    if ext in VIDEO_EXTS:
        return CaptureSource(path)
    if ext in NIFTI_EXTS:
        img, data = load_nifti(path)
        frames = nifti_frames(data, path)
        geometry = NiftiGeometry(
            affine=np.array(img.affine, dtype=np.float64),
            header=img.header.copy(),
            shape=tuple(int(s) for s in data.shape),
            image_class=type(img),
        )
        return VolumeSource(path, "nifti", frames, nifti_fps(img), geometry)
    if ext in METAIMAGE_EXTS:
        arr = load_metaimage(path)
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4)):
            raise TCMNError(
                f"{path}: the MetaImage array has shape {arr.shape}, not a 2-D+time sequence "
                "(T, H, W); export one 2-D+time sequence per file."
            )
        return VolumeSource(path, "metaimage", arr)
    raise TCMNError(
        f"{path}: unsupported input type '{ext or path.name}'; give a video "
        f"({', '.join(VIDEO_EXTS)}), a folder of frames ({', '.join(IMAGE_EXTS)}), a NIfTI "
        f"({', '.join(NIFTI_EXTS)}) or a MetaImage ({', '.join(METAIMAGE_EXTS)})."
    )

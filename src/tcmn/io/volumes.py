"""Medical volumes as frame sequences: NIfTI (nibabel) and MetaImage (SimpleITK).

**NIfTI axis convention.** nibabel returns the voxel array in the file's index order
``(i, j, t)``, where ``i`` runs along the image *columns* (x) and ``j`` along the *rows* (y), as
in ITK and in every viewer. So frame ``t`` is ``data[:, :, t].T`` (an ``[H, W]`` image with
``H = shape[1]`` and ``W = shape[0]``). The Echo-Toolkit and CAMUS files store ``(W, H, T)``
this way: with this convention the apex of the echo sector is at the top and the fan opens
downwards (checked by ``tests/test_io.py`` on the real Echo-Toolkit sequence). A ``(X, Y, 1, T)``
volume (time on the fourth axis) and a single 2-D ``(X, Y)`` image are accepted as well. The
masks written for a NIfTI input use the same convention, shape, affine and header.
MetaImage arrays come from ``SimpleITK.GetArrayFromImage``, which already gives ``(T, H, W)``.

**Intensities.** Frames are uint8 RGB ``[H, W, 3]``; grey frames are repeated to 3 channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcmn.errors import TCMNError


@dataclass(frozen=True)
class NiftiGeometry:
    """What is needed to write a NIfTI aligned with an input NIfTI sequence.

    Attributes:
        affine: ``[4, 4]`` float64 voxel-to-world matrix of the input.
        header: a copy of the input's header (spacing, units, qform/sform codes).
        shape: the input's array shape, ``(X, Y)``, ``(X, Y, T)`` or ``(X, Y, 1, T)``.
        image_class: the nibabel image class of the input (``Nifti1Image`` or ``Nifti2Image``).
    """

    affine: np.ndarray
    header: Any
    shape: tuple[int, ...]
    image_class: type

    def to_image(self, labels: np.ndarray):
        """Turn ``[T, H, W]`` uint8 label maps into a nibabel image with the input's geometry.

        The array is stored as ``labels.transpose(2, 1, 0)`` (``(X, Y, T)``) reshaped to the
        input's shape, so it reads back with the same axis convention as the input; the data
        type is uint8 with no intensity scaling.
        """
        arr = np.ascontiguousarray(labels.transpose(2, 1, 0)).reshape(self.shape)
        header = self.header.copy()
        header.set_data_dtype(np.uint8)
        img = self.image_class(arr, self.affine, header)
        img.header.set_slope_inter(1.0, 0.0)
        return img


def nifti_frames(data: np.ndarray, path: Path) -> np.ndarray:
    """NIfTI voxel array (see the module docstring) -> ``[T, H, W]`` (or an error)."""
    if data.ndim == 4 and data.shape[2] == 1:
        data = data[:, :, 0, :]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise TCMNError(
            f"{path}: the NIfTI array has shape {tuple(data.shape)}, not a 2-D+time sequence "
            "(X, Y, T); export one 2-D+time sequence per file."
        )
    return data.transpose(2, 1, 0)


def load_nifti(path: Path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for broken files (ImageFileError, EOF, zlib)
        raise TCMNError(
            f"{path}: the NIfTI file cannot be read ({type(e).__name__}: {e}); check or re-export it."
        ) from e
    return img, data


def load_metaimage(path: Path) -> np.ndarray:
    """MetaImage -> ``(T, H, W)`` (or ``(T, H, W, C)`` for vector pixels); a 2-D image gets T=1."""
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
        if img.GetDimension() == 2:
            arr = arr[None]
        return arr
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise TCMNError(
            f"{path}: the MetaImage cannot be read ({first}); check that its .raw/.zraw data file "
            "is beside it."
        ) from e


def nifti_fps(img) -> float | None:
    """Frame rate from a 4-D NIfTI header's time step and unit, or None."""
    hdr = img.header
    if len(img.shape) < 4:
        return None
    try:
        dt = float(hdr["pixdim"][4])
        unit = hdr.get_xyzt_units()[1]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}.get(unit)
    if scale is None or not dt > 0:
        return None
    return 1.0 / (dt * scale)

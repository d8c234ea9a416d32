"""Inference input and output: videos, frame folders and NIfTI / MetaImage sequences in; label
maps, an overlay video and a NIfTI of the masks out.

Inputs
------
:func:`open_video` returns a :class:`VideoSource` for

* a video file readable by OpenCV/FFmpeg (``.mp4``, ``.avi``, ``.mov``, ...); frames are decoded
  on demand, never the whole video unless :meth:`VideoSource.read_all` is called;
* a folder of frames (png/jpg/bmp/tif), in natural order of the names (``2.png`` before
  ``10.png``);
* a NIfTI 2-D+time sequence (``.nii`` / ``.nii.gz``, read with nibabel);
* a MetaImage sequence (``.mhd`` / ``.mha``, read with SimpleITK).

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
A volume (NIfTI, MetaImage, or a folder of 16-bit images) whose values are already whole numbers
within 0..255 is kept as is; any other volume (16-bit, float) is scaled linearly so that the
minimum and maximum *of the whole volume* map to 0 and 255 (one scale for all frames, so
brightness does not flicker).

Outputs
-------
:class:`PredictionWriter` writes ``masks/<frame>.png`` (uint8 label map per frame),
``overlay.mp4`` and, for a NIfTI input, ``masks.nii.gz`` with the input's geometry, plus a
``manifest.json``. Writing runs in a background thread behind a bounded queue; the output folder
appears (atomically, by a rename) only once every frame is written.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from tcmn.data.layout import IMAGE_EXTS, read_label_map, write_png
from tcmn.errors import TCMNError
from tcmn.utils.atomic import atomic_dir, atomic_write_text
from tcmn.viz import overlay as draw_overlay

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".ogv")
NIFTI_EXTS = (".nii", ".nii.gz")
METAIMAGE_EXTS = (".mhd", ".mha")
MASK_IMAGE_EXTS = IMAGE_EXTS
MASK_ARRAY_EXTS = (".npy", ".npz")
DEFAULT_FPS = 25.0
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "tcmn-predictions"

T = TypeVar("T")


# ---------------------------------------------------------------------------------------- helpers
def _suffix(path: Path) -> str:
    """Lower-case extension, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _natural_key(name: str) -> list:
    """Sort key putting ``2.png`` before ``10.png`` (digit runs compare as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _index_names(n: int) -> list[str]:
    """Zero-padded frame names ``00000``, ``00001``, ... for sources without file names."""
    width = max(5, len(str(max(n - 1, 0))))
    return [f"{i:0{width}d}" for i in range(n)]


def _is_whole(a: np.ndarray, tol: float = 1e-3) -> bool:
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
    if lo >= 0 and hi <= 255 and (v.dtype.kind in "iu" or _is_whole(v)):
        return np.rint(v).astype(np.uint8) if v.dtype.kind == "f" else v.astype(np.uint8)
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return np.rint((v.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _to_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` / ``[H, W, 1]`` / ``[H, W, 3]`` / ``[H, W, 4]`` -> contiguous ``[H, W, 3]``."""
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise TCMNError(f"{path}: no such file or folder; check the path.")


# ------------------------------------------------------------------------------- NIfTI geometry
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


def _nifti_frames(data: np.ndarray, path: Path) -> np.ndarray:
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


def _load_nifti(path: Path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for broken files (ImageFileError, EOF, zlib)
        raise TCMNError(
            f"{path}: the NIfTI file cannot be read ({type(e).__name__}: {e}); check or re-export it."
        ) from e
    return img, data


def _load_metaimage(path: Path) -> np.ndarray:
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


# ---------------------------------------------------------------------------------- VideoSource
class VideoSource(abc.ABC):
    """A video to segment, read frame by frame.

    Attributes:
        path: the input file or folder.
        kind: ``"video"``, ``"frames"``, ``"nifti"`` or ``"metaimage"``.

    ``len(src)`` is the number of frames ``T``; ``src.size`` is ``(H, W)``; ``src.fps`` is the
    frame rate or None when unknown; ``src.frame_names`` gives one name per frame (file stems for
    a folder, ``00000``, ``00001``, ... otherwise) for naming outputs; ``src.geometry`` is a
    :class:`NiftiGeometry` for a NIfTI input, else None. ``src[i]`` is frame ``i`` as uint8 RGB
    ``[H, W, 3]``. A source is not thread-safe: read it from one thread at a time (for example
    the :func:`prefetch` thread). Use it as a context manager or call :meth:`close`.
    """

    kind: str = ""

    def __init__(self, path: Path):
        self.path = path

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @property
    @abc.abstractmethod
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of every frame."""

    @property
    def fps(self) -> float | None:
        """Frames per second, or None when the input does not say."""
        return None

    @property
    def frame_names(self) -> list[str]:
        """One name per frame, without extension, in frame order."""
        return _index_names(len(self))

    @property
    def geometry(self) -> NiftiGeometry | None:
        """The input's NIfTI geometry, or None for other inputs."""
        return None

    @abc.abstractmethod
    def _read(self, i: int) -> np.ndarray:
        """Frame ``i`` (already bounds-checked) as uint8 RGB ``[H, W, 3]``."""

    def __getitem__(self, i: int) -> np.ndarray:
        """Frame ``i`` (negative indices count from the end) as uint8 RGB ``[H, W, 3]``."""
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {i} out of range for {n} frames of {self.path}")
        return self._read(i)

    def _indices(self, start: int | None, stop: int | None, step: int) -> range:
        n = len(self)
        if step == 0:
            raise ValueError("step must not be 0")
        if start is None:
            start = 0 if step > 0 else n - 1
        if not 0 <= start < n:
            raise IndexError(f"start frame {start} out of range for {n} frames of {self.path}")
        if stop is None:
            stop = n if step > 0 else -1
        stop = max(-1, min(n, stop))
        return range(start, stop, step)

    def iter(
        self, start: int | None = None, stop: int | None = None, step: int = 1
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` pairs over ``range(start, stop, step)``.

        Args:
            start: first frame; default 0 when ``step > 0`` and the last frame when ``step < 0``.
            stop: exclusive end; default the end of the video in the direction of ``step`` (so
                ``iter(start=k, step=-1)`` gives ``k, k-1, ..., 0`` for backward propagation).
            step: frame step, negative for backward order.
        Yields:
            ``(int, uint8 [H, W, 3])``.
        """
        for i in self._indices(start, stop, step):
            yield i, self._read(i)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Frames in order (uint8 RGB ``[H, W, 3]``)."""
        for _, frame in self.iter():
            yield frame

    def read_all(self) -> np.ndarray:
        """Every frame, as uint8 ``[T, H, W, 3]`` (decodes the whole video into memory)."""
        out = np.empty((len(self), *self.size, 3), np.uint8)
        for i, frame in self.iter():
            out[i] = frame
        return out

    def close(self) -> None:
        """Release file handles (a no-op for in-memory sources)."""
        return None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self)} frames, size={self.size})"


class _VolumeSource(VideoSource):
    """A sequence held in memory as ``[T, H, W]`` or ``[T, H, W, C]`` uint8 (NIfTI, MetaImage)."""

    def __init__(
        self,
        path: Path,
        kind: str,
        frames: np.ndarray,
        fps: float | None = None,
        geometry: NiftiGeometry | None = None,
    ):
        super().__init__(path)
        self.kind = kind
        if frames.shape[0] == 0 or frames.size == 0:
            raise TCMNError(f"{path}: the sequence has no frames; check or re-export the file.")
        self._frames = to_uint8(frames)
        self._fps = fps
        self._geometry = geometry

    def __len__(self) -> int:
        return int(self._frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self._frames.shape[1]), int(self._frames.shape[2])

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def geometry(self) -> NiftiGeometry | None:
        return self._geometry

    def _read(self, i: int) -> np.ndarray:
        return _to_rgb(self._frames[i])


class _FolderSource(VideoSource):
    """A folder of frame images, in natural order of their names."""

    kind = "frames"

    def __init__(self, path: Path):
        super().__init__(path)
        files = [
            f
            for f in os.listdir(path)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTS) and (path / f).is_file()
        ]
        if not files:
            raise TCMNError(
                f"{path}: the folder holds no frames ({', '.join(IMAGE_EXTS)}); "
                "put the frame images directly in it."
            )
        self._files = sorted(files, key=_natural_key)
        stems = [Path(f).stem for f in self._files]
        if len(set(stems)) != len(stems):
            dup = next(s for s in stems if stems.count(s) > 1)
            raise TCMNError(
                f"{path}: two frames share the name '{dup}' with different extensions; "
                "keep one file per frame."
            )
        self._names = stems
        self._range: tuple[float, float] | None = None
        first = self._raw(0)
        self._size = (int(first.shape[0]), int(first.shape[1]))

    def _raw(self, i: int) -> np.ndarray:
        p = self.path / self._files[i]
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise TCMNError(f"{p}: the frame cannot be decoded; re-export it as PNG or JPEG.")
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        elif img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return img

    def __len__(self) -> int:
        return len(self._files)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def frame_names(self) -> list[str]:
        return list(self._names)

    def _volume_range(self) -> tuple[float, float]:
        """Min and max over every frame (for frames that are not uint8)."""
        if self._range is None:
            lo, hi = np.inf, -np.inf
            for i in range(len(self)):
                a = self._raw(i)
                lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
            self._range = (lo, hi)
        return self._range

    def _read(self, i: int) -> np.ndarray:
        img = self._raw(i)
        if img.shape[:2] != self._size:
            raise TCMNError(
                f"{self.path / self._files[i]}: the frame is {img.shape[1]}x{img.shape[0]} but the "
                f"first frame is {self._size[1]}x{self._size[0]}; give frames of one size."
            )
        if img.dtype != np.uint8:
            lo, hi = self._volume_range()
            if lo >= 0 and hi <= 255 and img.dtype.kind in "iu":
                img = img.astype(np.uint8)
            elif hi > lo:
                img = np.rint((img.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
            else:
                img = np.zeros(img.shape, np.uint8)
        return _to_rgb(img)


class _CaptureSource(VideoSource):
    """A video file decoded on demand with OpenCV (FFmpeg backend).

    Sequential reading decodes each frame once. Random access seeks (a short jump forward is
    decoded through); backward iteration decodes blocks of ``backward_block`` frames forward and
    yields them reversed, so memory stays bounded by one block. ``len()`` counts the frames by
    one decoding pass the first time it is called (container frame counts can be wrong).
    """

    kind = "video"
    backward_block = 32
    _max_forward_skip = 16

    def __init__(self, path: Path):
        super().__init__(path)
        self._cap = self._open()
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise TCMNError(
                f"{path}: the video has no frame that can be decoded; check the file or export "
                "its frames to a folder."
            )
        self._next = 1  # index of the frame the capture decodes next
        self._size = (int(first.shape[0]), int(first.shape[1]))
        self._first = np.ascontiguousarray(cv2.cvtColor(first, cv2.COLOR_BGR2RGB))
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if np.isfinite(fps) and 0 < fps <= 1000 else None
        self._n: int | None = None

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise TCMNError(
                f"{self.path}: the video cannot be opened by OpenCV/FFmpeg; re-encode it "
                "(for example as H.264 .mp4) or export its frames to a folder."
            )
        return cap

    def __len__(self) -> int:
        if self._n is None:  # count by demuxing/decoding once: container metadata can be wrong
            cap = self._open()
            n = 0
            try:
                while cap.grab():
                    n += 1
            finally:
                cap.release()
            if n == 0:
                raise TCMNError(
                    f"{self.path}: the video has no frames; check the file or export its frames."
                )
            self._n = n
        return self._n

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float | None:
        return self._fps

    def _decode_next(self) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise TCMNError(
                f"{self.path}: decoding failed at frame {self._next} of {len(self)}; the file may "
                "be truncated: re-encode it or export its frames to a folder."
            )
        self._next += 1
        if frame.shape[:2] != self._size:
            raise TCMNError(
                f"{self.path}: frame {self._next - 1} is {frame.shape[1]}x{frame.shape[0]} but the "
                f"first is {self._size[1]}x{self._size[0]}; re-encode the video at one size."
            )
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))

    def _seek(self, i: int) -> None:
        if i == self._next:
            return
        if 0 < i - self._next <= self._max_forward_skip:
            while self._next < i:
                if not self._cap.grab():
                    raise TCMNError(
                        f"{self.path}: decoding failed at frame {self._next}; re-encode the video "
                        "or export its frames to a folder."
                    )
                self._next += 1
            return
        if i == 0:  # reopening is the one seek that is exact for every container
            self._cap.release()
            self._cap = self._open()
        else:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        self._next = i

    def _read(self, i: int) -> np.ndarray:
        if i == 0:  # frame 0 is kept from opening: no rewind needed
            return self._first.copy()
        self._seek(i)
        return self._decode_next()

    def iter(
        self, start: int | None = None, stop: int | None = None, step: int = 1
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` pairs; see :meth:`VideoSource.iter`.

        Backward (``step < 0``) decodes blocks of :attr:`backward_block` frames forward and
        yields each block reversed.
        """
        idx = self._indices(start, stop, step)
        if step > 0 or len(idx) == 0:
            for i in idx:
                yield i, self._read(i)
            return
        hi, lo = idx[0], idx[-1]  # hi >= lo
        block = max(self.backward_block, -step)
        end = hi
        while end >= lo:
            begin = max(lo, end - block + 1)
            self._seek(begin)
            frames = [self._decode_next() for _ in range(begin, end + 1)]
            for i in range(end, begin - 1, -1):
                if (hi - i) % step == 0:
                    yield i, frames[i - begin]
            end = begin - 1

    def close(self) -> None:
        self._cap.release()


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
    _check_exists(path)
    if path.is_dir():
        return _FolderSource(path)
    ext = _suffix(path)
    if ext in VIDEO_EXTS:
        return _CaptureSource(path)
    if ext in NIFTI_EXTS:
        img, data = _load_nifti(path)
        frames = _nifti_frames(data, path)
        geometry = NiftiGeometry(
            affine=np.array(img.affine, dtype=np.float64),
            header=img.header.copy(),
            shape=tuple(int(s) for s in data.shape),
            image_class=type(img),
        )
        return _VolumeSource(path, "nifti", frames, _nifti_fps(img), geometry)
    if ext in METAIMAGE_EXTS:
        arr = _load_metaimage(path)
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4)):
            raise TCMNError(
                f"{path}: the MetaImage array has shape {arr.shape}, not a 2-D+time sequence "
                "(T, H, W); export one 2-D+time sequence per file."
            )
        return _VolumeSource(path, "metaimage", arr)
    raise TCMNError(
        f"{path}: unsupported input type '{ext or path.name}'; give a video "
        f"({', '.join(VIDEO_EXTS)}), a folder of frames ({', '.join(IMAGE_EXTS)}), a NIfTI "
        f"({', '.join(NIFTI_EXTS)}) or a MetaImage ({', '.join(METAIMAGE_EXTS)})."
    )


def _nifti_fps(img) -> float | None:
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


# ------------------------------------------------------------------------------------- masks
def _label_map(arr: np.ndarray, path: Path, binary_255: bool = True) -> np.ndarray:
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
        if not np.all(np.isfinite(arr)) or not _is_whole(arr):
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


def _read_mask_image(path: Path) -> np.ndarray:
    """Decode a PNG/BMP/TIF/JPEG mask into a numeric ``[H, W]`` array (not yet validated)."""
    from PIL import Image

    is_jpeg = _suffix(path) in (".jpg", ".jpeg")
    if not is_jpeg:
        try:
            with Image.open(path) as im:
                mode = im.mode
                if mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # numeric: checked by _label_map
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
    _check_exists(path)
    ext = _suffix(path)
    if path.is_dir():
        raise TCMNError(f"{path}: is a folder, not a mask file; give the first frame's mask file.")
    if ext in MASK_IMAGE_EXTS:
        arr = _read_mask_image(path)
    elif ext in NIFTI_EXTS:
        _, data = _load_nifti(path)
        if data.ndim == 4 and data.shape[2] == 1:
            data = data[:, :, 0, :]
        arr = data.T if data.ndim == 2 else data.transpose(2, 1, 0) if data.ndim == 3 else data
        arr = _select_frame(arr, frame, path, "(X, Y, T)")
    elif ext in METAIMAGE_EXTS:
        arr = _select_frame(_load_metaimage(path), frame, path, "(T, H, W)")
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
    labels = _label_map(arr, path)
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


# ------------------------------------------------------------------------------------- prefetch
class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def prefetch(iterable: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead of the consumer.

    Used to decode frames while the network runs. An exception raised by the producer is
    re-raised in the consumer (same object, original traceback) at the point where the item
    would have come. When the consumer stops early (``break``, an exception, ``close()``), the
    thread stops producing, the source iterator is closed in the thread, and the thread is joined
    before this generator finishes.

    Args:
        iterable: any iterable (it is iterated only in the background thread).
        depth: how many items may wait in the queue (>= 1).
    Yields:
        the items of ``iterable``, in order.
    """
    if depth < 1:
        raise ValueError("depth must be >= 1")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(iterable)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as e:  # handed to the consumer
            put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    thread = threading.Thread(target=produce, name="tcmn-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            thread.join(timeout=0.05)


# ------------------------------------------------------------------------------------ outputs
def check_writable(out_dir: str | os.PathLike) -> Path:
    """Check that ``out_dir`` can be created (or replaced) before any work starts.

    The outputs are written into a temporary folder beside ``out_dir`` and renamed, so the check
    creates (and removes) such a folder in ``out_dir``'s parent, creating the parent if needed.

    Returns:
        ``out_dir`` as an absolute :class:`~pathlib.Path`.
    Raises:
        TCMNError: ``out_dir`` is an existing file, or its parent cannot be created or written.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise TCMNError(f"{out}: exists and is a file, not a folder; choose another output folder.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent)
        os.rmdir(probe)
    except OSError as e:
        raise TCMNError(
            f"{out}: the output folder cannot be written ({e.strerror or e}); choose a writable "
            "output folder."
        ) from e
    return out


class PredictionWriter:
    """Writes a propagation's results for one video, off the hot path and atomically.

    Output folder (``out_dir``)::

        masks/<frame_name>.png   uint8 label map per frame (when write_png)
        overlay.mp4              frames tinted with the objects' colours and contours, in frame
                                 order, mp4v, fps of the source or 25 (when write_overlay); odd
                                 sizes are padded by one black row/column (mp4v needs even sizes)
        masks.nii.gz             [for NIfTI input, when write_nifti] labels with the input's
                                 shape, axis convention, affine and header
        manifest.json            source, frame names, objects found, outputs, settings

    Use as a context manager. :meth:`write` validates its arguments, copies them and queues
    them to a background thread (a bounded queue of ``queue_size`` items, so memory stays
    bounded); frames may arrive in any order (backward propagation), each index exactly once.
    Everything is written into a temporary folder beside ``out_dir`` that replaces ``out_dir``
    only when the block ends without an exception *and* every frame was written; otherwise the
    temporary folder is removed and an existing ``out_dir`` is left untouched.

    Args:
        out_dir: output folder (created or replaced).
        source: the :class:`VideoSource` the predictions are for (length, size, names, fps,
            geometry; no frame is read from it).
        write_png: write ``masks/*.png``.
        write_overlay: write ``overlay.mp4`` (needs ``frame`` in :meth:`write`).
        write_nifti: write ``masks.nii.gz``; None means "when the input is NIfTI".
        settings: JSON-serialisable settings recorded in the manifest (non-serialisable values
            are stored as strings).
        queue_size: maximum number of frames waiting to be written.
    Raises:
        TCMNError: ``out_dir`` cannot be written, or ``write_nifti=True`` for a non-NIfTI input.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        source: VideoSource,
        write_png: bool = True,
        write_overlay: bool = True,
        write_nifti: bool | None = None,
        settings: Mapping[str, Any] | None = None,
        queue_size: int = 8,
    ):
        self.out_dir = check_writable(out_dir)
        self.source = source
        self.write_png = bool(write_png)
        self.write_overlay = bool(write_overlay)
        if write_nifti and source.geometry is None:
            raise TCMNError(
                f"{source.path}: write_nifti=true needs a NIfTI input, and this input is "
                f"{source.kind}; set write_nifti=false."
            )
        self.write_nifti = source.geometry is not None if write_nifti is None else bool(write_nifti)
        self.settings = dict(settings or {})
        self._n = len(source)
        self._size = tuple(source.size)
        self._names = source.frame_names
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._submitted = np.zeros(self._n, bool)
        self._written = np.zeros(self._n, bool)
        self._object_frames: dict[int, int] = {}
        self._atomic = None
        self._tmp: Path | None = None
        self._video: cv2.VideoWriter | None = None
        self._next_overlay = 0
        self._pending: set[int] = set()
        self._volume: np.ndarray | None = None

    # ---------------------------------------------------------------- context
    def __enter__(self) -> PredictionWriter:
        self._atomic = atomic_dir(self.out_dir)
        self._tmp = self._atomic.__enter__()
        try:
            if self.write_png:
                (self._tmp / "masks").mkdir()
            if self.write_overlay:
                (self._tmp / ".pending").mkdir()
            if self.write_nifti:
                self._volume = np.zeros((self._n, *self._size), np.uint8)
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        self._thread = threading.Thread(target=self._work, name="tcmn-writer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self._queue.put(None)
            self._thread.join()
            try:
                if self._error is not None:
                    raise self._error
                self._finish()
            except BaseException as e:
                self._abort_all()
                self._atomic.__exit__(type(e), e, e.__traceback__)
                raise
            self._atomic.__exit__(None, None, None)
            return False
        self._abort.set()
        self._queue.put(None)
        self._thread.join()
        self._abort_all()
        self._atomic.__exit__(exc_type, exc, tb)
        return False

    def _abort_all(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None

    # ---------------------------------------------------------------- producer side
    def write(self, index: int, labels: np.ndarray, frame: np.ndarray | None = None) -> None:
        """Queue frame ``index``'s results for writing (blocks while the queue is full).

        Args:
            index: frame index in ``0..len(source)-1``, each index once.
            labels: uint8 ``[H, W]`` label map.
            frame: uint8 RGB ``[H, W, 3]`` (or grey ``[H, W]``) input frame, needed for the
                overlay.
        Raises:
            ValueError: bad index or shapes (a programming error); any error of the writing
                thread is re-raised here.
        """
        if self._thread is None:
            raise RuntimeError("PredictionWriter.write() called outside its `with` block")
        if self._error is not None:
            raise self._error
        index = int(index)
        if not 0 <= index < self._n:
            raise ValueError(f"frame index {index} out of range for {self._n} frames")
        if self._submitted[index]:
            raise ValueError(f"frame {index} was already written")
        labels = np.asarray(labels)
        if labels.shape != self._size or labels.dtype != np.uint8:
            raise ValueError(
                f"labels must be uint8 {self._size}, got {labels.dtype} {labels.shape}"
            )
        if self.write_overlay:
            if frame is None:
                raise ValueError("frame is needed for the overlay (write_overlay=True)")
            frame = np.asarray(frame)
            if (
                frame.dtype != np.uint8
                or frame.shape[:2] != self._size
                or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3)))
            ):
                raise ValueError(
                    f"frame must be uint8 {(*self._size, 3)}, got {frame.dtype} {frame.shape}"
                )
            frame = _to_rgb(frame).copy()
        else:
            frame = None
        self._submitted[index] = True
        self._queue.put((index, labels.copy(), frame))

    # ---------------------------------------------------------------- writer thread
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None or self._abort.is_set():
                continue  # drain so that write() never blocks on a dead writer
            try:
                self._write_one(*item)
            except OSError as e:
                self._error = TCMNError(
                    f"{self.out_dir}: writing the outputs failed ({e.strerror or e}); free disk "
                    "space or choose another output folder."
                )
                self._error.__cause__ = e
            except BaseException as e:
                self._error = e

    def _write_one(self, index: int, labels: np.ndarray, frame: np.ndarray | None) -> None:
        for k in np.unique(labels).tolist():
            if k:
                self._object_frames[k] = self._object_frames.get(k, 0) + 1
        if self.write_png:
            write_png(self._tmp / "masks" / f"{self._names[index]}.png", labels)
        if self._volume is not None:
            self._volume[index] = labels
        if self.write_overlay:
            img = draw_overlay(frame, labels)
            if index == self._next_overlay:
                self._append_overlay(img)
                while self._next_overlay in self._pending:
                    i = self._next_overlay
                    p = self._pending_path(i)
                    spilled = cv2.imread(str(p), cv2.IMREAD_COLOR)
                    if spilled is None:
                        raise TCMNError(f"{p}: a spilled overlay frame vanished; re-run.")
                    self._append_overlay(cv2.cvtColor(spilled, cv2.COLOR_BGR2RGB))
                    p.unlink()
                    self._pending.discard(i)
            else:  # out of order: spill to disk so memory stays bounded
                bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                if not cv2.imwrite(
                    str(self._pending_path(index)), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]
                ):
                    raise TCMNError(
                        f"{self._tmp}: cannot write a temporary overlay frame; free disk space."
                    )
                self._pending.add(index)
        self._written[index] = True

    def _pending_path(self, index: int) -> Path:
        return self._tmp / ".pending" / f"{index}.png"

    def _append_overlay(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        ph, pw = h + h % 2, w + w % 2
        if self._video is None:
            fps = self.source.fps or DEFAULT_FPS
            path = self._tmp / "overlay.mp4"
            self._video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (pw, ph))
            if not self._video.isOpened():
                raise TCMNError(
                    f"{path}: OpenCV cannot write an mp4v video here; set write_overlay=false."
                )
        if (ph, pw) != (h, w):
            rgb = cv2.copyMakeBorder(rgb, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=0)
        self._video.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self._next_overlay += 1

    # ---------------------------------------------------------------- finish
    def _finish(self) -> None:
        missing = np.flatnonzero(~self._written)
        if missing.size:
            raise TCMNError(
                f"{self.out_dir}: only {self._n - missing.size} of {self._n} frames were written "
                f"(first missing: {int(missing[0])}), so nothing was saved; re-run the prediction."
            )
        outputs: dict[str, str] = {}
        if self.write_overlay:
            if self._video is not None:
                self._video.release()
                self._video = None
            shutil.rmtree(self._tmp / ".pending", ignore_errors=True)
            outputs["overlay"] = "overlay.mp4"
        if self.write_png:
            outputs["masks"] = "masks/"
        if self.write_nifti:
            import nibabel as nib

            nib.save(self.source.geometry.to_image(self._volume), str(self._tmp / "masks.nii.gz"))
            outputs["nifti"] = "masks.nii.gz"
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "source": str(Path(self.source.path).absolute()),
            "source_kind": self.source.kind,
            "n_frames": self._n,
            "size": list(self._size),
            "fps": self.source.fps,
            "frames": [f"{n}.png" for n in self._names],
            "objects": sorted(self._object_frames),
            "frames_with_object": {str(k): v for k, v in sorted(self._object_frames.items())},
            "outputs": outputs,
            "settings": self.settings,
        }
        atomic_write_text(
            self._tmp / MANIFEST_NAME, json.dumps(manifest, indent=1, default=str) + "\n"
        )

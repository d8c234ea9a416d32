"""The frame sources behind :func:`tcmn.io.video.open_video`: the :class:`VideoSource` interface,
volumes (NIfTI, MetaImage) held in memory, and folders of frame images."""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from tcmn.errors import TCMNError
from tcmn.io.formats import (
    IMAGE_EXTS,
    index_names,
    natural_key,
    to_rgb,
    to_uint8,
)
from tcmn.io.volumes import NiftiGeometry

log = logging.getLogger(__name__)


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
    #: frames the file's header declares (video files; None when unknown or not a video file)
    declared_frames: int | None = None

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
        return index_names(len(self))

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


class VolumeSource(VideoSource):
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
        return to_rgb(self._frames[i])


class FolderSource(VideoSource):
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
        self._files = sorted(files, key=natural_key)
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
        return to_rgb(img)

"""Video files decoded with OpenCV/FFmpeg, frame by frame (:class:`CaptureSource`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from tcmn.errors import TCMNError
from tcmn.io.source import VideoSource

log = logging.getLogger(__name__)


class CaptureSource(VideoSource):
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
        declared = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.declared_frames = int(declared) if np.isfinite(declared) and declared > 0 else None
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
            if self.declared_frames is not None and self.declared_frames != n:
                log.warning(
                    "%s: the header declares %d frames but %d can be decoded (a truncated or "
                    "damaged file?); the outputs have %d frames.",
                    self.path,
                    self.declared_frames,
                    n,
                    n,
                )
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

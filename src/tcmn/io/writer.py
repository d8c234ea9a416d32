"""Writing a propagation's results for one video.

Outputs
-------
:class:`PredictionWriter` writes ``masks/<frame>.png`` (uint8 label map per frame),
``overlay.mp4`` and, for a NIfTI input, ``masks.nii.gz`` with the input's geometry, plus a
``manifest.json``. Writing runs in a background thread behind a bounded queue; the output folder
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from tcmn.errors import TCMNError
from tcmn.io.formats import to_rgb
from tcmn.io.images import write_png
from tcmn.utils.atomic import atomic_dir, atomic_write_text
from tcmn.viz import overlay as draw_overlay

if TYPE_CHECKING:
    from tcmn.io.video import VideoSource

DEFAULT_FPS = 25.0
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "tcmn-predictions"


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
            frame = to_rgb(frame).copy()
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


def write_label_maps(folder: str | os.PathLike, stems: Sequence[str], labels: np.ndarray) -> Path:
    """Write one PNG label map per frame, ``<folder>/<stem>.png`` (the DAVIS layout of a video).

    The folder is written as a whole (a temporary folder renamed into place), so an interrupted
    run never leaves a video with some of its frames.

    Args:
        folder: the video's folder (created or replaced).
        stems: the frames' names without extension, ``[T]``.
        labels: uint8 ``[T, H, W]`` label maps (0 background, k object k).
    Returns:
        The folder, absolute.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype != np.uint8 or len(stems) != len(labels):
        raise ValueError(
            f"labels must be uint8 [T, H, W] with one stem per frame, got {labels.dtype} "
            f"{labels.shape} and {len(stems)} stems"
        )
    out = Path(folder).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        for stem, lab in zip(stems, labels, strict=True):
            write_png(tmp / f"{stem}.png", lab)
    return out

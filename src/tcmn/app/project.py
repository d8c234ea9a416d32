"""The annotation work on one video: drawn masks, propagated masks, objects, saved as it changes.

A project lives in ``<sessions>/<key>/`` (``key`` from the video's absolute path, so reopening
the same video resumes it)::

    state.json         video, checkpoint, objects (name, colour), drawn frames, confidence
    drawn/<i>.png      the label maps the user drew or imported (hand-annotated frames)
    predicted/<i>.png  the propagated label maps

Every file is written atomically the moment it changes (a drawn mask when it is stored, a
propagated one as it streams out), so killing the server loses at most the request in flight.
Label maps are uint8 ``[H, W]`` at the video's size, 0 background and 1..9 the objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcmn.errors import TCMNError
from tcmn.inference.session import InferenceSession
from tcmn.io import (
    PredictionWriter,
    VideoSource,
    open_video,
    prefetch,
    read_label_map,
    write_png,
)
from tcmn.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

MAX_OBJECTS = 9
#: default colours of objects 1..9 (RGB hex), the page's palette
COLOURS = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#ffe119",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
)


def _finite(values: dict[int, float]) -> dict[str, float | None]:
    """Frame -> value for JSON: NaN (no object predicted on that frame) becomes null."""
    return {str(k): (v if math.isfinite(v) else None) for k, v in sorted(values.items())}


def project_key(video: Path) -> str:
    """The folder name of a video's project: a hash of its absolute path."""
    return hashlib.sha1(str(video.resolve()).encode()).hexdigest()[:16]


@dataclass
class Progress:
    """What the page shows of a propagation: frames done of total, frames per second."""

    running: bool = False
    done: int = 0
    total: int = 0
    fps: float = 0.0
    last_frame: int | None = None
    message: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AnnotationProject:
    """One video being annotated (see the module docstring).

    Attributes:
        video: the video file or folder (absolute).
        folder: the project's folder under the sessions root.
        source: the opened video.
        drawn / predicted: frame index -> uint8 ``[H, W]`` label map.
        confidence / area: frame index -> the propagated frame's confidence and object area.
        objects: object id (1..9) -> ``{"name", "colour"}``.
    """

    video: Path
    folder: Path
    source: VideoSource
    drawn: dict[int, np.ndarray] = field(default_factory=dict)
    predicted: dict[int, np.ndarray] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)
    area: dict[int, float] = field(default_factory=dict)
    objects: dict[int, dict[str, str]] = field(default_factory=dict)
    ckpt: str | None = None
    progress: Progress = field(default_factory=Progress)
    #: a video source is read from one thread at a time (the page's requests and propagation)
    source_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 RGB ``[H, W, 3]`` (safe while a propagation runs)."""
        self.check_frame(index)
        with self.source_lock:
            return self.source[index]

    # ------------------------------------------------------------------ open / save
    @classmethod
    def open(cls, video: Path, sessions: Path) -> AnnotationProject:
        """Open ``video`` and resume its project from ``sessions`` when one exists."""
        source = open_video(video)
        folder = sessions / project_key(video)
        p = cls(video=video.resolve(), folder=folder, source=source)
        state = folder / "state.json"
        if state.is_file():
            try:
                s = json.loads(state.read_text())
            except (OSError, ValueError):
                log.warning("%s: unreadable, starting the project afresh", state)
                s = {}
            p.objects = {int(k): dict(v) for k, v in (s.get("objects") or {}).items()}
            p.ckpt = s.get("ckpt")
            nan = float("nan")
            p.confidence = {
                int(k): nan if v is None else float(v)
                for k, v in (s.get("confidence") or {}).items()
            }
            p.area = {
                int(k): nan if v is None else float(v) for k, v in (s.get("area") or {}).items()
            }
            for kind, store in (("drawn", p.drawn), ("predicted", p.predicted)):
                for f in sorted((folder / kind).glob("*.png")):
                    lab = read_label_map(f)
                    if f.stem.isdigit() and lab.shape == tuple(source.size):
                        store[int(f.stem)] = lab
        return p

    def save_state(self) -> None:
        """Write ``state.json`` atomically."""
        state = {
            "format": "tcmn-annotation",
            "video": str(self.video),
            "n_frames": len(self.source),
            "size": list(self.source.size),
            "ckpt": self.ckpt,
            "objects": {str(k): v for k, v in sorted(self.objects.items())},
            "drawn": sorted(self.drawn),
            "confidence": _finite(self.confidence),
            "area": _finite(self.area),
            "saved": time.time(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "state.json", json.dumps(state, indent=1) + "\n")

    def summary(self) -> dict[str, Any]:
        """What the page needs to show the project."""
        return {
            "video": str(self.video),
            "n_frames": len(self.source),
            "size": list(self.source.size),
            "fps": self.source.fps,
            "frame_names": self.source.frame_names,
            "ckpt": self.ckpt,
            "objects": {str(k): v for k, v in sorted(self.objects.items())},
            "drawn": sorted(self.drawn),
            "predicted": sorted(self.predicted),
            "confidence": _finite(self.confidence),
            "area": _finite(self.area),
            "progress": self.progress.to_dict(),
        }

    # ------------------------------------------------------------------ masks and objects
    def check_frame(self, index: int) -> int:
        n = len(self.source)
        if not 0 <= index < n:
            raise TCMNError(f"frame {index} is beyond the video ({n} frames, 0..{n - 1}).")
        return index

    def set_drawn(self, index: int, labels: np.ndarray) -> None:
        """Store the user's label map of frame ``index`` (replacing an earlier one).

        Raises:
            TCMNError: a frame outside the video, a map of the wrong size, labels above 9.
        """
        self.check_frame(index)
        labels = np.asarray(labels)
        h, w = self.source.size
        if labels.shape != (h, w):
            raise TCMNError(
                f"the mask of frame {index} is {labels.shape[1] if labels.ndim > 1 else '?'}x"
                f"{labels.shape[0]} but the video is {w}x{h}; draw or import a mask of the "
                "frame's size."
            )
        top = int(labels.max()) if labels.size else 0
        if top > MAX_OBJECTS:
            raise TCMNError(
                f"the mask of frame {index} has label {top}; use labels 1..{MAX_OBJECTS} "
                f"(at most {MAX_OBJECTS} objects)."
            )
        labels = np.ascontiguousarray(labels.astype(np.uint8))
        for oid in np.unique(labels).tolist():
            if oid and oid not in self.objects:
                self.objects[oid] = {"name": f"object {oid}", "colour": COLOURS[oid - 1]}
        write_png(self.folder / "drawn" / f"{index}.png", labels)
        self.drawn[index] = labels
        self.save_state()

    def clear_drawn(self, index: int) -> None:
        """Forget the drawn mask of frame ``index`` (the frame becomes unannotated)."""
        self.check_frame(index)
        self.drawn.pop(index, None)
        (self.folder / "drawn" / f"{index}.png").unlink(missing_ok=True)
        self.save_state()

    def set_object(self, oid: int, name: str | None, colour: str | None) -> None:
        if not 1 <= oid <= MAX_OBJECTS:
            raise TCMNError(f"object {oid}: use an id 1..{MAX_OBJECTS}.")
        o = self.objects.setdefault(oid, {"name": f"object {oid}", "colour": COLOURS[oid - 1]})
        if name is not None:
            name = str(name).strip()
            if not name or len(name) > 64:
                raise TCMNError("an object name must have 1 to 64 characters.")
            o["name"] = name
        if colour is not None:
            c = str(colour)
            if (
                len(c) != 7
                or c[0] != "#"
                or any(ch not in "0123456789abcdefABCDEF" for ch in c[1:])
            ):
                raise TCMNError(f"colour {c!r}: give it as #rrggbb.")
            o["colour"] = c.lower()
        self.save_state()

    def labels(self, index: int) -> np.ndarray | None:
        """The frame's label map: drawn, else propagated, else None."""
        lab = self.drawn.get(index)
        return lab if lab is not None else self.predicted.get(index)

    # ------------------------------------------------------------------ propagation
    def plan(self, direction: str, start: int | None) -> tuple[dict, list]:
        """The drawn masks as given masks, and the passes a propagation would make.

        Raises:
            TCMNError: no drawn mask, a bad direction or start (before anything runs).
        """
        given = {
            i: (m, sorted(set(np.unique(m).tolist()) - {0}) or None)
            for i, m in self.drawn.items()
            if m.any()
        }
        if not given:
            raise TCMNError("draw a mask on at least one frame before propagating.")
        return given, InferenceSession.plan(len(self.source), given, direction, start)

    def propagate(
        self,
        session: InferenceSession,
        direction: str = "forward",
        start: int | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> int:
        """Propagate the drawn masks with ``session`` (every drawn frame is a memory frame);
        every result is stored and saved as it arrives. Returns the number of frames done.

        Raises:
            TCMNError: no drawn mask, a bad direction or start, a propagation already running.
        """
        given, passes = self.plan(direction, start)
        n_total = sum(len(ix) for _, ix in passes) - (len(passes) - 1)  # the start frame once
        t0 = time.perf_counter()
        self.progress = Progress(running=True, total=n_total, message="propagating")
        done = 0
        saving = _Saver(self.folder / "predicted", self.progress)

        def ahead(indices):  # frames decode in a thread while the network runs
            return prefetch(self.frame(i) for i in indices)

        try:
            for r in session.propagate(_Locked(self), given, direction, start, frame_source=ahead):
                if r.index not in self.drawn:  # a drawn frame keeps the user's mask
                    self.predicted[r.index] = r.labels
                    saving.put(r.index, r.labels)
                self.confidence[r.index] = r.confidence
                self.area[r.index] = r.area
                done += 1
                elapsed = max(time.perf_counter() - t0, 1e-6)
                self.progress.done, self.progress.last_frame = done, r.index
                self.progress.fps = done / elapsed
                if on_frame is not None:
                    on_frame(r.index)
            self.progress.message = "cancelled" if session.cancelled else "done"
        except TCMNError as e:
            self.progress.error = str(e)
            raise
        except Exception as e:  # reported to the page; the server keeps running
            self.progress.error = f"unexpected {type(e).__name__}: {e}"
            log.exception("propagation failed")
            raise
        finally:
            saving.close()  # the final frames per second count every mask saved
            if done:
                self.progress.fps = done / max(time.perf_counter() - t0, 1e-6)
            self.progress.running = False
            self.save_state()
        return done

    # ------------------------------------------------------------------ export
    def final_labels(self, index: int) -> np.ndarray:
        lab = self.labels(index)
        return lab if lab is not None else np.zeros(self.source.size, np.uint8)

    def export(self, out: Path, overlay: bool = True, nifti: bool | None = None) -> Path:
        """PNG label maps, the overlay video and (NIfTI input) a NIfTI with the input's geometry,
        written atomically into ``out`` (drawn masks win over propagated ones)."""
        settings = {"app": "tcmn-annotate", "ckpt": self.ckpt, "drawn": sorted(self.drawn)}
        with PredictionWriter(
            out,
            self.source,
            write_png=True,
            write_overlay=overlay,
            write_nifti=nifti,
            settings=settings,
        ) as writer:
            for i in range(len(self.source)):
                writer.write(i, self.final_labels(i), self.frame(i) if overlay else None)
        return out

    def add_to_dataset(self, root: Path, name: str, dataset: str = "annotated") -> Path:
        """Add the video to a prepared dataset (``JPEGImages/``, ``Annotations/``, ``meta.json``)
        with every frame that has a mask (drawn or propagated) as an annotated frame, so it can
        be trained on with ``tcmn-train``."""
        from tcmn.data.layout import LayoutWriter

        masks = {
            i: self.final_labels(i) for i in range(len(self.source)) if self.labels(i) is not None
        }
        masks = {i: m for i, m in masks.items() if m.any() or i in self.drawn}
        if not masks:
            raise TCMNError("nothing to add: no frame has a mask yet; draw and propagate first.")
        objects = {oid: o["name"] for oid, o in self.objects.items()}
        present = {int(v) for m in masks.values() for v in np.unique(m) if v}
        objects = {oid: objects.get(oid, f"object {oid}") for oid in sorted(present)}
        writer = LayoutWriter(root, dataset, overwrite=True)
        writer.add_video(
            name,
            (self.frame(i) for i in range(len(self.source))),
            masks,
            objects,
            patient=name,
            source=str(self.video),
            fps=self.source.fps,
        )
        return root


class _Locked:
    """The project's frames for a propagation: indexable, read under the project's lock."""

    def __init__(self, project: AnnotationProject):
        self.project = project

    def __len__(self) -> int:
        return len(self.project.source)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.project.frame(index)


class _Saver:
    """Writes propagated label maps in a thread (atomic PNG writes fsync, which would otherwise
    slow the propagation); :meth:`close` waits for the queue to drain."""

    def __init__(self, folder: Path, progress: Progress):
        self.folder, self.progress = folder, progress
        self.queue: queue.Queue = queue.Queue(maxsize=256)
        self.thread = threading.Thread(target=self._work, name="tcmn-annotate-save", daemon=True)
        self.thread.start()

    def put(self, index: int, labels: np.ndarray) -> None:
        self.queue.put((index, labels))

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                write_png(self.folder / f"{item[0]}.png", item[1])
            except OSError as e:  # shown on the page; the masks stay in memory
                self.progress.error = f"{self.folder}: saving a propagated mask failed ({e})."

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

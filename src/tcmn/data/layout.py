"""The prepared dataset layout: one format every source dataset is converted into.

```
<root>/JPEGImages/<video>/<frame>.png|jpg     frames, RGB (grey images stored as 3 channels)
<root>/Annotations/<video>/<frame>.png        uint8 label map: 0 background, k object k (palette ok)
<root>/meta.json                              see below
```

``meta.json``::

    {"format": "tcmn-prepared", "version": 1, "dataset": "cvc_clinicdb",
     "videos": {"<video>": {"patient": "p01", "source": "cvc_clinicdb", "size": [H, W],
                            "frames": ["00000.png", ...], "annotated": ["00000", ...],
                            "objects": {"1": "polyp"}, "fps": 25.0, "spacing": [0.3, 0.3],
                            "extra": {...}}}}

``annotated`` lists the frame stems that have a mask; annotations may be sparse. A listed
annotation may be empty (all zeros): the object is then absent from that frame.

:class:`LayoutWriter` writes this layout so that a video appears in ``meta.json`` only after its
files are complete; :class:`PreparedDataset` reads and validates it and caches decoded frames and
masks as memory-mapped ``.npy`` files so that sampling clips costs no image decoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tcmn.errors import TCMNError
from tcmn.io.formats import IMAGE_EXTS
from tcmn.io.images import read_frame, write_png
from tcmn.io.masks import read_label_map
from tcmn.utils.atomic import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

META_NAME = "meta.json"
FORMAT = "tcmn-prepared"
VERSION = 1
IMAGE_DIR = "JPEGImages"
MASK_DIR = "Annotations"


@dataclass
class VideoMeta:
    """What ``meta.json`` says of one video.

    Attributes:
        name: folder name of the video under ``JPEGImages`` / ``Annotations``.
        frames: frame file names in temporal order.
        annotated: stems of the frames that have a mask (a subset of the frames' stems).
        objects: object id (1..255) -> class name.
        size: (H, W) of every frame and mask.
    """

    name: str
    frames: list[str]
    annotated: list[str]
    objects: dict[int, str]
    size: tuple[int, int]
    patient: str = ""
    source: str = ""
    fps: float | None = None
    spacing: list[float] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def stems(self) -> list[str]:
        return [Path(f).stem for f in self.frames]

    @property
    def annotated_indices(self) -> list[int]:
        """Indices (into ``frames``) of the annotated frames, increasing."""
        ann = set(self.annotated)
        return [i for i, s in enumerate(self.stems) if s in ann]

    def to_json(self) -> dict:
        return {
            "patient": self.patient,
            "source": self.source,
            "size": list(self.size),
            "n_frames": self.n_frames,
            "frames": list(self.frames),
            "annotated": list(self.annotated),
            "objects": {str(k): v for k, v in sorted(self.objects.items())},
            "fps": self.fps,
            "spacing": self.spacing,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, name: str, d: Mapping, where: Path) -> VideoMeta:
        try:
            return cls(
                name=name,
                frames=list(d["frames"]),
                annotated=list(d["annotated"]),
                objects={int(k): str(v) for k, v in d["objects"].items()},
                size=(int(d["size"][0]), int(d["size"][1])),
                patient=str(d.get("patient") or name),
                source=str(d.get("source", "")),
                fps=d.get("fps"),
                spacing=d.get("spacing"),
                extra=dict(d.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise TCMNError(
                f"{where}: the entry of video '{name}' is malformed ({e!r}); "
                "re-run `tcmn-prepare` to rewrite it."
            ) from e


class PreparedDataset:
    """Reader of a prepared dataset folder.

    Args:
        root: the folder holding ``JPEGImages``, ``Annotations`` and ``meta.json``.
        cache_dir: where decoded ``.npy`` caches go (default ``<root>/.cache``; falls back to
            memory when not writable).

    ``frames(video)`` returns ``[T, H, W, 3]`` uint8 and ``masks(video)`` returns
    ``([T, H, W]`` uint8 labels, ``[T]`` bool annotated); both are memory-mapped after the first
    call. Construction checks the folders and the meta entries; masks are checked (size, declared
    ids) the first time a video is decoded, and :meth:`validate` checks every video.
    """

    def __init__(self, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise TCMNError(
                f"{self.root}: the dataset folder does not exist; run `tcmn-prepare dataset=... "
                f"dst={self.root}` or fix the path (data.root)."
            )
        for sub in (IMAGE_DIR, MASK_DIR):
            if not (self.root / sub).is_dir():
                raise TCMNError(
                    f"{self.root / sub}: the folder is missing, so {self.root} is not a prepared "
                    "dataset; convert it with `tcmn-prepare`."
                )
        meta_path = self.root / META_NAME
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise TCMNError(
                    f"{meta_path}: not valid JSON ({e}); re-run `tcmn-prepare ... overwrite=true`."
                ) from e
            self.name = str(meta.get("dataset") or self.root.name)
            videos = meta.get("videos")
            if not isinstance(videos, dict):
                raise TCMNError(f"{meta_path}: no 'videos' mapping; re-run `tcmn-prepare`.")
            self.videos = {
                k: VideoMeta.from_json(k, v, meta_path) for k, v in sorted(videos.items())
            }
        else:
            log.warning(
                "%s has no meta.json: inferring it from the folders (DAVIS style).", self.root
            )
            self.name = self.root.name
            self.videos = infer_meta(self.root)
        if not self.videos:
            raise TCMNError(f"{meta_path}: the dataset has no videos; re-run `tcmn-prepare`.")
        for v in self.videos.values():
            self._check_video_files(v)
        self._cache_dir = Path(cache_dir) if cache_dir else self.root / ".cache"
        self._memory: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ checks
    def _check_video_files(self, v: VideoMeta) -> None:
        if not v.annotated:
            raise TCMNError(
                f"{self.root / MASK_DIR / v.name}: video '{v.name}' has no annotated frame; "
                "add at least one mask or remove the video from meta.json."
            )
        img_dir = self.root / IMAGE_DIR / v.name
        if not img_dir.is_dir():
            raise TCMNError(
                f"{img_dir}: the frame folder of video '{v.name}' is missing; re-run `tcmn-prepare`."
            )
        present = set(os.listdir(img_dir))
        missing = [f for f in v.frames if f not in present]
        if missing:
            raise TCMNError(
                f"{img_dir / missing[0]}: frame listed in meta.json is missing "
                f"({len(missing)} missing in all); re-run `tcmn-prepare`."
            )
        stems = set(v.stems)
        bad = [a for a in v.annotated if a not in stems]
        if bad:
            raise TCMNError(
                f"{self.root / META_NAME}: video '{v.name}' lists annotation '{bad[0]}' that is not "
                "one of its frames; re-run `tcmn-prepare`."
            )
        mask_dir = self.root / MASK_DIR / v.name
        if not mask_dir.is_dir():
            raise TCMNError(
                f"{mask_dir}: the annotation folder of video '{v.name}' is missing; re-run `tcmn-prepare`."
            )
        present = set(os.listdir(mask_dir))
        missing = [a for a in v.annotated if f"{a}.png" not in present]
        if missing:
            raise TCMNError(
                f"{mask_dir / (missing[0] + '.png')}: annotation listed in meta.json is missing; re-run `tcmn-prepare`."
            )

    def mask_path(self, video: str, stem: str) -> Path:
        return self.root / MASK_DIR / video / f"{stem}.png"

    def frame_path(self, video: str, index: int) -> Path:
        return self.root / IMAGE_DIR / video / self.videos[video].frames[index]

    def read_mask(self, video: str, stem: str) -> np.ndarray:
        """Read and check one annotation: size equal to the frames', ids declared in meta."""
        v = self.videos[video]
        path = self.mask_path(video, stem)
        m = read_label_map(path)
        if m.shape != tuple(v.size):
            raise TCMNError(
                f"{path}: the mask is {m.shape[1]}x{m.shape[0]} but the frames of '{video}' are "
                f"{v.size[1]}x{v.size[0]}; resize it (nearest neighbour) to the frame size."
            )
        ids = set(np.unique(m).tolist()) - {0}
        undeclared = sorted(ids - set(v.objects))
        if undeclared:
            raise TCMNError(
                f"{path}: label(s) {undeclared} are not declared in meta.json objects of '{video}' "
                f"({sorted(v.objects)}); declare them or fix the mask."
            )
        return m

    def validate(self) -> None:
        """Decode every frame and mask once (fills the caches); raises on the first problem."""
        for name in self.videos:
            self.frames(name)
            self.masks(name)

    # ------------------------------------------------------------------ decoding + cache
    def _cache_path(self, video: str, kind: str) -> Path:
        v = self.videos[video]
        key = hashlib.sha1(json.dumps(v.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        return self._cache_dir / f"{video}.{kind}.{key}.npy"

    def _cached(self, video: str, kind: str, build) -> np.ndarray:
        mem_key = f"{video}/{kind}"
        if mem_key in self._memory:
            return self._memory[mem_key]
        path = self._cache_path(video, kind)
        arr = None
        if path.exists():
            with contextlib.suppress(ValueError, OSError):
                arr = np.load(path, mmap_mode="r")
        if arr is None:
            arr = build()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                for old in path.parent.glob(f"{video}.{kind}.*.npy"):
                    old.unlink(missing_ok=True)
                with atomic_write(path) as f:
                    np.save(f, arr)
                arr = np.load(path, mmap_mode="r")
            except OSError:
                log.info(
                    "cache folder %s is not writable: caching %s in memory", self._cache_dir, video
                )
        self._memory[mem_key] = arr
        return arr

    def frames(self, video: str) -> np.ndarray:
        """All frames of ``video`` as ``[T, H, W, 3]`` uint8 RGB."""
        v = self.videos[video]

        def build() -> np.ndarray:
            out = np.empty((v.n_frames, *v.size, 3), np.uint8)
            for i in range(v.n_frames):
                img = read_frame(self.frame_path(video, i))
                if img.shape[:2] != tuple(v.size):
                    raise TCMNError(
                        f"{self.frame_path(video, i)}: the frame is {img.shape[1]}x{img.shape[0]} but "
                        f"meta.json says {v.size[1]}x{v.size[0]}; re-run `tcmn-prepare`."
                    )
                out[i] = img
            return out

        return self._cached(video, "frames", build)

    def masks(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``[T, H, W]`` uint8 (0 where not annotated) and ``annotated`` ``[T]`` bool."""
        v = self.videos[video]
        annotated = np.zeros(v.n_frames, bool)
        annotated[v.annotated_indices] = True

        def build() -> np.ndarray:
            out = np.zeros((v.n_frames, *v.size), np.uint8)
            for i, s in enumerate(v.stems):
                if annotated[i]:
                    out[i] = self.read_mask(video, s)
            return out

        return self._cached(video, "masks", build), annotated

    def __len__(self) -> int:
        return len(self.videos)

    def __repr__(self) -> str:
        return f"PreparedDataset({self.root}, {len(self.videos)} videos)"


def infer_meta(root: Path) -> dict[str, VideoMeta]:
    """Build meta entries for a DAVIS / YouTube-VOS style folder that has no ``meta.json``."""
    videos = {}
    for vdir in sorted(p for p in (root / IMAGE_DIR).iterdir() if p.is_dir()):
        frames = sorted(f for f in os.listdir(vdir) if f.lower().endswith(IMAGE_EXTS))
        if not frames:
            continue
        mdir = root / MASK_DIR / vdir.name
        stems = {Path(f).stem for f in frames}
        annotated = (
            sorted(
                Path(f).stem
                for f in os.listdir(mdir)
                if f.endswith(".png") and Path(f).stem in stems
            )
            if mdir.is_dir()
            else []
        )
        ids: set[int] = set()
        for a in annotated:
            ids |= set(np.unique(read_label_map(mdir / f"{a}.png")).tolist())
        h, w = read_frame(vdir / frames[0]).shape[:2]
        videos[vdir.name] = VideoMeta(
            name=vdir.name,
            frames=frames,
            annotated=annotated,
            objects={i: "object" for i in sorted(ids - {0})},
            size=(h, w),
            patient=vdir.name,
            source=root.name,
        )
    return videos


class LayoutWriter:
    """Writes videos into the prepared layout, one complete video at a time.

    Frames and masks of a video are written into temporary folders that are renamed into place
    once complete; only then is the video added to ``meta.json`` (rewritten atomically). A
    conversion interrupted mid-video therefore leaves no entry for that video, and re-running it
    replaces the partial folders. Output bytes depend only on the inputs (deterministic PNG).

    Args:
        root: destination folder (created).
        dataset: dataset name stored in ``meta.json``.
        overwrite: when False, existing videos of the same name are kept and skipped by
            :meth:`add_video` (it returns False); when True they are replaced.
    """

    def __init__(self, root: str | os.PathLike, dataset: str, overwrite: bool = True):
        self.root = Path(root)
        self.dataset = dataset
        self.overwrite = overwrite
        try:
            (self.root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
            (self.root / MASK_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TCMNError(
                f"{self.root}: cannot create the output folder ({e.strerror}); choose a writable dst=."
            ) from e
        meta_path = self.root / META_NAME
        self._videos: dict[str, dict] = {}
        if meta_path.exists():
            problem = None
            try:
                meta = json.loads(meta_path.read_text())
                if not isinstance(meta, dict) or not isinstance(meta.get("videos", {}), dict):
                    problem = "no 'videos' mapping"
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                problem = f"not valid JSON ({e})"
            if problem is None:
                self._videos = dict(meta.get("videos", {}))
            elif overwrite:
                log.warning(
                    "%s: %s; overwrite=true, so it is rebuilt from the videos converted now.",
                    meta_path,
                    problem,
                )
            else:
                raise TCMNError(
                    f"{meta_path}: {problem}; convert again with overwrite=true (it is rebuilt "
                    "from the videos converted then), or choose another dst=."
                )

    def has_video(self, name: str) -> bool:
        return name in self._videos

    def add_video(
        self,
        name: str,
        frames: Iterable[np.ndarray],
        masks: Mapping[int, np.ndarray],
        objects: Mapping[int, str],
        patient: str,
        source: str | None = None,
        fps: float | None = None,
        spacing: list[float] | None = None,
        extra: dict | None = None,
        frame_ext: str = ".png",
    ) -> bool:
        """Write one video.

        Args:
            frames: uint8 ``[H, W, 3]`` RGB (or ``[H, W]`` grey) arrays in temporal order.
            masks: frame index -> uint8 ``[H, W]`` label map, for the annotated frames only.
            objects: object id -> class name, for every id that occurs in ``masks``.
        Returns:
            True when written, False when skipped (exists and ``overwrite`` is False).
        """
        if not self.overwrite and name in self._videos:
            return False
        if not masks:
            raise TCMNError(
                f"video '{name}': no annotated frame was given; a prepared video needs at least one mask."
            )
        if name in self._videos:  # being replaced: unlisted until the new files are complete
            del self._videos[name]
            self._flush()
        tmp_img = self.root / IMAGE_DIR / f".{name}.tmp"
        tmp_ann = self.root / MASK_DIR / f".{name}.tmp"
        for t in (tmp_img, tmp_ann):
            shutil.rmtree(t, ignore_errors=True)
            t.mkdir(parents=True)
        try:
            names: list[str] = []
            size = None
            for i, frame in enumerate(frames):
                frame = np.asarray(frame)
                if frame.dtype != np.uint8:
                    raise TCMNError(
                        f"video '{name}' frame {i}: frames must be uint8, got {frame.dtype}."
                    )
                if frame.ndim == 2:
                    frame = np.repeat(frame[..., None], 3, axis=2)
                if size is None:
                    size = frame.shape[:2]
                elif frame.shape[:2] != size:
                    raise TCMNError(
                        f"video '{name}' frame {i}: size {frame.shape[:2]} differs from the first frame's {size}."
                    )
                fname = f"{i:05d}{frame_ext}"
                if frame_ext == ".png":
                    write_png(tmp_img / fname, frame)
                else:
                    ok, buf = cv2.imencode(
                        frame_ext,
                        cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95],
                    )
                    (tmp_img / fname).write_bytes(buf.tobytes())
                names.append(fname)
            if not names:
                raise TCMNError(f"video '{name}': no frames were given.")
            annotated = []
            for i in sorted(masks):
                m = np.asarray(masks[i])
                if not 0 <= i < len(names):
                    raise TCMNError(
                        f"video '{name}': mask for frame {i} but the video has {len(names)} frames."
                    )
                if m.shape != size:
                    raise TCMNError(
                        f"video '{name}' frame {i}: mask size {m.shape} differs from the frame size {size}."
                    )
                ids = set(np.unique(m).tolist()) - {0}
                if not ids <= set(objects):
                    raise TCMNError(
                        f"video '{name}' frame {i}: label(s) {sorted(ids - set(objects))} not declared in objects."
                    )
                write_png(tmp_ann / f"{i:05d}.png", m.astype(np.uint8))
                annotated.append(f"{i:05d}")
            for tmp, final in (
                (tmp_img, self.root / IMAGE_DIR / name),
                (tmp_ann, self.root / MASK_DIR / name),
            ):
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp_img, ignore_errors=True)
            shutil.rmtree(tmp_ann, ignore_errors=True)
            raise
        meta = VideoMeta(
            name=name,
            frames=names,
            annotated=annotated,
            objects={int(k): str(v) for k, v in objects.items()},
            size=(int(size[0]), int(size[1])),
            patient=str(patient),
            source=source or self.dataset,
            fps=None if fps is None else float(fps),
            spacing=None if spacing is None else [float(s) for s in spacing],
            extra=dict(extra or {}),
        )
        self._videos[name] = meta.to_json()
        self._flush()
        return True

    def _flush(self) -> None:
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "dataset": self.dataset,
            "videos": dict(sorted(self._videos.items())),
        }
        atomic_write_text(self.root / META_NAME, json.dumps(meta, indent=1, sort_keys=False) + "\n")

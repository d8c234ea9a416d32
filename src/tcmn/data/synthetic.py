"""Procedural medical-like videos: the embedded default dataset (no download needed).

Two modalities, each with its own object classes:

* **endoscopy** (colour): orange-pink mucosa with low-frequency shading, folds, a dark lumen,
  vessels, small tissue bumps (distractors), specular highlights, vignetting and an octagonal
  endoscope field of view. Objects: ``polyp`` (dome-shaded bumpy blob) and ``lesion`` (flat
  textured ellipse). Occluder: an instrument entering from the border.
* **ultrasound** (grey): a B-mode sector (cone) with tissue echogenicity texture, bright fibres,
  dark cyst-like and bright blob distractors, multiplicative Rayleigh speckle that partly
  decorrelates from frame to frame, log compression and depth gain. Objects: ``ventricle``
  (dark cavity inside a thick bright wall, contracting with a cardiac cycle), ``atrium``
  (rounded-triangle cavity with a thin wall, filling when the ventricle empties) and ``lesion``
  (hypo- or hyperechoic ellipse). Occluder: an acoustic (rib) shadow sweeping over the object.

Objects move along smooth curved paths, rotate, deform (slowly drifting Fourier modes of their
outline), change scale and intensity over time, may partly leave the field of view and are
sometimes partly hidden by the occluder or by each other.

**Masks** are the *visible* silhouettes: pixels of an object that lie outside the field of view,
under the occluder or under an object drawn above it are not labelled. For ``ventricle`` and
``atrium`` the mask is the **cavity** (the blood pool inside the wall, as CAMUS labels LV and LA),
not the wall ring. Every frame is annotated; object ids are 1..k with their class names in
``meta.json``; every object is clearly visible in frame 0 (the one-shot reference).

Determinism: video ``k`` is drawn from ``np.random.default_rng(SeedSequence(seed,
spawn_key=(k,)))`` only, so it is byte-identical for a given ``seed`` and settings whatever
``n_videos`` is, and no global random state is touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tcmn.data.layout import IMAGE_DIR, MASK_DIR, META_NAME, LayoutWriter
from tcmn.errors import TCMNError
from tcmn.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: Dataset name written to ``meta.json``.
DATASET = "synthetic"
#: Bumped whenever the generated pixels change for the same arguments.
GENERATOR_VERSION = "1"
#: Every object class, in the canonical order used to cycle primary classes over videos.
CLASSES = ("polyp", "lesion", "ventricle", "atrium")
#: Which classes each modality can show.
MODALITY_CLASSES = {
    "endoscopy": ("polyp", "lesion"),
    "ultrasound": ("ventricle", "atrium", "lesion"),
}
FPS = 25.0

# Generator constants (fractions of min(H, W) unless said otherwise).
_RADIUS = {  # base radius of the outline (major semi-axis) range
    "polyp": (0.10, 0.15),
    "lesion": (0.11, 0.16),
    "ventricle": (0.12, 0.16),
    "atrium": (0.10, 0.13),
}
_SPEED = (0.15, 0.25)  # path speed in equivalent radii per frame: copy-first J low, tracking easy
_OCCLUSION_P = 0.35  # probability that a video has an occluder passing over one object
_MIN_VISIBLE_0 = 0.6  # fraction of each object's silhouette that must be visible in frame 0
_TRIES = 30  # re-draws of a video's layout before giving up


@dataclass(frozen=True)
class SyntheticVideo:
    """One generated video, in memory.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB (ultrasound frames have three equal channels).
        masks: ``[T, H, W]`` uint8 label maps, 0 background, ``k`` the visible part of object k.
        objects: object id (1..k) -> class name.
        modality: ``"endoscopy"`` or ``"ultrasound"``.
        hidden: ``[T, H, W]`` bool, pixels outside the field of view or under the occluder
            (no mask there).
        occluded: ``[T]`` bool, frames in which the occluder is present.
    """

    frames: np.ndarray
    masks: np.ndarray
    objects: dict[int, str]
    modality: str
    hidden: np.ndarray
    occluded: np.ndarray


# ----------------------------------------------------------------------------- public API
def video_name(index: int) -> str:
    """Folder name of synthetic video ``index`` (``synth_v003``)."""
    return f"synth_v{index:03d}"


def patient_name(index: int) -> str:
    """Patient id of synthetic video ``index`` (``synth_p003``): one patient per video."""
    return f"synth_p{index:03d}"


def make_video(
    seed: int,
    index: int,
    n_frames: int = 20,
    size: Sequence[int] = (128, 128),
    classes: Iterable[str] | None = None,
    max_objects: int = 2,
) -> SyntheticVideo:
    """Generate synthetic video ``index`` of the set drawn with ``seed``, in memory.

    Args:
        seed: non-negative integer seed of the whole set.
        index: video number (>= 0); the video depends on ``(seed, index)`` and the settings only.
        n_frames: number of frames T (>= 2).
        size: ``(H, W)`` in pixels, each >= 32.
        classes: the classes to draw from (default all of :data:`CLASSES`). Video ``index`` has
            the primary class ``classes[index % len(classes)]`` (canonical order), so every class
            gets videos; extra objects come from the classes of the same modality.
        max_objects: up to this many objects per video (>= 1; the count is drawn uniformly).
    Returns:
        a :class:`SyntheticVideo` (frames ``[T, H, W, 3]`` uint8, masks ``[T, H, W]`` uint8).
    """
    n_frames, size, cls, max_objects, seed = _check_args(n_frames, size, classes, max_objects, seed)
    if int(index) < 0:
        raise TCMNError(f"video index {index} is negative; use 0, 1, 2, ...")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(index),)))
    return _Renderer(rng, int(index), n_frames, size, cls, max_objects).run()


def generate_synthetic(
    dst: str | os.PathLike,
    n_videos: int = 24,
    n_frames: int = 20,
    size: Sequence[int] = (128, 128),
    seed: int = 0,
    classes: Iterable[str] | None = None,
    max_objects: int = 2,
    overwrite: bool = True,
) -> Path:
    """Write ``n_videos`` procedural videos as the prepared dataset ``synthetic`` at ``dst``.

    Videos are named ``synth_v000``..., each its own patient (``synth_p000``...), every frame
    annotated, ``fps`` 25, no spacing; ``extra`` holds the modality, the generator version and
    the settings. See :func:`make_video` for ``n_frames``, ``size``, ``classes`` and
    ``max_objects``.

    Args:
        dst: destination folder (it will hold ``JPEGImages``, ``Annotations``, ``meta.json``).
        overwrite: True (re)writes every video and drops synthetic videos beyond ``n_videos``
            left by an earlier run; False keeps the videos already there (resuming an
            interrupted run) and refuses a folder made with other settings.
    Returns:
        ``dst`` as a :class:`~pathlib.Path`.
    """
    n_frames, size, cls, max_objects, seed = _check_args(n_frames, size, classes, max_objects, seed)
    if isinstance(n_videos, bool) or not isinstance(n_videos, (int, np.integer)) or n_videos < 1:
        raise TCMNError(f"n_videos={n_videos!r} is not a positive integer; pass e.g. n_videos=24.")
    dst = Path(dst)
    params = {
        "n_frames": n_frames,
        "size": list(size),
        "classes": list(cls),
        "max_objects": max_objects,
        "seed": seed,
    }
    names = [video_name(k) for k in range(int(n_videos))]
    _prepare_destination(dst, names, params, overwrite)
    writer = LayoutWriter(dst, DATASET, overwrite=overwrite)
    log.info("writing %d synthetic videos (%d frames, %dx%d) to %s", n_videos, n_frames, *size, dst)
    for k, name in enumerate(names):
        if not overwrite and writer.has_video(name):
            continue
        v = make_video(seed, k, n_frames, size, cls, max_objects)
        writer.add_video(
            name,
            frames=v.frames,
            masks={t: v.masks[t] for t in range(n_frames)},
            objects=v.objects,
            patient=patient_name(k),
            source=DATASET,
            fps=FPS,
            spacing=None,
            extra={
                "modality": v.modality,
                "generator": "tcmn.data.synthetic",
                "generator_version": GENERATOR_VERSION,
                "index": k,
                "params": params,
            },
        )
    return dst


# ----------------------------------------------------------------------------- checks
def _check_args(n_frames, size, classes, max_objects, seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TCMNError(f"seed={seed!r} is not a non-negative integer; pass e.g. seed=0.")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 2:
        raise TCMNError(
            f"n_frames={n_frames!r}: a video needs at least 2 frames; pass n_frames>=2."
        )
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError) as e:
        raise TCMNError(f"size={size!r} is not a pair (H, W); pass e.g. size=[128, 128].") from e
    if h < 32 or w < 32:
        raise TCMNError(f"size={size!r} is too small; use at least 32 pixels per side.")
    if isinstance(max_objects, bool) or not isinstance(max_objects, (int, np.integer)):
        raise TCMNError(f"max_objects={max_objects!r} is not an integer; pass e.g. max_objects=2.")
    if not 1 <= max_objects <= 4:
        raise TCMNError(f"max_objects={max_objects} is out of range; use 1 to 4.")
    if classes is None:
        cls = CLASSES
    else:
        if isinstance(classes, str):
            classes = [classes]
        given = [str(c) for c in classes]
        unknown = sorted(set(given) - set(CLASSES))
        if unknown or not given:
            raise TCMNError(
                f"classes={given!r}: unknown or empty class list {unknown}; choose from "
                f"{list(CLASSES)}."
            )
        cls = tuple(c for c in CLASSES if c in given)
    return int(n_frames), (h, w), cls, int(max_objects), int(seed)


def _prepare_destination(dst: Path, names: list[str], params: dict, overwrite: bool) -> None:
    """Refuse a foreign dataset; drop stale synthetic videos (overwrite) or check settings."""
    meta_path = dst / META_NAME
    if not meta_path.exists():
        return
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        if overwrite:  # the layout writer rebuilds it from the videos generated now
            return
        raise TCMNError(
            f"{meta_path}: unreadable meta.json ({e}); generate again with overwrite=true (it "
            "is rebuilt), or choose another dst."
        ) from e
    if meta.get("dataset") != DATASET:
        raise TCMNError(
            f"{meta_path}: {dst} holds dataset '{meta.get('dataset')}', not synthetic videos; "
            "choose another dst."
        )
    videos = dict(meta.get("videos") or {})
    changed = any(
        ((v or {}).get("extra") or {}).get("params") != params
        or ((v or {}).get("extra") or {}).get("generator_version") != GENERATOR_VERSION
        for v in videos.values()
    )
    if overwrite and changed and (dst / "splits.json").exists():
        log.warning(
            "%s was made for videos generated with other settings; check it or re-create it "
            "with `tcmn-prepare splits root=%s overwrite=true`",
            dst / "splits.json",
            dst,
        )
    if overwrite:
        stale = sorted(set(videos) - set(names))
        if not stale:
            return
        for name in stale:
            del videos[name]
        meta["videos"] = videos
        atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
        for name in stale:
            shutil.rmtree(dst / IMAGE_DIR / name, ignore_errors=True)
            shutil.rmtree(dst / MASK_DIR / name, ignore_errors=True)
        log.info("removed %d synthetic videos of an earlier run from %s", len(stale), dst)
        return
    for name in names:
        extra = (videos.get(name) or {}).get("extra") or {}
        if name in videos and (
            extra.get("params") != params or extra.get("generator_version") != GENERATOR_VERSION
        ):
            raise TCMNError(
                f"{meta_path}: video '{name}' was generated with other settings "
                f"({extra.get('params')}); pass overwrite=true or choose another dst."
            )


# ----------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise ``[h, w]`` float32 with features of about ``cell`` px."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(g, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    out = big[:h, :w]
    return ((out - out.mean()) / (out.std() + 1e-6)).astype(np.float32)


def _fractal(rng: np.random.Generator, h: int, w: int, cells: Sequence[float]) -> np.ndarray:
    """Sum of :func:`_smooth_noise` octaves (weights 0.6^i), normalised to unit std."""
    out = np.zeros((h, w), np.float32)
    for i, c in enumerate(cells):
        out += 0.6**i * _smooth_noise(rng, h, w, c)
    return out / (out.std() + 1e-6)


def _blob(xx, yy, cx, cy, rx, ry, angle, soft) -> np.ndarray:
    """Soft ellipse ``[H, W]`` float32 in [0, 1] (1 inside, ``soft`` px falloff)."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    d = (np.sqrt(u * u + v * v) - 1.0) * min(rx, ry)
    return np.clip(0.5 - d / max(soft, 1e-3), 0.0, 1.0).astype(np.float32)


def _random_walk(rng, start, n, step, turn) -> np.ndarray:
    """Polyline ``[n, 2]`` int32 of a smooth random walk (vessels, fibres, folds)."""
    heading = rng.uniform(0, 2 * np.pi)
    pts = [np.asarray(start, np.float64)]
    for _ in range(n - 1):
        heading += rng.normal(0, turn)
        pts.append(pts[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    return np.round(np.array(pts)).astype(np.int32)


def _bump(t: int, t0: int, duration: int) -> float:
    """Occluder coverage profile: 0 outside ``[t0, t0+duration)``, a smooth arch inside."""
    if not t0 <= t < t0 + duration:
        return 0.0
    return float(np.sin(np.pi * (t - t0 + 1) / (duration + 1)))


@dataclass
class _Geo:
    """An object's polar geometry at one frame, inside its bounding box ``sl`` of the frame."""

    sl: tuple[slice, slice]
    d: np.ndarray  # distance to the centre, px
    r_in: np.ndarray  # cavity / silhouette radius along each pixel's direction
    r_out: np.ndarray  # outer (wall) radius
    u: np.ndarray  # texture coordinates (object frame)
    v: np.ndarray


@dataclass
class _Object:
    """Outline and motion of one object over the video (image pixel coordinates)."""

    cls: str
    radius: float  # major semi-axis of the cavity / silhouette, px
    aspect: float  # minor / major
    wall: float  # wall thickness as a fraction of the radius (0: no wall)
    harm_k: np.ndarray  # [K] harmonic orders of the outline
    harm_a: np.ndarray  # [K] amplitudes
    harm_p: np.ndarray  # [K] phases at t=0
    harm_w: np.ndarray  # [K] phase speeds (rad / frame): the deformation
    centres: np.ndarray  # [T, 2] (x, y)
    angles: np.ndarray  # [T] rotation
    scales: np.ndarray  # [T] cavity scale
    outer_scales: np.ndarray  # [T] wall scale
    gains: np.ndarray  # [T] intensity multiplier
    texture: np.ndarray  # [P, P] float32 texture moving with the object

    @property
    def r_eq(self) -> float:
        return self.radius * np.sqrt(self.aspect)

    @property
    def r_out(self) -> float:
        return self.radius * (1.0 + self.wall) * (1.0 + float(np.abs(self.harm_a).sum()))

    def geometry(self, t: int, h: int, w: int) -> _Geo:
        """Polar geometry of the object at frame t inside its bounding box of an ``h x w`` frame."""
        cx, cy = (float(c) for c in self.centres[t])
        reach = self.r_out * max(float(self.scales[t]), float(self.outer_scales[t])) + 4.0
        y0, y1 = max(0, int(cy - reach)), min(h, int(np.ceil(cy + reach)) + 1)
        x0, x1 = max(0, int(cx - reach)), min(w, int(np.ceil(cx + reach)) + 1)
        y1, x1 = max(y0, y1), max(x0, x1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - np.float32(cx), yy - np.float32(cy)
        d = np.sqrt(dx * dx + dy * dy)
        rot = float(self.angles[t])
        phi = np.arctan2(dy, dx) - np.float32(rot)
        a = np.float32(self.aspect)
        ell = a / np.sqrt((a * np.cos(phi)) ** 2 + np.sin(phi) ** 2)
        wave = np.ones_like(phi)
        for k, amp, ph, sp in zip(self.harm_k, self.harm_a, self.harm_p, self.harm_w, strict=True):
            wave += np.float32(amp) * np.cos(np.float32(k) * phi + np.float32(ph + sp * t))
        shape = np.float32(self.radius) * ell * wave
        sc = float(self.scales[t])
        r_in = shape * np.float32(sc)
        r_out = shape * np.float32((1.0 + self.wall) * float(self.outer_scales[t]))
        c, s = np.float32(np.cos(rot) / sc), np.float32(np.sin(rot) / sc)
        half = np.float32(self.texture.shape[0] / 2.0)
        u = dx * c + dy * s + half
        v = dy * c - dx * s + half
        return _Geo((slice(y0, y1), slice(x0, x1)), d, r_in, r_out, u, v)

    def sample_texture(self, g: _Geo) -> np.ndarray:
        """The object's texture at the pixels of ``g`` (``[h, w]`` float32, about unit std)."""
        if g.d.size == 0:
            return g.d
        return cv2.remap(self.texture, g.u, g.v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


class _Renderer:
    """Draws one video: layout (objects, paths, occluder), then frames and visible masks."""

    def __init__(self, rng, index, n_frames, size, classes, max_objects):
        self.rng = rng
        self.T = n_frames
        self.H, self.W = size
        self.s = float(min(size))
        self.yy, self.xx = np.mgrid[0 : self.H, 0 : self.W].astype(np.float32)
        primary = classes[index % len(classes)]
        mods = [m for m, c in MODALITY_CLASSES.items() if primary in c]
        self.modality = mods[int(rng.integers(len(mods)))] if len(mods) > 1 else mods[0]
        pool = [c for c in classes if c in MODALITY_CLASSES[self.modality]]
        n_obj = int(rng.integers(1, max_objects + 1))
        self.classes = [primary] + [pool[int(rng.integers(len(pool)))] for _ in range(n_obj - 1)]

    # ------------------------------------------------------------------ layout
    def _fov(self) -> np.ndarray:
        """Field of view ``[H, W]`` bool of this video."""
        if self.modality == "ultrasound":
            ax, ay = self.apex
            rho = np.hypot(self.xx - ax, self.yy - ay)
            ang = np.arctan2(self.xx - ax, self.yy - ay)
            return (rho <= self.rho_max) & (np.abs(ang) <= self.half_angle)
        if not self.octagon:
            return np.ones((self.H, self.W), bool)
        xn = np.abs(self.xx - (self.W - 1) / 2) / (self.W / 2)
        yn = np.abs(self.yy - (self.H - 1) / 2) / (self.H / 2)
        return xn + yn <= self.corner

    def _allowed(self, p: np.ndarray, margin: float) -> bool:
        """Whether a centre at ``p`` keeps the object mostly inside the field of view."""
        x, y = p
        if not (margin <= x <= self.W - margin and margin <= y <= self.H - margin):
            return False
        if self.modality == "ultrasound":
            ax, ay = self.apex
            rho = np.hypot(x - ax, y - ay)
            ang = np.arctan2(x - ax, y - ay)
            deep_enough = 0.28 * self.H + 0.5 * margin <= rho <= self.rho_max - margin
            return deep_enough and abs(ang) <= self.half_angle - 0.5 * margin / max(rho, 1.0)
        return True

    def _setup_scene(self) -> None:
        rng = self.rng
        if self.modality == "ultrasound":
            self.half_angle = float(rng.uniform(0.6, 0.78))
            self.apex = (self.W / 2 + rng.uniform(-0.03, 0.03) * self.W, -0.04 * self.H)
            self.rho_max = float(self.H * rng.uniform(1.0, 1.06))
        else:
            self.octagon = bool(rng.random() < 0.75)
            self.corner = float(rng.uniform(1.45, 1.7))
        self.fov = self._fov()

    def _make_object(self, cls: str, shrink: float) -> _Object:
        rng, T = self.rng, self.T
        lo, hi = _RADIUS[cls]
        radius = float(rng.uniform(lo, hi)) * self.s * shrink
        t = np.arange(T, dtype=np.float64)
        if cls == "polyp":
            aspect, wall = rng.uniform(0.75, 0.95), 0.0
            ks = np.array([2, 3, 4, 5])
            amps = rng.uniform(0.02, 0.06, 4)
        elif cls == "lesion":
            aspect, wall = rng.uniform(0.45, 0.65), 0.0
            ks = np.array([2, 3])
            amps = rng.uniform(0.01, 0.04, 2)
        elif cls == "ventricle":  # elongated egg: blunt base, narrower apex
            aspect, wall = rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.4)
            ks = np.array([1, 2, 3])
            amps = np.array([rng.uniform(0.08, 0.12), rng.uniform(0.0, 0.03), rng.uniform(0, 0.03)])
        else:  # atrium: rounded triangle
            aspect, wall = rng.uniform(0.8, 0.95), rng.uniform(0.12, 0.18)
            ks = np.array([3, 1, 2])
            amps = np.array([rng.uniform(0.1, 0.15), rng.uniform(0.03, 0.06), rng.uniform(0, 0.03)])
        phases = rng.uniform(0, 2 * np.pi, len(ks))
        speeds = rng.uniform(-0.15, 0.15, len(ks))
        # scale over time: cardiac cycle for the heart chambers, zoom drift for the others
        if cls in ("ventricle", "atrium"):
            depth = rng.uniform(0.15, 0.25)
            cycle = 0.5 * (1 - np.cos(2 * np.pi * t / self.heart_period + self.heart_phase))
            if cls == "atrium":
                cycle = 1 - cycle  # the atrium fills while the ventricle empties
            scales = 1 - depth * cycle
            outer = 1 - 0.45 * depth * cycle
        else:
            zoom = rng.uniform(-0.012, 0.012)
            wob = rng.uniform(0.05, 0.12) * np.sin(
                2 * np.pi * t / rng.uniform(14, 30) + rng.uniform(0, 2 * np.pi)
            )
            scales = np.exp(zoom * t) * (1 + wob)
            outer = scales
        angles = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.06, 0.06) * t
        gains = 1 + rng.uniform(0.08, 0.18) * np.sin(
            2 * np.pi * t / rng.uniform(10, 30) + rng.uniform(0, 2 * np.pi)
        )
        tex = _fractal(rng, 96, 96, (12.0, 5.0, 2.5))
        size = int(np.ceil(2 * radius * (1 + wall) * 1.8)) + 8
        tex = cv2.resize(tex, (size, size), interpolation=cv2.INTER_LINEAR)
        return _Object(
            cls=cls,
            radius=radius,
            aspect=float(aspect),
            wall=float(wall),
            harm_k=ks.astype(np.float64),
            harm_a=np.asarray(amps, np.float64),
            harm_p=phases,
            harm_w=speeds,
            centres=np.zeros((T, 2)),
            angles=angles,
            scales=scales,
            outer_scales=outer,
            gains=gains,
            texture=tex,
        )

    def _paths(self, objs: list[_Object]) -> bool:
        """Draw start points and smooth curved paths; False when no valid start was found."""
        rng, T = self.rng, self.T
        margins = [0.55 * o.r_eq for o in objs]
        for i, o in enumerate(objs):
            for _ in range(50):
                p = np.array([rng.uniform(0, self.W), rng.uniform(0, self.H)])
                if not self._allowed(p, 1.1 * o.r_out):
                    continue
                if all(
                    np.linalg.norm(p - objs[j].centres[0]) > 1.05 * (o.r_out + objs[j].r_out)
                    for j in range(i)
                ):
                    o.centres[0] = p
                    break
            else:
                return False
        heading = rng.uniform(0, 2 * np.pi, len(objs))
        v0 = np.array([rng.uniform(*_SPEED) * o.r_eq for o in objs])
        turn_amp = rng.uniform(0.05, 0.16, len(objs))
        turn_per = rng.uniform(8, 20, len(objs))
        turn_ph = rng.uniform(0, 2 * np.pi, len(objs))
        spd_ph = rng.uniform(0, 2 * np.pi, len(objs))
        for t in range(1, T):
            for i, o in enumerate(objs):
                heading[i] += turn_amp[i] * np.sin(2 * np.pi * t / turn_per[i] + turn_ph[i])
                p = o.centres[t - 1]
                for j in range(len(objs)):  # steer away from a neighbour that gets too close
                    if j == i:
                        continue
                    q = objs[j].centres[t - 1 if j > i else t]
                    if np.linalg.norm(p - q) < 0.8 * (o.r_out + objs[j].r_out):
                        away = np.arctan2(p[1] - q[1], p[0] - q[0])
                        if np.cos(heading[i] - away) < 0:
                            heading[i] = away
                v = v0[i] * (1 + 0.25 * np.sin(0.3 * t + spd_ph[i]))
                step = v * np.array([np.cos(heading[i]), np.sin(heading[i])])
                for flip in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
                    cand = p + step * np.array(flip)
                    if self._allowed(cand, margins[i]):
                        if flip[0] < 0:
                            heading[i] = np.pi - heading[i]
                        if flip[1] < 0:
                            heading[i] = -heading[i]
                        o.centres[t] = cand
                        break
                else:
                    o.centres[t] = p
        return True

    def _occluder_plan(self, objs: list[_Object]) -> dict | None:
        rng, T = self.rng, self.T
        if T < 6 or rng.random() >= _OCCLUSION_P:
            return None
        j = int(rng.integers(len(objs)))
        dur = int(rng.integers(3, min(7, T - 2) + 1))
        t0 = int(rng.integers(2, T - dur + 1))
        target = objs[j]
        c = target.centres[t0 + dur // 2]
        if self.modality == "ultrasound":
            ax, ay = self.apex
            rho = float(np.hypot(c[0] - ax, c[1] - ay))
            ang = float(np.arctan2(c[0] - ax, c[1] - ay))
            half_obj = float(np.arcsin(min(0.95, target.r_out / max(rho, 1.0))))
            return {
                "t0": t0,
                "dur": dur,
                "angle": ang,
                "side": float(rng.choice([-1.0, 1.0])),
                "half": half_obj * rng.uniform(0.35, 0.6),
                "half_obj": half_obj,
                "depth": max(0.1 * self.H, rho - target.r_out - 0.05 * self.H),
            }
        direction = rng.uniform(0, 2 * np.pi)  # the instrument enters from this side
        u = np.array([np.cos(direction), np.sin(direction)])
        dist = self.s  # start point far outside the image along -u
        return {
            "t0": t0,
            "dur": dur,
            "start": c - dist * u,
            "u": u,
            "width": target.r_eq * rng.uniform(0.35, 0.55),
            "lam_out": dist - target.r_eq * 1.2,
            "lam_in": dist + target.r_eq * rng.uniform(-0.1, 0.3),
        }

    def _occluder(self, t: int) -> np.ndarray | None:
        """Occluded region ``[H, W]`` float32 alpha at frame t (None when absent)."""
        occ = self.occ
        if occ is None:
            return None
        b = _bump(t, occ["t0"], occ["dur"])
        if b <= 0:
            return None
        if self.modality == "ultrasound":
            centre = occ["angle"] + occ["side"] * (occ["half"] + occ["half_obj"]) * (1 - 0.9 * b)
            ax, ay = self.apex
            rho = np.hypot(self.xx - ax, self.yy - ay)
            ang = np.arctan2(self.xx - ax, self.yy - ay)
            edge = (occ["half"] - np.abs(ang - centre)) * rho  # px from the wedge edge
            return (np.clip(edge + 0.5, 0, 1) * (rho >= occ["depth"])).astype(np.float32)
        lam = occ["lam_out"] + b * (occ["lam_in"] - occ["lam_out"])
        dx, dy = self.xx - occ["start"][0], self.yy - occ["start"][1]
        along = np.clip(dx * occ["u"][0] + dy * occ["u"][1], 0, lam)
        px, py = occ["start"][0] + along * occ["u"][0], occ["start"][1] + along * occ["u"][1]
        dist = np.hypot(self.xx - px, self.yy - py)
        return np.clip(occ["width"] - dist + 0.5, 0, 1).astype(np.float32)

    def _layout(self) -> None:
        rng = self.rng
        self.heart_period = float(rng.uniform(14, 22))
        self.heart_phase = float(rng.uniform(0, 2 * np.pi))
        shrink = 1.0
        for _ in range(_TRIES):
            self._setup_scene()
            objs = [self._make_object(c, shrink) for c in self.classes]
            if self._paths(objs):
                self.objs = objs
                self.occ = self._occluder_plan(objs)
                # z-order: object 1 at the bottom
                full, visible = self._masks_at(0, objs)
                if all(
                    visible[i].sum() >= _MIN_VISIBLE_0 * max(1, full[i].sum()) and full[i].any()
                    for i in range(len(objs))
                ):
                    return
            shrink *= 0.95
        raise TCMNError(
            f"size={self.H}x{self.W} is too small to place {len(self.classes)} objects apart; "
            "use a larger size or a smaller max_objects."
        )

    # ------------------------------------------------------------------ masks
    def _masks_at(self, t: int, objs: list[_Object]):
        """Silhouettes and visible masks (lists of ``[H, W]`` bool) of every object at t.

        Object 1 is drawn first (bottom); a pixel of object i is visible when it is inside the
        field of view, not under the occluder and not under the footprint (wall included) of
        an object drawn after it.
        """
        geo = [o.geometry(t, self.H, self.W) for o in objs]
        full, cover = [], []
        for g in geo:
            f = np.zeros((self.H, self.W), bool)
            f[g.sl] = g.d < g.r_in
            c = np.zeros((self.H, self.W), bool)
            c[g.sl] = g.d < g.r_out
            full.append(f)
            cover.append(c)
        occ = self._occluder(t)
        hidden = ~self.fov if occ is None else (~self.fov) | (occ >= 0.5)
        self._hidden, self._occluded = hidden, occ is not None
        visible = []
        for i in range(len(objs)):
            above = hidden.copy()
            for j in range(i + 1, len(objs)):
                above |= cover[j]
            visible.append(full[i] & ~above)
        self._geo = geo
        return full, visible

    # ------------------------------------------------------------------ rendering
    def run(self) -> SyntheticVideo:
        self._layout()
        T, H, W = self.T, self.H, self.W
        frames = np.empty((T, H, W, 3), np.uint8)
        masks = np.zeros((T, H, W), np.uint8)
        hidden = np.zeros((T, H, W), bool)
        occluded = np.zeros(T, bool)
        if self.modality == "ultrasound":
            self._us_background()
        else:
            self._endo_background()
        for t in range(T):
            _, visible = self._masks_at(t, self.objs)
            for i, vis in enumerate(visible):
                masks[t][vis] = i + 1
            hidden[t], occluded[t] = self._hidden, self._occluded
            if self.modality == "ultrasound":
                frames[t] = self._us_frame(t)
            else:
                frames[t] = self._endo_frame(t)
        objects = {i + 1: o.cls for i, o in enumerate(self.objs)}
        return SyntheticVideo(frames, masks, objects, self.modality, hidden, occluded)

    def _camera(self, t: int) -> np.ndarray:
        """Affine ``[2, 3]`` taking frame-t pixels to background-canvas pixels (camera motion)."""
        a = self.cam
        dx = a["ax"] * np.sin(2 * np.pi * t / a["px"] + a["fx"])
        dy = a["ay"] * np.sin(2 * np.pi * t / a["py"] + a["fy"])
        rot = a["rot"] * np.sin(2 * np.pi * t / a["pr"] + a["fr"])
        r = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        c = np.array([self.W / 2, self.H / 2])
        shift = c - r @ c + self.margin + np.array([dx, dy])
        return np.concatenate([r, shift[:, None]], 1).astype(np.float32)

    def _init_camera(self, amp: float) -> None:
        rng = self.rng
        self.margin = int(np.ceil(amp * self.s)) + 2
        self.cam = {
            "ax": rng.uniform(0.3, 1.0) * amp * self.s,
            "ay": rng.uniform(0.3, 1.0) * amp * self.s,
            "px": rng.uniform(20, 50),
            "py": rng.uniform(20, 50),
            "fx": rng.uniform(0, 2 * np.pi),
            "fy": rng.uniform(0, 2 * np.pi),
            "rot": rng.uniform(0.0, 0.04),
            "pr": rng.uniform(25, 60),
            "fr": rng.uniform(0, 2 * np.pi),
        }

    def _warp(self, canvas: np.ndarray, t: int) -> np.ndarray:
        return cv2.warpAffine(
            canvas,
            self._camera(t),
            (self.W, self.H),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )

    # ---- endoscopy
    def _endo_background(self) -> None:
        rng = self.rng
        self._init_camera(0.06)
        ch, cw = self.H + 2 * self.margin, self.W + 2 * self.margin
        cy, cx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        s = self.s
        tissue = np.array([0.86, 0.47, 0.36]) + rng.normal(0, 0.035, 3)
        self.tissue = np.clip(tissue, 0.2, 1.0).astype(np.float32)
        lum = 1 + 0.12 * _fractal(rng, ch, cw, (0.3 * s, 0.12 * s))
        lum += 0.035 * _fractal(rng, ch, cw, (3.0, 1.5))  # mucosal granularity
        hue = 0.05 * _smooth_noise(rng, ch, cw, 0.2 * s)
        # folds: bright ridge with a shadow below it
        ridge = np.zeros((ch, cw), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            pts = _random_walk(rng, (rng.uniform(0, cw), rng.uniform(0, ch)), 12, 0.08 * s, 0.25)
            cv2.polylines(ridge, [pts], False, 1.0, max(2, int(0.05 * s)), cv2.LINE_AA)
        ridge = cv2.GaussianBlur(ridge, (0, 0), 0.03 * s)
        shadow = np.roll(ridge, int(0.03 * s) + 1, axis=0)
        lum += 0.18 * ridge - 0.22 * shadow
        # distractor bumps: small tissue-coloured domes
        for _ in range(int(rng.integers(2, 5))):
            r = rng.uniform(0.03, 0.07) * s
            bx, by = rng.uniform(0, cw), rng.uniform(0, ch)
            d2 = ((cx - bx) ** 2 + (cy - by) ** 2) / (r * r)
            lum += 0.22 * np.sqrt(np.clip(1 - d2, 0, 1)) - 0.08 * np.exp(
                -((np.sqrt(d2) - 1.2) ** 2) * 8
            )
        # lumen: dark blurred hole
        dark = np.zeros((ch, cw), np.float32)
        if rng.random() < 0.6:
            dark = _blob(
                cx,
                cy,
                rng.uniform(0, cw),
                rng.uniform(0, ch),
                rng.uniform(0.08, 0.16) * s,
                rng.uniform(0.06, 0.12) * s,
                rng.uniform(0, np.pi),
                0.08 * s,
            )
        # vessels
        ves = np.zeros((ch, cw), np.float32)
        for _ in range(int(rng.integers(4, 9))):
            pts = _random_walk(rng, (rng.uniform(0, cw), rng.uniform(0, ch)), 30, 0.03 * s, 0.5)
            cv2.polylines(ves, [pts], False, float(rng.uniform(0.5, 1.0)), 1, cv2.LINE_AA)
        ves = cv2.GaussianBlur(ves, (0, 0), 0.5)
        rgb = lum[..., None] * self.tissue[None, None, :]
        rgb[..., 1] += hue * 0.6
        rgb[..., 2] += hue * 0.3
        rgb *= 1 - ves[..., None] * np.array([0.25, 0.5, 0.45], np.float32)
        rgb *= 1 - 0.85 * dark[..., None]
        self.canvas = rgb.astype(np.float32)
        # global light: vignetting centre and brightness drift
        self.light = {
            "k": rng.uniform(0.45, 0.7),
            "ox": rng.uniform(-0.1, 0.1),
            "oy": rng.uniform(-0.1, 0.1),
            "b": rng.uniform(0.05, 0.12),
            "p": rng.uniform(15, 40),
            "f": rng.uniform(0, 2 * np.pi),
        }
        n = int(rng.integers(6, 16))
        self.spec = np.stack(
            [rng.uniform(0, self.W, n), rng.uniform(0, self.H, n), rng.uniform(0.6, 1.6, n)], 1
        )
        self.obj_style = []
        for o in self.objs:
            if o.cls == "polyp":
                tint = (
                    np.array([1.08, 0.66, 0.72])
                    if rng.random() < 0.5
                    else np.array([1.08, 1.3, 1.26])
                )
                n_hl = int(rng.integers(1, 4))
                hl = np.stack(
                    [
                        rng.uniform(-0.4, 0.4, n_hl),
                        rng.uniform(-0.4, 0.4, n_hl),
                        rng.uniform(0.7, 1.4, n_hl),
                    ],
                    1,
                )
            else:
                tint = (
                    np.array([1.08, 1.35, 1.3])
                    if rng.random() < 0.5
                    else np.array([1.02, 0.62, 0.68])
                )
                hl = np.zeros((0, 3))
            tint = tint * rng.uniform(0.95, 1.05, 3)
            self.obj_style.append({"tint": tint.astype(np.float32), "hl": hl})
        self.spec_keep = rng.random((self.T, n)) < 0.8
        self.noise_rng = rng

    def _endo_frame(self, t: int) -> np.ndarray:
        rgb = self._warp(self.canvas, t)
        spots = np.zeros((self.H, self.W), np.float32)  # specular highlights, blurred at the end
        for i, o in enumerate(self.objs):
            g = self._geo[i]
            alpha = np.clip(g.r_in - g.d + 0.5, 0, 1)
            if not alpha.any():
                continue
            tex = o.sample_texture(g)
            st = self.obj_style[i]
            base = self.tissue * st["tint"]
            if o.cls == "polyp":  # dome shading
                rr = np.clip(g.d / np.maximum(g.r_in, 1e-3), 0, 1)
                lum = (0.72 + 0.38 * np.sqrt(1 - rr * rr) + 0.08 * tex) * o.gains[t]
            else:  # flat patch
                lum = (0.95 + 0.06 * tex) * o.gains[t]
            col = lum[..., None] * base[None, None, :]
            ring = np.exp(-(((g.d - g.r_in) / 1.5) ** 2)) * (g.d >= g.r_in)  # contact shadow
            crop = rgb[g.sl] * (1 - 0.35 * ring[..., None])
            rgb[g.sl] = crop * (1 - alpha[..., None]) + col * alpha[..., None]
            c, s = np.cos(o.angles[t]), np.sin(o.angles[t])
            sc = o.radius * o.scales[t]
            on_obj = np.zeros_like(spots)
            for hx, hy, hr in st["hl"]:
                if self.rng.random() < 0.85:
                    px = o.centres[t][0] + sc * (hx * c - hy * s)
                    py = o.centres[t][1] + sc * (hx * s + hy * c)
                    self._spot(on_obj, px, py, hr)
            on_obj[g.sl] *= alpha
            spots += on_obj
        occ = self._occluder(t)
        if occ is not None:
            o = self.occ
            dx, dy = self.xx - o["start"][0], self.yy - o["start"][1]
            across = (dx * -o["u"][1] + dy * o["u"][0]) / o["width"]
            metal = 0.45 + 0.35 * np.cos(np.clip(across, -1, 1) * np.pi / 2) ** 2
            metal += 0.5 * np.exp(-((across + 0.35) ** 2) / 0.02)
            col = metal[..., None] * np.array([0.62, 0.64, 0.68], np.float32)
            rgb = rgb * (1 - occ[..., None]) + col * occ[..., None]
            spots *= 1 - occ
        for k, (sx, sy, sr) in enumerate(self.spec):
            if self.spec_keep[t, k]:
                self._spot(spots, sx, sy, sr)
        spots = cv2.GaussianBlur(spots, (0, 0), 0.7)
        rgb += np.minimum(spots, 1.0)[..., None] * 1.4
        lt = self.light
        xn = (self.xx / self.W - 0.5) - lt["ox"]
        yn = (self.yy / self.H - 0.5) - lt["oy"]
        vign = 1 - lt["k"] * (xn * xn + yn * yn) * 2
        bright = 1 + lt["b"] * np.sin(2 * np.pi * t / lt["p"] + lt["f"])
        rgb = rgb * (vign * bright * self.fov)[..., None]
        rgb += self.noise_rng.normal(0, 0.01, rgb.shape).astype(np.float32)
        return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)

    @staticmethod
    def _spot(layer: np.ndarray, x: float, y: float, r: float) -> None:
        """Draw a small specular highlight (an anti-aliased ellipse) into ``layer``."""
        axes = (max(1, int(round(r * 1.6))), max(1, int(round(r))))
        centre = (int(round(x * 4)), int(round(y * 4)))  # 2 fractional bits
        axes4 = (axes[0] * 4, axes[1] * 4)
        cv2.ellipse(layer, centre, axes4, int(x * 37) % 180, 0, 360, 1.0, -1, cv2.LINE_AA, 2)

    # ---- ultrasound
    def _us_background(self) -> None:
        rng = self.rng
        self._init_camera(0.03)
        ch, cw = self.H + 2 * self.margin, self.W + 2 * self.margin
        cy, cx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        s = self.s
        echo = 0.24 + 0.09 * _fractal(rng, ch, cw, (0.25 * s, 0.1 * s, 0.05 * s))
        fib = np.zeros((ch, cw), np.float32)
        for _ in range(int(rng.integers(3, 8))):
            pts = _random_walk(rng, (rng.uniform(0, cw), rng.uniform(0, ch)), 10, 0.04 * s, 0.15)
            cv2.polylines(fib, [pts], False, float(rng.uniform(0.5, 1)), 1, cv2.LINE_AA)
        echo += 0.35 * cv2.GaussianBlur(fib, (0, 0), 0.8)
        for _ in range(int(rng.integers(2, 5))):  # distractors: cysts (dark) and bright blobs
            b = _blob(
                cx,
                cy,
                rng.uniform(0, cw),
                rng.uniform(0, ch),
                rng.uniform(0.03, 0.09) * s,
                rng.uniform(0.03, 0.07) * s,
                rng.uniform(0, np.pi),
                2.0,
            )
            level = 0.06 if rng.random() < 0.6 else 0.75
            echo = echo * (1 - b) + level * b
        self.canvas = np.clip(echo, 0.02, 1.2).astype(np.float32)
        sp = rng.standard_normal((ch, cw, 2)).astype(np.float32)
        self.speckle = self._shape_speckle(sp)
        self.obj_style = []
        for o in self.objs:
            if o.cls == "ventricle":
                st = {"wall": rng.uniform(0.65, 0.9), "cav": rng.uniform(0.03, 0.08)}
            elif o.cls == "atrium":
                st = {"wall": rng.uniform(0.5, 0.7), "cav": rng.uniform(0.04, 0.09)}
            elif rng.random() < 0.5:  # hypoechoic lesion with a bright capsule
                st = {"wall": 0.0, "cav": rng.uniform(0.1, 0.16), "rim": rng.uniform(0.55, 0.75)}
            else:  # hyperechoic lesion
                st = {"wall": 0.0, "cav": rng.uniform(0.65, 0.85), "rim": 0.0}
            self.obj_style.append(st)
        self.us = {"gain": rng.uniform(0.9, 1.1), "g_amp": rng.uniform(0.04, 0.1)}
        self.us["g_per"] = rng.uniform(15, 40)
        self.noise_rng = rng

    def _shape_speckle(self, z: np.ndarray) -> np.ndarray:
        """Spatially correlate complex Gaussian noise (wider laterally than axially)."""
        z = cv2.GaussianBlur(z, (0, 0), sigmaX=1.3, sigmaY=0.7)
        return z / (z.std(axis=(0, 1), keepdims=True) + 1e-6)

    def _us_frame(self, t: int) -> np.ndarray:
        echo = self._warp(self.canvas, t)
        for i, o in enumerate(self.objs):
            g = self._geo[i]
            a_in = np.clip(g.r_in - g.d + 0.5, 0, 1)
            if not a_in.any():
                continue
            tex = o.sample_texture(g)
            st = self.obj_style[i]
            gain = o.gains[t]
            crop = echo[g.sl]
            if o.wall > 0:
                a_out = np.clip(g.r_out - g.d + 0.5, 0, 1)
                wall = st["wall"] * gain * (1 + 0.25 * tex)
                crop = crop * (1 - a_out) + wall * a_out
            cav = st["cav"] * gain * (1 + 0.3 * tex)
            crop = crop * (1 - a_in) + cav * a_in
            if st.get("rim"):
                rim = np.exp(-(((g.d - g.r_in) / 1.2) ** 2))
                crop = crop * (1 - rim) + st["rim"] * gain * rim
            echo[g.sl] = crop
        occ = self._occluder(t)
        if occ is not None:
            echo = echo * (1 - 0.92 * occ)
            ax, ay = self.apex
            rho = np.hypot(self.xx - ax, self.yy - ay)
            caster = occ * (np.abs(rho - self.occ["depth"]) < 2.0)
            echo = np.maximum(echo, 1.0 * caster)
        fresh = self._shape_speckle(
            self.noise_rng.standard_normal((self.H, self.W, 2)).astype(np.float32)
        )
        z = 0.6 * self._warp(self.speckle, t) + 0.8 * fresh
        env = np.sqrt((z * z).sum(axis=2) / 2.0)  # Rayleigh, E[env^2] = 1
        ax, ay = self.apex
        depth = np.hypot(self.xx - ax, self.yy - ay) / self.rho_max
        gain = self.us["gain"] * (1 + self.us["g_amp"] * np.sin(2 * np.pi * t / self.us["g_per"]))
        amp = echo * env * gain * (0.8 + 0.35 * depth) * np.exp(-0.4 * depth)
        img = np.log1p(8 * amp) / np.log1p(8 * 1.3)
        img = img * self.fov
        img = img + self.noise_rng.normal(0, 0.01, img.shape)
        grey = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)

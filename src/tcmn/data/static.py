"""Pretraining pseudo-clips: a static image and its mask become a short clip by deformation.

Every frame of a pseudo-clip is an independent random deformation of the same image (default:
an affine warp, i.e. rotation, scale, shear and translation, plus an elastic warp half of the
time; see :data:`tcmn.data.transforms.DEFAULT_DEFORM`), with its label map deformed by the same
draw; then the clip goes through the same zoom / spatial / crop / colour steps as main-stage clips
(:func:`tcmn.data.clips.augment_clip`) and comes out in the same sample format
(``info["stage"] == "pretrain"``).

Objectness. With probability ``random_object_p`` the tracked object is not the image's labelled
object but a random one, so that the first-frame mask, not the class, says what to segment
(a model trained only on one class per image can ignore its memory). Implemented kinds:

* ``ellipse``: a filled ellipse, random axes (ratio 0.5-1) and angle;
* ``polygon``: a random star-shaped polygon with 3-8 vertices;
* ``blob``: a smooth blob, a circle whose radius is modulated by random low harmonics;
* ``cutout``: an object cut (with its mask) from another training image, rescaled and pasted.

The three shapes are shown either filled with a texture taken from elsewhere in the same image
(a shifted copy) whose intensity is moved by a random ``contrast`` (grey levels, away from
saturation), or, with probability ``outline_p``, only by their outline (the mask is the filled
shape), or, with probability ``invisible_p``, not at all: the image is left as it is and only
the mask says where the object is. Visible objects can be found frame by frame (a model learns
"segment the pasted thing if there is one, else the polyp" and still ignores its memory: on
CVC-ClinicDB J with an empty first mask equalled J with the true one); an invisible object can
only be followed through the memory. The random object is pasted into the static image before
deformation, so every frame deforms it consistently; the image's labelled objects become
background.

Sources are prepared datasets (annotated frames of the given training videos) and/or folders of
image/mask pairs (:class:`ImageMaskPairs`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from tcmn.data.clips import augment_clip, remap_labels, select_objects, to_sample
from tcmn.data.layout import PreparedDataset
from tcmn.data.transforms import (
    DEFAULT_DEFORM,
    as_size,
    augment_config,
    build_compose,
    plain,
)
from tcmn.errors import TCMNError
from tcmn.io import IMAGE_EXTS, read_frame, read_label_map

log = logging.getLogger(__name__)

#: Defaults of the ``random_object`` setting of :class:`StaticClipDataset`.
#: ``kinds``: weights of the kinds (a list means equal weights); ``outline_p``: probability that a
#: shape is drawn only as its outline; ``invisible_p``: probability that a shape is not drawn at
#: all (the mask alone defines it); ``size``: object diameter as a fraction of the image's
#: short side; ``contrast``: range of the intensity shift of a shape's texture (grey levels);
#: ``thickness``: outline thickness range in pixels.
DEFAULT_RANDOM_OBJECT: dict[str, Any] = {
    "kinds": {"ellipse": 1.0, "blob": 1.0, "polygon": 1.0, "cutout": 1.0},
    "outline_p": 0.2,
    "invisible_p": 0.0,
    "size": [0.15, 0.45],
    "contrast": [25, 70],
    "thickness": [1, 3],
}
SHAPES = ("ellipse", "blob", "polygon")
KINDS = (*SHAPES, "cutout")


# --------------------------------------------------------------------------- image/mask folders
class ImageMaskPairs:
    """A folder of static images with masks: ``<root>/images/<name>.*`` + ``<root>/masks/<name>.*``.

    Images and masks are matched by file stem. A mask is a uint8 label map (0 background, k object
    k; palette PNG allowed); a binary mask stored as 0/255, or any non-PNG (lossy) mask, is
    binarised at > 127 into object 1.

    Args:
        root: the folder.
        weight: sampling weight of this source.
    """

    def __init__(self, root: str | os.PathLike, weight: float = 1.0):
        self.root = Path(root)
        self.name = self.root.name
        self.weight = float(weight)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise TCMNError(
                    f"{d}: the folder is missing; a pairs folder holds images/ and masks/ with "
                    "files matched by name (fix pseudo.pairs_dirs)."
                )

        def by_stem(d: Path) -> dict[str, Path]:
            return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXTS}

        self.images, self.masks = by_stem(img_dir), by_stem(mask_dir)
        self.keys = sorted(set(self.images) & set(self.masks))
        unmatched = len(set(self.images) ^ set(self.masks))
        if unmatched:
            log.warning(
                "%s: %d image(s)/mask(s) have no partner and are ignored", self.root, unmatched
            )
        if not self.keys:
            raise TCMNError(
                f"{self.root}: no image in images/ has a mask of the same name in masks/; "
                "name each mask like its image."
            )

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Image uint8 ``[H, W, 3]`` RGB and label map uint8 ``[H, W]`` of pair ``key``."""
        img = read_frame(self.images[key])
        path = self.masks[key]
        if path.suffix.lower() == ".png":
            lab = read_label_map(path)
            if set(np.unique(lab).tolist()) <= {0, 255}:
                lab = (lab > 127).astype(np.uint8)
        else:
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise TCMNError(f"{path}: the mask cannot be decoded; re-export it as PNG.")
            lab = (grey > 127).astype(np.uint8)
        if lab.shape != img.shape[:2]:
            raise TCMNError(
                f"{path}: the mask is {lab.shape[1]}x{lab.shape[0]} but the image "
                f"{self.images[key].name} is {img.shape[1]}x{img.shape[0]}; resize the mask "
                "(nearest neighbour) to the image size."
            )
        return img, lab


# --------------------------------------------------------------------------- random objects
def random_shape(
    kind: str, size: Sequence[int], diameter: float, rng: np.random.Generator
) -> np.ndarray:
    """A random filled shape as a uint8 ``[H, W]`` {0, 1} mask.

    Args:
        kind: ``ellipse``, ``blob`` or ``polygon``.
        size: ``(H, W)`` of the image.
        diameter: approximate diameter in pixels (>= 4).
    """
    h, w = int(size[0]), int(size[1])
    r = max(2.0, diameter / 2)
    cy = rng.uniform(min(r, h / 2), max(h - r, h / 2))
    cx = rng.uniform(min(r, w / 2), max(w - r, w / 2))
    mask = np.zeros((h, w), np.uint8)
    if kind == "ellipse":
        axes = (max(1, round(r)), max(1, round(r * rng.uniform(0.5, 1.0))))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (round(cx), round(cy)), axes, angle, 0, 360, 1, -1)
    elif kind in ("polygon", "blob"):
        if kind == "polygon":
            n = int(rng.integers(3, 9))
            theta = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.5, 1.0, n)
        else:
            theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            rad = np.ones_like(theta)
            for k in (2, 3, 4):
                rad += rng.uniform(0, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
            rad *= r / rad.max()
        pts = np.stack([cx + rad * np.cos(theta), cy + rad * np.sin(theta)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:
        raise TCMNError(f"random_object.kinds: unknown shape '{kind}'; use one of {list(KINDS)}.")
    if not mask.any():  # degenerate draw: fall back to a disc
        cv2.circle(mask, (round(cx), round(cy)), max(1, round(r)), 1, -1)
    return mask


def paint_shape(
    img: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    outline: bool,
    contrast: Sequence[float],
    thickness: Sequence[int] = (1, 3),
) -> np.ndarray:
    """Draw a shape into ``img`` (uint8 ``[H, W, 3]``, not modified; a new image is returned).

    Filled: the pixels under ``mask`` get the image shifted by a random offset (a texture from
    elsewhere in the image) plus an intensity shift of ``contrast`` grey levels, upwards where
    the texture is dark and downwards where it is bright. Outline: only the shape's contour is
    drawn, in a colour ``contrast`` levels away from the local mean.
    """
    h, w = mask.shape
    out = img.copy()
    region = mask.astype(bool)
    delta = float(rng.uniform(*contrast))
    if outline:
        mean = img[region].mean(axis=0) if region.any() else np.full(3, 128.0)
        colour = np.where(mean < 128, mean + delta, mean - delta).clip(0, 255)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        t = int(rng.integers(int(thickness[0]), int(thickness[1]) + 1))
        cv2.drawContours(out, contours, -1, tuple(float(c) for c in colour), t)
        return out
    dy = int(rng.integers(h // 4, h - h // 4 + 1)) if h > 3 else 0
    dx = int(rng.integers(w // 4, w - w // 4 + 1)) if w > 3 else 0
    tex = np.roll(img, (dy, dx), axis=(0, 1)).astype(np.float32)
    sign = 1.0 if tex[region].mean() < 128 else -1.0
    out[region] = np.clip(tex[region] + sign * delta, 0, 255).astype(np.uint8)
    return out


def paste_cutout(
    img: np.ndarray,
    obj_img: np.ndarray,
    obj_mask: np.ndarray,
    diameter: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste the object ``obj_mask`` (bool ``[h, w]``) of ``obj_img`` into ``img``.

    The object's bounding box is rescaled so its long side is ``diameter`` pixels and pasted at a
    random position. Returns the new image uint8 ``[H, W, 3]`` and the pasted object's {0, 1}
    mask uint8 ``[H, W]``.
    """
    h, w = img.shape[:2]
    ys, xs = np.nonzero(obj_mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    patch, pmask = obj_img[y0:y1, x0:x1], obj_mask[y0:y1, x0:x1].astype(np.uint8)
    s = diameter / max(patch.shape[:2])
    ph = int(np.clip(round(patch.shape[0] * s), 1, h))
    pw = int(np.clip(round(patch.shape[1] * s), 1, w))
    patch = cv2.resize(np.ascontiguousarray(patch), (pw, ph), interpolation=cv2.INTER_LINEAR)
    pmask = cv2.resize(pmask, (pw, ph), interpolation=cv2.INTER_NEAREST)
    if not pmask.any():
        pmask[ph // 2, pw // 2] = 1
    y = int(rng.integers(0, h - ph + 1))
    x = int(rng.integers(0, w - pw + 1))
    out = img.copy()
    mask = np.zeros((h, w), np.uint8)
    sel = pmask.astype(bool)
    out[y : y + ph, x : x + pw][sel] = patch[sel]
    mask[y : y + ph, x : x + pw] = pmask
    return out, mask


def random_object_config(cfg: Mapping | None) -> dict[str, Any]:
    """Merge a ``random_object`` setting over :data:`DEFAULT_RANDOM_OBJECT` and check it."""
    out = copy.deepcopy(DEFAULT_RANDOM_OBJECT)
    user = plain(cfg) or {}
    unknown = sorted(set(user) - set(out))
    if unknown:
        raise TCMNError(
            f"random_object: unknown key(s) {unknown}; valid keys are {sorted(out)} "
            "(fix data.pseudo.random_object)."
        )
    out.update(user)
    kinds = out["kinds"]
    if isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, Mapping):
        kinds = {k: 1.0 for k in kinds}
    bad = sorted(set(kinds) - set(KINDS))
    if bad or not kinds or sum(kinds.values()) <= 0:
        raise TCMNError(
            f"random_object.kinds: {plain(out['kinds'])!r} is invalid; use weights over {list(KINDS)}."
        )
    out["kinds"] = {k: float(v) for k, v in kinds.items()}
    return out


# --------------------------------------------------------------------------- the dataset
class StaticClipDataset(Dataset):
    """Pseudo-clips from static images with masks (pretraining stage; also mixable into main).

    Args:
        sources: a list of any of: ``(PreparedDataset, video names, weight)`` (their annotated
            frames), :class:`ImageMaskPairs`, a pairs folder path, or
            ``{"pairs_dir": path, "weight": w}``. A source is picked by weight, then an image
            uniformly.
        clip_len: frames per pseudo-clip (``T``).
        crop_size: ``(H, W)`` (or an int) of the crop.
        samples: pseudo-clips per epoch (``len(self)``).
        seed: base seed; sample ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])``.
        deform: per-frame deformation pipeline (albumentations config list; None =
            :data:`~tcmn.data.transforms.DEFAULT_DEFORM`, ``[]`` = none).
        random_object_p: probability that the tracked object is a random object (module
            docstring) instead of the labelled one.
        max_objects: ``O`` object channels; labelled objects: random subset of 1..O.
        augment: zoom / spatial / crop / colour settings, as for main-stage clips.
        random_object: settings of the random objects (:data:`DEFAULT_RANDOM_OBJECT`).

    ``dataset[e * samples + i]`` is a sample dict (see :mod:`tcmn.data.clips`) with
    ``info = {"dataset", "video" (video or pair name), "frames" ([t] * T), "stage": "pretrain"}``.
    """

    stage = "pretrain"

    def __init__(
        self,
        sources: Sequence[Any],
        clip_len: int = 3,
        crop_size: int | Sequence[int] = (384, 384),
        samples: int = 1000,
        seed: int = 0,
        deform: Sequence[Mapping] | None = None,
        random_object_p: float = 0.0,
        max_objects: int = 2,
        augment: Any = None,
        random_object: Mapping | None = None,
    ):
        if clip_len < 1 or max_objects < 1 or samples < 1 or not 0 <= random_object_p <= 1:
            raise TCMNError(
                f"clip_len={clip_len}, max_objects={max_objects}, samples={samples}, "
                f"random_object_p={random_object_p}: need clip_len, max_objects, samples >= 1 and "
                "0 <= random_object_p <= 1; fix the data config."
            )
        self.clip_len = int(clip_len)
        self.crop = as_size(crop_size)
        self.samples = int(samples)
        self.seed = int(seed)
        self.max_objects = int(max_objects)
        self.random_object_p = float(random_object_p)
        self.ro = random_object_config(random_object)
        self.aug = augment_config(augment)
        self.deform = build_compose(DEFAULT_DEFORM if deform is None else deform, "deform")
        self.spatial = build_compose(self.aug["spatial"], "augment.spatial")
        self.color = build_compose(self.aug["color"], "augment.color")
        # each source: (name, loader object, item keys)
        self.sources: list[tuple[str, Any, list]] = []
        weights: list[float] = []
        for src in sources:
            if isinstance(src, tuple | list) and src and isinstance(src[0], PreparedDataset):
                ds, videos, weight = src
                missing = [v for v in videos if v not in ds.videos]
                if missing:
                    raise TCMNError(
                        f"{ds.root}: video '{missing[0]}' is asked for pretraining but is not in "
                        "its meta.json; rewrite the splits or fix the video list."
                    )
                items = [(v, t) for v in videos for t in ds.videos[v].annotated_indices]
                name, obj = ds.name, ds
            else:
                if isinstance(src, Mapping):
                    src = ImageMaskPairs(src["pairs_dir"], src.get("weight", 1.0))
                elif isinstance(src, str | os.PathLike):
                    src = ImageMaskPairs(src)
                if not isinstance(src, ImageMaskPairs):
                    raise TCMNError(
                        f"pseudo-clip source {src!r} is not a prepared dataset or a pairs folder; "
                        "fix data.pseudo."
                    )
                items, name, obj, weight = list(src.keys), src.name, src, src.weight
            if items and float(weight) > 0:
                self.sources.append((name, obj, items))
                weights.append(float(weight))
        if not self.sources:
            raise TCMNError(
                "pseudo-clips: no source has an annotated image (or every weight is 0); "
                "give training videos or a pairs folder (data.pseudo.pairs_dirs)."
            )
        self.weights = np.asarray(weights) / np.sum(weights)
        kinds = self.ro["kinds"]
        self._kinds = list(kinds)
        self._kind_p = np.asarray([kinds[k] for k in self._kinds]) / sum(kinds.values())

    def __len__(self) -> int:
        return self.samples

    def draw_image(self, rng: np.random.Generator) -> tuple[str, str, int, np.ndarray, np.ndarray]:
        """Draw a source image: ``(dataset name, video/pair name, frame, image, labels)``.

        Image uint8 ``[H, W, 3]``, labels uint8 ``[H, W]`` (copies, safe to modify).
        """
        s = int(rng.choice(len(self.sources), p=self.weights))
        name, obj, items = self.sources[s]
        item = items[int(rng.integers(len(items)))]
        if isinstance(obj, PreparedDataset):
            video, t = item
            img = np.array(obj.frames(video)[t])
            lab = np.array(obj.masks(video)[0][t])
            return name, video, int(t), img, lab
        img, lab = obj.load(item)
        return name, item, 0, img, lab

    def random_object(
        self, img: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Put a random object into ``img`` (uint8 ``[H, W, 3]``).

        Returns the new image and the object's uint8 {0, 1} ``[H, W]`` mask.
        """
        h, w = img.shape[:2]
        kind = self._kinds[int(rng.choice(len(self._kinds), p=self._kind_p))]
        diameter = max(4.0, float(rng.uniform(*self.ro["size"])) * min(h, w))
        if kind == "cutout":
            *_, other, other_lab = self.draw_image(rng)
            ids = np.flatnonzero(np.bincount(other_lab.ravel(), minlength=256)[1:]) + 1
            if len(ids):
                k = int(ids[int(rng.integers(len(ids)))])
                return paste_cutout(img, other, other_lab == k, diameter, rng)
            kind = "ellipse"  # the other image shows no object: fall back to a shape
        mask = random_shape(kind, (h, w), diameter, rng)
        if rng.random() < float(self.ro["invisible_p"]):
            return img, mask
        outline = bool(rng.random() < float(self.ro["outline_p"]))
        thickness = self.ro["thickness"]
        return paint_shape(img, mask, rng, outline, self.ro["contrast"], thickness), mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, i = divmod(int(index), self.samples)
        rng = np.random.default_rng([self.seed, epoch, i])
        for _ in range(int(self.aug["max_tries"])):
            name, video, t, img, lab = self.draw_image(rng)
            if rng.random() < self.random_object_p:
                img, lab = self.random_object(img, rng)
                n = 1
            else:
                present = np.flatnonzero(np.bincount(lab.ravel(), minlength=256)[1:]) + 1
                if not len(present):
                    continue
                chosen = select_objects(present, self.max_objects, rng)
                lab, n = remap_labels(lab, chosen), len(chosen)
            frames = np.repeat(img[None], self.clip_len, axis=0)
            labels = np.repeat(lab[None], self.clip_len, axis=0)
            out = augment_clip(
                frames, labels, n, rng, self.crop, self.aug, self.spatial, self.color, self.deform
            )
            if out is None:
                continue
            frames, labels, n = out
            info = {
                "dataset": name,
                "video": video,
                "frames": [t] * self.clip_len,
                "stage": self.stage,
            }
            return to_sample(frames, labels, n, self.max_objects, info)
        raise TCMNError(
            f"{', '.join(n for n, _, _ in self.sources)}: no pseudo-clip with a visible object "
            f"was found in {self.aug['max_tries']} draws (sample {index}); check that the masks "
            "are not empty, raise random_object_p or augment.max_tries."
        )

"""Image transforms shared by training and evaluation.

* ImageNet normalisation (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`, :func:`normalize`), used by
  the training samples and by the inference side.
* Albumentations pipelines built from plain config dicts (:func:`build_compose`), so Hydra can pass
  them: a pipeline is a list of ``{"name": <albumentations class>, **kwargs}`` entries;
  ``OneOf`` / ``SomeOf`` / ``Sequential`` take a nested ``transforms`` list.
* The training augmentation settings (:data:`DEFAULT_AUGMENT`, :func:`augment_config`): a
  ``spatial`` pipeline drawn once per clip and applied identically to every frame and mask, a
  ``color`` pipeline drawn independently for every frame (images only), a random ``zoom``, and
  the crop rules.
* Resizing helpers: :func:`eval_shape` / :func:`resize_frames` for evaluation frames (area
  interpolation, uint8 kept), :func:`rescale_clip` for training clips (labels nearest), and
  :func:`choose_crop` which picks a crop window that keeps the tracked objects.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from tcmn.errors import TCMNError
from tcmn.models.backbones import IMAGENET_MEAN, IMAGENET_STD

#: Training augmentation defaults (keys of the ``augment`` config; any key may be overridden).
#: ``spatial``: albumentations pipeline, one draw per clip, same for every frame and its mask.
#: ``color``: albumentations pipeline, one draw per frame, images only ("light colour jitter").
#: ``zoom``: range of a random scale factor applied after fitting the frames to the crop.
#: ``long_side``: resize frames so their long side has this many pixels before zooming
#: (None = native resolution); frames are always upscaled as needed to cover the crop.
#: ``min_object_fraction`` / ``min_object_pixels``: a crop must keep this fraction of every chosen
#: object's first-frame pixels, and at least this many pixels (capped at the whole object and at
#: a quarter of the crop); ``crop_tries`` random windows are tried before the window is centred
#: on an object; ``max_tries`` bounds the redraws of a whole sample.
DEFAULT_AUGMENT: dict[str, Any] = {
    "spatial": [
        {"name": "HorizontalFlip", "p": 0.5},
        {
            "name": "Affine",
            "rotate": [-15, 15],
            "scale": [0.9, 1.1],
            "shear": [-5, 5],
            "translate_percent": [-0.05, 0.05],
            "p": 0.7,
        },
    ],
    "color": [
        {
            "name": "ColorJitter",
            "brightness": [0.9, 1.1],
            "contrast": [0.9, 1.1],
            "saturation": [0.9, 1.1],
            "hue": [-0.02, 0.02],
            "p": 0.8,
        },
    ],
    "zoom": [1.0, 1.25],
    "long_side": None,
    "min_object_fraction": 0.5,
    "min_object_pixels": 100,
    "crop_tries": 10,
    "max_tries": 20,
}

#: No augmentation at all (``augment=false`` / ``"none"``): frames are only fitted and cropped.
NO_AUGMENT: dict[str, Any] = {**DEFAULT_AUGMENT, "spatial": [], "color": [], "zoom": [1.0, 1.0]}

#: Pseudo-clip deformation defaults (``deform`` of :class:`tcmn.data.static.StaticClipDataset`):
#: every frame of a pseudo-clip gets its own draw of this pipeline (affine + elastic).
DEFAULT_DEFORM: list[dict[str, Any]] = [
    {
        "name": "Affine",
        "rotate": [-20, 20],
        "scale": [0.9, 1.1],
        "shear": [-10, 10],
        "translate_percent": [-0.1, 0.1],
        "p": 1.0,
    },
    {"name": "ElasticTransform", "alpha": 60, "sigma": 10, "approximate": True, "p": 0.5},
]

_CONTAINERS = ("OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform")


def plain(obj: Any) -> Any:
    """Convert a (possibly OmegaConf) nested mapping/sequence into plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return [plain(v) for v in obj]
    return obj


def _build_transform(spec: Mapping, where: str) -> A.BasicTransform:
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise TCMNError(
            f"{where}: each transform must be a mapping with a 'name' key "
            f"(e.g. {{name: Affine, rotate: [-15, 15]}}), got {spec!r}; fix the augment config."
        )
    kwargs = dict(spec)
    name = str(kwargs.pop("name"))
    cls = getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BaseCompose | A.BasicTransform)):
        raise TCMNError(
            f"{where}: '{name}' is not an albumentations 2.0 transform; use a class name such as "
            "'Affine' or 'ColorJitter' in the augment config."
        )
    if name in _CONTAINERS:
        kwargs["transforms"] = [
            _build_transform(s, f"{where}.{name}") for s in kwargs.get("transforms", [])
        ]
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TCMNError(
                f"{where}: {name} has no argument(s) {unknown}; fix the augment config "
                f"(valid: {sorted(k for k in params if k != 'self')})."
            )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise TCMNError(
            f"{where}: {name}({kwargs}) is invalid ({first}); fix the augment config."
        ) from e


def build_compose(specs: Sequence[Mapping] | None, where: str = "augment") -> A.Compose:
    """Build an ``A.Compose`` from a list of ``{"name": <class>, **kwargs}`` dicts.

    Args:
        specs: the pipeline (plain or OmegaConf lists/dicts); ``None`` or ``[]`` gives an identity.
        where: name of the config entry, used in error messages.
    Returns:
        An unseeded ``A.Compose``; call ``set_random_seed`` on it before each use for
        reproducible draws. Masks are warped with nearest-neighbour interpolation (the
        albumentations default), so label values are kept.
    Raises:
        TCMNError: unknown transform name, unknown argument, or invalid value.
    """
    specs = plain(specs) or []
    if isinstance(specs, Mapping):
        specs = [specs]
    return A.Compose([_build_transform(s, where) for s in specs])


def augment_config(augment: Mapping | bool | str | None) -> dict[str, Any]:
    """Merge a user's ``augment`` setting over :data:`DEFAULT_AUGMENT`.

    ``None`` / ``True`` / ``"default"`` give the defaults, ``False`` / ``"none"`` give
    :data:`NO_AUGMENT`, a mapping overrides the defaults key by key (unknown keys are an error).
    """
    if augment is None or augment is True or augment == "default":
        return copy.deepcopy(DEFAULT_AUGMENT)
    if augment is False or augment == "none":
        return copy.deepcopy(NO_AUGMENT)
    if not isinstance(augment, Mapping):
        raise TCMNError(
            f"augment: expected a mapping, true/false or 'none', got {augment!r}; fix data.augment."
        )
    cfg = copy.deepcopy(DEFAULT_AUGMENT)
    user = plain(augment)
    unknown = sorted(set(user) - set(cfg))
    if unknown:
        raise TCMNError(
            f"augment: unknown key(s) {unknown}; valid keys are {sorted(cfg)} (fix data.augment)."
        )
    cfg.update(user)
    zoom = cfg["zoom"]
    if isinstance(zoom, int | float):
        cfg["zoom"] = [float(zoom), float(zoom)]
    if len(cfg["zoom"]) != 2 or not 0 < cfg["zoom"][0] <= cfg["zoom"][1]:
        raise TCMNError(f"augment.zoom: expected [low, high] with 0 < low <= high, got {zoom!r}.")
    return cfg


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``384`` -> ``(384, 384)``; ``[h, w]`` -> ``(h, w)``."""
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    size = list(size)
    if len(size) != 2:
        raise TCMNError(f"crop_size: expected an int or [height, width], got {size!r}.")
    return int(size[0]), int(size[1])


# --------------------------------------------------------------------------- normalisation
def normalize(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise RGB frames.

    Args:
        frames: uint8 ``[..., H, W, 3]`` RGB (numpy or torch).
    Returns:
        float32 ``[..., 3, H, W]`` tensor, ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``.
    """
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.shape[-1] != 3:
        raise TCMNError(
            f"normalize: expected RGB frames [..., H, W, 3], got shape {tuple(x.shape)}."
        )
    x = x.movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255
    return x.sub_(mean).div_(std)


# --------------------------------------------------------------------------- resizing
def eval_shape(size: Sequence[int], eval_size: int | None) -> tuple[int, int]:
    """Output ``(h, w)`` for a frame of ``size = (H, W)`` whose long side becomes ``eval_size``.

    ``eval_size=None`` keeps the native size. The aspect ratio is kept (rounded, at least 1 px).
    """
    h, w = int(size[0]), int(size[1])
    if eval_size is None:
        return h, w
    s = float(eval_size) / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_frames(frames: np.ndarray, eval_size: int | None) -> np.ndarray:
    """Resize uint8 frames ``[T, H, W, 3]`` so the long side is ``eval_size`` (area interpolation).

    Returns a new contiguous uint8 ``[T, h, w, 3]`` array (a copy even when the size is kept).
    """
    frames = np.asarray(frames)
    h, w = eval_shape(frames.shape[1:3], eval_size)
    if (h, w) == tuple(frames.shape[1:3]):
        return np.array(frames, dtype=np.uint8, copy=True)
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), np.uint8)
    for t in range(frames.shape[0]):
        out[t] = cv2.resize(np.ascontiguousarray(frames[t]), (w, h), interpolation=cv2.INTER_AREA)
    return out


def rescale_clip(
    frames: np.ndarray, labels: np.ndarray, size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a clip to ``size = (h, w)``: frames bilinear (area when shrinking), labels nearest.

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        labels: uint8 ``[T, H, W]`` label maps.
    Returns:
        ``(frames [T, h, w, 3] uint8, labels [T, h, w] uint8)``; the inputs when the size is kept.
    """
    h, w = int(size[0]), int(size[1])
    if (h, w) == tuple(frames.shape[1:3]):
        return frames, labels
    interp = cv2.INTER_AREA if h * w < frames.shape[1] * frames.shape[2] else cv2.INTER_LINEAR
    f_out = np.empty((frames.shape[0], h, w, 3), np.uint8)
    l_out = np.empty((labels.shape[0], h, w), np.uint8)
    for t in range(frames.shape[0]):
        f_out[t] = cv2.resize(np.ascontiguousarray(frames[t]), (w, h), interpolation=interp)
        l_out[t] = cv2.resize(
            np.ascontiguousarray(labels[t]), (w, h), interpolation=cv2.INTER_NEAREST
        )
    return f_out, l_out


def fit_size(
    size: Sequence[int], crop: Sequence[int], long_side: int | None = None, zoom: float = 1.0
) -> tuple[int, int]:
    """Training frame size: ``long_side`` (None = native) times ``zoom``, at least covering ``crop``."""
    h, w = int(size[0]), int(size[1])
    s = (float(long_side) / max(h, w) if long_side else 1.0) * float(zoom)
    s = max(s, crop[0] / h, crop[1] / w)
    return max(crop[0], math.ceil(h * s - 1e-6)), max(crop[1], math.ceil(w * s - 1e-6))


# --------------------------------------------------------------------------- cropping
def choose_crop(
    first: np.ndarray,
    ids: Sequence[int],
    crop: Sequence[int],
    rng: np.random.Generator,
    min_pixels: int = 100,
    tries: int = 10,
    min_fraction: float = 0.5,
) -> tuple[int, int]:
    """Pick the top-left corner of a crop window that keeps the chosen objects of the first frame.

    Args:
        first: uint8 ``[H, W]`` label map of the first frame (``H >= crop[0]``, ``W >= crop[1]``).
        ids: the labels that must stay visible.
        crop: ``(ch, cw)`` window size.
        rng: the sample's generator (every draw comes from it).
        min_pixels: pixels each object must keep at least (capped at its size).
        tries: random windows tried; then the window is centred (with a small jitter) on the
            bounding box of a random chosen object, which keeps at least part of it.
        min_fraction: fraction of each object's pixels the window must keep.
    Returns:
        ``(y, x)``: the window is ``first[y:y + ch, x:x + cw]``. An object needs
        ``min(count, max(min_pixels, min_fraction * count), ch * cw / 4)`` pixels in it.
    """
    h, w = first.shape
    ch, cw = int(crop[0]), int(crop[1])
    if h < ch or w < cw:
        raise ValueError(f"frame {h}x{w} is smaller than the crop {ch}x{cw}")
    if h == ch and w == cw:
        return 0, 0
    counts = np.bincount(first.ravel(), minlength=256)
    ids = [int(k) for k in ids if counts[k] > 0]
    need = {
        k: min(counts[k], max(min_pixels, math.ceil(min_fraction * counts[k])), ch * cw // 4)
        for k in ids
    }
    for _ in range(max(0, tries)):
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        c = np.bincount(first[y : y + ch, x : x + cw].ravel(), minlength=256)
        if all(c[k] >= need[k] for k in ids):
            return y, x
    if not ids:
        return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    k = ids[int(rng.integers(len(ids)))]
    ys, xs = np.nonzero(first == k)
    cy = (ys.min() + ys.max()) / 2 + rng.integers(-(ch // 8), ch // 8 + 1)
    cx = (xs.min() + xs.max()) / 2 + rng.integers(-(cw // 8), cw // 8 + 1)
    # clamp so the window still holds at least one pixel of the object
    y = int(np.clip(round(cy - ch / 2), max(0, ys.max() - ch + 1), min(h - ch, ys.min())))
    x = int(np.clip(round(cx - cw / 2), max(0, xs.max() - cw + 1), min(w - cw, xs.min())))
    if not np.any(first[y : y + ch, x : x + cw] == k):  # non-convex object: use one of its pixels
        j = int(rng.integers(len(ys)))
        y = int(np.clip(ys[j] - ch // 2, 0, h - ch))
        x = int(np.clip(xs[j] - cw // 2, 0, w - cw))
    return y, x


def apply_per_frame(compose: A.Compose, frames: np.ndarray) -> np.ndarray:
    """Apply an image-only pipeline to each frame ``[T, H, W, 3]`` with its own random draw."""
    if not compose.transforms:
        return frames
    return np.stack([compose(image=np.ascontiguousarray(f))["image"] for f in frames])


def apply_to_clip(
    compose: A.Compose, frames: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ONE draw of ``compose`` to every frame ``[T, H, W, 3]`` and label map ``[T, H, W]``.

    Uses albumentations' batch targets (``images`` / ``masks``): parameters are sampled once
    and shared by all frames, so a clip moves as one.
    """
    if not compose.transforms:
        return frames, labels
    out = compose(images=np.ascontiguousarray(frames), masks=np.ascontiguousarray(labels))
    return np.asarray(out["images"]), np.asarray(out["masks"])


def seed_compose(compose: A.Compose, rng: np.random.Generator) -> None:
    """Seed an albumentations pipeline from the sample's generator (reproducible draws)."""
    compose.set_random_seed(int(rng.integers(0, 2**31 - 1)))

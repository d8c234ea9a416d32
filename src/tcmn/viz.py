"""Drawing masks on frames: colours, overlays, the paper's Fig. 2 panels and image strips.

Everything takes and returns uint8 RGB ``[H, W, 3]`` NumPy arrays (grey ``[H, W]`` frames are
accepted and repeated to 3 channels); label maps are uint8 ``[H, W]`` (0 background, k object
k). Contours come from ``cv2.findContours`` / ``cv2.drawContours``; no matplotlib is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def _davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: 256 colours from the bits of the index."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


PALETTE: np.ndarray = _davis_palette()
"""uint8 ``[256, 3]`` RGB colour of each object id (DAVIS palette: 0 black, 1 (128, 0, 0),
2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128), ...). Read-only."""
PALETTE.flags.writeable = False

GIVEN_COLOUR = (0, 255, 0)
"""Fig. 2: the given first-frame mask is filled green."""
PRED_COLOUR = (255, 0, 0)
"""Fig. 2: a predicted mask is filled red."""
GT_COLOUR = (255, 255, 255)
"""Fig. 2: the ground-truth contour is white."""


def _rgb(frame: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` / ``[H, W, 1|3|4]`` -> a new contiguous uint8 ``[H, W, 3]``."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        return np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] in (1, 3, 4):
        return np.ascontiguousarray(
            np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame[..., :3]
        )
    raise ValueError(f"frames must be [H, W] or [H, W, 3], got shape {frame.shape}")


def _check_labels(labels: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != tuple(size[:2]):
        raise ValueError(f"label map shape {labels.shape} differs from the frame's {size[:2]}")
    return labels.astype(np.uint8, copy=False)


def contour_thickness(size: tuple[int, ...]) -> int:
    """Line width for contours: 1 px up to 400 px, then about 1/400 of the shorter side."""
    return max(1, round(min(size[:2]) / 400))


def _draw_contour(img: np.ndarray, mask: np.ndarray, colour, thickness: int) -> None:
    """Draw the outer and hole boundaries of boolean ``mask`` on ``img`` in place."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, contours, -1, tuple(int(c) for c in colour), thickness)


def _tint(img: np.ndarray, mask: np.ndarray, colour, alpha: float) -> None:
    """Blend ``colour`` into ``img`` where ``mask`` is True, in place."""
    if mask.any():
        c = np.asarray(colour, np.float32)
        img[mask] = np.rint((1.0 - alpha) * img[mask] + alpha * c).astype(np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Colour a label map with :data:`PALETTE`.

    Args:
        labels: uint8 ``[H, W]`` label map.
    Returns:
        uint8 RGB ``[H, W, 3]`` (background black).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    return PALETTE[labels.astype(np.uint8, copy=False)]


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint each object with its :data:`PALETTE` colour and draw its contour.

    Args:
        frame: uint8 RGB ``[H, W, 3]`` (or grey ``[H, W]``).
        labels: uint8 ``[H, W]`` label map.
        alpha: weight of the object colour inside the object (0 leaves the frame as is).
    Returns:
        a new uint8 RGB ``[H, W, 3]``; background pixels away from contours equal ``frame``.
    """
    img = _rgb(frame).copy()
    labels = _check_labels(labels, img.shape)
    ids = [k for k in np.unique(labels).tolist() if k]
    t = contour_thickness(img.shape)
    for k in ids:
        _tint(img, labels == k, PALETTE[k], alpha)
    for k in ids:
        _draw_contour(img, labels == k, PALETTE[k], t)
    return img


def figure2_panel(
    frame: np.ndarray,
    pred: np.ndarray | None = None,
    gt: np.ndarray | None = None,
    given: np.ndarray | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """One panel in the style of the paper's Fig. 2.

    The given first-frame mask is filled green, a predicted mask is filled red (both blended
    with weight ``alpha``), and the ground-truth contour is drawn in white on top. Any non-zero
    label counts as foreground.

    Args:
        frame: uint8 RGB ``[H, W, 3]`` (or grey ``[H, W]``).
        pred: uint8 ``[H, W]`` predicted labels, or None.
        gt: uint8 ``[H, W]`` ground-truth labels, or None.
        given: uint8 ``[H, W]`` first-frame mask given to the model, or None.
        alpha: fill weight.
    Returns:
        a new uint8 RGB ``[H, W, 3]``.
    """
    img = _rgb(frame).copy()
    if given is not None:
        _tint(img, _check_labels(given, img.shape) > 0, GIVEN_COLOUR, alpha)
    if pred is not None:
        _tint(img, _check_labels(pred, img.shape) > 0, PRED_COLOUR, alpha)
    if gt is not None:
        _draw_contour(
            img, _check_labels(gt, img.shape) > 0, GT_COLOUR, contour_thickness(img.shape)
        )
    return img


def strip(
    images: Sequence[np.ndarray], ncols: int | None = None, gap: int = 0, background: int = 0
) -> np.ndarray:
    """Tile images row by row into one image (README pictures, Fig. 2 grids).

    Each cell is as large as the largest image; smaller images sit at the cell's top-left on
    ``background``. Images are not resized.

    Args:
        images: uint8 RGB ``[h_i, w_i, 3]`` (or grey) images, at least one.
        ncols: images per row (default: all in one row).
        gap: pixels of ``background`` between cells.
        background: grey level of the gaps and padding.
    Returns:
        uint8 RGB ``[rows * H + (rows - 1) * gap, cols * W + (cols - 1) * gap, 3]``.
    """
    imgs = [_rgb(im) for im in images]
    if not imgs:
        raise ValueError("strip() needs at least one image")
    ncols = len(imgs) if ncols is None else max(1, min(int(ncols), len(imgs)))
    nrows = -(-len(imgs) // ncols)
    h = max(im.shape[0] for im in imgs)
    w = max(im.shape[1] for im in imgs)
    out = np.full(
        (nrows * h + (nrows - 1) * gap, ncols * w + (ncols - 1) * gap, 3), background, np.uint8
    )
    for n, im in enumerate(imgs):
        r, c = divmod(n, ncols)
        y, x = r * (h + gap), c * (w + gap)
        out[y : y + im.shape[0], x : x + im.shape[1]] = im
    return out


def overlay_strip(item: dict, pred, n_frames: int):
    """A Fig. 2 style strip: the given frame (mask in green), then predictions (red) with the
    ground-truth contour (white) on ``n_frames - 1`` evenly spaced later annotated frames.

    Args:
        item: a whole-video item with numpy ``frames`` (uint8 ``[T, h, w, 3]``), ``labels``
            (uint8 ``[T, H, W]``), ``annotated`` (bool ``[T]``) and ``given_frames``.
        pred: predicted labels, uint8 ``[T, H, W]``.
        n_frames: panels in the strip (the given frame included).
    Returns:
        uint8 RGB ``[H, n * W, 3]``, ``n <= n_frames`` panels at the label resolution.
    """
    labels, frames = item["labels"], item["frames"]
    t0 = min(item["given_frames"].values())
    later = [t for t in np.flatnonzero(item["annotated"]) if t > t0]
    pick = (
        [later[int(i)] for i in np.linspace(0, len(later) - 1, min(n_frames - 1, len(later)))]
        if later
        else []
    )
    h, w = labels.shape[1:]

    def frame_at(t):
        f = frames[t]
        return cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) if f.shape[:2] != (h, w) else f

    panels = [figure2_panel(frame_at(t0), given=labels[t0])]
    panels += [figure2_panel(frame_at(t), pred=pred[t], gt=labels[t]) for t in pick]
    return strip(panels, ncols=len(panels))

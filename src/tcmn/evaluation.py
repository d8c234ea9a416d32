"""One-shot evaluation of a video item: the protocol, the copy-first-mask baseline and the
mask-dependence controls, shared by validation, ``tcmn-eval`` and the notebooks.

A video item is what the data module's val/test loaders yield (see ``tcmn.data.datamodule``):
``frames`` uint8 ``[T, h, w, 3]`` at evaluation resolution, ``labels`` uint8 ``[T, H, W]`` at
native resolution, ``annotated`` bool ``[T]``, ``objects`` {id: class}, ``given_frames``
{id: frame index whose mask is given}, ``video``, ``dataset``.

One-shot protocol: each object's mask is given on its ``given_frames`` frame (the first annotated
frame where it is present); the model propagates it; frames after it that have ground truth are
scored (the metric skips the given frame and unannotated frames).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from tcmn.diagnostics import relative_change, value_statistics
from tcmn.inference.session import InferenceSession

CONTROLS = ("empty", "flip", "shift")


def given_masks(
    item: Mapping, labels: np.ndarray | None = None
) -> dict[int, tuple[np.ndarray, list[int]]]:
    """Frame index -> (label map restricted to the objects given there, their ids).

    ``labels`` replaces the item's ground truth as the source of the given masks (the controls).
    """
    labels = item["labels"] if labels is None else labels
    out: dict[int, tuple[np.ndarray, list[int]]] = {}
    by_frame: dict[int, list[int]] = {}
    for oid, t in item["given_frames"].items():
        by_frame.setdefault(int(t), []).append(int(oid))
    for t, ids in sorted(by_frame.items()):
        lab = np.asarray(labels[t])
        m = np.where(np.isin(lab, ids), lab, 0).astype(np.uint8)
        out[t] = (m, sorted(ids))
    return out


def predict_video(
    session: InferenceSession, item: Mapping, given: Mapping | None = None
) -> np.ndarray:
    """Propagate the given masks through the item's frames (forward from the first given frame).

    Returns uint8 ``[T, H, W]`` labels at the native (label) resolution; frames before the first
    given frame are 0.
    """
    labels = np.asarray(item["labels"])
    given = given_masks(item) if given is None else given
    return session.predict_labels(item["frames"], given, tuple(labels.shape[1:]))


def video_diagnostics(session: InferenceSession, item: Mapping, eps: float = 1e-3) -> dict:
    """The value diagnostics (:mod:`tcmn.diagnostics`) of one propagated video.

    Call it right after :func:`predict_video` with the true given masks: eq. 1's distances are
    those of the values in the session's memory bank (the given frame, then every
    ``mem_every``-th predicted frame, in frame order), and the mask signal compares the given
    frame's value with its true mask and with an empty one.

    Returns:
        ``{d12, d23, d13, value_norm, tc_term, collapsed, n, mask_signal, memory_frames}``.
    """
    import torch

    propagator = session.engine
    mem = propagator.memory
    order = np.argsort(mem.frame_ids, kind="stable")
    values = mem.values[:, :, :, torch.as_tensor(order, dtype=torch.long)]  # [1, O, C, T, h, w]
    stats = value_statistics(values.permute(0, 3, 1, 2, 4, 5), None, eps)
    stats["memory_frames"] = int(len(order))
    t0, (mask, ids) = min(given_masks(item).items())
    frame = np.asarray(item["frames"][t0])
    v_true = propagator.value_of(frame, mask, ids)
    v_empty = propagator.value_of(frame, np.zeros_like(mask), ids)
    stats["mask_signal"] = relative_change(v_true, v_empty)
    return stats


def copy_first_mask(item: Mapping) -> np.ndarray:
    """The trivial baseline: every object's given mask copied to all later frames.

    Returns uint8 ``[T, H, W]`` labels; objects given later overwrite earlier ones where they
    overlap.
    """
    labels = np.asarray(item["labels"])
    out = np.zeros_like(labels, dtype=np.uint8)
    for t, (m, ids) in sorted(given_masks(item).items()):
        for oid in ids:
            out[t:][:, m == oid] = oid
    return out


def control_labels(item: Mapping, kind: str, seed: int = 0) -> np.ndarray:
    """The item's labels with every given mask replaced by a wrong one (a control).

    - ``empty``: no foreground at all;
    - ``flip``: the mask flipped horizontally and vertically;
    - ``shift``: a shape of the same area elsewhere in the frame: another object's mask when
      the frame has one, else the object's own mask moved (with wrap-around) by half the frame
      in both directions, i.e. a shape of similar area away from the object.

    Only the given frames change; scoring still uses the true labels.
    """
    if kind not in CONTROLS:
        raise ValueError(f"control '{kind}' is not one of {CONTROLS}")
    labels = np.array(item["labels"], copy=True)
    for t, (m, ids) in given_masks(item).items():
        lab = labels[t]
        keep = np.where(np.isin(lab, ids), 0, lab)
        if kind == "empty":
            new = np.zeros_like(m)
        elif kind == "flip":
            new = m[::-1, ::-1]
        else:
            new = np.zeros_like(m)
            h, w = m.shape
            for oid in ids:
                others = [o for o in ids if o != oid]
                if others:
                    src = m == others[0]
                else:
                    src = np.roll(m == oid, (h // 2, w // 2), axis=(0, 1))
                new[src & (new == 0)] = oid
        labels[t] = np.where(new > 0, new, keep)
    return labels


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 ``[H, W]`` label map to ``size = (h, w)``."""
    if labels.shape == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def restrict_classes(item: Mapping, classes: list[str] | None) -> dict:
    """The item with only the objects of ``classes`` (None: unchanged); others become background.

    Used for the unseen-class tables (e.g. CAMUS LV and LA only): only their masks are given and
    scored.
    """
    item = dict(item)
    if not classes:
        return item
    keep = {int(o): c for o, c in item["objects"].items() if c in set(classes)}
    item["objects"] = keep
    item["given_frames"] = {o: t for o, t in item["given_frames"].items() if int(o) in keep}
    labels = np.asarray(item["labels"])
    item["labels"] = np.where(np.isin(labels, list(keep)), labels, 0).astype(np.uint8)
    return item


def numpy_item(item: Mapping) -> dict:
    """The item with its tensors as CPU numpy arrays (frames, labels, annotated)."""
    out = dict(item)
    for k in ("frames", "labels", "annotated"):
        v = out.get(k)
        if v is not None and hasattr(v, "detach"):
            out[k] = v.detach().cpu().numpy()
    out["given_frames"] = {int(o): int(t) for o, t in out["given_frames"].items()}
    out["objects"] = {int(o): str(c) for o, c in out["objects"].items()}
    return out


def metric_args(item: Mapping) -> dict:
    """The keyword arguments of :meth:`tcmn.metrics.VOSMetric.update` besides the prediction,
    taken from a (numpy) evaluation item."""
    keys = ("labels", "annotated", "objects", "video", "dataset", "given_frames")
    return {("gt" if k == "labels" else k): item[k] for k in keys}

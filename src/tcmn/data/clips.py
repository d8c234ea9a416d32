"""Main-stage training clips from prepared videos, the epoch sampler, and whole-video items.

A training sample (both stages; :func:`to_sample` builds it) is a dict:

* ``frames``: float32 ``[T, 3, H, W]``, ImageNet-normalised RGB;
* ``masks``: float32 ``[T, O, H, W]`` binary, one channel per selected object (``O`` =
  ``max_objects``; unused channels all zero);
* ``labels``: int64 ``[T, H, W]``: 0 background, ``k`` the k-th selected object (1..O);
* ``valid``: bool ``[O]``: which object channels are real;
* ``info``: ``{"dataset": str, "video": str, "frames": list[int], "stage": str}``.

PyTorch's default collate batches these into ``[B, T, ...]``.

Randomness: every draw of sample ``i`` in epoch ``e`` comes from
``numpy.random.default_rng([seed, e, i])`` (albumentations is seeded from it too), so a seed
reproduces the same batches whatever the number of workers. :class:`EpochSampler` yields global
sample ids ``e * n + i`` that carry the epoch into the workers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from tcmn.data.layout import PreparedDataset
from tcmn.data.transforms import (
    apply_per_frame,
    apply_to_clip,
    as_size,
    augment_config,
    build_compose,
    choose_crop,
    fit_size,
    normalize,
    rescale_clip,
    resize_frames,
    seed_compose,
)
from tcmn.errors import TCMNError

log = logging.getLogger(__name__)

#: One training source: a prepared dataset, the names of its videos to use, a sampling weight.
Source = tuple[PreparedDataset, Sequence[str], float]


# --------------------------------------------------------------------------- sample format
def to_sample(
    frames: np.ndarray,
    labels: np.ndarray,
    n_objects: int,
    max_objects: int,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Pack an augmented clip into the training sample dict (see the module docstring).

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB.
        labels: uint8 ``[T, H, W]``, values in ``0..n_objects``.
        n_objects: number of real objects (``<= max_objects``).
        max_objects: ``O``, the number of object channels.
        info: the ``info`` entry.
    """
    lab = torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64)
    ks = torch.arange(1, max_objects + 1, dtype=torch.int64).view(1, -1, 1, 1)
    masks = (lab.unsqueeze(1) == ks).to(torch.float32)
    valid = torch.zeros(max_objects, dtype=torch.bool)
    valid[:n_objects] = True
    return {
        "frames": normalize(frames),
        "masks": masks,
        "labels": lab,
        "valid": valid,
        "info": info,
    }


def select_objects(present: np.ndarray, max_objects: int, rng: np.random.Generator) -> np.ndarray:
    """A random non-empty subset (random size 1..max_objects, random order) of ``present`` ids."""
    k = int(rng.integers(1, min(max_objects, len(present)) + 1))
    return rng.choice(np.asarray(present), size=k, replace=False)


def remap_labels(labels: np.ndarray, chosen: Sequence[int]) -> np.ndarray:
    """Map ``chosen[j]`` to ``j + 1`` and every other label to 0 (uint8 ``[..., H, W]``)."""
    lut = np.zeros(256, np.uint8)
    for j, k in enumerate(chosen):
        lut[int(k)] = j + 1
    return lut[labels]


def sample_gaps(
    n_annotated: int, clip_len: int, max_skip: int, rng: np.random.Generator, tries: int = 10
) -> np.ndarray:
    """Gaps between consecutive clip frames, in positions of the annotated-frame list.

    Each gap is ``1 + s`` with ``s`` uniform in ``0..max_skip`` (``s`` frames skipped). Draws
    whose total span does not fit in ``n_annotated`` frames are redrawn; after ``tries`` the
    skip range is narrowed to what fits. Returns int ``[clip_len - 1]`` with
    ``sum <= n_annotated - 1``.
    """
    m = clip_len - 1
    if m <= 0:
        return np.zeros(0, np.int64)
    for _ in range(tries):
        g = 1 + rng.integers(0, max_skip + 1, size=m)
        if g.sum() <= n_annotated - 1:
            return g
    cap = max(1, min(max_skip + 1, (n_annotated - 1) // m))
    return 1 + rng.integers(0, cap, size=m)


def augment_clip(
    frames: np.ndarray,
    labels: np.ndarray,
    n_objects: int,
    rng: np.random.Generator,
    crop: tuple[int, int],
    aug: dict[str, Any],
    spatial: A.Compose,
    color: A.Compose,
    per_frame: A.Compose | None = None,
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Augment a clip: zoom, per-frame warp, clip-wide spatial draw, crop keeping objects, colour.

    Steps: resize to ``aug["long_side"]`` times a random ``aug["zoom"]`` (at least covering
    ``crop``); ``per_frame`` (pseudo-clip deformation: an independent draw per frame, applied to
    the frame and its labels alike); ``spatial`` (ONE draw for the whole clip); upscale again if
    needed; a ``crop`` window keeping the first frame's objects (:func:`choose_crop`); ``color``
    (an independent draw per frame, images only).

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        labels: uint8 ``[T, H, W]`` with values ``0..n_objects``.
        n_objects: number of tracked objects.
        rng: the sample's generator (seeds the albumentations pipelines too).
    Returns:
        ``(frames [T, ch, cw, 3] uint8, labels [T, ch, cw] uint8, n_objects)``, objects lost from
        the first frame dropped and the rest renumbered 1..n; None when none survives.
    """
    zoom = float(rng.uniform(*aug["zoom"]))
    size = fit_size(frames.shape[1:3], crop, aug["long_side"], zoom)
    frames, labels = rescale_clip(frames, labels, size)
    if per_frame is not None and per_frame.transforms:
        seed_compose(per_frame, rng)
        warped = [per_frame(image=f, mask=m) for f, m in zip(frames, labels)]
        frames = np.stack([w["image"] for w in warped])
        labels = np.stack([w["mask"] for w in warped])
    if spatial.transforms:
        seed_compose(spatial, rng)
        frames, labels = apply_to_clip(spatial, frames, labels)
        frames, labels = rescale_clip(frames, labels, fit_size(frames.shape[1:3], crop))
    ch, cw = crop
    y, x = choose_crop(
        labels[0],
        range(1, n_objects + 1),
        crop,
        rng,
        int(aug["min_object_pixels"]),
        int(aug["crop_tries"]),
        float(aug["min_object_fraction"]),
    )
    frames = frames[:, y : y + ch, x : x + cw]
    labels = labels[:, y : y + ch, x : x + cw]
    kept = [k for k in range(1, n_objects + 1) if np.any(labels[0] == k)]
    if not kept:
        return None
    if len(kept) < n_objects:
        labels = remap_labels(labels, kept)
    seed_compose(color, rng)
    frames = apply_per_frame(color, np.ascontiguousarray(frames))
    return np.ascontiguousarray(frames), np.ascontiguousarray(labels), len(kept)


# --------------------------------------------------------------------------- main-stage clips
class VideoClipDataset(Dataset):
    """Random clips of ``clip_len`` temporally ordered annotated frames (main training stage).

    Args:
        datasets: ``[(PreparedDataset, video names, weight)]``; a dataset is picked by weight,
            then a video uniformly.
        clip_len: frames per clip (``T``; the paper uses 3).
        max_skip: at most this many annotated frames are skipped between consecutive clip frames.
        max_objects: ``O``; up to this many objects present in the first frame are tracked
            (random subset, random size); the others become background.
        crop_size: ``(H, W)`` (or an int) of the training crop.
        samples: clips per epoch (``len(self)``).
        seed: base seed; sample ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])``.
        augment: see :func:`tcmn.data.transforms.augment_config` (None = defaults,
            False = none).

    ``dataset[e * samples + i]`` is sample ``i`` of epoch ``e`` (see :class:`EpochSampler`).
    Each item is a sample dict (module docstring) with ``info["stage"] == "main"``.
    """

    stage = "main"

    def __init__(
        self,
        datasets: Sequence[Source],
        clip_len: int = 3,
        max_skip: int = 5,
        max_objects: int = 2,
        crop_size: int | Sequence[int] = (384, 384),
        samples: int = 1000,
        seed: int = 0,
        augment: Any = None,
    ):
        if clip_len < 1 or max_skip < 0 or max_objects < 1 or samples < 1:
            raise TCMNError(
                f"clip_len={clip_len}, max_skip={max_skip}, max_objects={max_objects}, "
                f"samples={samples}: need clip_len >= 1, max_skip >= 0, max_objects >= 1 and "
                "samples >= 1; fix the data config."
            )
        self.clip_len = int(clip_len)
        self.max_skip = int(max_skip)
        self.max_objects = int(max_objects)
        self.crop = as_size(crop_size)
        self.samples = int(samples)
        self.seed = int(seed)
        self.aug = augment_config(augment)
        self.spatial = build_compose(self.aug["spatial"], "augment.spatial")
        self.color = build_compose(self.aug["color"], "augment.color")
        self.sources: list[tuple[PreparedDataset, list[str]]] = []
        weights = []
        for ds, videos, weight in datasets:
            missing = [v for v in videos if v not in ds.videos]
            if missing:
                raise TCMNError(
                    f"{ds.root}: video '{missing[0]}' is asked for training but is not in its "
                    "meta.json; rewrite the splits (tcmn-prepare) or fix the video list."
                )
            usable = [v for v in videos if len(ds.videos[v].annotated) >= self.clip_len]
            skipped = sorted(set(videos) - set(usable))
            if skipped:
                log.info(
                    "%s: skipping %d video(s) with fewer than %d annotated frames: %s",
                    ds.name,
                    len(skipped),
                    self.clip_len,
                    ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""),
                )
            if usable and float(weight) > 0:
                self.sources.append((ds, usable))
                weights.append(float(weight))
        if not self.sources:
            roots = ", ".join(str(ds.root) for ds, _, _ in datasets) or "(no dataset)"
            raise TCMNError(
                f"{roots}: no training video has at least {self.clip_len} annotated frames "
                "(or every weight is 0); lower clip_len or add annotated videos."
            )
        self.weights = np.asarray(weights) / np.sum(weights)
        self._presence: dict[tuple[int, str], list[np.ndarray]] = {}

    def __len__(self) -> int:
        return self.samples

    def _present_ids(self, src: int, video: str) -> list[np.ndarray]:
        """Object ids present in each annotated frame of ``video`` (memoised per process)."""
        key = (src, video)
        if key not in self._presence:
            ds = self.sources[src][0]
            labels, _ = ds.masks(video)
            out = []
            for t in ds.videos[video].annotated_indices:
                counts = np.bincount(np.asarray(labels[t]).ravel(), minlength=256)
                out.append(np.flatnonzero(counts[1:]) + 1)
            self._presence[key] = out
        return self._presence[key]

    def draw_frames(
        self, rng: np.random.Generator
    ) -> tuple[int, str, list[int], np.ndarray] | None:
        """Draw ``(source, video, frame indices, ids present in the first frame)``, or None.

        None when the drawn video has no start position whose first frame shows an object.
        """
        src = int(rng.choice(len(self.sources), p=self.weights))
        ds, videos = self.sources[src]
        video = videos[int(rng.integers(len(videos)))]
        annotated = ds.videos[video].annotated_indices
        n = len(annotated)
        gaps = sample_gaps(n, self.clip_len, self.max_skip, rng)
        span = int(gaps.sum())
        present = self._present_ids(src, video)
        starts = [p for p in range(n - span) if len(present[p])]
        if not starts:
            return None
        p0 = starts[int(rng.integers(len(starts)))]
        positions = p0 + np.concatenate([[0], np.cumsum(gaps)]).astype(int)
        return src, video, [annotated[p] for p in positions], present[p0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, i = divmod(int(index), self.samples)
        rng = np.random.default_rng([self.seed, epoch, i])
        for _ in range(int(self.aug["max_tries"])):
            drawn = self.draw_frames(rng)
            if drawn is None:
                continue
            src, video, idx, present = drawn
            ds = self.sources[src][0]
            chosen = select_objects(present, self.max_objects, rng)
            frames = np.asarray(ds.frames(video)[idx])
            labels = remap_labels(np.asarray(ds.masks(video)[0][idx]), chosen)
            out = augment_clip(
                frames, labels, len(chosen), rng, self.crop, self.aug, self.spatial, self.color
            )
            if out is None:
                continue
            frames, labels, n_obj = out
            info = {"dataset": ds.name, "video": video, "frames": idx, "stage": self.stage}
            return to_sample(frames, labels, n_obj, self.max_objects, info)
        names = ", ".join(str(ds.root) for ds, _ in self.sources)
        raise TCMNError(
            f"{names}: no clip whose first frame shows an object was found in "
            f"{self.aug['max_tries']} draws (sample {index}); check that the masks are not empty "
            "or raise augment.max_tries."
        )


# --------------------------------------------------------------------------- sampler
class EpochSampler(DistributedSampler):
    """Yields global sample ids ``epoch * n + i`` (``i`` in ``0..n-1``), sharded by DDP rank.

    Args:
        n: samples per epoch (all ranks together).
        seed: seeds the per-epoch permutation (``default_rng([seed, epoch])``).
        shuffle: permute ``i`` each epoch (otherwise in order).
        num_replicas, rank: DDP world size and rank; default: ``torch.distributed`` when
            initialised (resolved at iteration time), else 1 and 0.

    Each rank yields ``ceil(n / world)`` ids (the permutation is padded by wrapping, as
    ``DistributedSampler`` does). ``set_epoch`` is called by Lightning every epoch. It subclasses
    ``DistributedSampler`` only so that Lightning does not wrap it in another distributed sampler
    (``DistributedSampler.__init__``, which needs an initialised process group, is not called).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if n < 1:
            raise TCMNError(f"EpochSampler: n={n}; need at least one sample per epoch.")
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self._num_replicas = num_replicas
        self._rank = rank
        self.epoch = 0
        self.drop_last = False
        self.dataset = None

    @property
    def num_replicas(self) -> int:
        if self._num_replicas is not None:
            return int(self._num_replicas)
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @num_replicas.setter
    def num_replicas(self, value: int) -> None:
        self._num_replicas = value

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return int(self._rank)
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @rank.setter
    def rank(self, value: int) -> None:
        self._rank = value

    @property
    def num_samples(self) -> int:
        return math.ceil(self.n / self.num_replicas)

    @property
    def total_size(self) -> int:
        return self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose ids are yielded next."""
        self.epoch = int(epoch)

    def __iter__(self):
        if self.shuffle:
            ids = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            ids = np.arange(self.n)
        total = self.total_size
        if total > self.n:
            ids = np.resize(ids, total)  # wraps around
        base = self.epoch * self.n
        return iter([base + int(j) for j in ids[self.rank : total : self.num_replicas]])

    def __len__(self) -> int:
        return self.num_samples


# --------------------------------------------------------------------------- whole videos
def given_frames(labels: np.ndarray, annotated: np.ndarray) -> dict[int, int]:
    """Object id -> index of the first annotated frame where it is present.

    Args:
        labels: uint8 ``[T, H, W]``; annotated: bool ``[T]``.
    """
    out: dict[int, int] = {}
    for t in np.flatnonzero(annotated):
        counts = np.bincount(np.asarray(labels[t]).ravel(), minlength=256)
        for k in np.flatnonzero(counts[1:]) + 1:
            out.setdefault(int(k), int(t))
    return dict(sorted(out.items()))


class WholeVideoDataset(Dataset):
    """Whole videos for validation / test (one video per item, batch size 1).

    Args:
        items: ``[(PreparedDataset, video name, global index)]``; the index is the video's
            position in the data module's global video list (metric vocabularies).
        eval_size: long side of the frames in pixels (area interpolation); None = native.

    Each item is a dict:
        ``frames`` uint8 ``[T, h, w, 3]`` RGB at the evaluation size; ``labels`` uint8
        ``[T, H, W]`` at native size with the original object ids; ``annotated`` bool ``[T]``;
        ``objects`` {id: class name} for the objects present in some annotated frame;
        ``given_frames`` {id: first annotated frame where the object is present};
        ``video`` str; ``dataset`` str; ``index`` int; ``stems`` the frames' file names
        without extension (``[T]`` str), which predictions written per frame reuse.
    """

    def __init__(
        self, items: Sequence[tuple[PreparedDataset, str, int]], eval_size: int | None = None
    ):
        self.items = list(items)
        self.eval_size = None if eval_size is None else int(eval_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ds, video, index = self.items[i]
        meta = ds.videos[video]
        labels, annotated = ds.masks(video)
        labels = np.array(labels, copy=True)
        given = given_frames(labels, annotated)
        return {
            "frames": torch.from_numpy(resize_frames(ds.frames(video), self.eval_size)),
            "labels": torch.from_numpy(labels),
            "annotated": torch.from_numpy(annotated.copy()),
            "objects": {k: meta.objects.get(k, "object") for k in given},
            "given_frames": given,
            "video": video,
            "dataset": ds.name,
            "index": int(index),
            "stems": meta.stems,
        }


def collate_single(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate for whole-video loaders (batch size 1): returns the single item unchanged."""
    if len(batch) != 1:
        raise TCMNError(
            f"whole-video loaders take batch_size=1, got a batch of {len(batch)}; "
            "do not override the evaluation batch size."
        )
    return batch[0]

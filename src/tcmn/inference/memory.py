"""The memory of a video being segmented: the keys and values of its memory frames and the
policy that decides which frames stay (:class:`MemoryBank`, :data:`POLICIES`).

The paper keeps every memory frame (``unbounded``); ``fifo`` and ``dynamic`` bound the memory for
long videos (``dynamic`` is the paper's future work, a selection of memory frames by use). To add a
policy: add its name to :data:`POLICIES` and its eviction rule to :meth:`MemoryBank._evict`.
The readout over the memory is the network's (:func:`tcmn.models.memory.readout`).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The memory retention policies (the one registry: the propagator, the config checks and the
#: benchmark read it from here). name -> (bounded, what it keeps).
POLICIES: dict[str, tuple[bool, str]] = {
    "unbounded": (False, "every memory frame (the paper)"),
    "fifo": (True, "the annotated frames and the most recent others, up to the capacity"),
    "dynamic": (True, "the annotated frames and the others the readout used most"),
}


def check_policy(
    policy: str, capacity_frames: int | None = None, capacity_bytes: int | None = None
) -> None:
    """Raise ``ValueError`` (one sentence) for an unknown policy or a bad capacity.

    Args:
        policy: a name of :data:`POLICIES`.
        capacity_frames / capacity_bytes: the capacity of a bounded policy (at least one of them
            for ``fifo`` / ``dynamic``); each, when given, a positive whole number.
    """
    if policy not in POLICIES:
        raise ValueError(
            f"memory policy '{policy}' is not known; choose one of {sorted(POLICIES)}."
        )
    for name, v in (("capacity_frames", capacity_frames), ("capacity_bytes", capacity_bytes)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(
                f"{name}={v!r} is not a positive whole number; give 1 or more, or null."
            )
    if POLICIES[policy][0] and capacity_frames is None and capacity_bytes is None:
        raise ValueError(f"memory policy '{policy}' needs capacity_frames or capacity_bytes.")


class MemoryBank:
    """Keys and values of the memory frames of one video, with a retention policy.

    Frames are kept in insertion order in preallocated buffers (grown geometrically), so reading
    the memory is a slice, not a concatenation per frame.

    Policies:
        - ``unbounded`` (the paper): every frame added is kept.
        - ``fifo``: permanent frames (the annotated ones) are kept; of the others only the last
          ``capacity`` - n_permanent are kept.
        - ``dynamic``: permanent frames are kept; when full, the non-permanent frame the readout
          used least is evicted. A frame's usage is an exponential moving average (``usage_decay``)
          over reads of the softmax weight it received (summed over its positions and the query
          positions); a frame not yet read is not evicted while a read one can be (the paper's
          future work: "a dynamic selection strategy for memory frames").

    The capacity is ``capacity_frames`` frames and/or ``capacity_bytes`` bytes of keys + values
    (whichever is smaller); ``None`` for both with a bounded policy is an error.

    Shapes: keys ``[B, Ck, T, h, w]``, values ``[B, O, Cv, T, h, w]`` (:attr:`keys`,
    :attr:`values`); :meth:`add` takes one frame ``key [B, Ck, h, w]``, ``value [B, O, Cv, h, w]``.
    """

    def __init__(
        self,
        policy: str = "unbounded",
        capacity_frames: int | None = None,
        capacity_bytes: int | None = None,
        usage_decay: float = 0.9,
    ):
        check_policy(policy, capacity_frames, capacity_bytes)
        self.policy = policy
        self.capacity_frames = capacity_frames
        self.capacity_bytes = capacity_bytes
        self.usage_decay = usage_decay
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self.size = 0
        self.frame_ids: list[int] = []
        self.insertions: list[int] = []  # insertion counter of each stored frame (increasing)
        self.object_start: list[int] = []  # per object slot: first insertion it is valid from
        self._counter = 0
        self.permanent: list[bool] = []
        self.usage: list[float] = []
        self.reads: list[int] = []
        self.evicted = 0

    # ----------------------------------------------------------------- state
    @property
    def keys(self) -> Tensor:
        return self._k[:, :, : self.size]

    @property
    def values(self) -> Tensor:
        return self._v[:, :, :, : self.size]

    @property
    def n_objects(self) -> int:
        return 0 if self._v is None else self._v.shape[1]

    def frame_bytes(self) -> int:
        """Bytes of keys + values one memory frame takes."""
        if self._k is None:
            return 0
        k, v = self._k[:, :, 0], self._v[:, :, :, 0]
        return k.numel() * k.element_size() + v.numel() * v.element_size()

    def nbytes(self) -> int:
        return self.size * self.frame_bytes()

    def capacity(self) -> int | None:
        """Capacity in frames (None: unbounded)."""
        if not POLICIES[self.policy][0]:
            return None
        caps = []
        if self.capacity_frames is not None:
            caps.append(int(self.capacity_frames))
        if self.capacity_bytes is not None and self.frame_bytes() > 0:
            caps.append(int(self.capacity_bytes // self.frame_bytes()))
        return max(1, min(caps)) if caps else None

    # ----------------------------------------------------------------- updates
    def _ensure(self, key: Tensor, value: Tensor) -> None:
        need = self.size + 1
        if self._k is None:
            cap = max(8, (self.capacity_frames or 0) + 1)
            b, ck, h, w = key.shape
            self._k = key.new_empty(b, ck, cap, h, w)
            self._v = value.new_empty(*value.shape[:3], cap, h, w)
        elif self._k.shape[2] < need:
            grow = max(need, 2 * self._k.shape[2])
            k, v = self._k, self._v
            self._k = k.new_empty(*k.shape[:2], grow, *k.shape[3:])
            self._v = v.new_empty(*v.shape[:3], grow, *v.shape[4:])
            self._k[:, :, : self.size] = k[:, :, : self.size]
            self._v[:, :, :, : self.size] = v[:, :, :, : self.size]

    def add_objects(self, n: int) -> None:
        """Grow the object dimension by ``n`` slots, valid from the next frame added on.

        Older frames get zero values for them and are excluded from their readout
        (:meth:`object_groups`): a frame stored before an object was given says nothing of it.
        """
        if n <= 0:
            return
        self.object_start.extend([self._counter] * n)
        if self._v is None:
            return
        v = self._v
        pad = v.new_zeros(v.shape[0], n, *v.shape[2:])
        self._v = torch.cat([v, pad], dim=1)

    def add(self, key: Tensor, value: Tensor, frame_id: int, permanent: bool = False) -> None:
        """Add one memory frame (evicting first when a bounded policy is full)."""
        if self._v is not None and value.shape[1] > self.n_objects:
            self.add_objects(value.shape[1] - self.n_objects)
        if value.shape[1] > len(self.object_start):
            self.object_start.extend([self._counter] * (value.shape[1] - len(self.object_start)))
        key = key.to(self._k.dtype) if self._k is not None else key
        value = value.to(self._v.dtype) if self._v is not None else value
        self._ensure(key, value)
        cap = self.capacity()
        while cap is not None and self.size >= cap:
            if not self._evict():
                break
        i = self.size
        self._k[:, :, i] = key
        self._v[:, :, :, i] = value
        self.size += 1
        self.frame_ids.append(frame_id)
        self.insertions.append(self._counter)
        self._counter += 1
        self.permanent.append(permanent)
        self.usage.append(0.0)
        self.reads.append(0)

    def _evict(self) -> bool:
        candidates = [i for i in range(self.size) if not self.permanent[i]]
        if not candidates:
            return False
        if self.policy == "fifo":
            victim = candidates[0]
        else:  # dynamic: least used among the frames read at least once, oldest first among ties
            read = [i for i in candidates if self.reads[i] > 0] or candidates
            victim = min(read, key=lambda i: (self.usage[i], i))
        self._remove(victim)
        self.evicted += 1
        return True

    def _remove(self, i: int) -> None:
        n = self.size
        if i < n - 1:
            self._k[:, :, i : n - 1] = self._k[:, :, i + 1 : n].clone()
            self._v[:, :, :, i : n - 1] = self._v[:, :, :, i + 1 : n].clone()
        self.size -= 1
        for lst in (self.frame_ids, self.insertions, self.permanent, self.usage, self.reads):
            del lst[i]

    def object_groups(self) -> list[tuple[int, list[int]]]:
        """Objects grouped by the memory frames valid for them: ``[(first position, slots)]``.

        Frames are stored in insertion order, so the frames valid for an object are a suffix
        of the memory starting at the first frame inserted since the object was given.
        """
        groups: dict[int, list[int]] = {}
        for slot, start in enumerate(self.object_start[: self.n_objects]):
            pos = next((j for j, c in enumerate(self.insertions) if c >= start), self.size)
            groups.setdefault(pos, []).append(slot)
        return sorted(groups.items())

    def record_usage(self, usage: Tensor, start: int = 0) -> None:
        """Accumulate readout usage ``[B, T'*h*w]`` (from :func:`readout`) of the memory frames
        ``start..start+T'-1``."""
        n = self.size - start
        per_frame = usage.float().view(usage.shape[0], n, -1).sum((0, 2)).tolist()
        d = self.usage_decay
        for j, u in enumerate(per_frame):
            i = start + j
            self.usage[i] = u if self.reads[i] == 0 else d * self.usage[i] + (1 - d) * u
            self.reads[i] += 1

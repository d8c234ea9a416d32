"""Memory readout (paper section 2.2): negative squared L2 affinity, softmax, values @ weights.

The affinity between memory position ``i`` and query position ``j`` is
``-||k_i - q_j||^2 / sqrt(d_k)``. The query's own norm ``||q_j||^2`` is constant over ``i`` and
cancels in the softmax over memory positions, so it is computed as
``(2 k_i . q_j - ||k_i||^2) / sqrt(d_k)``.

The readout is computed in chunks of query positions so that the affinity matrix held at once is
``N x chunk`` instead of ``N x M`` (N memory positions, M query positions): peak memory is bounded
whatever the number of memory frames. Memory frames are stacked into one tensor: no Python loop over
them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Largest affinity block held at once when ``chunk_size`` is None (elements, about 128 MiB in fp32).
DEFAULT_AFFINITY_BUDGET = 32 * 2**20


def affinity(mem_key: Tensor, query_key: Tensor, mem_sq: Tensor | None = None) -> Tensor:
    """Scaled negative squared L2 affinity, query norm dropped.

    Shapes: ``mem_key [B, Ck, N], query_key [B, Ck, M], mem_sq [B, N] | None -> [B, N, M]``.
    """
    ck = mem_key.shape[1]
    if mem_sq is None:
        mem_sq = mem_key.pow(2).sum(1)
    a = 2 * torch.bmm(mem_key.transpose(1, 2), query_key) - mem_sq.unsqueeze(2)
    return a / math.sqrt(ck)


def _softmax_topk(a: Tensor, top_k: int | None) -> Tensor:
    """Softmax over memory positions (dim 1), optionally keeping only the top-k per query position."""
    a = a.float()
    if top_k is None or top_k >= a.shape[1]:
        return torch.softmax(a, dim=1)
    vals, idx = torch.topk(a, k=top_k, dim=1)
    w = torch.softmax(vals, dim=1)
    return torch.zeros_like(a).scatter_(1, idx, w)


def readout(
    mem_key: Tensor,
    mem_value: Tensor,
    query_key: Tensor,
    top_k: int | None = None,
    chunk_size: int | None = None,
    return_usage: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Read the memory for every query position.

    Args:
        mem_key: ``[B, Ck, N]`` keys of all memory positions (frames x h x w flattened).
        mem_value: ``[B, Cv, N]`` values (several objects may be stacked along Cv).
        query_key: ``[B, Ck, M]`` keys of the query frame.
        top_k: keep only the k largest affinities per query position (None: all).
        chunk_size: query positions per chunk (None: chosen so that one affinity block stays
            under :data:`DEFAULT_AFFINITY_BUDGET` elements; 0 or >= M: no chunking).
        return_usage: also return how much each memory position was read, summed over query
            positions (``[B, N]`` float32; used by the dynamic memory policy).
    Returns:
        ``[B, Cv, M]`` readout in ``mem_value``'s dtype (and the usage when asked).
    """
    b, _, n = mem_key.shape
    m = query_key.shape[2]
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_AFFINITY_BUDGET // max(1, b * n))
    if chunk_size <= 0 or chunk_size >= m:
        chunk_size = m
    mem_sq = mem_key.float().pow(2).sum(1).to(mem_key.dtype)
    chunks = []
    usage = torch.zeros(b, n, device=mem_key.device, dtype=torch.float32) if return_usage else None
    for s in range(0, m, chunk_size):
        e = min(m, s + chunk_size)
        w = _softmax_topk(affinity(mem_key, query_key[:, :, s:e], mem_sq), top_k)
        chunks.append(torch.bmm(mem_value, w.to(mem_value.dtype)))
        if usage is not None:
            usage += w.sum(2)
    out = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)
    if return_usage:
        return out, usage
    return out


POLICIES = ("unbounded", "fifo", "dynamic")


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
        if policy not in POLICIES:
            raise ValueError(f"memory policy '{policy}' is not known; choose one of {POLICIES}.")
        if policy != "unbounded" and capacity_frames is None and capacity_bytes is None:
            raise ValueError(f"memory policy '{policy}' needs capacity_frames or capacity_bytes.")
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
        if self.policy == "unbounded":
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

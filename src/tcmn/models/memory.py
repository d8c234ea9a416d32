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

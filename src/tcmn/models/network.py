"""The Temporal Contrastive Memory Network as a plain ``nn.Module`` (tensors in, tensors out).

``TCMN()`` with no arguments builds the paper's model: ResNet-50 query encoder (key 64,
query feature 512), ResNet-18 value encoder fused to a 512-channel value, and the decoder.
The three steps of the method are separate methods so that training, streaming inference and
benchmarks share them:

- :meth:`TCMN.encode_key`: frame -> key, query feature and skip features;
- :meth:`TCMN.encode_value`: frame + object masks -> one value per object;
- :meth:`TCMN.segment`: query features + memory -> logits over background and objects.

:meth:`TCMN.forward` runs the training clip of the paper (frame 1 with its mask into memory,
every later frame segmented from the memory of the previous ones with its *predicted* mask
encoded as a value) and returns what the losses need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tcmn.models.decoder import Decoder, aggregate
from tcmn.models.encoders import QueryEncoder, QueryFeatures, ValueEncoder
from tcmn.models.memory import readout

STRIDE = 16


def pad_divisible(x: Tensor, d: int = STRIDE) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad the last two dims of ``x`` (reflect where possible) to multiples of ``d``.

    Returns the padded tensor and ``pad = (left, right, top, bottom)`` for :func:`unpad`.
    The padding is split evenly between both sides.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % d, (-w) % d
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph == 0 and pw == 0:
        return x, pad
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    shape = x.shape
    y = F.pad(x.reshape(-1, *shape[-3:]) if x.dim() != 4 else x, pad, mode=mode)
    return y.reshape(*shape[:-2], *y.shape[-2:]), pad


def unpad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_divisible` on the last two dims."""
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


@dataclass
class ClipOutput:
    """Result of :meth:`TCMN.forward` on a clip of T frames with O object slots.

    Attributes:
        logits: ``[B, T-1, O+1, H, W]`` aggregated logits (background first) of frames 2..T.
        values: ``[B, T', O, value_dim, h, w]`` values of frames 1..T' (T' = T when the last
            frame's value was encoded for the temporal contrastive loss, else T-1).
        tc_values: the same values with some inputs detached (only with ``tc_detach_query`` or
            ``tc_detach_masks``; same shape), for a ``L_tc`` whose gradient stops there. Their
            forward value equals ``values``.
    """

    logits: Tensor
    values: Tensor
    tc_values: Tensor | None = None


class TCMN(nn.Module):
    """Temporal Contrastive Memory Network.

    Args:
        query_backbone / value_backbone: backbone names (``resnet50``/``resnet18`` in the paper;
            ``resnet18``, ``resnet34``, ``mobilenet_v2`` for small models).
        key_dim, qfeat_dim, value_dim: channel sizes of key, query feature and value.
        decoder_dims: decoder widths at 1/16, 1/8 and 1/4.
        head_kernel: kernel of the key / query-feature heads (3 in the paper).
        skip_kernel: kernel of the decoder's skip projections.
        pretrained: ``None`` or ``"imagenet"`` for both backbones.
        query_weights / value_weights: local backbone state-dict files.
        extra_init: initialisation of the value encoder's mask input channels.
    """

    def __init__(
        self,
        query_backbone: str = "resnet50",
        value_backbone: str = "resnet18",
        key_dim: int = 64,
        qfeat_dim: int = 512,
        value_dim: int = 512,
        decoder_dims: Sequence[int] = (256, 128, 64),
        head_kernel: int = 3,
        skip_kernel: int = 1,
        pretrained: str | None = None,
        query_weights: str | None = None,
        value_weights: str | None = None,
        extra_init: str = "kaiming",
    ):
        super().__init__()
        self.key_encoder = QueryEncoder(
            query_backbone, key_dim, qfeat_dim, head_kernel, pretrained, query_weights
        )
        c4, c8, c16 = self.key_encoder.channels
        self.value_encoder = ValueEncoder(
            value_backbone, c16, value_dim, pretrained, value_weights, extra_init
        )
        self.decoder = Decoder(value_dim, qfeat_dim, (c8, c4), tuple(decoder_dims), skip_kernel)
        self.key_dim, self.value_dim = key_dim, value_dim
        self.channels_last = False

    def to_channels_last(self, enabled: bool = True) -> TCMN:
        """Store conv weights channels-last and feed frames channels-last (faster on CPU and GPU)."""
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def _fmt(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ----------------------------------------------------------------------------- steps
    def encode_key(self, frames: Tensor) -> QueryFeatures:
        """``frames [B, 3, H, W]`` (ImageNet-normalised, H and W multiples of 16) -> QueryFeatures."""
        return self.key_encoder(self._fmt(frames))

    def encode_value(
        self, frames: Tensor, f16: Tensor, masks: Tensor, others: Tensor | None = None
    ) -> Tensor:
        """Values of O objects in one frame.

        ``frames [B, 3, H, W], f16 [B, C16, h, w] (the frame's QueryFeatures.f16), masks
        [B, O, H, W] in [0, 1], others [B, O, H, W] | None -> values [B, O, value_dim, h, w]``.
        """
        return self.value_encoder(self._fmt(frames), f16, masks, others)

    def read_memory(
        self,
        query_key: Tensor,
        mem_keys: Tensor,
        mem_values: Tensor,
        top_k: int | None = None,
        chunk_size: int | None = None,
        return_usage: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Memory readout for every object.

        ``query_key [B, Ck, h, w], mem_keys [B, Ck, T, h, w], mem_values [B, O, Cv, T, h, w]
        -> [B, O, Cv, h, w]`` (and the usage ``[B, T*h*w]`` of each memory position when asked).
        The affinity is computed once and shared by the objects.
        """
        b, ck, h, w = query_key.shape
        o, cv = mem_values.shape[1:3]
        r = readout(
            mem_keys.flatten(2),
            mem_values.flatten(3).flatten(1, 2),
            query_key.flatten(2),
            top_k=top_k,
            chunk_size=chunk_size,
            return_usage=return_usage,
        )
        if return_usage:
            return r[0].view(b, o, cv, h, w), r[1]
        return r.view(b, o, cv, h, w)

    def decode(self, qf: QueryFeatures, memory_readout: Tensor) -> Tensor:
        """``QueryFeatures (batch B), readout [B, O, Cv, h, w] -> logits [B, O, H, W]`` per object."""
        b, o = memory_readout.shape[:2]

        def rep(x: Tensor) -> Tensor:
            return x.unsqueeze(1).expand(-1, o, *x.shape[1:]).flatten(0, 1)

        logits = self.decoder(memory_readout.flatten(0, 1), rep(qf.qfeat), rep(qf.f8), rep(qf.f4))
        return logits.view(b, o, *logits.shape[-2:])

    def segment(
        self,
        qf: QueryFeatures,
        mem_keys: Tensor,
        mem_values: Tensor,
        valid: Tensor | None = None,
        top_k: int | None = None,
        chunk_size: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Segment a query frame from memory.

        Args:
            qf: the query frame's features (batch B).
            mem_keys: ``[B, Ck, T, h, w]``; mem_values: ``[B, O, Cv, T, h, w]``.
            valid: ``[B, O]`` bool, object slots in use (None: all).
        Returns:
            ``(logits [B, O+1, H, W], prob [B, O+1, H, W])``: aggregated logits (float32) and their
            softmax over background + objects.
        """
        r = self.read_memory(qf.key, mem_keys, mem_values, top_k, chunk_size)
        logits = aggregate(torch.sigmoid(self.decode(qf, r).float()), valid)
        return logits, torch.softmax(logits, dim=1)

    # ----------------------------------------------------------------------------- training clip
    def forward(
        self,
        frames: Tensor,
        first_masks: Tensor,
        valid: Tensor | None = None,
        detach_masks: bool = False,
        last_value: bool = True,
        top_k: int | None = None,
        tc_detach_query: bool = False,
        tc_detach_masks: bool = False,
    ) -> ClipOutput:
        """Run one training clip.

        Frame 1 with its ground-truth masks goes into memory; frame t (t >= 2) is segmented from
        the memory of frames 1..t-1, and its *predicted* soft masks are encoded as its value
        (kept in the graph unless ``detach_masks``). With ``last_value`` the last frame's value
        is also encoded (the paper's L_tc needs v1, v2 and v3 of a 3-frame clip).

        Args:
            frames: ``[B, T, 3, H, W]`` normalised RGB, any H, W (padded internally).
            first_masks: ``[B, O, H, W]`` float masks of frame 1.
            valid: ``[B, O]`` bool object slots in use (None: all).
            tc_detach_query: also return ``tc_values``, fused with detached query features (the
                fusion layers run twice).
            tc_detach_masks: also return ``tc_values``, encoded from detached predicted masks
                (the value backbone runs twice on frames 2..T).
        Returns:
            :class:`ClipOutput` with logits at the input size.
        """
        b, t = frames.shape[:2]
        frames, pad = pad_divisible(frames)
        first_masks, _ = pad_divisible(first_masks)
        qfs = self.encode_key(frames.flatten(0, 1)).unflatten(b, t)
        keys, values, tc_values = [qfs[0].key], [], []

        tc_split = tc_detach_query or tc_detach_masks
        enc = self.value_encoder

        def add_value(i: int, masks: Tensor) -> None:
            frame, f16, o = self._fmt(frames[:, i]), qfs[i].f16, masks.shape[1]
            g16 = enc.mask_features(frame, masks)
            values.append(enc.fuse(g16, f16, o))
            if tc_split:
                if tc_detach_masks and masks.requires_grad:
                    g16 = enc.mask_features(frame, masks.detach())
                tc_values.append(enc.fuse(g16, f16.detach() if tc_detach_query else f16, o))

        add_value(0, first_masks)
        logits_out = []
        for i in range(1, t):
            mem_k = torch.stack(keys, dim=2)
            mem_v = torch.stack(values, dim=3)
            logits, prob = self.segment(qfs[i], mem_k, mem_v, valid, top_k)
            logits_out.append(unpad(logits, pad))
            if i < t - 1 or last_value:
                masks = prob[:, 1:]
                if detach_masks:
                    masks = masks.detach()
                keys.append(qfs[i].key)
                add_value(i, masks.to(frames.dtype))
        return ClipOutput(
            torch.stack(logits_out, dim=1),
            torch.stack(values, dim=1),
            torch.stack(tc_values, dim=1) if tc_split else None,
        )


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts of the whole model and of its parts (trainable and frozen)."""
    parts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    parts["total"] = sum(p.numel() for p in model.parameters())
    return parts

"""Query (key) encoder and value (mask) encoder of the TCMN (paper sections 2.1 and 2.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tcmn.models.backbones import Backbone
from tcmn.models.layers import ResBlock


@dataclass
class QueryFeatures:
    """What the query encoder gives for a batch of frames (``h, w = H/16, W/16``).

    Attributes:
        key: ``[B, key_dim, h, w]``, the key used to address the memory.
        qfeat: ``[B, qfeat_dim, h, w]``, the query feature concatenated with the readout.
        f16: ``[B, C16, h, w]``, backbone ``layer3`` features (reused by the value encoder).
        f8: ``[B, C8, H/8, W/8]`` and f4: ``[B, C4, H/4, W/4]``, decoder skip features.
    """

    key: Tensor
    qfeat: Tensor
    f16: Tensor
    f8: Tensor
    f4: Tensor

    def index(self, sl) -> QueryFeatures:
        """The features of a sub-batch (``sl``: an index or slice over the batch dimension)."""
        return QueryFeatures(*(t[sl] for t in (self.key, self.qfeat, self.f16, self.f8, self.f4)))

    def unflatten(self, b: int, t: int) -> list[QueryFeatures]:
        """Split features of ``b * t`` frames (batch-major) into ``t`` per-frame QueryFeatures of batch ``b``."""
        parts = [x.unflatten(0, (b, t)) for x in (self.key, self.qfeat, self.f16, self.f8, self.f4)]
        return [QueryFeatures(*(p[:, i] for p in parts)) for i in range(t)]


class QueryEncoder(nn.Module):
    """Image (query) encoder: a backbone to stride 16 and two heads.

    - key head: ``head_kernel`` conv ``C16 -> key_dim``, orthogonal init, zero bias;
    - query-feature head: ``head_kernel`` conv ``C16 -> qfeat_dim``.

    Shapes: ``forward(frames [B, 3, H, W]) -> QueryFeatures`` (H, W multiples of 16).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        key_dim: int = 64,
        qfeat_dim: int = 512,
        head_kernel: int = 3,
        pretrained: str | None = None,
        weights_path: str | None = None,
    ):
        super().__init__()
        self.backbone = Backbone(backbone, 3, pretrained=pretrained, weights_path=weights_path)
        c16 = self.backbone.channels[2]
        pad = head_kernel // 2
        self.key_proj = nn.Conv2d(c16, key_dim, head_kernel, padding=pad)
        nn.init.orthogonal_(self.key_proj.weight.data)
        nn.init.zeros_(self.key_proj.bias.data)
        self.qfeat_proj = nn.Conv2d(c16, qfeat_dim, head_kernel, padding=pad)

    @property
    def channels(self) -> tuple[int, int, int]:
        return self.backbone.channels

    def forward(self, frames: Tensor) -> QueryFeatures:
        f4, f8, f16 = self.backbone(frames)
        return QueryFeatures(self.key_proj(f16), self.qfeat_proj(f16), f16, f8, f4)


class ValueEncoder(nn.Module):
    """Mask (value) encoder: backbone on [RGB, object mask, other objects' mask], fused with the
    query encoder's ``layer3`` features of the same frame by two residual blocks.

    Shapes: ``forward(frames [B, 3, H, W], f16 [B, C16q, h, w], masks [B, O, H, W],
    others [B, O, H, W] | None) -> values [B, O, value_dim, h, w]``. When ``others`` is None it
    is the sum of the other objects' masks, clamped to [0, 1].
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        query_channels: int = 1024,
        value_dim: int = 512,
        pretrained: str | None = None,
        weights_path: str | None = None,
        extra_init: str = "kaiming",
    ):
        super().__init__()
        self.backbone = Backbone(
            backbone, 5, pretrained=pretrained, weights_path=weights_path, extra_init=extra_init
        )
        c16 = self.backbone.channels[2]
        self.fuse1 = ResBlock(c16 + query_channels, value_dim)
        self.fuse2 = ResBlock(value_dim, value_dim)

    @staticmethod
    def other_objects(masks: Tensor) -> Tensor:
        """``[B, O, H, W] -> [B, O, H, W]``: for each object, the union (clamped sum) of the others."""
        return (masks.sum(dim=1, keepdim=True) - masks).clamp(0, 1)

    def mask_features(self, frames: Tensor, masks: Tensor, others: Tensor | None = None) -> Tensor:
        """The backbone part: ``frames [B, 3, H, W], masks [B, O, H, W], others [B, O, H, W] | None
        -> g16 [B*O, C16v, h, w]``."""
        o = masks.shape[1]
        if others is None:
            others = self.other_objects(masks)
        x = torch.cat(
            [
                frames.unsqueeze(1).expand(-1, o, -1, -1, -1),
                masks.unsqueeze(2).to(frames.dtype),
                others.unsqueeze(2).to(frames.dtype),
            ],
            dim=2,
        ).flatten(0, 1)
        if frames.dim() == 4 and frames.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)[2]

    def fuse(self, g16: Tensor, f16: Tensor, o: int) -> Tensor:
        """The fusion part: ``g16 [B*O, C16v, h, w], f16 [B, C16q, h, w] -> values
        [B, O, value_dim, h, w]``."""
        q16 = f16.unsqueeze(1).expand(-1, o, -1, -1, -1).flatten(0, 1)
        v = self.fuse2(self.fuse1(torch.cat([g16, q16], dim=1)))
        return v.unflatten(0, (f16.shape[0], o))

    def forward(
        self, frames: Tensor, f16: Tensor, masks: Tensor, others: Tensor | None = None
    ) -> Tensor:
        return self.fuse(self.mask_features(frames, masks, others), f16, masks.shape[1])

"""Mask decoder (paper section 2.3) and soft aggregation of several objects."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tcmn.models.layers import ResBlock


class UpsampleBlock(nn.Module):
    """x2 upsampling fused with a skip feature: ``ResBlock(up(proj(x)) + skip_proj(skip))``.

    The coarse input is projected to ``out_ch`` before upsampling and the skip by a
    ``skip_kernel`` conv, so the 3x3 work at the finer scale runs at ``out_ch`` channels only.
    Shapes: ``x [B, in_ch, h, w], skip [B, skip_ch, 2h, 2w] -> [B, out_ch, 2h, 2w]``.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, skip_kernel: int = 1):
        super().__init__()
        self.proj = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)
        self.skip_proj = nn.Conv2d(skip_ch, out_ch, skip_kernel, padding=skip_kernel // 2)
        self.block = ResBlock(out_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(self.proj(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(x + self.skip_proj(skip))


class Decoder(nn.Module):
    """Readout + query feature -> one logit map per object.

    ``concat(readout, qfeat)`` -> ResBlock (``dims[0]``) at 1/16 -> x2 with the 1/8 skip
    (``dims[1]``) -> x2 with the 1/4 skip (``dims[2]``) -> 3x3 conv to 1 logit -> bilinear x4.

    Shapes: ``forward(readout [N, value_dim, h, w], qfeat [N, qfeat_dim, h, w],
    f8 [N, C8, 2h, 2w], f4 [N, C4, 4h, 4w]) -> logits [N, 1, 16h, 16w]``.
    """

    def __init__(
        self,
        value_dim: int = 512,
        qfeat_dim: int = 512,
        skip_channels: tuple[int, int] = (512, 256),
        dims: tuple[int, int, int] = (256, 128, 64),
        skip_kernel: int = 1,
    ):
        super().__init__()
        d16, d8, d4 = dims
        self.compress = ResBlock(value_dim + qfeat_dim, d16)
        self.up_16_8 = UpsampleBlock(d16, skip_channels[0], d8, skip_kernel)
        self.up_8_4 = UpsampleBlock(d8, skip_channels[1], d4, skip_kernel)
        self.pred = nn.Conv2d(d4, 1, 3, padding=1)

    def forward(self, readout: Tensor, qfeat: Tensor, f8: Tensor, f4: Tensor) -> Tensor:
        x = self.compress(torch.cat([readout, qfeat], dim=1))
        x = self.up_16_8(x, f8)
        x = self.up_8_4(x, f4)
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


def aggregate(prob: Tensor, valid: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """Soft aggregation of per-object probabilities into logits over background + objects.

    Background probability is ``prod(1 - p_o)``; probabilities are clamped to
    ``[eps, 1 - eps]`` and turned into logits ``log(p / (1 - p))``, so ``softmax`` over the class
    dimension gives a distribution in which objects compete. Invalid objects (``valid`` False)
    get probability 0 before aggregation.

    Shapes: ``prob [B, O, H, W] (in [0, 1]), valid [B, O] -> logits [B, O + 1, H, W]``.
    """
    prob = prob.float()
    if valid is not None:
        prob = prob * valid[:, :, None, None].to(prob.dtype)
    bg = torch.prod(1 - prob, dim=1, keepdim=True)
    p = torch.cat([bg, prob], dim=1).clamp(eps, 1 - eps)
    return torch.log(p / (1 - p))

"""Building blocks shared by the encoders and the decoder."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(conv(relu(x))))``, 3x3 convs.

    A 1x1 projection aligns the shortcut when ``in_ch != out_ch``.
    Shapes: ``[B, in_ch, H, W] -> [B, out_ch, H, W]``.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        r = self.conv1(F.relu(x))
        r = self.conv2(F.relu(r))
        return self.shortcut(x) + r

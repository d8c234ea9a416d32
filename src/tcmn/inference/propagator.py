"""The streaming propagation engine: one frame in, probabilities out. Whole videos are
propagated through :class:`tcmn.inference.session.InferenceSession` (validation, ``tcmn-eval``,
``tcmn-predict``, the benchmarks and the app), which settles the settings and drives this engine.

:class:`Propagator` takes frames one at a time (``step``). A mask given with a frame adds objects
or corrects them from that frame on; the frame then becomes a permanent memory frame. Every
``mem_every``-th frame after the last memory frame enters memory with its predicted soft masks
(the paper: every 5th frame). The memory retention policy is the :class:`~tcmn.inference.memory.MemoryBank`'s.

Frames are resized so that their long side is ``size`` (None: native), padded to a multiple of
16, and the probabilities are brought back to the frame's size (or ``out_size``) bilinearly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from tcmn.errors import TCMNError
from tcmn.inference.memory import MemoryBank, check_policy
from tcmn.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from tcmn.models.decoder import aggregate
from tcmn.models.network import TCMN, pad_divisible, unpad

PRECISIONS = {"fp32": None, "32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class PropagatorConfig:
    """Settings of the propagation (all from config; defaults are the paper's inference).

    Attributes:
        mem_every: a predicted frame enters memory every ``mem_every`` frames (paper: 5).
        policy: ``unbounded`` (paper), ``fifo`` or ``dynamic`` (see :class:`MemoryBank`).
        capacity_frames / capacity_bytes: capacity of bounded policies.
        top_k: readout top-k (None: all memory positions).
        chunk_size: query positions per readout chunk (None: automatic).
        size: long side of the frames fed to the network (None: native).
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        channels_last: channels-last activations and weights.
        device: torch device.
    """

    mem_every: int = 5
    policy: str = "unbounded"
    capacity_frames: int | None = None
    capacity_bytes: int | None = None
    top_k: int | None = 20
    chunk_size: int | None = None
    size: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: Mapping | None) -> PropagatorConfig:
        """Settings from a mapping (a config block); unknown keys are one-sentence errors."""
        d = dict(d or {})
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__}
        if d:
            raise TCMNError(
                f"propagation.{sorted(d)[0]}: not a propagation setting; use one of "
                f"{', '.join(sorted(cls.__dataclass_fields__))}."
            )
        return cls(**known)

    def check(self) -> PropagatorConfig:
        """Validate every setting (types, ranges, choices); returns ``self``.

        Raises:
            TCMNError: one sentence naming the setting, its value and what is allowed.
        """

        def whole(name: str, v, lo: int, optional: bool) -> None:
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                allowed = f"a whole number >= {lo}" + (" or null" if optional else "")
                raise TCMNError(f"propagation.{name}={v!r}: not allowed; use {allowed}.")

        whole("mem_every", self.mem_every, 1, False)
        whole("top_k", self.top_k, 1, True)
        whole("chunk_size", self.chunk_size, 1, True)
        whole("size", self.size, 16, True)
        if self.precision not in PRECISIONS:
            raise TCMNError(
                f"propagation.precision={self.precision!r}: not known; use one of "
                f"{', '.join(p for p in PRECISIONS if p != '32')}."
            )
        if not isinstance(self.channels_last, bool):
            raise TCMNError(f"propagation.channels_last={self.channels_last!r}: use true or false.")
        try:
            check_policy(self.policy, self.capacity_frames, self.capacity_bytes)
        except ValueError as e:
            raise TCMNError(f"propagation: {e}") from None
        check_device(self.device)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def check_device(device: str) -> torch.device:
    """The torch device ``device``, checked to exist on this machine before any work starts.

    Raises:
        TCMNError: an unknown device name, or a GPU that this machine does not have.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise TCMNError(
            f"device={device}: not a device name ({e}); use cpu, cuda or cuda:N."
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise TCMNError(f"device={device}: this machine has no CUDA GPU; use device=cpu.")
        if dev.index is not None and dev.index >= n:
            raise TCMNError(
                f"device={device}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1}); "
                "pick one of them."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise TCMNError(f"device={device}: MPS is not available here; use device=cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise TCMNError(f"device={device}: not supported; use cpu, cuda or cuda:N.")
    return dev


class Propagator:
    """Frame-by-frame engine around a :class:`TCMN`.

    ``step(frame uint8 [H, W, 3] RGB, mask uint8 [H, W] | None, objects) -> prob [O+1, H', W']``
    (float32, background first, object channels in :attr:`object_ids` order; ``H', W'`` =
    ``out_size`` or the frame's size). :meth:`labels` turns it into a label map with the
    original object ids.
    """

    def __init__(self, model: TCMN, config: PropagatorConfig | Mapping | None = None):
        self.cfg = (
            config if isinstance(config, PropagatorConfig) else PropagatorConfig.from_dict(config)
        )
        self.cfg.check()
        self.device = torch.device(self.cfg.device)
        self.model = model.to(self.device).eval()
        if self.cfg.channels_last:
            self.model.to_channels_last(True)
        self.dtype = PRECISIONS[self.cfg.precision]
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255
        self.reset()

    def reset(self) -> None:
        """Forget the video: empty memory, no objects."""
        self.memory = MemoryBank(self.cfg.policy, self.cfg.capacity_frames, self.cfg.capacity_bytes)
        self.object_ids: list[int] = []
        self.frames_seen = 0
        self.last_memory_frame: int | None = None

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ----------------------------------------------------------------- pre / post processing
    def _proc_size(self, h: int, w: int) -> tuple[int, int]:
        if not self.cfg.size or max(h, w) == self.cfg.size:
            return h, w
        s = self.cfg.size / max(h, w)
        return max(1, round(h * s)), max(1, round(w * s))

    def _frame_tensor(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` -> normalised float ``[1, 3, h, w]`` at the processing size."""
        if isinstance(frame, torch.Tensor):
            frame = frame.cpu().numpy()
        h, w = frame.shape[:2]
        ph, pw = self._proc_size(h, w)
        if (ph, pw) != (h, w):
            frame = cv2.resize(frame, (pw, ph), interpolation=cv2.INTER_AREA)
        x = (
            torch.from_numpy(np.ascontiguousarray(frame))
            .to(self.device)
            .permute(2, 0, 1)[None]
            .float()
        )
        return (x - self._mean) / self._std

    def _mask_onehot(
        self, mask: np.ndarray, ids: Sequence[int], size: tuple[int, int]
    ) -> torch.Tensor:
        """uint8 label map -> float ``[1, len(ids), h, w]`` one-hot at the processing size."""
        if isinstance(mask, torch.Tensor):
            mask = mask.cpu().numpy()
        if mask.shape != size:
            mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        m = torch.from_numpy(np.ascontiguousarray(mask)).to(self.device)
        return torch.stack([(m == i) for i in ids]).float()[None]

    # ----------------------------------------------------------------- the step
    @torch.inference_mode()
    def step(
        self,
        frame: np.ndarray,
        mask: np.ndarray | None = None,
        objects: Sequence[int] | None = None,
        out_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Segment one frame; with ``mask``, add / correct the objects ``objects`` (default: the
        non-zero ids in ``mask``) and store the frame as a permanent memory frame.

        Returns ``[O+1, H', W']`` float32 probabilities on the CPU.
        """
        h, w = frame.shape[:2]
        out_size = tuple(out_size) if out_size is not None else (h, w)
        x, pad = pad_divisible(self._frame_tensor(frame))
        proc = (x.shape[-2] - pad[2] - pad[3], x.shape[-1] - pad[0] - pad[1])
        with self._autocast():
            qf = self.model.encode_key(x)
            n_obj = len(self.object_ids)
            if n_obj and self.memory.size:
                prob = self._segment(qf).float()
            else:
                prob = torch.zeros(1, n_obj + 1, *x.shape[-2:], device=self.device)
                prob[:, 0] = 1
            permanent = False
            if mask is not None:
                ids = [
                    int(i)
                    for i in (objects if objects is not None else np.unique(mask))
                    if int(i) != 0
                ]
                prob = self._apply_mask(prob, pad, proc, mask, ids)
                permanent = True
            add = permanent or (
                len(self.object_ids) > 0
                and self.last_memory_frame is not None
                and self.frames_seen - self.last_memory_frame >= self.cfg.mem_every
            )
            if add and self.object_ids:
                value = self.model.encode_value(x, qf.f16, prob[:, 1:].to(x.dtype))
                self.memory.add(qf.key, value, self.frames_seen, permanent=permanent)
                self.last_memory_frame = self.frames_seen
        self.frames_seen += 1
        out = unpad(prob, pad)
        if tuple(out.shape[-2:]) != out_size:
            out = F.interpolate(out, size=out_size, mode="bilinear", align_corners=False)
        return out[0].float().cpu()

    @torch.inference_mode()
    def value_of(self, frame: np.ndarray, mask: np.ndarray, ids: Sequence[int]) -> torch.Tensor:
        """The memory value the model encodes for ``frame`` with the objects ``ids`` of the label
        map ``mask`` (zeros for an id absent from it), without touching the memory.

        Returns ``[1, len(ids), value_dim, h, w]`` float32 (at the processing size / 16).
        """
        x, pad = pad_divisible(self._frame_tensor(frame))
        proc = (x.shape[-2] - pad[2] - pad[3], x.shape[-1] - pad[0] - pad[1])
        m, _ = pad_divisible(self._mask_onehot(mask, ids, proc))
        with self._autocast():
            qf = self.model.encode_key(x)
            return self.model.encode_value(x, qf.f16, m.to(x.dtype)).float()

    def _segment(self, qf) -> torch.Tensor:
        """Read the memory and decode: ``[1, O+1, h, w]`` probabilities over background + objects.

        Objects given at different frames read different memory suffixes (frames stored before
        an object was given do not describe it); with one group this is ``TCMN.segment``.
        """
        mem, dynamic = self.memory, self.cfg.policy == "dynamic"
        keys, values = mem.keys, mem.values
        parts = []
        for start, slots in mem.object_groups():
            r = self.model.read_memory(
                qf.key,
                keys[:, :, start:],
                values[:, slots][:, :, :, start:],
                self.cfg.top_k,
                self.cfg.chunk_size,
                return_usage=dynamic,
            )
            if dynamic:
                r, usage = r
                mem.record_usage(usage, start)
            parts.append((slots, r))
        if len(parts) == 1:
            readout = parts[0][1]
        else:
            readout = keys.new_zeros(1, mem.n_objects, *parts[0][1].shape[2:]).to(parts[0][1].dtype)
            for slots, r in parts:
                readout[:, slots] = r
        logits = aggregate(torch.sigmoid(self.model.decode(qf, readout).float()))
        return torch.softmax(logits, dim=1)

    def _apply_mask(self, prob, pad, proc, mask, ids: list[int]) -> torch.Tensor:
        """Overwrite the given objects' probabilities with ``mask`` (adding new objects)."""
        new = [i for i in ids if i not in self.object_ids]
        if new:
            self.object_ids.extend(new)
            self.memory.add_objects(len(new))
            prob = torch.cat([prob, prob.new_zeros(1, len(new), *prob.shape[-2:])], dim=1)
        given = self._mask_onehot(mask, ids, proc)
        given, _ = pad_divisible(given)
        given_any = given.amax(1, keepdim=True)
        objs = prob[:, 1:] * (1 - given_any)
        for j, i in enumerate(ids):
            objs[:, self.object_ids.index(i)] = given[:, j]
        bg = (1 - objs.sum(1, keepdim=True)).clamp(0, 1)
        return torch.cat([bg, objs], dim=1)

    def labels(self, prob: torch.Tensor) -> np.ndarray:
        """``[O+1, H, W]`` probabilities -> uint8 ``[H, W]`` label map with the original ids."""
        lut = torch.tensor([0, *self.object_ids], dtype=torch.uint8)
        return lut[prob.argmax(0)].numpy()

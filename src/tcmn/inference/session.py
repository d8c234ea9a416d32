"""One inference session: a network, its propagation settings settled once, and propagation of
given masks through a video. ``tcmn-predict``, ``tcmn-eval``, validation during training,
``tcmn-bench`` and the annotation app all propagate through it.

Settings are settled in one place (:func:`settle`): the checkpoint's ``propagation`` settings
(what the model was trained and validated with, e.g. ``size: 192``), then the user's overrides,
then the device; every value is validated with a one-sentence error before any work starts.

A checkpoint is read without Lightning (:func:`read_checkpoint`): the network's settings and
weights and the stored propagation settings, so inference needs neither the trainer nor the
ImageNet weights.

Propagation (:meth:`InferenceSession.propagate`) takes masks at any frames and runs forward,
backward or both ways from a start frame; the given frames are permanent memory frames. To
correct a prediction, give the corrected mask at its frame and propagate again from there:
the memory then holds every given frame on the way (the earlier ones first) and the frames
predicted from the restart on. Results stream frame by frame (:class:`FrameResult`) to the
caller's loop and to an optional callback; :meth:`InferenceSession.cancel` (from another thread)
stops a running propagation after the current frame.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcmn.errors import TCMNError
from tcmn.inference.propagator import Propagator, PropagatorConfig
from tcmn.models.network import TCMN
from tcmn.utils.torchfile import read_torch_file

log = logging.getLogger(__name__)

DIRECTIONS = ("forward", "backward", "both")
#: An override with this value keeps the checkpoint's setting (the configs list every setting so
#: that ``propagation.mem_every=1`` works on the command line without a ``+``).
FROM_CHECKPOINT = "ckpt"
#: Network settings that name weights to download or read at construction: never at inference.
_INIT_ONLY = ("pretrained", "query_weights", "value_weights")

Given = Mapping[int, tuple[np.ndarray, Sequence[int] | None]]


@dataclass
class FrameResult:
    """The prediction of one frame.

    Attributes:
        index: frame index in the video.
        labels: uint8 ``[H, W]`` label map with the original object ids.
        prob: float32 ``[O+1, H, W]`` probabilities (background first, objects in
            ``object_ids`` order).
        object_ids: the object ids of ``prob``'s channels 1..O.
        given: True when the frame's mask was given (drawn), not predicted.
        confidence: mean over the pixels labelled as an object of their winning probability
            (1.0 certain, near 0.5 unsure); NaN when no pixel is labelled as an object.
        area: fraction of the frame's pixels labelled as an object.
    """

    index: int
    labels: np.ndarray
    prob: torch.Tensor
    object_ids: list[int]
    given: bool
    confidence: float
    area: float


def frame_result(
    index: int, prob: torch.Tensor, object_ids: Sequence[int], given: bool
) -> FrameResult:
    """A :class:`FrameResult` from ``[O+1, H, W]`` probabilities."""
    top, arg = prob.max(0)
    fg = arg > 0
    n = int(fg.sum())
    lut = torch.tensor([0, *object_ids], dtype=torch.uint8)
    return FrameResult(
        index=int(index),
        labels=lut[arg].numpy(),
        prob=prob,
        object_ids=list(object_ids),
        given=bool(given),
        confidence=float(top[fg].mean()) if n else float("nan"),
        area=n / fg.numel(),
    )


def settle(
    base: PropagatorConfig | Mapping | None,
    overrides: Mapping | None = None,
    device: str | None = None,
) -> PropagatorConfig:
    """The propagation settings: ``base`` (the checkpoint's), then ``overrides``, then ``device``.

    Args:
        base: the stored settings (a :class:`PropagatorConfig` or a mapping), or None for the
            defaults (the paper's inference).
        overrides: the user's settings (a config block such as ``propagation:``); keys left
            out or set to ``"ckpt"`` (:data:`FROM_CHECKPOINT`) keep the base value.
        device: the torch device (``cpu``, ``cuda``, ``cuda:1``); None keeps the base's.
    Returns:
        A validated :class:`PropagatorConfig`.
    Raises:
        TCMNError: an unknown setting, a value out of range, a device this machine lacks.
    """
    d = base.to_dict() if isinstance(base, PropagatorConfig) else dict(base or {})
    d.update({k: v for k, v in dict(overrides or {}).items() if v != FROM_CHECKPOINT})
    if device is not None:
        d["device"] = str(device)
    return PropagatorConfig.from_dict(d).check()


def read_checkpoint(path: str | Path) -> tuple[TCMN, dict[str, Any]]:
    """The network and the training settings stored in a ``tcmn-train`` checkpoint.

    Args:
        path: a ``.ckpt`` written by ``tcmn-train``.
    Returns:
        ``(net, hparams)``: the :class:`TCMN` with the checkpoint's weights (eval mode, CPU),
        and the stored hyper-parameters (``net``, ``loss``, ``propagation``, ``stage`` ...).
    Raises:
        TCMNError: the file is missing, unreadable (truncated), not a TCMN checkpoint, or its
            network settings do not match its weights.
    """
    p = Path(path).expanduser()
    ckpt = read_torch_file(p, "ckpt", "pass a .ckpt written by tcmn-train")
    hp = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    if not isinstance(hp.get("net"), Mapping) or "state_dict" not in ckpt:
        raise TCMNError(
            f"{p}: not a TCMN checkpoint (no network settings inside); pass a .ckpt from "
            "tcmn-train."
        )
    net_cfg = {**hp["net"], **dict.fromkeys(_INIT_ONLY)}
    try:
        net = TCMN(**net_cfg)
    except (TypeError, ValueError, TCMNError) as e:
        raise TCMNError(
            f"{p}: its network settings cannot build a TCMN ({e}); the checkpoint is from "
            "another version, re-train it."
        ) from e
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise TCMNError(
            f"{p}: the weights do not match the network settings stored with them ({first}); "
            "the file was edited or mixed from two runs, use the checkpoint as tcmn-train wrote it."
        ) from e
    return net.eval(), hp


class InferenceSession:
    """A network ready to propagate masks, with its settings settled once.

    Build one with :meth:`load` (a checkpoint, or an untrained network when there is none),
    :meth:`from_network` (a network in memory, e.g. during training) and read what it runs
    with from :attr:`settings` (a :class:`PropagatorConfig`) and :attr:`weights` (the
    checkpoint's path or ``"untrained"``).

    Args:
        net: the network.
        settings: validated propagation settings (see :func:`settle`).
        weights: where the weights come from (for logs and manifests).
        hparams: the checkpoint's stored hyper-parameters (empty without a checkpoint).
    """

    def __init__(
        self,
        net: TCMN,
        settings: PropagatorConfig,
        weights: str = "untrained",
        hparams: Mapping[str, Any] | None = None,
    ):
        self.net = net
        self.settings = settings
        self.weights = weights
        self.hparams = dict(hparams or {})
        self.engine = Propagator(net, settings)
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- building
    @classmethod
    def load(
        cls,
        ckpt: str | Path | None,
        overrides: Mapping | None = None,
        device: str | None = "cpu",
        net: Mapping | None = None,
    ) -> InferenceSession:
        """A session over a checkpoint, or over an untrained network when ``ckpt`` is None.

        Args:
            ckpt: a ``.ckpt`` written by ``tcmn-train``; its propagation settings are the base.
            overrides: the user's propagation settings (replace the checkpoint's).
            device: torch device (checked before the network is built).
            net: the network settings of an untrained network (``model.net``); ignored with a
                checkpoint.
        Raises:
            TCMNError: a bad checkpoint, setting or device (one sentence).
        """
        if ckpt:
            settle(None, overrides, device)  # bad settings fail before a checkpoint is read
            model, hp = read_checkpoint(ckpt)
            settings = settle(hp.get("propagation"), overrides, device)
            log.info("propagation settings (checkpoint, then overrides): %s", settings.to_dict())
            return cls(model, settings, str(ckpt), hp)
        settings = settle(None, overrides, device)
        log.warning(
            "no checkpoint given (ckpt=...): the network is UNTRAINED and its masks are "
            "meaningless; pass ckpt=PATH to a .ckpt written by tcmn-train."
        )
        cfg = {**dict(net or {}), **dict.fromkeys(_INIT_ONLY)}
        return cls(TCMN(**cfg), settings, "untrained")

    @classmethod
    def from_network(
        cls,
        net: TCMN,
        settings: PropagatorConfig | Mapping | None = None,
        overrides: Mapping | None = None,
        device: str | None = None,
        weights: str = "in memory",
    ) -> InferenceSession:
        """A session over a network in memory (validation during training, benchmarks)."""
        return cls(net, settle(settings, overrides, device), weights)

    # ----------------------------------------------------------------- propagation
    def cancel(self) -> None:
        """Stop the running propagation after its current frame (callable from any thread)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """True when the last propagation was stopped by :meth:`cancel`."""
        return self._cancel.is_set()

    @property
    def busy(self) -> bool:
        """True while a propagation runs."""
        return self._lock.locked()

    def propagate(
        self,
        frames: Sequence[np.ndarray],
        given: Given,
        direction: str = "forward",
        start: int | None = None,
        out_size: tuple[int, int] | None = None,
        frame_source: Callable[[Iterable[int]], Iterator[np.ndarray]] | None = None,
        on_frame: Callable[[FrameResult], None] | None = None,
    ) -> Iterator[FrameResult]:
        """Propagate the given masks through ``frames``; yield one :class:`FrameResult` per frame.

        Args:
            frames: indexable uint8 frames ``[h, w, 3]`` (an array ``[T, h, w, 3]``, a
                :class:`~tcmn.io.video.VideoSource`); ``len(frames)`` is the video's length.
            given: frame index -> (uint8 label map, the object ids it defines or None for its
                non-zero ids). Several frames may be given; each becomes a permanent memory
                frame when the propagation reaches it.
            direction: ``forward`` (from ``start`` to the last frame), ``backward`` (from
                ``start`` to frame 0) or ``both`` (forward, then backward from ``start`` with a
                fresh memory; ``start`` is yielded once).
            start: the frame to propagate from; default the first given frame (``forward``,
                ``both``) or the last (``backward``). Given frames behind ``start`` (before it
                going forward, after it going backward) are put in memory first, so a
                correction at ``start`` re-propagates from there with every annotation.
            out_size: ``(H, W)`` of the results; default each frame's size.
            frame_source: ``indices -> iterator of frames`` reading ahead (e.g.
                :class:`~tcmn.io.prefetch.FrameReader`); default indexes ``frames``.
            on_frame: called with each result before it is yielded (progress, streaming).
        Yields:
            :class:`FrameResult` in propagation order. The iteration ends early, without an
            error, when :meth:`cancel` is called.
        Raises:
            TCMNError: no given mask, a given frame or ``start`` outside the video, an unknown
                direction, a propagation already running, or ``start`` with no given mask at or
                behind it.
        """
        n = len(frames)
        plan = self.plan(n, given, direction, start)
        if not self._lock.acquire(blocking=False):
            raise TCMNError("a propagation is already running in this session; wait or cancel it.")
        self._cancel.clear()
        read = frame_source or (lambda idx: (frames[i] for i in idx))
        try:
            for k, (behind, indices) in enumerate(plan):
                self.engine.reset()
                for i in behind:  # earlier annotations first: permanent memory frames
                    m, ids = given[i]
                    self.engine.step(frames[i], m, ids, (1, 1))
                for i, frame in zip(indices, read(indices), strict=False):
                    if self._cancel.is_set():
                        return
                    m, ids = given.get(i, (None, None))
                    prob = self.engine.step(frame, m, ids, out_size)
                    if k > 0 and i == indices[0]:
                        continue  # the start frame was yielded by the forward pass
                    res = frame_result(i, prob, self.engine.object_ids, m is not None)
                    if on_frame is not None:
                        on_frame(res)
                    yield res
        finally:
            self._lock.release()

    @staticmethod
    def plan(
        n: int, given: Mapping[int, Any], direction: str, start: int | None
    ) -> list[tuple[list[int], list[int]]]:
        """Passes of a propagation over ``n`` frames with masks on the frames ``given`` (keys):
        (given frames to memorise first, frames to step through) per pass.

        Raises:
            TCMNError: see :meth:`propagate`.
        """
        if direction not in DIRECTIONS:
            raise TCMNError(
                f"direction={direction}: not known; use one of {', '.join(DIRECTIONS)}."
            )
        if not given:
            raise TCMNError("propagation needs a mask on at least one frame; draw or give one.")
        bad = [i for i in given if not 0 <= int(i) < n]
        if bad:
            raise TCMNError(
                f"a mask is given on frame {bad[0]}, beyond the video ({n} frames, 0..{n - 1})."
            )
        if start is None:
            start = max(given) if direction == "backward" else min(given)
        if not 0 <= start < n:
            raise TCMNError(f"start={start}: beyond the video ({n} frames, 0..{n - 1}).")
        passes = []
        if direction in ("forward", "both"):
            behind = sorted(i for i in given if i < start)
            if start not in given and not behind:
                raise TCMNError(
                    f"start={start}: no mask is given on or before it to propagate forward; "
                    "start at an annotated frame."
                )
            passes.append((behind, list(range(start, n))))
        if direction in ("backward", "both"):
            behind = sorted((i for i in given if i > start), reverse=True)
            if start not in given and not behind:
                raise TCMNError(
                    f"start={start}: no mask is given on or after it to propagate backward; "
                    "start at an annotated frame."
                )
            passes.append((behind, list(range(start, -1, -1))))
        return passes

    def predict_labels(
        self, frames: Sequence[np.ndarray], given: Given, out_size: tuple[int, int]
    ) -> np.ndarray:
        """Forward propagation from the first given frame as one array (the one-shot protocol).

        Returns:
            uint8 ``[T, H, W]`` labels at ``out_size``; frames before the first given frame are 0.
        """
        out = np.zeros((len(frames), *out_size), np.uint8)
        if not given:
            return out
        for r in self.propagate(frames, given, "forward", out_size=tuple(out_size)):
            out[r.index] = r.labels
        return out

"""``tcmn-predict``: give a video and the mask of one frame, get a mask for every frame.

::

    tcmn-predict input=video.mp4 mask=first_mask.png ckpt=last.ckpt out=predictions/
    tcmn-predict input=frames/ mask=mask_40.png mask_frame=40 ckpt=... out=...   # both ways
    tcmn-predict input=echo.nii.gz mask=ed.nii.gz ckpt=... out=...             # NIfTI in and out

Reads the video (frames decoded ahead of the network in a reader thread), propagates the mask
with an :class:`~tcmn.inference.session.InferenceSession` (forward from frame 0; forward and
backward from a later ``mask_frame``) at the checkpoint's propagation settings (its ``size``,
``mem_every``, ``top_k`` ...: what ``tcmn-eval`` measured) unless ``propagation.*`` overrides
them, and writes, atomically, one PNG label map per frame
(named after the input's frames), an overlay video and (for NIfTI input) a NIfTI label sequence
with the input's geometry, plus ``manifest.json``. See ``conf/predict.yaml``.

Every user error (unreadable input, a mask of the wrong size, an empty mask, too many labels,
``mask_frame`` beyond the video, an output folder that cannot be written or that holds other
files) prints one sentence and exits with status 2; the output folder then does not appear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tcmn.cli._common import setup_env, user_errors
from tcmn.errors import TCMNError
from tcmn.utils.paths import CONF_DIR

log = logging.getLogger("tcmn.predict")

DIRECTIONS = ("auto", "forward", "backward", "both")
#: frames with a longer side than this at native size get a hint about propagation.size
LARGE_FRAME = 1024


def predict(cfg: DictConfig) -> dict:
    """Run one prediction from a composed ``predict`` config.

    Args:
        cfg: the composed ``conf/predict.yaml`` (input, mask, mask_frame, resize_mask, ckpt, out,
            direction, device, propagation, write_png, write_overlay, write_nifti, model).
    Returns:
        ``{"out": str, "frames": int, "fps": float, "propagated": int}``: the output folder, the
        number of frames written, frames per second over the whole run, and how many frames
        the network segmented (the rest, outside the chosen direction, are empty).
    Raises:
        TCMNError: any user error (see the module docstring); nothing is written then.
    """
    import numpy as np
    from tqdm import tqdm

    from tcmn.inference.session import InferenceSession, settle
    from tcmn.io import FrameReader, PredictionWriter, check_writable, load_mask, open_video

    for key in ("input", "mask", "out"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
            raise TCMNError(
                f"{key}= is required; run `tcmn-predict input=VIDEO mask=MASK out=FOLDER` "
                "(see conf/predict.yaml)."
            )
    out = check_writable(cfg.out)
    check_output_folder(out, [Path(str(cfg.input)), Path(str(cfg.mask))])
    overrides = OmegaConf.to_container(cfg.propagation, resolve=True)
    settle(None, overrides, str(cfg.device))  # bad settings fail before any reading
    with open_video(cfg.input) as src:
        n = len(src)
        k = _mask_frame(cfg.mask_frame, n, cfg.input)
        mask = load_mask(cfg.mask, size=src.size, resize=bool(cfg.resize_mask), frame=k)
        direction = resolve_direction(str(cfg.direction), k, n)
        session = InferenceSession.load(
            cfg.ckpt,
            overrides,
            str(cfg.device),
            OmegaConf.to_container(cfg.model.net, resolve=True),
        )
        if session.settings.size is None and max(src.size) > LARGE_FRAME:
            log.warning(
                "%s: frames are %dx%d and propagation.size is null (native size): each frame "
                "takes long and much memory; propagation.size=%d (the long side in pixels) is "
                "much faster.",
                cfg.input,
                src.size[1],
                src.size[0],
                LARGE_FRAME // 2,
            )
        settings = {
            "input": str(cfg.input),
            "mask": str(cfg.mask),
            "mask_frame": k,
            "ckpt": cfg.ckpt,
            "weights": session.weights,
            "direction": direction,
            "objects_given": sorted(int(i) for i in np.unique(mask) if i),
            # a video whose header declares more frames than decode is truncated: both counts
            "frames_read": n,
            "frames_declared": src.declared_frames,
            # what ran: the checkpoint's propagation settings, then the user's overrides
            "propagation": session.settings.to_dict(),
        }
        overlay = bool(cfg.write_overlay)
        reader = FrameReader(src)
        propagated = 0
        t0 = time.perf_counter()
        with (
            PredictionWriter(
                out,
                src,
                write_png=cfg.write_png,
                write_overlay=overlay,
                write_nifti=cfg.write_nifti,
                settings=settings,
            ) as writer,
            tqdm(total=n, unit="frame", desc="propagating") as bar,
        ):
            try:
                for r in session.propagate(
                    src, {k: (mask, None)}, direction=direction, frame_source=reader
                ):
                    writer.write(r.index, r.labels, reader.frame(r.index) if overlay else None)
                    propagated += 1
                    bar.update(1)
                    bar.set_postfix(fps=f"{bar.n / (time.perf_counter() - t0):.1f}")
            finally:
                reader.close()
            rest = _not_propagated(n, k, direction)
            if rest:
                log.warning(
                    "direction=%s from mask_frame=%d: frames %d..%d get empty masks.",
                    direction,
                    k,
                    rest[0],
                    rest[-1],
                )
                empty = np.zeros(src.size, np.uint8)
                frames = reader(rest) if overlay else (None for _ in rest)
                try:
                    for i, frame in zip(rest, frames):
                        writer.write(i, empty, frame)
                        bar.update(1)
                finally:
                    reader.close()
    elapsed = time.perf_counter() - t0
    fps = n / max(elapsed, 1e-9)
    log.info("%d frames in %.1fs (%.1f FPS), written to %s", n, elapsed, fps, out)
    print(f"masks for {n} frames written to {out} ({fps:.1f} FPS)")
    if session.weights == "untrained":
        print(
            "note: no checkpoint was given (ckpt=...), so these masks come from UNTRAINED weights."
        )
    return {"out": str(out), "frames": n, "fps": fps, "propagated": propagated}


def resolve_direction(direction: str, mask_frame: int, n_frames: int) -> str:
    """``auto`` -> ``forward`` from frame 0, ``backward`` from the last frame, else ``both``.

    Args:
        direction: ``auto``, ``forward``, ``backward`` or ``both``.
        mask_frame: index of the frame whose mask is given.
        n_frames: number of frames of the video.
    Returns:
        ``forward``, ``backward`` or ``both``.
    Raises:
        TCMNError: an unknown direction.
    """
    if direction not in DIRECTIONS:
        raise TCMNError(
            f"direction={direction}: not known; use one of {', '.join(DIRECTIONS)} "
            "(conf/predict.yaml)."
        )
    if direction != "auto":
        return direction
    if mask_frame == 0:
        return "forward"
    return "backward" if mask_frame == n_frames - 1 else "both"


def _not_propagated(n: int, k: int, direction: str) -> list[int]:
    """Frames the chosen direction does not reach from frame ``k`` (they get empty masks)."""
    if direction == "forward":
        return list(range(k))
    if direction == "backward":
        return list(range(k + 1, n))
    return []


def _mask_frame(value, n: int, source) -> int:
    """Check ``mask_frame`` against the video's ``n`` frames (user errors as TCMNError)."""
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise TCMNError(
            f"mask_frame={value}: not a frame index; pass mask_frame=N with 0 <= N < {n}."
        ) from None
    if not 0 <= k < n:
        raise TCMNError(
            f"{source}: mask_frame={k} is beyond the video ({n} frames, 0..{n - 1}); pass "
            "mask_frame=N within it."
        )
    return k


def check_output_folder(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output folder whose replacement would destroy data.

    The outputs replace ``out`` as a whole (atomically), so ``out`` must not hold the inputs and,
    when it exists and is not empty, must be the output of an earlier ``tcmn-predict`` (it has
    our ``manifest.json``).

    Args:
        out: the output folder (absolute).
        inputs: the input video / folder and the mask file.
    Raises:
        TCMNError: ``out`` is or holds one of ``inputs``, or is a non-empty folder of other files.
    """
    import json

    from tcmn.io import MANIFEST_FORMAT, MANIFEST_NAME

    target = out.resolve()
    for p in inputs:
        p = Path(p).expanduser().absolute().resolve()
        if p == target or target in p.parents:
            raise TCMNError(
                f"{out}: the output folder holds the input {p} and would replace it; choose an "
                "output folder outside the inputs."
            )
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        ours = isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise TCMNError(
            f"{out}: the folder exists and holds other files (not an earlier tcmn-predict "
            "output), and the outputs replace it as a whole; choose a new or empty output folder."
        )


@hydra.main(config_path=CONF_DIR, config_name="predict", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    user_errors(predict)(cfg)


def main() -> None:
    """Entry point of ``tcmn-predict``."""
    setup_env()
    _hydra_main()


if __name__ == "__main__":
    main()

"""``tcmn-predict``: give a video and the mask of one frame, get a mask for every frame.

Reads the video (frames decoded ahead of the network in a reader thread), propagates the mask
with the streaming :class:`~tcmn.inference.propagator.Propagator` and writes, atomically, one PNG
label map per frame, an overlay video and (for NIfTI input) a NIfTI label sequence. See
``conf/predict.yaml``.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig, OmegaConf

from tcmn.cli._common import CONF_DIR, setup_env, user_errors
from tcmn.errors import TCMNError

log = logging.getLogger("tcmn.predict")


def predict(cfg: DictConfig) -> dict:
    from tqdm import tqdm

    from tcmn.inference.io import PredictionWriter, check_writable, load_mask, open_video, prefetch
    from tcmn.inference.propagator import Propagator, PropagatorConfig, propagate

    out = check_writable(cfg.out)
    src = open_video(cfg.input)
    n = len(src)
    k = int(cfg.mask_frame)
    if not 0 <= k < n:
        raise TCMNError(
            f"{cfg.input}: mask_frame={k} is beyond the video ({n} frames, 0..{n - 1}); pass mask_frame=N within it."
        )
    mask = load_mask(cfg.mask, size=src.size, resize=bool(cfg.resize_mask), frame=k)
    net = _network(cfg)
    prop = Propagator(
        net,
        PropagatorConfig.from_dict(
            {**OmegaConf.to_container(cfg.propagation), "device": cfg.device}
        ),
    )
    direction = cfg.direction if cfg.direction != "auto" else ("forward" if k == 0 else "both")
    if direction == "forward" and k > 0:
        log.warning("direction=forward from mask_frame=%d: frames before it get empty masks.", k)

    def reader(indices):
        step = 1 if len(indices) < 2 or indices[1] > indices[0] else -1
        return (
            f
            for _, f in prefetch(
                src.iter(
                    indices[0], indices[-1] + step if 0 <= indices[-1] + step < n else None, step
                )
            )
        )

    settings = {
        "input": str(cfg.input),
        "mask": str(cfg.mask),
        "mask_frame": k,
        "ckpt": cfg.ckpt,
        "direction": direction,
        "propagation": prop.cfg.to_dict(),
    }
    written = set()
    t0 = time.perf_counter()
    with PredictionWriter(
        out,
        src,
        write_png=cfg.write_png,
        write_overlay=cfg.write_overlay,
        write_nifti=cfg.write_nifti,
        settings=settings,
    ) as writer:
        bar = tqdm(total=n, unit="frame", desc="propagating")
        for i, lab, _ in propagate(
            prop, src, {k: (mask, None)}, direction=direction, frame_source=reader
        ):
            writer.write(i, lab, src[i] if cfg.write_overlay else None)
            written.add(i)
            bar.update(1)
            bar.set_postfix(fps=f"{len(written) / (time.perf_counter() - t0):.1f}")
        if direction == "forward" and k > 0:
            import numpy as np

            for i in range(k):
                writer.write(i, np.zeros(src.size, np.uint8), src[i] if cfg.write_overlay else None)
                bar.update(1)
        bar.close()
    fps = n / (time.perf_counter() - t0)
    log.info("%d frames in %.1fs (%.1f FPS), written to %s", n, time.perf_counter() - t0, fps, out)
    print(f"masks for {n} frames written to {out} ({fps:.1f} FPS)")
    return {"out": str(out), "frames": n, "fps": fps}


def _network(cfg: DictConfig):
    from tcmn.lit_module import load_module
    from tcmn.models.network import TCMN

    if cfg.ckpt:
        return load_module(cfg.ckpt).net
    log.warning(
        "no checkpoint given (ckpt=...): predictions come from UNTRAINED weights and will be "
        "meaningless; pass ckpt=PATH to a .ckpt written by tcmn-train."
    )
    return TCMN(**OmegaConf.to_container(cfg.model.net, resolve=True))


@hydra.main(config_path=CONF_DIR, config_name="predict", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    user_errors(predict)(cfg)


def main() -> None:
    setup_env()
    _hydra_main()


if __name__ == "__main__":
    main()

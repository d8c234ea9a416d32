"""Benchmark of tcmn-annotate (not a test): how fast the first propagated frame reaches the page,
and the app's propagation speed against tcmn-predict's, on the same video, model and settings,
alternating, in one process.

Each repeat runs, in turn:
- tcmn-predict (its ``predict()``, the console script's function): its own frames per second,
  the number it prints, with its default outputs (PNG label maps and the overlay video) and with
  PNG label maps only (what the app saves as it propagates);
- the inference session alone, writing nothing (the floor of any caller);
- the app through its HTTP API: frames per second from the request to the last mask saved.

Usage: python tools/bench_annotate.py [VIDEO_FOLDER] [--size 192] [--repeats 3]
(default: data/cvc_clinicdb/JPEGImages/seq01 of a prepared CVC-ClinicDB, `make results` or
`tcmn-prepare dataset=cvc_clinicdb`). The model is `model=small` with random weights: speed does
not depend on the weights. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=str(ROOT / "data/cvc_clinicdb/JPEGImages/seq01"))
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from fastapi.testclient import TestClient

    from tcmn.app.server import AppConfig, create_app
    from tcmn.cli.predict import predict
    from tcmn.experiment import compose_config
    from tcmn.inference.session import InferenceSession
    from tcmn.io import FrameReader, load_mask, open_video
    from tcmn.models.network import TCMN

    video = Path(a.video).resolve()
    masks = video.parents[1] / "Annotations" / video.name
    first = sorted(masks.glob("*.png"))[0]
    net_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/small.yaml").net)
    net_cfg = {k: v for k, v in net_cfg.items() if not str(k).startswith("_")}
    net_cfg.update(pretrained=None, query_weights=None, value_weights=None)
    settings = {"size": a.size}
    session = InferenceSession.from_network(TCMN(**net_cfg), settings)
    with open_video(video) as src:
        n = len(src)
        mask = load_mask(first, size=src.size)

        def direct() -> float:
            reader = FrameReader(src)
            t0 = time.perf_counter()
            try:
                for _ in session.propagate(src, {0: (mask, None)}, frame_source=reader):
                    pass
            finally:
                reader.close()
            return n / (time.perf_counter() - t0)

        def through_predict(tmp: str, overlay: bool) -> float:
            overrides = [
                f"input={video}",
                f"mask={first}",
                f"out={tmp}/predict_{overlay}",
                "model=small",
                "model.net.pretrained=null",
                f"propagation.size={a.size}",
                f"write_overlay={str(overlay).lower()}",
            ]
            return predict(compose_config("predict", overrides, tmp))["fps"]

        with tempfile.TemporaryDirectory() as tmp:
            app = create_app(AppConfig(data_root=video.parent, sessions=Path(tmp), net=net_cfg))
            app.state.tcmn.session, app.state.tcmn.session_ckpt = session, None
            c = TestClient(app)
            c.post("/api/open", json={"path": video.name})
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(mask).save(buf, format="PNG")
            c.put("/api/mask/0", content=buf.getvalue())

            def through_app() -> tuple[float, float]:
                t0 = time.perf_counter()
                c.post("/api/propagate", json={"direction": "forward"})
                first_at = None
                while True:
                    p = c.get("/api/project").json()["progress"]
                    if (
                        first_at is None and p["done"] >= 2
                    ):  # the given frame, then the first predicted
                        first_at = time.perf_counter() - t0
                    if not p["running"] and p["done"] == n:
                        return first_at, p["fps"]
                    # fine polling until the first frame, then as often as the page hears (0.2 s)
                    time.sleep(0.005 if first_at is None else 0.2)

            direct()  # warm-up
            through_predict(tmp, False)
            runs: dict[str, list[float]] = {
                k: [] for k in ("predict", "predict_png", "session", "app")
            }
            lat = []
            for _ in range(a.repeats):
                runs["predict"].append(through_predict(tmp, True))
                runs["predict_png"].append(through_predict(tmp, False))
                runs["session"].append(direct())
                la, fps = through_app()
                lat.append(la)
                runs["app"].append(fps)
    med = statistics.median
    app = med(runs["app"])
    rows = [
        ("tcmn-predict (PNG + overlay video, its defaults)", "predict"),
        ("tcmn-predict write_overlay=false (PNG only, as the app saves)", "predict_png"),
        ("inference session alone, writing nothing", "session"),
        ("tcmn-annotate, through its HTTP API (PNG saved per frame)", "app"),
    ]
    print(f"video {video.name}: {n} frames {src.size[1]}x{src.size[0]}, size {a.size}, model small")
    print(f"| | frames/s (median of {a.repeats}, min-max) | app / this |")
    print("|---|---|---|")
    for label, key in rows:
        v = runs[key]
        print(f"| {label} | {med(v):.1f} ({min(v):.1f}-{max(v):.1f}) | {app / med(v):.2f} |")
    print(
        f"\nfirst propagated frame on the page: median {1000 * med(lat):.0f} ms "
        f"({1000 * min(lat):.0f}-{1000 * max(lat):.0f})"
    )
    assert np.isfinite(app)


if __name__ == "__main__":
    main()

"""The annotation app's API (FastAPI test client): open, draw, propagate, correct, stream, cancel,
export, resume, and the bad requests. The network is the oracle of test_propagator (exact on its
coloured squares), so the propagated masks are known."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_NET
from PIL import Image
from test_propagator import OracleTCMN, moving_objects

from tcmn.app.server import AppConfig, create_app
from tcmn.inference.session import InferenceSession

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

T = 12


def png(labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


class SlowOracle(OracleTCMN):
    """The oracle, slowed down so that a propagation is still running when the test acts."""

    def encode_key(self, frames):
        time.sleep(0.15)
        return super().encode_key(frames)


@pytest.fixture
def root(tmp_path) -> Path:
    frames, _ = moving_objects(t=T)
    d = tmp_path / "data" / "vid"
    d.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(d / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return tmp_path / "data"


def client(root: Path, net=None, **kw) -> TestClient:
    """A test client of the app over ``root``; the inference session uses ``net`` (the oracle)."""
    app = create_app(AppConfig(data_root=root, net=TINY_NET, **kw))
    state = app.state.tcmn
    if net is not None:
        state.session = InferenceSession.from_network(net, {"mem_every": 1, "top_k": None})
        state.session_ckpt = None
    return TestClient(app)


def wait(c: TestClient, timeout: float = 30) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        p = c.get("/api/project").json()
        if not p["progress"]["running"]:
            return p
        time.sleep(0.05)
    raise AssertionError("propagation did not finish")


def test_page_and_its_files_are_served(root):
    c = client(root)
    r = c.get("/")
    assert r.status_code == 200 and "TCMN annotate" in r.text
    assert 'src="/static/app.js"' in r.text and "http" not in r.text.split("<body>")[1]  # no CDN
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert c.get("/static/style.css").status_code == 200
    assert c.get("/static/..%2Fserver.py").status_code in (400, 404)


def test_draw_propagate_correct_export_resume(root, tmp_path):
    _, labels = moving_objects(t=T)
    c = client(root, OracleTCMN())
    listing = c.get("/api/files").json()
    assert [e["name"] for e in listing["entries"]] == ["vid"] and listing["entries"][0]["video"]
    p = c.post("/api/open", json={"path": "vid"}).json()
    assert p["n_frames"] == T and p["size"] == list(labels.shape[1:]) and p["drawn"] == []
    assert c.get("/api/frame/3").headers["content-type"] == "image/jpeg"
    assert c.get("/api/mask/3").status_code == 204  # no mask yet
    # draw object 1 on frame 0, propagate forward
    only1 = np.where(labels[0] == 1, 1, 0).astype(np.uint8)
    assert c.put("/api/mask/0", content=png(only1)).json()["objects"] == [1]
    assert c.post("/api/propagate", json={"direction": "forward"}).json()["started"]
    p = wait(c)
    assert p["progress"]["error"] is None and p["progress"]["done"] == T
    assert p["predicted"] == list(range(1, T))  # frame 0 is drawn
    for t in (1, 5, 11):
        r = c.get(f"/api/mask/{t}")
        assert r.headers["x-mask-kind"] == "predicted"
        np.testing.assert_array_equal(from_png(r.content), np.where(labels[t] == 1, 1, 0))
    assert all(p["confidence"][str(t)] > 0.9 for t in range(1, T))
    # correct: object 2 drawn on frame 6 -> propagate again from there
    fixed = labels[6].copy()
    c.put("/api/mask/6", content=png(fixed))
    c.post("/api/propagate", json={"direction": "forward", "start": 6})
    p = wait(c)
    assert p["drawn"] == [0, 6] and p["progress"]["done"] == T - 6
    for t in range(7, T):
        np.testing.assert_array_equal(from_png(c.get(f"/api/mask/{t}").content), labels[t])
    assert c.get("/api/mask/6").headers["x-mask-kind"] == "drawn"
    # names and colours of the objects
    objs = c.post("/api/object", json={"id": 2, "name": "polyp", "colour": "#00ff00"}).json()
    assert objs["objects"]["2"] == {"name": "polyp", "colour": "#00ff00"}
    # export files: one PNG per frame, overlay video, manifest
    out = c.post("/api/export", json={"kind": "files", "out": "exports/vid"}).json()["out"]
    masks = sorted((root / out / "masks").glob("*.png"))
    assert len(masks) == T and (root / out / "overlay.mp4").stat().st_size > 0
    np.testing.assert_array_equal(
        from_png((root / out / "masks" / "008.png").read_bytes()), labels[8]
    )
    # add to a prepared dataset, which tcmn-train can read
    from tcmn.data.layout import PreparedDataset

    c.post("/api/export", json={"kind": "dataset", "root": "mine", "name": "vid_1"})
    ds = PreparedDataset(root / "mine")
    assert list(ds.videos) == ["vid_1"] and ds.videos["vid_1"].objects[2] == "polyp"
    gt, annotated = ds.masks("vid_1")
    assert annotated[0] and annotated[6] and annotated[11]
    np.testing.assert_array_equal(gt[9], labels[9])
    # resume: a new server on the same data root finds the work
    c2 = client(root, OracleTCMN())
    p2 = c2.post("/api/open", json={"path": "vid"}).json()
    assert p2["drawn"] == [0, 6] and p2["predicted"] == list(range(1, T))
    assert p2["objects"]["2"]["name"] == "polyp"
    np.testing.assert_array_equal(from_png(c2.get("/api/mask/6").content), fixed)


def test_progress_streams_and_a_running_propagation_can_be_cancelled(root):
    _, labels = moving_objects(t=T)
    c = client(root, SlowOracle())
    c.post("/api/open", json={"path": "vid"})
    c.put("/api/mask/0", content=png(labels[0]))
    c.post("/api/propagate", json={"direction": "forward"})
    r = c.post("/api/propagate", json={"direction": "forward"})
    assert r.status_code == 400 and "running" in r.json()["error"]
    r = c.put("/api/mask/3", content=png(labels[3]))
    assert r.status_code == 400 and "running" in r.json()["error"]
    with c.stream("GET", "/api/events") as s:
        seen = []
        for line in s.iter_lines():
            if line.startswith("data: {") and '"done"' in line:
                seen.append(json.loads(line[6:]))
                if seen[-1]["done"] >= 2:
                    c.post("/api/cancel")
            if line.startswith("event: end"):
                break
    assert seen and seen[-1]["message"] == "cancelled"
    p = wait(c)
    assert 2 <= p["progress"]["done"] < T and p["progress"]["fps"] > 0
    # the page stays usable: frames and masks already done can be read meanwhile and after
    assert c.get("/api/frame/7").status_code == 200


@pytest.mark.parametrize(
    "method, url, body, status, words",
    [
        ("post", "/api/open", {"path": "../../etc"}, 400, ["outside the data root"]),
        ("post", "/api/open", {"path": "/etc/passwd"}, 400, ["outside the data root"]),
        ("post", "/api/open", {"path": "nothing.mp4"}, 400, ["no such file"]),
        ("get", "/api/files?path=..", None, 400, ["outside the data root"]),
        ("get", "/api/project", None, 400, ["no video is open"]),
        ("post", "/api/export", {"kind": "files"}, 400, ["no video is open"]),
    ],
)
def test_bad_requests_before_opening(root, method, url, body, status, words):
    c = client(root)
    r = getattr(c, method)(url, json=body) if body is not None else getattr(c, method)(url)
    assert r.status_code == status and all(w in r.json()["error"] for w in words), r.text


def test_symlink_out_of_the_root_is_refused(root, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    r = client(root).get("/api/files?path=link")
    assert r.status_code == 400 and "outside the data root" in r.json()["error"]


def test_bad_masks_and_requests_on_an_open_video(root):
    _, labels = moving_objects(t=T)
    c = client(root, OracleTCMN())
    c.post("/api/open", json={"path": "vid"})
    cases = [
        (c.post("/api/propagate", json={"direction": "forward"}), "draw a mask"),
        (c.put("/api/mask/0", content=png(labels[0][:-16])), "but the video is"),
        (c.put("/api/mask/0", content=png(np.full_like(labels[0], 12))), "labels 1..9"),
        (c.put("/api/mask/0", content=b"not a png"), "not a readable PNG"),
        (c.put("/api/mask/99", content=png(labels[0])), "beyond the video"),
        (c.get("/api/frame/99"), "beyond the video"),
        (c.post("/api/object", json={"id": 12}), "1..9"),
        (c.post("/api/object", json={"id": 1, "colour": "red"}), "#rrggbb"),
        (c.post("/api/export", json={"kind": "zip"}), "files or dataset"),
        (
            c.post("/api/open", content=b"{", headers={"content-type": "application/json"}),
            "not JSON",
        ),
    ]
    for r, words in cases:
        assert r.status_code == 400 and words in r.json()["error"], r.text
    c.put("/api/mask/4", content=png(labels[4]))
    r = c.post("/api/propagate", json={"direction": "sideways"})
    assert r.status_code == 400 and "direction=sideways" in r.json()["error"]
    r = c.post("/api/propagate", json={"direction": "forward", "start": 2})
    assert r.status_code == 400 and "start=2" in r.json()["error"]


def test_uploads_are_limited_and_checked(root, tmp_path):
    c = client(root, upload_max_mb=0.05)
    r = c.post("/api/upload?name=big.mp4", content=os.urandom(80_000))
    assert r.status_code == 400 and "limit" in r.json()["error"]
    r = c.post("/api/upload?name=junk.mp4", content=os.urandom(1000))
    assert r.status_code == 400 and "not a readable video" in r.json()["error"]
    assert not list((root / "uploads").iterdir())  # nothing half-written left
    r = c.post("/api/upload?name=notes.txt", content=b"hello")
    assert r.status_code == 400 and "upload a video" in r.json()["error"]
    frames, _ = moving_objects(t=4)
    path = tmp_path / "small.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, frames.shape[2:0:-1])
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    r = c.post("/api/upload?name=../small.avi", content=path.read_bytes())
    assert r.status_code == 200 and r.json()["path"] == "uploads/small.avi"
    assert c.post("/api/open", json={"path": "uploads/small.avi"}).json()["n_frames"] == 4


def test_a_token_guards_every_request(root):
    c = client(root, token="s3cret")
    assert c.get("/").status_code == 401 and c.get("/api/files").status_code == 401
    assert c.get("/api/files", headers={"X-TCMN-Token": "wrong"}).status_code == 401
    r = c.get("/?token=s3cret")
    assert r.status_code == 200 and "tcmn_token" in r.headers.get("set-cookie", "")
    assert c.get("/api/files").status_code == 200  # the cookie carries it from now on


def test_a_frame_without_any_object_has_null_confidence(root):
    """A frame where nothing is predicted has NaN confidence: the API and the saved state give
    null (JSON has no NaN), and a reopened project reads it back."""
    c = client(root, OracleTCMN())
    c.post("/api/open", json={"path": "vid"})
    project = c.app.state.tcmn.project
    project.confidence[3], project.area[3] = float("nan"), 0.0
    project.save_state()
    assert c.get("/api/project").json()["confidence"]["3"] is None
    state = json.loads((project.folder / "state.json").read_text())
    assert state["confidence"]["3"] is None
    again = client(root, OracleTCMN()).post("/api/open", json={"path": "vid"}).json()
    assert again["confidence"]["3"] is None

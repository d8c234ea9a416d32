"""The annotation app's HTTP API (FastAPI) over :class:`~tcmn.app.project.AnnotationProject` and
:class:`~tcmn.inference.session.InferenceSession`, and the page it serves (``static/``).

Safe by default: files are read only under the data root (a path that resolves outside it,
through ``..`` or a symbolic link, is refused); uploads have a size limit and must decode as a
video; with a token (required when the server listens on another address than 127.0.0.1) every
request must carry it (``?token=``, the ``X-TCMN-Token`` header or the cookie the page sets).
Every bad request gets ``{"error": "<one sentence>"}`` with a 4xx status, never a traceback.

API (JSON unless said): ``GET /api/files?path=``, ``GET /api/checkpoints``, ``POST /api/open``
``{path, ckpt}``, ``POST /api/upload?name=`` (raw body), ``GET /api/project``,
``GET /api/frame/{i}`` (JPEG), ``GET|PUT|DELETE /api/mask/{i}`` (PNG label map; 204 when the frame has none),
``POST /api/object``, ``POST /api/propagate`` ``{direction, start}``, ``POST /api/cancel``,
``GET /api/events`` (Server-Sent Events: progress), ``POST /api/export`` ``{kind, ...}``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from tcmn.app.project import AnnotationProject
from tcmn.errors import TCMNError
from tcmn.inference.session import InferenceSession
from tcmn.io import IMAGE_EXTS, METAIMAGE_EXTS, NIFTI_EXTS, VIDEO_EXTS, read_label_map

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
UPLOAD_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".nii", ".nii.gz", ".mha")


@dataclass
class AppConfig:
    """Settings of the app (``conf/annotate.yaml``).

    Attributes:
        data_root: files are opened and exported only under this folder.
        sessions: where the projects are saved (default ``<data_root>/.tcmn-annotate``).
        runs: where checkpoints are listed from (``logs/``).
        ckpt: the default checkpoint (None: the user picks one, or untrained).
        token: required on every request when set.
        upload_max_mb: largest upload accepted.
        device / propagation: the inference session's device and propagation overrides.
        net: network settings of an untrained model (no checkpoint).
    """

    data_root: Path
    sessions: Path | None = None
    runs: Path | None = None
    ckpt: str | None = None
    token: str | None = None
    upload_max_mb: float = 500.0
    device: str = "cpu"
    propagation: dict[str, Any] = field(default_factory=dict)
    net: dict[str, Any] = field(default_factory=dict)


class AppState:
    """The open project, the inference session and the propagation thread."""

    def __init__(self, cfg: AppConfig):
        self.cfg = cfg
        self.root = Path(cfg.data_root).expanduser().resolve()
        if not self.root.is_dir():
            raise TCMNError(f"data_root={cfg.data_root}: no such folder; give an existing folder.")
        self.sessions = Path(cfg.sessions or self.root / ".tcmn-annotate").resolve()
        self.project: AnnotationProject | None = None
        self.session: InferenceSession | None = None
        self.session_ckpt: str | None = "unset"
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ paths
    def resolve(self, rel: str, must_exist: bool = True) -> Path:
        """A path under the data root (``rel`` relative to it, or absolute inside it)."""
        if rel is None or "\x00" in str(rel):
            raise TCMNError("give a path under the data root.")
        p = self._under(rel, [self.root])
        if p is None:
            raise TCMNError(f"{rel}: outside the data root; open files under {self.root}.")
        if must_exist and not p.exists():
            raise TCMNError(f"{rel}: no such file or folder under the data root.")
        return p

    def _under(self, rel: str, roots: list[Path]) -> Path | None:
        """``rel`` (relative to the data root, or absolute) resolved, symbolic links followed,
        when it lies in one of ``roots``; else None."""
        p = Path(str(rel)).expanduser()
        p = (p if p.is_absolute() else self.root / p).resolve()
        return p if any(p == r or r in p.parents for r in roots) else None

    def relative(self, p: Path) -> str:
        return str(p.resolve().relative_to(self.root))

    def need_project(self) -> AnnotationProject:
        if self.project is None:
            raise TCMNError("no video is open; open one first.")
        return self.project

    def need_idle(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            raise TCMNError("a propagation is running; wait for it or cancel it first.")

    def inference(self, ckpt: str | None) -> InferenceSession:
        """The session for ``ckpt`` (rebuilt only when the checkpoint changes)."""
        if self.session is None or self.session_ckpt != ckpt:
            path = str(self.resolve_ckpt(ckpt)) if ckpt else None
            self.session = InferenceSession.load(
                path, self.cfg.propagation, self.cfg.device, self.cfg.net
            )
            self.session_ckpt = ckpt
        return self.session

    def resolve_ckpt(self, ckpt: str) -> Path:
        allowed = [self.root] + ([Path(self.cfg.runs).resolve()] if self.cfg.runs else [])
        if self.cfg.ckpt:
            allowed.append(Path(self.cfg.ckpt).expanduser().resolve().parent)
        p = self._under(ckpt, allowed)
        if p is None:
            raise TCMNError(f"{ckpt}: a checkpoint must be under the data root or the runs folder.")
        if p.suffix != ".ckpt" or not p.is_file():
            raise TCMNError(f"{ckpt}: not a .ckpt file; pick a checkpoint written by tcmn-train.")
        return p


def create_app(cfg: AppConfig):
    """The FastAPI application of ``tcmn-annotate``."""
    state = AppState(cfg)
    app = FastAPI(title="TCMN annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tcmn = state

    @app.exception_handler(TCMNError)
    async def _user_error(request: Request, exc: TCMNError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse(
            {"error": f"unexpected {type(exc).__name__}: {exc}; see the server log."},
            status_code=500,
        )

    @app.middleware("http")
    async def _token(request: Request, call_next):
        if cfg.token:
            given = (
                request.query_params.get("token")
                or request.headers.get("x-tcmn-token")
                or request.cookies.get("tcmn_token")
            )
            if not given or not secrets.compare_digest(given, cfg.token):
                return JSONResponse(
                    {"error": "this server needs its token; open the URL printed at start."},
                    status_code=401,
                )
        response = await call_next(request)
        if cfg.token and request.query_params.get("token"):
            response.set_cookie("tcmn_token", cfg.token, httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------ page
    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str):
        p = (STATIC / name).resolve()
        if p.parent != STATIC.resolve() or not p.is_file():
            raise TCMNError(f"{name}: no such page file.")
        kinds = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
        return FileResponse(p, media_type=kinds.get(p.suffix, "application/octet-stream"))

    # ------------------------------------------------------------------ browsing
    @app.get("/api/files")
    def files(path: str = ""):
        folder = state.resolve(path or ".")
        if not folder.is_dir():
            raise TCMNError(f"{path}: not a folder.")
        entries = []
        for p in sorted(folder.iterdir(), key=lambda q: q.name.lower()):
            if p.name.startswith("."):
                continue
            name = p.name.lower()
            video = name.endswith(VIDEO_EXTS + NIFTI_EXTS + METAIMAGE_EXTS)
            frames = p.is_dir() and any(q.name.lower().endswith(IMAGE_EXTS) for q in p.iterdir())
            if p.is_dir() or video:
                entries.append(
                    {
                        "name": p.name,
                        "path": state.relative(p),
                        "dir": p.is_dir(),
                        "video": video or frames,
                    }
                )
        return {"path": state.relative(folder) if folder != state.root else "", "entries": entries}

    @app.get("/api/checkpoints")
    def checkpoints():
        found = []
        for base in [Path(cfg.runs)] if cfg.runs else []:
            if base.is_dir():
                found += [str(p) for p in sorted(base.rglob("*.ckpt"))[:200]]
        if cfg.ckpt:
            found.insert(0, str(cfg.ckpt))
        return {"checkpoints": found, "default": cfg.ckpt}

    # ------------------------------------------------------------------ project
    @app.post("/api/open")
    async def open_project(request: Request):
        body = await _json(request)
        state.need_idle()
        video = state.resolve(body.get("path"))
        project = AnnotationProject.open(video, state.sessions)
        ckpt = body.get("ckpt", None) or project.ckpt or cfg.ckpt
        state.inference(ckpt)  # a bad checkpoint fails here, before the project is switched
        project.ckpt = ckpt
        project.save_state()
        state.project = project
        return {
            **project.summary(),
            "path": state.relative(video),
            "weights": state.session.weights,
        }

    @app.post("/api/upload")
    async def upload(request: Request, name: str):
        safe = Path(name).name
        if not safe or not safe.lower().endswith(UPLOAD_EXTS):
            raise TCMNError(f"{name}: upload a video ({', '.join(UPLOAD_EXTS)}).")
        limit = int(cfg.upload_max_mb * 2**20)
        size = int(request.headers.get("content-length") or 0)
        if size > limit:
            raise TCMNError(
                f"{safe}: {size / 2**20:.0f} MB is over the {cfg.upload_max_mb:g} MB limit."
            )
        folder = state.root / "uploads"
        folder.mkdir(exist_ok=True)
        dst = folder / safe
        tmp = folder / f".part-{secrets.token_hex(4)}-{safe}"  # keeps the extension for the check
        got = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    got += len(chunk)
                    if got > limit:
                        raise TCMNError(f"{safe}: over the {cfg.upload_max_mb:g} MB limit.")
                    f.write(chunk)
            with _probe(tmp, safe):
                pass
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": state.relative(dst), "bytes": got}

    @app.get("/api/project")
    def project_summary():
        return state.need_project().summary()

    @app.get("/api/frame/{index}")
    def frame(index: int, quality: int = 90):
        p = state.need_project()
        rgb = p.frame(index)
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        )
        return Response(buf.tobytes(), media_type="image/jpeg")

    @app.get("/api/mask/{index}")
    def get_mask(index: int):
        p = state.need_project()
        p.check_frame(index)
        lab = p.labels(index)
        if lab is None:  # not an error: the frame is neither drawn nor propagated yet
            return Response(status_code=204)
        ok, buf = cv2.imencode(".png", lab)
        kind = "drawn" if index in p.drawn else "predicted"
        return Response(buf.tobytes(), media_type="image/png", headers={"X-Mask-Kind": kind})

    @app.put("/api/mask/{index}")
    async def put_mask(index: int, request: Request):
        p = state.need_project()
        state.need_idle()
        data = await request.body()
        labels = _decode_label_png(data, index)
        p.set_drawn(index, labels)
        return {"frame": index, "objects": sorted(int(v) for v in np.unique(labels) if v)}

    @app.delete("/api/mask/{index}")
    def delete_mask(index: int):
        p = state.need_project()
        state.need_idle()
        p.clear_drawn(index)
        return {"frame": index}

    @app.post("/api/object")
    async def set_object(request: Request):
        body = await _json(request)
        p = state.need_project()
        try:
            oid = int(body.get("id"))
        except (TypeError, ValueError):
            raise TCMNError("give the object's id, 1..9.") from None
        p.set_object(oid, body.get("name"), body.get("colour"))
        return {"objects": {str(k): v for k, v in p.objects.items()}}

    # ------------------------------------------------------------------ propagation
    @app.post("/api/propagate")
    async def propagate(request: Request):
        body = await _json(request)
        p = state.need_project()
        with state.lock:
            state.need_idle()
            session = state.inference(p.ckpt)
            direction = str(body.get("direction", "forward"))
            start = body.get("start")
            start = None if start is None else int(start)
            p.plan(direction, start)  # bad requests fail now, not in the thread

            def work():
                try:
                    p.propagate(session, direction, start)
                except Exception as e:  # recorded in the progress the page reads
                    log.warning("propagation stopped: %s", e)

            p.progress.running = True
            p.progress.done = 0
            p.progress.error = None
            state.thread = threading.Thread(target=work, name="tcmn-propagate", daemon=True)
            state.thread.start()
        return {"started": True, "direction": direction, "start": start}

    @app.post("/api/cancel")
    def cancel():
        if state.session is not None:
            state.session.cancel()
        return {"cancelled": bool(state.thread and state.thread.is_alive())}

    @app.get("/api/events")
    async def events():
        p = state.need_project()

        async def stream():
            last = None
            while True:
                d = p.progress.to_dict()
                text = json.dumps(d)
                if text != last:
                    yield f"data: {text}\n\n"
                    last = text
                if not d["running"] and not (state.thread and state.thread.is_alive()):
                    yield "event: end\ndata: {}\n\n"
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream")

    # ------------------------------------------------------------------ export
    @app.post("/api/export")
    async def export(request: Request):
        body = await _json(request)
        p = state.need_project()
        state.need_idle()
        kind = body.get("kind")
        if kind == "files":
            out = state.resolve(body.get("out") or f"exports/{p.video.stem}", must_exist=False)
            p.export(out, overlay=bool(body.get("overlay", True)), nifti=body.get("nifti"))
            return {"out": state.relative(out)}
        if kind == "dataset":
            root = state.resolve(body.get("root") or "annotated", must_exist=False)
            name = str(body.get("name") or p.video.stem)
            if not name.replace("-", "").replace("_", "").isalnum():
                raise TCMNError(f"{name!r}: a video name uses letters, digits, - and _ only.")
            p.add_to_dataset(root, name)
            return {"root": state.relative(root), "video": name}
        raise TCMNError(f"kind={kind!r}: export kind is files or dataset.")

    return app


async def _json(request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise TCMNError("the request body is not JSON.") from None
    if not isinstance(body, dict):
        raise TCMNError("the request body must be a JSON object.")
    return body


def _probe(path: Path, name: str):
    """Open an uploaded file as a video (the type check); a context manager."""
    from tcmn.io import open_video

    try:
        src = open_video(path)
    except TCMNError:
        raise TCMNError(
            f"{name}: the upload is not a readable video; upload an .mp4/.avi/.nii.gz."
        ) from None
    return src


def _decode_label_png(data: bytes, index: int) -> np.ndarray:
    """A PNG body -> uint8 ``[H, W]`` label map, read as every label map is
    (:func:`tcmn.io.read_label_map`: grey or palette; RGB only with equal channels)."""
    from PIL import Image

    if not data:
        raise TCMNError(f"the mask of frame {index} is empty; send a PNG label map.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            kind = im.format
    except Exception:
        raise TCMNError(f"the mask of frame {index} is not a readable PNG.") from None
    if kind != "PNG":
        raise TCMNError(f"the mask of frame {index} is {kind}, not PNG.")
    return read_label_map(io.BytesIO(data), f"the mask of frame {index}")

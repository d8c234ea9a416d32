"""The annotation app in a real headless browser (Debian's chromium, driven by Playwright): open
a video from the file list, draw a polygon, propagate, scrub with the keyboard, see the
confidence curve, with no error in the page. Skipped where chromium is not installed
(``apt-get install -y chromium``)."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image
from test_annotate import T, client  # noqa: F401  (the data root fixture below reuses its setup)
from test_propagator import OracleTCMN, moving_objects

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@pytest.fixture
def server(tmp_path):
    """The app (oracle network) served by uvicorn on a free port; yields its URL."""
    import cv2
    import uvicorn

    frames, _ = moving_objects(t=T)
    root = tmp_path / "data"
    (root / "vid").mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(root / "vid" / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    app = client(root, OracleTCMN()).app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(10)


def mask(url: str, t: int) -> np.ndarray:
    with urllib.request.urlopen(f"{url}/api/mask/{t}") as r:
        return np.asarray(Image.open(io.BytesIO(r.read())))


def test_draw_propagate_and_scrub_in_a_browser(server):
    from playwright.sync_api import sync_playwright

    _, labels = moving_objects(t=T)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server)
        page.get_by_text("vid/", exact=True).click()
        page.wait_for_function("window.tcmn.project && window.tcmn.image")
        assert page.evaluate("window.tcmn.n") == T
        # polygon around object 1 (the red cell at rows/cols 0..15 of frame 0), object 1 chosen
        page.keyboard.press("1")
        page.keyboard.press("p")
        box = page.locator("#canvas").bounding_box()
        w, h = page.evaluate("[window.tcmn.W, window.tcmn.H]")

        def at(x, y):
            return box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h

        for x, y in ((0, 0), (15, 0), (15, 15), (0, 15)):
            page.mouse.click(*at(x, y))
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#status').textContent.includes('saved')")
        drawn = mask(server, 0)
        cell = drawn[:16, :16]
        assert (cell == 1).mean() > 0.85 and (drawn[16:, 16:] == 0).all()
        # propagate forward: the progress bar fills, the page says when it is done
        page.get_by_role("button", name="forward").click()
        page.wait_for_function(
            "document.querySelector('#status').textContent.includes('finished')", timeout=60000
        )
        assert page.evaluate("document.querySelector('#bar').value") == T
        for t in (3, 8, 11):
            np.testing.assert_array_equal(mask(server, t), np.where(labels[t] == 1, 1, 0))
        # scrub with the keyboard: arrows one frame, shift-arrows ten
        page.keyboard.press("ArrowRight")
        page.wait_for_function("window.tcmn.t === 1")
        page.keyboard.press("Shift+ArrowRight")
        page.wait_for_function("window.tcmn.t === 11")
        assert "propagated" in page.locator("#frame-info").text_content()
        # the confidence curve (green) is drawn under the timeline
        green = page.evaluate(
            """() => { const c = document.querySelector('#timeline');
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let n = 0; for (let i = 0; i < d.length; i += 4)
                   if (d[i + 1] > 80 && d[i + 1] > 2 * d[i]) n++;
                 return n; }"""
        )
        assert green > 20
        browser.close()
    assert not errors, errors

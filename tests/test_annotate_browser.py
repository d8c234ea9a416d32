"""The annotation app in a real headless browser (Debian's chromium, driven by Playwright): open
a video from the file list, draw a polygon, propagate, scrub with the keyboard, see the
confidence curve, with no error in the page. Skipped where chromium is not installed
(``apt-get install -y chromium``)."""

from __future__ import annotations

import io
import os
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

from tcmn.inference.session import InferenceSession

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
    yield f"http://127.0.0.1:{port}", root
    srv.should_exit = True
    th.join(10)


def mask(url: str, t: int) -> np.ndarray:
    with urllib.request.urlopen(f"{url}/api/mask/{t}") as r:
        return np.asarray(Image.open(io.BytesIO(r.read())))


def clear_status(page) -> None:
    """Empty the status line, so that the next wait sees only what the next action writes."""
    page.evaluate("document.querySelector('#status').textContent = ''")


def wait_status(page, word: str) -> None:
    page.wait_for_function(
        f"document.querySelector('#status').textContent.includes('{word}')", timeout=60000
    )


def oracle_session() -> InferenceSession:
    return InferenceSession.from_network(OracleTCMN(), {"mem_every": 1, "top_k": None})


def test_draw_propagate_correct_export_in_a_browser(server):
    from playwright.sync_api import sync_playwright

    url, root = server
    frames, labels = moving_objects(t=T)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.get_by_text("vid/", exact=True).click()
        page.wait_for_function("window.tcmn.project && window.tcmn.image && !window.tcmn.loading")
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
        wait_status(page, "saved")
        drawn = mask(url, 0)
        cell = drawn[:16, :16]
        assert (cell == 1).mean() > 0.85 and (drawn[16:, 16:] == 0).all()
        # propagate forward: the progress bar fills, the page says when it is done
        clear_status(page)
        page.get_by_role("button", name="forward").click()
        wait_status(page, "finished")
        assert page.evaluate("document.querySelector('#bar').value") == T
        for t in (3, 8, 11):
            np.testing.assert_array_equal(mask(url, t), np.where(labels[t] == 1, 1, 0))
        # correct frame 6: object 2 was never given; draw it there and propagate from it
        for _ in range(6):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "window.tcmn.t === 6 && !window.tcmn.loading && window.tcmn.kind === 'predicted'"
        )
        ys, xs = np.nonzero(labels[6] == 2)
        page.keyboard.press("2")
        clear_status(page)
        for x, y in (
            (xs.min(), ys.min()),
            (xs.max(), ys.min()),
            (xs.max(), ys.max()),
            (xs.min(), ys.max()),
        ):
            page.mouse.click(*at(x, y))
        page.keyboard.press("Enter")
        wait_status(page, "saved")
        page.wait_for_function("window.tcmn.project.drawn.includes(6)")
        clear_status(page)
        page.get_by_role("button", name="forward").click()
        wait_status(page, "finished")
        # export, and compare with direct runs of the inference session on the same masks
        assert mask(url, 6)[ys.min() + 2, xs.min() + 2] == 2
        page.get_by_role("button", name="PNG + overlay (+ NIfTI)").click()
        page.wait_for_function(
            "document.querySelector('#exported').textContent.includes('written')"
        )
        m0, m6 = mask(url, 0), mask(url, 6)
        direct = oracle_session()
        first = {r.index: r.labels for r in direct.propagate(frames, {0: (m0, None)})}
        again = {
            r.index: r.labels
            for r in direct.propagate(frames, {0: (m0, None), 6: (m6, None)}, start=6)
        }
        expected = {**first, **again, 0: m0, 6: m6}
        out = root / "exports" / "vid" / "masks"
        assert len(list(out.glob("*.png"))) == T
        for t in range(T):
            got = np.asarray(Image.open(out / f"{t:03d}.png"))
            np.testing.assert_array_equal(got, expected[t], err_msg=f"frame {t}")
        np.testing.assert_array_equal(expected[9], labels[9])  # both objects followed
        # scrub with the keyboard: arrows one frame, shift-arrows ten
        page.evaluate("window.tcmn.t = 0")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("window.tcmn.t === 1 && !window.tcmn.loading")
        page.keyboard.press("Shift+ArrowRight")
        page.wait_for_function("window.tcmn.t === 11 && !window.tcmn.loading")
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
        shot = os.environ.get("TCMN_SCREENSHOT")
        if shot:  # the README's picture: TCMN_SCREENSHOT=docs/annotate.png pytest ...
            page.keyboard.press("ArrowLeft")
            page.wait_for_function("window.tcmn.t === 10 && !window.tcmn.loading")
            page.screenshot(path=shot)
        browser.close()
    assert not errors, errors

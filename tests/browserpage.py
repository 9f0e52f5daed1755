"""One headless Chromium page on the built site, shared by the browser test modules.

Import it after ``tests/`` is on ``sys.path`` (pytest puts it there). Calling
:func:`require_browser` at module level skips the whole module where Chromium,
the npm packages or Playwright are missing.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.browser import CHROMIUM, launch  # noqa: E402


def require_browser():
    """Skip the calling test module unless a real browser test can run here."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)
    if shutil.which("npm") is None and not (ROOT / "node_modules").exists():
        pytest.skip("npm is not installed and node_modules is missing", allow_module_level=True)
    pytest.importorskip("playwright.sync_api")


class BrowserPage:
    """A browser, one context and one page, with every request and console line recorded.

    Parameters
    ----------
    origin : str
        The served site, e.g. ``http://127.0.0.1:PORT``.
    webgpu : bool
        Give Chromium a (SwiftShader) WebGPU adapter.
    timeout_ms : int
        Default timeout of page operations.
    **context_options
        Passed to ``browser.new_context``.
    """

    def __init__(self, origin: str, *, webgpu: bool = False, timeout_ms: int = 180_000,
                 **context_options):
        from playwright.sync_api import sync_playwright

        self.origin = origin
        self.requests: list[str] = []
        self.console: list[str] = []
        self.info = None
        self.pw = sync_playwright().start()
        self.browser = launch(self.pw, webgpu=webgpu)
        self.context = self.browser.new_context(**context_options)
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.page.set_default_timeout(timeout_ms)
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open_app(self, query: str = "") -> dict:
        """Load ``index.html`` and wait for ``window.piximi.ready``; fail with the console tail."""
        self.page.goto(f"{self.origin}/index.html{query}")
        try:
            self.info = self.page.evaluate("window.piximi.ready")
        except Exception as exc:
            self.close()
            pytest.fail(f"page did not become ready: {exc}\n" + "\n".join(self.console[-30:]))
        return self.info

    def close(self) -> None:
        self.context.close()
        self.browser.close()
        self.pw.stop()


def wasm_app(origin: str) -> BrowserPage:
    """The app as a person uses it (large window, downloads allowed), on the WASM backend:
    deterministic, and running the same model files CPython's onnxruntime is compared with."""
    app = BrowserPage(origin, accept_downloads=True, viewport={"width": 1400, "height": 1000})
    app.open_app("?backend=wasm")
    return app


def cpython_labels(image, models_dir: Path, model_id: str | None = None):
    """The same image through the CPython pipeline (native onnxruntime), for parity checks."""
    import piximi_py

    return piximi_py.segment_image(image, model_id, models_dir=models_dir).labels


def assert_same_instances(a: np.ndarray, b: np.ndarray, what: str, min_iou: float = 0.99) -> None:
    """Labels equal, or a one-to-one match of objects with IoU >= min_iou each: the page's WASM
    build of onnxruntime and native onnxruntime may round a probability on a rim to either side of a
    threshold (2026-12-07: one rim pixel of a 512² whole-cell image, where CPython's labels were the
    same with onnxruntime 1.31 and 1.32, numpy 2.2 and 2.4, scipy 1.14 to 1.17)."""
    assert a.shape == b.shape, what
    if np.array_equal(a, b):
        return
    from piximi_py.metrics import iou_matrix

    assert a.max() == b.max(), f"{what}: {a.max()} vs {b.max()} objects"
    iou = iou_matrix(a, b)
    best = iou.max(axis=1)
    assert best.min() >= min_iou, f"{what}: worst matched IoU {best.min():.4f}"
    assert len(set(iou.argmax(axis=1).tolist())) == iou.shape[0], f"{what}: not one-to-one"

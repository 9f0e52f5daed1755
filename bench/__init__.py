"""Benchmarks: ``python -m bench`` (segmentation), ``bench.prompt`` (SAM), ``bench.large``,
``bench.large_page``, ``bench.batch_memory``, ``bench.distributed``, ``bench.zoo_page``,
``bench.conv_peak``, ``bench.ortweb_builds``, ``bench.zoom``, ``bench.decode``."""
from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def app_page(query: str = "", timeout_ms: int | None = None, webgpu: bool = False):
    """Build ``dist/``, serve it and open ``index.html{query}`` in headless Chromium.

    Yields ``(page, ready_ms)``: the Playwright page once ``window.piximi.ready``
    has resolved, and the cold start to that point in milliseconds. ``webgpu``
    gives the browser SwiftShader's WebGPU adapter (correctness only: slow).
    """
    from playwright.sync_api import sync_playwright

    from tools.browser import launch
    from tools.site import build_site, serve_background

    build_site()
    server, origin = serve_background(0)
    try:
        with sync_playwright() as p:
            browser = launch(p, webgpu=webgpu)
            try:
                page = browser.new_page()
                if timeout_ms:
                    page.set_default_timeout(timeout_ms)
                t0 = time.perf_counter()
                page.goto(f"{origin}/index.html{query}")
                page.wait_for_function("window.piximi !== undefined")
                page.evaluate("() => window.piximi.ready")
                yield page, (time.perf_counter() - t0) * 1000
            finally:
                browser.close()
    finally:
        server.shutdown()

"""Headless Debian Chromium for tests and benchmarks (Playwright)."""
from __future__ import annotations

import os

CHROMIUM = os.environ.get("PIXIMI_CHROMIUM", "/usr/bin/chromium")
BASE_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic"]
# WebGPU through SwiftShader: exact but slow, so for correctness checks on small images only.
WEBGPU_ARGS = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
               "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader"]


def launch(playwright, *, webgpu: bool = False):
    """Start Chromium; ``webgpu`` adds the SwiftShader WebGPU adapter."""
    args = BASE_ARGS + (WEBGPU_ARGS if webgpu else [])
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)

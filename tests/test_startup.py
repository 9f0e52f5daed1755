"""What the page loads at start-up: the built site's wheels and the worker's imports
(python -m bench.startup measures the times)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_worker_starts_without_the_pipeline():
    """piximi_py.webworker (what init imports) loads neither scipy nor the decoders: they load
    after the page is ready."""
    code = ("import sys, piximi_py.webworker\n"
            "print([m for m in ('scipy', 'tifffile', 'PIL', 'piximi_py.pipeline') if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]", run.stdout


def test_built_site_wheels(site):
    """The page's scipy lacks the subpackages piximi_py never imports and keeps those it does;
    numpy, scipy, Pillow and the pure-Python wheels carry bytecode for Pyodide's Python, numpy with
    its compiled extensions unchanged; start-up loads only numpy and piximi_py; the runtime
    has gzip copies."""
    from tools.site import SCIPY_UNUSED

    dist = ROOT / "dist"
    build = json.loads((dist / "build.json").read_text())
    assert build["pyodide_packages"] == []
    assert [w.split("/")[-1].split("-")[0] for w in build["wheels"]] == ["numpy", "piximi_py"]
    wheels = {w.split("/")[-1].split("-")[0]: dist / w for w in build["wheels"] + build["deferred_wheels"]}
    names = zipfile.ZipFile(wheels["scipy"]).namelist()
    top = {n.split("/")[1] for n in names if n.startswith("scipy/") and n.count("/") > 1}
    assert {"ndimage", "special", "linalg", "sparse", "_lib"} <= top
    assert not top & set(SCIPY_UNUSED)
    for name in ("numpy", "scipy", "pillow", "tifffile", "piximi_py"):
        files = zipfile.ZipFile(wheels[name]).namelist()
        modules = [n for n in files if n.endswith(".py") and ".dist-info/" not in n]
        cached = {n for n in files if n.endswith(".cpython-312.pyc")}
        assert modules and len(cached) == len(modules), (name, len(modules), len(cached))
    from tools.site import fetch_pyodide_file, load_lock

    entry = load_lock()["packages"]["numpy"]
    original = zipfile.ZipFile(fetch_pyodide_file(entry["file_name"], entry["sha256"]))
    shipped = zipfile.ZipFile(wheels["numpy"])
    for info in original.infolist():
        if info.filename.endswith(".so"):
            assert shipped.read(info.filename) == original.read(info.filename), info.filename
    manifest = json.loads((dist / "manifest.json").read_text())
    assert manifest["files"]["pyodide/pyodide.asm.wasm"]["gz"] < 0.5 * manifest["files"]["pyodide/pyodide.asm.wasm"]["size"]
    assert (dist / "pyodide" / "pyodide.asm.wasm.gz").exists()

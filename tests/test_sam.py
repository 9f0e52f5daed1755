"""Promptable segmentation (piximi_py.sam): geometry, validation, and the shipped
ONNX models (LiteMedSAM and its distilled student) on a real nucleus image. Torch only for
reading decoder weights back (skipped without it)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import piximi_py
import piximi_py.sam as S
from piximi_py.io import read_image

from realdata import stardist_sample

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


# ------------------------------------------------------------ geometry
@pytest.mark.parametrize("window", [S.Window(0, 0, 256, 256), S.Window(10, 20, 64, 64),
                                    S.Window(100, 37, 181, 128), S.Window(0, 0, 520, 696)])
def test_prompt_mapping_roundtrip(window):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (20, 2)) * [window.w - 1, window.h - 1] + [window.x, window.y]
    boxes = np.concatenate([pts[:10], pts[:10] + rng.uniform(1, 30, (10, 2))], axis=1)
    np.testing.assert_allclose(S.points_from_model(S.points_to_model(pts, window), window), pts, atol=1e-9)
    np.testing.assert_allclose(S.boxes_from_model(S.boxes_to_model(boxes, window), window), boxes, atol=1e-9)
    m = S.points_to_model(pts, window)
    nh, nw = window.model_shape()
    assert (m >= -0.5).all() and (m[:, 0] <= nw - 0.5).all() and (m[:, 1] <= nh - 0.5).all()


def test_prompt_mapping_scale():
    w = S.Window(50, 60, 128, 128)  # 2x upscaling into the 256 input
    # a box's outer pixel edges map to the model frame: first..last pixel
    np.testing.assert_allclose(S.boxes_to_model([60, 50, 69, 59], w), [[0, 0, 19, 19]])
    # a pixel centre maps to the centre of its 2x2 block
    np.testing.assert_allclose(S.points_to_model([[60, 50]], w), [[0.5, 0.5]])
    # identity at scale 1
    w1 = S.Window(0, 0, 256, 256)
    np.testing.assert_allclose(S.boxes_to_model([3, 4, 30, 40], w1), [[3, 4, 30, 40]])


def test_choose_window_contains_object_and_is_shared():
    shape = (520, 696)
    for box in ([100, 200, 115, 220], [0, 0, 10, 12], [680, 500, 695, 519], [300, 100, 420, 260]):
        w = S.choose_window(shape, box, context=4, min_window=64)
        assert w.x <= box[0] and w.y <= box[1] and w.x + w.w > box[2] and w.y + w.h > box[3]
        assert 0 <= w.y and w.y + w.h <= shape[0] and 0 <= w.x and w.x + w.w <= shape[1]
        size = max(box[2] - box[0] + 1, box[3] - box[1] + 1)
        assert w.h >= min(shape[0], 4 * size) and max(w.h, w.w) <= max(4 * size * 1.5, 64)
    # neighbouring objects of similar size share one window (one embedding)
    a = S.choose_window(shape, [120, 200, 134, 218])
    b = S.choose_window(shape, [123, 203, 137, 220])
    assert a == b
    # an image smaller than the window is used whole
    assert S.choose_window((60, 80), [10, 10, 30, 30]) == S.Window(0, 0, 60, 80)


def test_resize_bilinear_matches_half_pixel_convention():
    a = np.array([[0.0, 1.0]], np.float32)
    out = S.resize_bilinear(a, (1, 4), antialias=False)
    np.testing.assert_allclose(out, [[0, 0.25, 0.75, 1.0]])
    img = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    assert S.resize_bilinear(img, (256, 180)).shape == (256, 180)
    assert S.resize_bilinear(np.stack([img] * 3, -1), (20, 30)).shape == (20, 30, 3)


def test_encoder_input_pads_bottom_right():
    img = np.random.default_rng(0).random((100, 300)).astype(np.float32)
    x, (nh, nw) = S.encoder_input(img, S.Window(0, 50, 100, 200))
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    assert (nh, nw) == (128, 256)
    assert (x[:, :, nh:] == 0).all() and np.array_equal(x[0, 0], x[0, 2])


def test_decoder_prompt_layout():
    w = S.Window(0, 0, 256, 256)
    c, l = S.decoder_prompt(w, boxes=[[10, 20, 30, 40]])
    assert c.shape == (1, 2, 2) and l.tolist() == [[2, 3]]
    c, l = S.decoder_prompt(w, points=np.array([[5.0, 6.0], [7.0, 8.0]]), labels=np.array([1, 0]))
    assert c.shape == (1, 3, 2) and l.tolist() == [[1, 0, -1]]  # padding point without a box
    c, l = S.decoder_prompt(w, boxes=[[10, 20, 30, 40]], points=np.array([[15.0, 25.0]]), labels=np.array([1]))
    assert l.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("kwargs, match", [
    ({}, "empty prompt"),
    ({"boxes": []}, "empty prompt"),
    ({"boxes": [10, 10, 10, 30]}, "degenerate box"),
    ({"boxes": [30, 10, 10, 30]}, "degenerate box"),
    ({"boxes": [10, 10, 20]}, "boxes must be"),
    ({"boxes": [np.nan, 1, 5, 5]}, "finite"),
    ({"boxes": [500, 500, 600, 600]}, "outside"),
    ({"points": [[5, 5]], "labels": [0]}, "positive point"),
    ({"points": [[5, 5], [6, 6]], "labels": [1]}, "2 points"),
    ({"points": [[5, 5]], "labels": [3]}, "labels must be"),
    ({"points": [[-1, 5]]}, "outside"),
    ({"labels": [1]}, "without points"),
])
def test_bad_prompts_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.check_prompt((100, 120), **kwargs)


# ------------------------------------------------------- shipped models
def _entries():
    index = json.loads((MODELS / "index.json").read_text())
    entries = [m for m in index["models"] if m["task"] == "prompt-segmentation"]
    assert entries, "models/index.json has no prompt-segmentation entry"
    return entries


PROMPT_MODELS = [m["id"] for m in _entries()]


def test_one_default_prompt_model():
    defaults = [m["id"] for m in _entries() if m.get("default")]
    assert len(defaults) <= 1
    assert S.load_sam_spec(MODELS).id == (defaults[0] if defaults else PROMPT_MODELS[0])


def test_mask_threshold_by_window_size():
    """Masks decoded in a small window (the image enlarged most) are cut at their own logit."""
    spec = S.SamSpec(prompt={"mask_threshold": 1.0, "small_window": 64, "small_window_threshold": 2.0})
    assert spec.mask_threshold(S.Window(0, 0, 64, 40)) == 2.0
    assert spec.mask_threshold(S.Window(0, 0, 65, 64)) == 1.0
    assert S.SamSpec(prompt={"mask_threshold": 1.0}).mask_threshold(S.Window(0, 0, 32, 32)) == 1.0


@pytest.mark.parametrize("entry", _entries(), ids=PROMPT_MODELS)
def test_index_entry_and_files(entry):
    spec = S.load_sam_spec(MODELS, entry["id"])
    for runtime in ("native", "wasm", "webgpu"):
        for part in ("encoder", "decoder"):
            assert (MODELS / spec.file(part, runtime)).exists()
    for role, f in entry["files"].items():
        data = (MODELS / f["file"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"], role
    assert entry["source"]["license"] == "Apache-2.0"
    # the nuclei model stays the default
    assert piximi_py.models.find_model(piximi_py.load_models(MODELS), None).task != "prompt-segmentation"


class Counting:
    """Wraps a backend and counts its runs."""

    def __init__(self, backend):
        self.backend, self.calls, self.name = backend, 0, backend.name

    async def run(self, batch):
        self.calls += 1
        return await self.backend.run(batch)


@pytest.fixture(scope="module")
def nuclei():
    image_path, mask_path = stardist_sample()
    return read_image(image_path), read_image(mask_path).astype(np.int32)


@pytest.fixture(scope="module", params=PROMPT_MODELS)
def predictor(request):
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend

    spec = S.load_sam_spec(MODELS, request.param)
    enc = Counting(OnnxRuntimeBackend(MODELS / spec.file("encoder"), threads=2))
    dec = OnnxRuntimeBackend(MODELS / spec.file("decoder"), threads=2)
    return S.SamPredictor(enc, dec, spec)


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max(), ys.max()]


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def _typical_objects(labels, n=3):
    """n objects of median size away from the border, deterministic."""
    from scipy import ndimage as ndi

    ids = np.arange(1, labels.max() + 1)
    areas = ndi.sum_labels(np.ones_like(labels), labels, ids)
    ok = [i for i, sl in zip(ids, ndi.find_objects(labels)) if sl is not None and sl[0].start > 0
          and sl[1].start > 0 and sl[0].stop < labels.shape[0] and sl[1].stop < labels.shape[1]]
    ok.sort(key=lambda i: abs(areas[i - 1] - np.median(areas)))
    return ok[:n]


def test_box_prompt_on_real_nucleus(nuclei, predictor):
    image, labels = nuclei
    piximi_py.run_sync(predictor.set_image(image, "stardist"))
    ious = []
    for lab in _typical_objects(labels, 5):
        gt = labels == lab
        mask, iou = piximi_py.run_sync(predictor.predict(boxes=_bbox(gt)))
        assert mask.shape == labels.shape and mask.dtype == bool
        assert 0.0 < iou <= 1.5
        ious.append(_iou(mask, gt))
    # one of the five (label 35, pressed against a neighbour) is under-segmented: 0.44 before
    # fine-tuning, 0.56 after the short CPU one, 0.51 with the shipped GPU fine-tune (joint
    # encoder + decoder), whose other four reach 0.83-0.86 (median 0.84). sam_fast: 0.51, 0.76-0.90
    # (mean 0.761; 0.748 at its former mask threshold of 0, where the median was 0.80 and the mean of
    # 438 jittered boxes at 10-150 px 0.877 against 0.886 now: build.py sam-evaluate --diameters)
    assert np.mean(ious) >= 0.74 and min(ious) >= 0.45, ious


def test_embedding_cached_per_window(nuclei, predictor):
    image, labels = nuclei
    piximi_py.run_sync(predictor.set_image(image, "stardist"))
    lab = _typical_objects(labels, 1)[0]
    box = _bbox(labels == lab)
    piximi_py.run_sync(predictor.predict(boxes=box))
    calls = predictor.encoder.calls
    # a refinement of the same object (box + clicks) reuses the embedding
    ys, xs = np.nonzero(labels == lab)
    piximi_py.run_sync(predictor.predict(boxes=box, points=[[xs.mean(), ys.mean()]], labels=[1]))
    assert predictor.encoder.calls == calls


def test_segment_boxes_gives_instances(nuclei, predictor):
    image, labels = nuclei
    piximi_py.run_sync(predictor.set_image(image, "stardist"))
    ids = _typical_objects(labels, 3)
    boxes = np.array([_bbox(labels == i) for i in ids])
    out, ious = piximi_py.run_sync(predictor.segment_boxes(boxes))
    assert out.shape == labels.shape and set(np.unique(out)) <= {0, 1, 2, 3}
    ious = [_iou(out == k + 1, labels == i) for k, i in enumerate(ids)]
    # labels 35, 72, 91: 0.51, 0.83, 0.84 with LiteMedSAM (see above); 0.50, 0.86, 0.75 with
    # its student (held out, box prompts: 0.893 mean IoU against LiteMedSAM's 0.908, models/SAM.md)
    floor = {"sam_fast": 0.72}.get(predictor.spec.id, 0.78)
    assert np.median(ious) >= floor and min(ious) >= 0.45, ious


def test_click_on_large_nuclei_finds_the_whole_object(nuclei, predictor):
    """Nuclei 90 px across (the StarDist image enlarged 3.7x): a centre click in the
    fixed 96-px window gave mean IoU 0.04; growing windows, or a window sized by the
    segmentation's diameter, find the whole nucleus; so does a diameter estimated ten times
    too small (a window inside the nucleus, where the model draws a speck it doubts)."""
    from scipy import ndimage as ndi

    from piximi_py.diameter import median_diameter
    from training.scales import rescale_case

    image, labels = nuclei
    big, truth = rescale_case(image, labels, 90 / median_diameter(labels)[0], max_side=768)
    piximi_py.run_sync(predictor.set_image(big, "stardist-large"))
    grown, sized, wrong = [], [], []
    for lab in _typical_objects(truth, 4):
        gt = truth == lab
        cy, cx = ndi.center_of_mass(gt)
        click = dict(points=[[cx, cy]], labels=[1])
        grown.append(_iou(piximi_py.run_sync(predictor.predict(**click))[0], gt))
        sized.append(_iou(piximi_py.run_sync(predictor.predict(**click, diameter=90))[0], gt))
        wrong.append(_iou(piximi_py.run_sync(predictor.predict(**click, diameter=9))[0], gt))
    assert min(np.mean(grown), np.mean(sized), np.mean(wrong)) >= 0.75, (grown, sized, wrong)


def test_cpython_prompt_helper(nuclei):
    image, labels = nuclei
    lab = _typical_objects(labels, 2)[1]
    mask, iou = S.prompt(image, boxes=_bbox(labels == lab), models_dir=MODELS)
    assert _iou(mask, labels == lab) >= 0.78  # 0.83 with the shipped model
    with pytest.raises(ValueError, match="empty prompt"):
        S.prompt(image, models_dir=MODELS)


def test_boxes_from_labels():
    labels = np.zeros((20, 30), np.int32)
    labels[2:5, 3:9] = 1
    labels[10, 29] = 2  # one pixel at the border
    boxes = S.boxes_from_labels(labels)
    np.testing.assert_array_equal(boxes, [[3, 2, 8, 4], [28, 10, 29, 11]])
    S.check_prompt(labels.shape, boxes=boxes)  # valid prompts


def test_merged_checkpoint_records_each_phase_once(tmp_path):
    """Parts of a two-phase fine-tune merge into one checkpoint listing both phases, in order."""
    torch = pytest.importorskip("torch")
    from training.sam_finetune import merge_checkpoint

    base = {"image_encoder.w": torch.zeros(2), "mask_decoder.w": torch.zeros(2), "prompt_encoder.w": torch.zeros(1)}
    torch.save({"model": base}, tmp_path / "base.pth")
    decoder = {"what": "decoder phase", "iterations": 3}
    joint = {"what": "joint phase", "iterations": 2}
    torch.save({"parts": {"mask_decoder.w": torch.ones(2).half()}, "fine_tuning": {"phases": [decoder]}},
               tmp_path / "dec.pt")
    torch.save({"parts": {"image_encoder.w": torch.full((2,), 2.0).half()},
                "fine_tuning": {"phases": [decoder, joint]}}, tmp_path / "enc.pt")
    torch.save({"parts": {"mask_decoder.w": torch.full((2,), 3.0).half()},
                "fine_tuning": {"phases": [decoder, joint]}}, tmp_path / "joint_dec.pt")
    out = merge_checkpoint(tmp_path / "base.pth", [tmp_path / "enc.pt", tmp_path / "joint_dec.pt"],
                           tmp_path / "merged.pth")
    merged = torch.load(out, weights_only=True)
    assert merged["fine_tuning"] == {"phases": [decoder, joint]}
    assert merged["model"]["image_encoder.w"].dtype == torch.float32
    assert merged["model"]["image_encoder.w"].tolist() == [2.0, 2.0]
    assert merged["model"]["mask_decoder.w"].tolist() == [3.0, 3.0]
    assert merged["model"]["prompt_encoder.w"].tolist() == [0.0]


@pytest.mark.parametrize("entry", _entries(), ids=PROMPT_MODELS)
def test_encoder_output_matches_the_entry(entry):
    """Each encoder writes the embedding its decoder takes, as the index entry states."""
    import onnxruntime as ort

    spec = S.load_sam_spec(MODELS, entry["id"])
    for runtime in ("native", "wasm"):
        enc = ort.InferenceSession(str(MODELS / spec.file("encoder", runtime)), providers=["CPUExecutionProvider"])
        dec = ort.InferenceSession(str(MODELS / spec.file("decoder", runtime)), providers=["CPUExecutionProvider"])
        emb = enc.run(None, {"image": np.zeros((1, 3, 256, 256), np.float32)})[0]
        assert list(emb.shape) == entry["embedding_shape"] == entry["outputs"]["encoder"]["embeddings"]
        assert dec.get_inputs()[0].shape == entry["inputs"]["decoder"]["embeddings"]


@pytest.mark.parametrize("entry", _entries(), ids=PROMPT_MODELS)
def test_decoder_weights_read_back_from_onnx(entry):
    """The PyTorch decoder rebuilt from a shipped fp32 decoder file (how the student's
    training starts from the fine-tuned decoder) computes what the file computes, on
    the embedding grid of its encoder (64x64 for LiteMedSAM, 32x32 for the student)."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from training.models.sam import SamPromptDecoder, build_lite_medsam
    from training.sam_student import decoder_from_onnx

    path = MODELS / entry["files"]["decoder"]["file"]
    sam = build_lite_medsam()
    grid = entry["embedding_shape"][-1]
    sam.prompt_encoder.image_embedding_size = (grid, grid)
    decoder_from_onnx(sam, path)
    emb = np.random.default_rng(0).normal(size=entry["embedding_shape"]).astype(np.float32)
    coords = np.array([[[60, 70], [120, 150], [90, 100]]], np.float32)
    labels = np.array([[2, 3, 1]], np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"embeddings": emb, "point_coords": coords, "point_labels": labels})
    with torch.no_grad():
        got = SamPromptDecoder(sam.eval())(*(torch.from_numpy(a) for a in (emb, coords, labels)))
    assert np.abs(got[0].numpy() - want[0]).max() <= 1e-4 * max(1.0, np.abs(want[0]).max())
    np.testing.assert_allclose(got[1].numpy(), want[1], atol=1e-4)


def test_default_model_is_a_whole_image_model_whatever_the_order():
    """Two tasks mark a default (nuclei, the prompt model): without an id, the whole-image
    model is chosen wherever the entries sit in the index (a re-export moves them)."""
    specs = piximi_py.load_models(MODELS)
    for order in (specs, specs[::-1]):
        assert piximi_py.models.find_model(order, None).task != "prompt-segmentation"
    prompt = [s for s in specs if s.task == "prompt-segmentation"]
    assert piximi_py.models.find_model(prompt, None).id == S.load_sam_spec(MODELS).id

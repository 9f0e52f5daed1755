"""Segment Anything in the page: prompt mode driven with the mouse, the
``window.piximi.prompt`` API against CPython, "Refine all", and no request
leaving the origin. Real Chromium, real onnxruntime-web (WASM), the shipped
LiteMedSAM files, the real StarDist sample (CC0) and its ground-truth mask.

One browser page for the module (2-core machines); each test opens the image
it needs (``show``), so any one of them runs alone.
"""
from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from realdata import stardist_sample  # noqa: E402
from browserpage import require_browser, wasm_app  # noqa: E402
from piximi_py.webprompt import DECODER_WARM_UP_RUNS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

require_browser()
tifffile = pytest.importorskip("tifffile")

_report: dict = {}


@pytest.fixture(scope="module")
def app(site, models_dir):
    index = json.loads((models_dir / "index.json").read_text())
    if not any(m.get("task") == "prompt-segmentation" for m in index["models"]):
        pytest.skip("models/index.json has no promptable model")
    a = wasm_app(site)
    yield a
    a.close()


@pytest.fixture(scope="module")
def sample():
    image_path, mask_path = stardist_sample()
    return image_path, tifffile.imread(mask_path).astype(np.int32)


def separated_nuclei(gt: np.ndarray, n: int = 2, gap: int = 6) -> list[int]:
    """``n`` ground-truth nuclei of about median size, away from the border, with no
    other nucleus within ``gap`` pixels (a box around one holds no other)."""
    ids = np.arange(1, gt.max() + 1)
    areas = ndi.sum_labels(np.ones_like(gt), gt, ids)
    med = np.median(areas[areas > 0])
    out = []
    for i, sl in zip(ids, ndi.find_objects(gt)):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if min(y0, x0) < 20 or y1 > gt.shape[0] - 20 or x1 > gt.shape[1] - 20:
            continue
        ring = gt[max(0, y0 - gap):y1 + gap, max(0, x0 - gap):x1 + gap]
        if set(np.unique(ring)) <= {0, i}:
            out.append((abs(areas[i - 1] - med), int(i)))
    return [i for _, i in sorted(out)[:n]]


def bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def page_labels(page) -> np.ndarray:
    """The page's current labels, through its own labels-TIFF export."""
    b64 = page.evaluate("""async () => {
      const b = new Uint8Array(await (await window.piximi.export("labels")).arrayBuffer());
      let s = ""; for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
      return btoa(s); }""")
    return tifffile.imread(io.BytesIO(base64.b64decode(b64)))


def unpack(mask: dict, shape) -> np.ndarray:
    """A page mask ``{bbox, width, height, bits}`` as a full-size bool array."""
    out = np.zeros(shape, bool)
    if mask["bbox"] is None:
        return out
    x0, y0, x1, y1 = mask["bbox"]
    bits = np.frombuffer(base64.b64decode(mask["bits"]), np.uint8)
    crop = np.unpackbits(bits)[: mask["width"] * mask["height"]].reshape(mask["height"], mask["width"])
    out[y0:y1 + 1, x0:x1 + 1] = crop.astype(bool)
    return out


def client_xy(page, x: float, y: float) -> tuple[float, float]:
    """Screen position of the centre of image pixel (x, y)."""
    box = page.locator("#canvas").bounding_box()
    w = page.evaluate("document.querySelector('#canvas').width")
    s = box["width"] / w
    return box["x"] + (x + 0.5) * s, box["y"] + (y + 0.5) * s


def wait_object(page):
    page.wait_for_function("document.querySelector('#prompt-info').textContent.startsWith('Object:')"
                           " || !document.querySelector('#error').hidden")
    assert page.locator("#error").is_hidden(), page.text_content("#error")


def accept(page) -> int:
    page.evaluate("document.querySelector('#status').textContent = 'pending'")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Added object')"
                           " || !document.querySelector('#error').hidden")
    assert page.locator("#error").is_hidden(), page.text_content("#error")
    return int(page.text_content("#status").split()[2].rstrip(":"))


def show(app, path: Path, prompt_mode: bool = True):
    """Open ``path`` in the page (unless it is the image shown) and set prompt mode."""
    page = app.page
    if getattr(app, "shown", None) != path:
        page.evaluate("document.querySelector('#status').textContent = 'pending'")
        page.set_input_files("#file", str(path))
        page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')"
                               " || !document.querySelector('#error').hidden")
        assert page.locator("#error").is_hidden(), page.text_content("#error")
        app.shown = path
    assert page.locator("#prompt-tools").is_visible()
    if (page.get_attribute("#prompt-mode", "aria-pressed") == "true") != prompt_mode:
        page.click("#prompt-mode")
    assert page.get_attribute("#prompt-mode", "aria-pressed") == str(prompt_mode).lower()


def test_open_sample_and_model_labels(app, sample, models_dir):
    page = app.page
    index = {m["id"]: m for m in json.loads((models_dir / "index.json").read_text())["models"]}
    # the picker shows each model's size (and speed where the index has it)
    for value, text in page.eval_on_selector_all("#model option", "os => os.map(o => [o.value, o.textContent])"):
        m = index[value]
        assert f"{m['bytes'] / 1e6:.1f} MB" in text, text
        if m.get("latency_ms_512"):
            assert "per 512²" in text, text
    # the SAM picker offers every promptable model, the index's default one selected
    prompt_ids = [i for i, m in index.items() if m.get("task") == "prompt-segmentation"]
    options = page.eval_on_selector_all("#prompt-model option", "os => os.map(o => [o.value, o.selected])")
    assert sorted(v for v, _ in options) == sorted(prompt_ids)
    default = next((i for i in prompt_ids if index[i].get("default")), prompt_ids[0])
    assert [v for v, selected in options if selected] == [default]
    assert page.locator("#prompt-model-label").is_visible() == (len(prompt_ids) > 1)
    show(app, sample[0])


def test_box_drawn_with_the_mouse(app, sample):
    """(a) Drag a box around a nucleus, Enter: the new object matches the nucleus."""
    page = app.page
    show(app, sample[0])
    gt = sample[1]
    nucleus = separated_nuclei(gt)[0]
    truth = gt == nucleus
    x0, y0, x1, y1 = bbox(truth)
    before = page_labels(page)
    count_before = int(page.text_content("#count"))
    assert count_before == len(np.unique(before)) - 1
    page.mouse.move(*client_xy(page, x0 - 1, y0 - 1))
    page.mouse.down()
    page.mouse.move(*client_xy(page, (x0 + x1) / 2, (y0 + y1) / 2), steps=4)
    page.mouse.move(*client_xy(page, x1 + 1, y1 + 1), steps=4)
    page.mouse.up()
    wait_object(page)
    info = page.text_content("#prompt-info")
    label = accept(page)
    labels = page_labels(page)
    assert label == before.max() + 1 and labels.max() == label
    got = iou(labels == label, truth)
    _report["box"] = {"nucleus": nucleus, "box": [x0 - 1, y0 - 1, x1 + 1, y1 + 1], "iou_gt": got, "info": info}
    assert got >= 0.7, _report["box"]
    # objects the new one covered are replaced whole or keep at least half their area
    for k in np.unique(before[labels == label]):
        if k and (labels == k).any():
            assert (labels == k).sum() >= 0.5 * (before == k).sum(), k
    assert abs(int(page.text_content("#count")) - count_before) <= 1
    assert page.locator(f"#measurements tr[data-label='{label}']").count() == 1
    # outside the new object and the one it replaced, nothing changed
    replaced = np.isin(before, np.unique(before[labels == label]))
    keep = ~(labels == label) & ~replaced
    np.testing.assert_array_equal(labels[keep], before[keep])


def test_one_positive_click(app, sample):
    """(b) One click at a nucleus centre, Enter."""
    page = app.page
    show(app, sample[0])
    gt = sample[1]
    nucleus = separated_nuclei(gt)[1]
    truth = gt == nucleus
    dist = ndi.distance_transform_edt(truth)
    cy, cx = np.unravel_index(np.argmax(dist), dist.shape)   # the centre: deepest inside
    page.mouse.click(*client_xy(page, cx, cy))
    wait_object(page)
    label = accept(page)
    got = iou(page_labels(page) == label, truth)
    _report["click"] = {"nucleus": nucleus, "point": [int(cx), int(cy)], "iou_gt": got}
    assert got >= 0.6, _report["click"]


def test_escape_cancels(app, sample):
    page = app.page
    show(app, sample[0])
    gt = sample[1]
    nucleus = separated_nuclei(gt, 3)[2]
    ys, xs = np.nonzero(gt == nucleus)
    before = page_labels(page)
    page.mouse.click(*client_xy(page, int(np.median(xs)), int(np.median(ys))))
    wait_object(page)
    page.keyboard.press("Escape")
    page.wait_for_function("document.querySelector('#prompt-info').textContent === ''")
    assert page.is_disabled("#prompt-accept")
    np.testing.assert_array_equal(page_labels(page), before)


PROMPT_JS = """async ([b64, req, model]) => {
  const u = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const r = await window.piximi.prompt(u, req, {backend: "wasm", model});
  const b = r.mask.bits; let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  return {...r, mask: {...r.mask, bits: btoa(s)}};
}"""


def _prompt_models():
    index = json.loads((ROOT / "models" / "index.json").read_text())
    return [m["id"] for m in index["models"] if m.get("task") == "prompt-segmentation"] or [None]


@pytest.mark.parametrize("model", _prompt_models())
def test_prompt_api_matches_cpython(app, sample, models_dir, model):
    """(c) window.piximi.prompt with a box == piximi_py.sam in CPython (same files, WASM vs native),
    for every promptable model (the page's ``model`` option)."""
    import piximi_py
    from piximi_py import sam
    from piximi_py.io import read_image

    page = app.page
    image_path, gt = sample
    nucleus = separated_nuclei(gt)[0]
    box = bbox(gt == nucleus)
    data = base64.b64encode(image_path.read_bytes()).decode()
    res = page.evaluate(PROMPT_JS, [data, {"boxes": box}, model])
    assert set(res["timings"]) >= {"embedding_ms", "decoder_ms", "total_ms"}
    assert res["mask"]["bbox"] is not None and len(res["mask"]["bbox"]) == 4
    web = unpack(res["mask"], gt.shape)
    assert web.sum() == res["mask"]["area"]
    # CPython: the files of the page's WASM runtime, on native onnxruntime
    image = read_image(image_path, color=True)
    predictor = sam.load_predictor(model, models_dir=models_dir, runtime="wasm")
    piximi_py.run_sync(predictor.set_image(image))
    ref, ref_iou = piximi_py.run_sync(predictor.predict(boxes=box))
    # and sam.prompt (the native runtime's files: fp32 decoder)
    native, _ = sam.prompt(image, boxes=box, model=model, models_dir=models_dir)
    again = page.evaluate(PROMPT_JS, [data, {"boxes": box}, model])     # embedding cached now
    _report[f"api_{model}"] = {"box": box, "iou_vs_cpython_same_files": iou(web, ref),
                      "iou_vs_sam_prompt_native": iou(web, native), "iou_gt": iou(web, gt == nucleus),
                      "pred_iou": [res["iou"], ref_iou], "timings_first": res["timings"],
                      "timings_cached": again["timings"], "backend": res["backend"]}
    report = _report[f"api_{model}"]
    assert res["backend"] == "wasm"
    # the same int8 files still differ with the CPU native onnxruntime picks its int8 kernels for:
    # on an AVX2-only CPU (no AVX-512) ~10 pixels of a ~480-pixel mask moved (IoU 0.979), where
    # machines with AVX-512 gave 0.98 or more; which products round differently was not traced
    assert iou(web, ref) >= 0.97, report
    # predicted IoU, WASM against native: the int8 decoders' kernels differ between onnxruntime-web
    # 1.30 and native onnxruntime (0.024-0.027 with native 1.32, masks still 0.98 IoU alike)
    assert abs(res["iou"] - ref_iou) < 0.04, report
    assert iou(web, native) >= 0.9, report
    assert iou(web, gt == nucleus) >= 0.7, report
    assert again["cached"] and again["timings"]["embedding_ms"] == 0
    assert "warm_up_ms" not in again["timings"], "the decoder is warmed up once, when the model loads"
    np.testing.assert_array_equal(unpack(again["mask"], gt.shape), web)
    # the WASM decoder was warmed up when this model loaded (webprompt._warm_up_decoder)
    runs = page.evaluate("async () => (await window.piximi.memory()).sam_warm_up_runs")
    assert 1 <= runs[f"{model}/wasm"] <= DECODER_WARM_UP_RUNS, runs
    # a bad prompt rejects with a message a person can act on
    err = page.evaluate("""async () => { try { await window.piximi.prompt(null, {boxes: [30, 10, 10, 30]}); return null; }
                          catch (e) { return e.message; } }""")
    assert err and "degenerate box" in err and "Traceback" not in err


def test_refine_all(app, sample, tmp_path):
    """"Refine all with SAM" on a crop: every object re-segmented from its box."""
    from piximi_py.metrics import iou_matrix

    page = app.page
    image_path, gt = sample
    y, x = 0, 0  # a corner whose nuclei need two encoder windows (the centre's, since specks are dropped, one)
    crop = tifffile.imread(image_path)[y:y + 128, x:x + 128]
    gt_crop = gt[y:y + 128, x:x + 128]
    path = tmp_path / "crop.tif"
    tifffile.imwrite(path, crop)
    # at the model's own nucleus size: estimated on this crop (30 px, its whole nuclei) the image is
    # rescaled and the fewer, larger objects share one encoder window, where this test cancels
    # between several
    page.fill("#diameter", "20")
    show(app, path)
    page.fill("#diameter", "")
    unet = page_labels(page)
    # cancel during the first of the embeddings: the labels stay as they were
    page.click("#refine-all")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Computing image embeddings')")
    page.click("#refine-all")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('refine cancelled')"
                           " || !document.querySelector('#error').hidden")
    assert page.locator("#error").is_hidden(), page.text_content("#error")
    np.testing.assert_array_equal(page_labels(page), unet)
    assert page.text_content("#refine-all") == "Refine all with SAM"
    page.click("#refine-all")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Refined')"
                           " || !document.querySelector('#error').hidden")
    assert page.locator("#error").is_hidden(), page.text_content("#error")
    refined = page_labels(page)
    n = len(np.unique(unet)) - 1
    assert refined.max() == n == int(page.text_content("#count"))

    def match(pred):  # mean best IoU of the ground-truth nuclei
        m = iou_matrix(gt_crop, pred)
        return float(m.max(axis=1).mean())

    _report["refine"] = {"objects": n, "status": page.text_content("#status"),
                         "mean_best_iou_unet": match(unet), "mean_best_iou_sam": match(refined)}
    assert match(refined) >= 0.6, _report["refine"]


def test_no_request_leaves_origin(app):
    """(d) Every request of the session stayed on the site's origin."""
    foreign = [u for u in app.requests
               if not (u.startswith(app.origin + "/") or u.startswith(("data:", "blob:")))]
    assert app.requests and not foreign, foreign
    sam_files = {u.rsplit("/", 1)[-1] for u in app.requests if "/models/sam_" in u}
    _report["sam_files_loaded"] = sorted(sam_files)
    print(json.dumps(_report, indent=1, default=str))

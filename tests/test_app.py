"""The page as a biologist uses it, driven through its DOM in headless Chromium:
open real files (OME-TIFF stack with plane pickers), display controls,
measurements table and object inspection, every download reopened with its
reference library, a batch with a failing file, cancel and zip download,
model filtering and the Content-Security-Policy.

One browser page for the module (2-core machines); tests run in file order.
Real pixels: the StarDist sample (CC0), and crops of it for the batch.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from realdata import stardist_sample  # noqa: E402
from browserpage import assert_same_instances, cpython_labels, require_browser, wasm_app  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

require_browser()
tifffile = pytest.importorskip("tifffile")


@pytest.fixture(scope="module")
def app(site):
    a = wasm_app(site)
    yield a
    a.close()


@pytest.fixture(scope="module")
def sample():
    image_path, _ = stardist_sample()
    return tifffile.imread(image_path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample):
    """Real-pixel files: an OME-TIFF ZCYX stack and crops as TIFF / PNG / JPEG."""
    from PIL import Image

    d = tmp_path_factory.mktemp("files")
    z = np.stack([sample, (sample * 0.5).astype(sample.dtype), np.roll(sample, 40, axis=1)])
    stack = np.stack([z, np.flip(z, axis=-1)], axis=1)                   # ZCYX
    tifffile.imwrite(d / "stack.ome.tif", stack, ome=True, metadata={
        "axes": "ZCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
        "Channel": {"Name": ["DAPI", "DAPI-flipped"]}})
    out = {"stack": d / "stack.ome.tif", "stack_array": stack, "batch": []}
    for i, (y, x) in enumerate([(0, 0), (256, 0), (0, 256), (256, 256)]):
        crop = sample[y:y + 256, x:x + 256]
        if i == 1:
            p = d / f"crop{i}.png"
            Image.fromarray((crop.astype(np.float32) * 255 / crop.max()).astype(np.uint8)).save(p)
        else:
            p = d / f"crop{i}.tif"
            tifffile.imwrite(p, crop)
        out["batch"].append(p)
    (d / "broken.tif").write_bytes(b"")                                   # fails, is skipped
    out["broken"] = d / "broken.tif"
    return out


def wait_done(page):
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')"
                           " || !document.querySelector('#error').hidden")
    err = page.locator("#error")
    assert err.is_hidden(), err.text_content()


def set_status_pending(page):
    page.evaluate("document.querySelector('#status').textContent = 'pending'")


def _wait_core_cached(page):
    """Until the service worker holds every file of the manifest's core list (it precaches
    them once the page is ready); returns the site paths it holds."""
    page.wait_for_function("""async () => {
      const m = await (await fetch('manifest.json')).json();
      const name = `piximi-${m.version}`;
      if (!(await caches.has(name))) return false;
      const have = new Set((await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname));
      return m.core.every((f) => have.has(new URL(f, location.href).pathname));
    }""", polling=500)
    return page.evaluate("""async () => {
      const m = await (await fetch('manifest.json')).json();
      const keys = await (await caches.open(`piximi-${m.version}`)).keys();
      return keys.map((r) => new URL(r.url).pathname.replace(new URL('./', location.href).pathname, ''));
    }""")


def test_first_visit_fetches_only_what_the_default_path_runs(app, models_dir):
    """A first visit (no WebGPU) downloads the default model and the plain WASM build of
    onnxruntime-web, and the service worker precaches only those: no other model, no JSEP
    build, no codec; the button offers the rest with its size."""
    import piximi_py.models as pm
    from tools.site import default_model_file

    cached = _wait_core_cached(app.page)
    default = default_model_file(models_dir)
    fetched = [u.replace(app.origin + "/", "") for u in app.requests if u.startswith(app.origin + "/")]
    for path in set(fetched) | set(cached):
        path = path.split("?")[0].removesuffix(".gz")  # the service worker fetches gzip copies
        if path.startswith("models/"):
            assert path in ("models/index.json", f"models/{default}"), path
        assert ".jsep." not in path and path != "ort/ort.min.mjs", path
        assert not path.startswith(("vendor/", "sample/")), path
    assert f"models/{default}" in cached and "ort/ort-wasm-simd-threaded.wasm" in cached
    st = app.page.evaluate("window.piximi.offlineStatus()")
    others = [m.file for m in pm.load_model_index(models_dir / "index.json") if m.file != default]
    assert st["missing_files"] >= len(others) and st["missing_bytes"] > 20e6, st
    app.page.wait_for_function("!document.querySelector('#offline').hidden")  # shown once precaching ends
    label = app.page.text_content("#offline")
    assert "MB" in label, label


def test_models_offered_are_segmentable(app, models_dir):
    index = json.loads((models_dir / "index.json").read_text())["models"]
    offered = app.page.evaluate("window.piximi.models()")
    every = app.page.evaluate("window.piximi.models({all: true})")
    assert {m["id"] for m in every} == {m["id"] for m in index}
    assert all(m["segment"] for m in offered)
    assert {m["id"] for m in offered} == {m["id"] for m in index
                                          if m["task"] != "prompt-segmentation"}
    options = app.page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert set(options) == {m["id"] for m in offered}
    for m in every:
        assert "task" in m


def test_wasm_sessions_run_in_the_plain_wasm_build(app):
    """Without WebGPU the page loads onnxruntime-web's plain WASM build only, never the 28 MB
    JSEP one (slower to reach full speed on the CPU: ``python -m bench.ortweb_builds``)."""
    builds = app.page.evaluate("async () => (await window.piximi.memory()).ort_builds")
    assert builds == {"wasm": "ort.wasm.min.mjs"}


def test_ome_stack_planes_and_max_projection(app, files, models_dir):
    page = app.page
    set_status_pending(page)
    page.set_input_files("#file", str(files["stack"]))
    wait_done(page)
    # pickers from the OME metadata: z (with max projection) and named channels
    assert page.locator("#planes").is_visible()
    z_opts = page.eval_on_selector_all("#plane-Z option", "os => os.map(o => o.value)")
    assert z_opts == ["0", "1", "2", "max"]
    c_text = page.eval_on_selector_all("#plane-C option", "os => os.map(o => o.textContent)")
    assert c_text == ["1 (DAPI)", "2 (DAPI-flipped)"]
    stack = files["stack_array"]
    first = int(page.text_content("#count"))
    assert first == int(cpython_labels(stack[0, 0], models_dir).max())

    set_status_pending(page)
    page.select_option("#plane-Z", "max")
    wait_done(page)
    assert int(page.text_content("#count")) == int(cpython_labels(stack[:, 0].max(0), models_dir).max())
    set_status_pending(page)
    page.select_option("#plane-Z", "0")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')")
    set_status_pending(page)
    page.select_option("#plane-C", "1")
    wait_done(page)
    ref = cpython_labels(stack[0, 1], models_dir)
    assert int(page.text_content("#count")) == int(ref.max())


def test_measurements_table_and_object_inspection(app):
    page = app.page
    count = int(page.text_content("#count"))
    rows = page.locator("#measurements tr[data-label]")
    assert rows.count() == min(count, 1000)
    header = page.eval_on_selector_all("#measurements tr:first-child th", "t => t.map(x => x.textContent)")
    assert {"label", "area", "area_um2", "eccentricity", "solidity", "perimeter"} <= set(header)
    summary = page.text_content("#summary")
    assert f"{count} objects" in summary and "µm²" in summary and "0.500 µm" in summary
    # click on an object's centroid: its measurements are shown
    cell = page.evaluate("""() => {
      const tr = document.querySelector('#measurements tr[data-label]');
      const cols = [...document.querySelectorAll('#measurements tr:first-child th')].map(t => t.textContent);
      const v = [...tr.children].map(td => Number(td.textContent));
      return {label: v[cols.indexOf('label')], x: v[cols.indexOf('centroid_x')], y: v[cols.indexOf('centroid_y')]};
    }""")
    box = page.locator("#canvas").bounding_box()
    w = page.evaluate("document.querySelector('#canvas').width")
    scale = box["width"] / w
    page.mouse.click(box["x"] + (cell["x"] + 0.5) * scale, box["y"] + (cell["y"] + 0.5) * scale)
    page.wait_for_function(f"document.querySelector('#object-info').dataset.label === '{cell['label']}'")
    assert page.locator(f"#measurements tr.sel[data-label='{cell['label']}']").count() == 1


def test_diameter_field(app, files, models_dir):
    """The size field shows the estimated nucleus diameter; a typed one re-segments with it (the
    labels CPython gives for it); a bad one is refused with a message."""
    import piximi_py

    page = app.page
    image = files["stack_array"][0, 1]          # the plane the OME test left selected
    ref = piximi_py.segment_image(image, models_dir=models_dir)
    assert page.get_attribute("#diameter", "placeholder") == f"auto: {ref.diameter:.1f}"
    assert "estimated" in page.text_content("#diameter-note")
    set_status_pending(page)
    page.fill("#diameter", "40")
    page.dispatch_event("#diameter", "change")
    wait_done(page)
    given = piximi_py.segment_image(image, models_dir=models_dir, diameter=40)
    assert int(page.text_content("#count")) == int(given.labels.max())
    assert "given" in page.text_content("#diameter-note") and "rescaled" in page.text_content("#diameter-note")
    set_status_pending(page)
    page.fill("#diameter", "-3")
    page.dispatch_event("#diameter", "change")
    page.wait_for_function("!document.querySelector('#error').hidden")
    assert "diameter" in page.text_content("#error").lower()
    set_status_pending(page)
    page.fill("#diameter", "")
    page.dispatch_event("#diameter", "change")
    wait_done(page)
    assert int(page.text_content("#count")) == int(ref.labels.max())


def _box_segments_as_cpython(page, box, image, models_dir, **option):
    """Ticking ``box`` re-segments the current image as CPython does with ``option`` (the same
    count); unticking it gives the plain result back."""
    import piximi_py

    for checked, expected in ((True, option), (False, {})):
        set_status_pending(page)
        page.set_checked(box, checked)
        wait_done(page)
        assert int(page.text_content("#count")) == int(
            piximi_py.segment_image(image, models_dir=models_dir, **expected).labels.max())


def test_average_over_scales_box(app, files, models_dir):
    """The "average over scales" box is ``augment=True``."""
    _box_segments_as_cpython(app.page, "#augment", files["stack_array"][0, 1], models_dir, augment=True)


def test_invert_box(app, files, models_dir):
    """The "invert" box is ``invert=True``. The page's model list says which models take it (a
    colour or stain model does not: the box is disabled while one is chosen)."""
    _box_segments_as_cpython(app.page, "#invert", files["stack_array"][0, 1], models_dir, invert=True)
    takes = app.page.evaluate(
        "async () => Object.fromEntries((await window.piximi.models()).map((m) => [m.id, m.invertible]))")
    assert takes["nuclei"] and takes["cells"] and not takes["nuclei_he"] and not takes["nuclei_hematoxylin"]


def test_display_controls(app):
    page = app.page
    sample_px = "() => document.querySelector('#canvas').getContext('2d').getImageData(0, 0, 512, 512).data.reduce((a, b) => a + b, 0)"
    before = page.evaluate(sample_px)
    page.fill("#contrast-max", "60")
    page.dispatch_event("#contrast-max", "input")
    assert page.evaluate(sample_px) > before                    # brighter
    page.click("#contrast-auto")
    assert page.evaluate(sample_px) == before
    page.select_option("#mode", "fill")
    page.fill("#opacity", "0.3")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("document.querySelector('#overlay-fill').style.opacity") == "0.3"
    page.select_option("#mode", "outline")
    assert page.evaluate("document.querySelector('#overlay-fill').style.opacity") == "0"
    # zoom with the wheel around the pointer, then fit again
    vp = page.locator("#viewport").bounding_box()
    page.mouse.move(vp["x"] + 100, vp["y"] + 100)
    page.mouse.wheel(0, -600)
    page.wait_for_function("!document.querySelector('#zoom-level').textContent.startsWith('100%')")
    assert "scale(" in page.evaluate("document.querySelector('#stack').style.transform")
    page.click("#zoom-fit")


def download(page, selector) -> tuple[str, bytes]:
    with page.expect_download() as info:
        page.click(selector)
    d = info.value
    return d.suggested_filename, Path(d.path()).read_bytes()


def test_every_download_reopens(app, files, tmp_path):
    roifile = pytest.importorskip("roifile")
    from PIL import Image
    from scipy import ndimage as ndi

    page = app.page
    name, data = download(page, "[data-export=labels]")
    assert name == "stack_labels.tif"
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert tif.is_imagej
        labels = tif.asarray()
        xres = tif.pages[0].tags["XResolution"].value
    assert labels.dtype == np.uint16 and labels.max() == int(page.text_content("#count"))
    assert xres[1] / xres[0] == pytest.approx(0.5)

    _, data = download(page, "[data-export=mask]")
    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(data)) > 0, labels > 0)

    _, data = download(page, "[data-export=overlay]")
    png = np.asarray(Image.open(io.BytesIO(data)))
    assert png.shape == labels.shape + (3,)

    _, data = download(page, "[data-export=csv]")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    ids = np.unique(labels)[1:]
    assert [int(r["label"]) for r in rows] == ids.tolist()
    assert [int(r["area"]) for r in rows] == np.bincount(labels.ravel())[ids].tolist()
    np.testing.assert_allclose([float(r["area_um2"]) for r in rows],
                               np.bincount(labels.ravel())[ids] * 0.25)

    _, data = download(page, "[data-export=coco]")
    coco = json.loads(data)
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        mask_utils = None
    assert [a["id"] for a in coco["annotations"]] == ids.tolist()
    for ann in coco["annotations"]:
        if mask_utils is not None:
            np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool),
                                          labels == ann["id"])
        assert ann["area"] == int((labels == ann["id"]).sum())

    _, data = download(page, "[data-export=rois]")
    (tmp_path / "rois.zip").write_bytes(data)
    rois = roifile.roiread(tmp_path / "rois.zip")
    by_object = {}
    for roi in rois:  # an object of separate parts has one ROI a part: NAME, NAME-part2, ...
        by_object.setdefault(int(roi.name.split("-")[0]), []).append(roi)
    assert sorted(by_object) == ids.tolist()
    from skimage.draw import polygon2mask
    for i, parts in by_object.items():
        obj = labels == i
        filled = np.zeros(labels.shape, bool)
        for roi in parts:
            filled |= polygon2mask(labels.shape, roi.coordinates()[:, ::-1].astype(float) - 0.5)
        assert filled[obj].all() and not (filled & ~ndi.binary_fill_holes(obj)).any(), i

    name, data = download(page, "[data-export=all]")
    assert name == "stack_results.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {"stack_labels.tif", "stack_measurements.csv", "stack_coco.json",
                "stack_rois.zip", "stack_overlay.png", "stack_mask.tif"} <= set(zf.namelist())


def test_batch_with_failure_and_zip(app, files, models_dir):
    page = app.page
    inputs = [str(p) for p in files["batch"][:2]] + [str(files["broken"])] + \
        [str(p) for p in files["batch"][2:]]
    page.set_input_files("#file", inputs)
    page.wait_for_function("document.querySelector('#batch-status').textContent.startsWith('Done')")
    statuses = page.eval_on_selector_all("#batch-list li", "ls => ls.map(l => [l.dataset.status, l.textContent])")
    assert [s for s, _ in statuses] == ["done", "done", "failed", "done", "done"]
    assert "empty (0 bytes)" in statuses[2][1]
    assert page.evaluate("document.querySelector('#batch-progress').value") == 5
    name, data = download(page, "#batch-download")
    assert name == "piximi_batch.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        report = list(csv.DictReader(io.StringIO(zf.read("batch_report.csv").decode())))
        crop0 = tifffile.imread(io.BytesIO(zf.read("crop0_labels.tif")))
    for stem in ("crop0", "crop1", "crop2", "crop3"):
        assert {f"{stem}_labels.tif", f"{stem}_measurements.csv", f"{stem}_rois.zip",
                f"{stem}_coco.json"} <= names
    assert [r["status"] for r in report] == ["segmented", "segmented", "failed", "segmented", "segmented"]
    assert [r["outputs"] for r in report] == ["crop0", "crop1", "", "crop2", "crop3"]
    ref = cpython_labels(tifffile.imread(files["batch"][0]), models_dir)
    assert int(crop0.max()) == int(ref.max())


def test_batch_cancel(app, files):
    page = app.page
    inputs = [str(p) for p in files["batch"]] * 3
    page.set_input_files("#file", inputs)
    page.wait_for_function("document.querySelectorAll('#batch-list li[data-status=done]').length >= 1")
    page.click("#batch-cancel")
    page.wait_for_function("document.querySelector('#batch-status').textContent.startsWith('Cancelled')")
    statuses = page.eval_on_selector_all("#batch-list li", "ls => ls.map(l => l.dataset.status)")
    assert statuses.count("cancelled") >= 6 and "queued" not in statuses
    assert page.is_enabled("#batch-download")
    # the page is still usable afterwards
    set_status_pending(page)
    page.set_input_files("#file", str(files["batch"][0]))
    wait_done(page)


def test_csp_blocks_outside_connections(app):
    page = app.page
    csp = page.get_attribute("meta[http-equiv=Content-Security-Policy]", "content")
    assert "connect-src 'self'" in csp and "default-src 'self'" in csp
    blocked = page.evaluate("""async () => {
      const seen = [];
      document.addEventListener('securitypolicyviolation', (e) => seen.push(e.blockedURI));
      let fetched = true;
      try { await fetch('https://example.com/x.png'); } catch (e) { fetched = false; }
      await new Promise((r) => setTimeout(r, 100));
      return {fetched, seen};
    }""")
    assert blocked["fetched"] is False and any("example.com" in u for u in blocked["seen"])
    outside = [u for u in app.requests if not u.startswith((app.origin, "blob:", "data:"))]
    assert outside == []


def _robustness_inputs(sample):
    """name -> (bytes, "ok" or a fragment of the expected message)."""
    from PIL import Image

    def tif(a, **kw):
        b = io.BytesIO()
        tifffile.imwrite(b, a, **kw)
        return b.getvalue()

    crop = sample[:128, :128]
    nan = crop.astype(">f4")
    nan[::7, ::5] = np.nan
    nan[3, :] = np.inf
    five_d = np.stack([np.stack([np.stack([crop, crop])] * 2)] * 2)        # TZCYX
    png_p = io.BytesIO()
    Image.fromarray((crop // 2).astype(np.uint8)).convert("P").save(png_p, "PNG")
    png_1 = io.BytesIO()
    Image.fromarray(crop > np.percentile(crop, 70)).convert("1").save(png_1, "PNG")
    huge = bytearray(tif(np.zeros((8, 70000), np.uint8)))
    with tifffile.TiffFile(io.BytesIO(bytes(huge))) as t:
        for k in ("ImageWidth", "ImageLength"):
            off = t.pages[0].tags[k].valueoffset
            huge[off:off + 4] = (100000).to_bytes(4, "little")
    good = tif(crop)
    return {
        "nan_inf_bigendian.tif": (tif(nan), "ok"),
        "five_d.tif": (tif(five_d, metadata={"axes": "TZCYX"}), "ok"),
        "bigtiff.tif": (tif(crop, bigtiff=True), "ok"),
        "palette.png": (png_p.getvalue(), "ok"),
        "one_bit.png": (png_1.getvalue(), "ok"),
        "huge_header.tif": (bytes(huge), "100000×100000"),
        "zero.tif": (b"", "empty (0 bytes)"),
        "truncated.tif": (good[: len(good) // 3], "truncated"),
        "photo.jpg.tif": (b"\xff\xd8\xff" + b"junk" * 10, "JPEG"),
        "one_pixel.tif": (tif(np.zeros((1, 1), np.uint8)), "1×1"),
        "deflate.tif": (tif(crop, compression="zlib"), "ok"),
        # Pyodide's lzma module is not shipped: the message names the compression
        "lzma.tif": (tif(crop, compression="lzma") if _has_lzma() else good, "ok|LZMA compression"),
    }


def _has_lzma():
    try:
        import lzma  # noqa: F401
        return True
    except ImportError:
        return False


def test_bad_and_unusual_inputs_in_the_page(app, sample):
    import base64
    import time

    page = app.page
    for name, (data, want) in _robustness_inputs(sample).items():
        t = time.perf_counter()
        res = page.evaluate("""async ([b64, name]) => {
          const u = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          try { const r = await window.piximi.segment(u, {filename: name}); return {ok: true, count: r.count}; }
          catch (e) { return {ok: false, message: e.message}; } }""",
                            [base64.b64encode(data).decode(), name])
        took = time.perf_counter() - t
        assert took < 20, f"{name}: {took:.1f} s"
        if want == "ok":
            assert res["ok"], f"{name}: {res}"
        elif want.startswith("ok|"):
            assert res["ok"] or want[3:] in res["message"], f"{name}: {res}"
        else:
            assert not res["ok"] and want in res["message"], f"{name}: {res}"
    # still usable
    assert page.evaluate("window.piximi.models()")


def test_embedding_custom_element(app, files, models_dir):
    """web/examples/embed.html: a lab page using <piximi-segmenter> (embed.js)."""
    page = app.context.new_page()
    page.set_default_timeout(180_000)
    try:
        page.goto(app.origin + "/examples/embed.html")
        page.wait_for_function("document.querySelector('#state').textContent === 'ready'")
        page.set_input_files("#pick", str(files["batch"][0]))
        page.wait_for_function("document.querySelector('#state').textContent === 'done'")
        ref = cpython_labels(tifffile.imread(files["batch"][0]), models_dir)
        assert int(page.text_content("#n")) == int(ref.max())
        with page.expect_download() as info:
            page.click("#csv")
        rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
        assert len(rows) == int(ref.max())
        # the element's API directly, with an error crossing the frame boundary
        err = page.evaluate("""async () => {
          try { await document.querySelector('#seg').segment(new Uint8Array(0)); return null; }
          catch (e) { return e.message; } }""")
        assert "empty" in err
    finally:
        page.close()


def _page_labels(page):
    """The current labels, exported by the page as a TIFF and read back."""
    import base64

    b64 = page.evaluate("""async () => {
      const b = new Uint8Array(await (await window.piximi.export('labels')).arrayBuffer());
      let s = ''; for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
      return btoa(s); }""")
    return tifffile.imread(io.BytesIO(base64.b64decode(b64)))


def _click_pixel(page, x, y, **kw):
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / page.evaluate("document.querySelector('#canvas').width")
    return box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale


def test_editing_tools_with_undo(app, files, tmp_path):
    """Delete (click + Delete key), undo/redo (Ctrl+Z, Ctrl+Shift+Z), split with the line tool,
    merge, paint, erase and polygon on a real segmentation; each gives what piximi_py.edit gives
    in CPython on the same labels, and the count follows."""
    from scipy import ndimage as ndi

    from piximi_py import edit

    page = app.page
    path = tmp_path / "to_edit.tif"
    path.write_bytes(files["batch"][0].read_bytes())
    set_status_pending(page)
    page.set_input_files("#file", str(path))
    wait_done(page)
    start = _page_labels(page)
    n = int(start.max())
    assert int(page.text_content("#count")) == len(np.unique(start)) - 1 > 3
    areas = np.bincount(start.ravel())
    areas[0] = 0
    big = int(np.argmax(areas))
    cy, cx = (int(round(v)) for v in ndi.center_of_mass(start == big))
    if start[cy, cx] != big:
        ys, xs = np.nonzero(start == big)
        cy, cx = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])

    # delete: click the object, press Delete
    page.mouse.click(*_click_pixel(page, cx, cy))
    page.wait_for_function(f"document.querySelector('#edit-info').textContent.includes('{big}')")
    page.keyboard.press("Delete")
    page.wait_for_function("!document.querySelector('#edit-undo').disabled")
    np.testing.assert_array_equal(_page_labels(page), edit.delete_objects(start, [big]))
    assert int(page.text_content("#count")) == len(np.unique(start)) - 2
    page.keyboard.press("Control+z")
    page.wait_for_function("document.querySelector('#edit-undo').disabled")
    np.testing.assert_array_equal(_page_labels(page), start)
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function("!document.querySelector('#edit-undo').disabled")
    np.testing.assert_array_equal(_page_labels(page), edit.delete_objects(start, [big]))
    page.click("#edit-undo")
    page.wait_for_function("document.querySelector('#edit-undo').disabled")

    # split with the line tool: S, then drag a horizontal line across the object
    ys, xs = np.nonzero(start == big)
    a, b = (int(xs.min()) - 2, cy), (int(xs.max()) + 2, cy)
    page.keyboard.press("s")
    page.mouse.move(*_click_pixel(page, *a))
    page.mouse.down()
    page.mouse.move(*_click_pixel(page, *b), steps=5)
    page.mouse.up()
    page.wait_for_function(f"document.querySelector('#count').textContent === '{len(np.unique(start))}'")
    page.keyboard.press("Escape")
    split = _page_labels(page)
    np.testing.assert_array_equal(split, edit.split_object(start, big, a, b))
    # merge the two parts back through the API
    res = page.evaluate(f"window.piximi.edit('merge', {{labels: [{big}, {n + 1}]}})")
    assert res["changed"] and res["count"] == len(np.unique(start)) - 1
    np.testing.assert_array_equal(_page_labels(page), start)

    # paint a new object on background, erase across objects, draw a polygon
    res = page.evaluate("window.piximi.edit('paint', {points: [[3, 3], [30, 3]], radius: 2})")
    painted = edit.paint(start, [(3, 3), (30, 3)], 2, n + 1)   # a new id: the labels' max + 1
    np.testing.assert_array_equal(_page_labels(page), painted)
    assert res["label"] == n + 1
    page.evaluate(f"window.piximi.edit('erase', {{points: [[{cx}, {cy}]], radius: 4}})")
    erased = edit.paint(painted, [(cx, cy)], 4, 0)
    np.testing.assert_array_equal(_page_labels(page), erased)
    poly = [(200, 200), (240, 205), (230, 245), (198, 236)]
    res = page.evaluate("(p) => window.piximi.edit('polygon', {points: p})", poly)
    drawn, new_id, _ = edit.add_object(erased, edit.polygon_mask(erased.shape, poly))
    np.testing.assert_array_equal(_page_labels(page), drawn)
    assert res["label"] == new_id and res["undo"] >= 3
    for _ in range(3):  # polygon, erase, paint undone
        page.evaluate("window.piximi.edit('undo')")
    np.testing.assert_array_equal(_page_labels(page), start)
    err = page.evaluate("""async () => { try { await window.piximi.edit('explode'); return null; }
                                         catch (e) { return e.message; } }""")
    assert "unknown edit" in err and "delete" in err

    # the draw tool: an outline dragged on background becomes one new object inside it
    count = int(page.text_content("#count"))
    corner = [(200, 200), (240, 204), (236, 244), (198, 238), (200, 201)]
    if start[195:250, 195:250].any():  # somewhere empty instead
        ys, xs = np.nonzero(ndi.binary_erosion(start == 0, iterations=30))
        y, x = int(ys[0]), int(xs[0])
        corner = [(x - 20, y - 20), (x + 20, y - 16), (x + 16, y + 20), (x - 20, y + 16), (x - 20, y - 19)]
    page.keyboard.press("d")
    page.mouse.move(*_click_pixel(page, *corner[0]))
    page.mouse.down()
    for p in corner[1:]:
        page.mouse.move(*_click_pixel(page, *p), steps=4)
    page.mouse.up()
    page.wait_for_function(f"document.querySelector('#count').textContent === '{count + 1}'")
    drawn = _page_labels(page)
    new = drawn == drawn.max()
    assert 0.8 < new.sum() / edit.polygon_mask(start.shape, corner).sum() < 1.2
    # the brush, with shift: erases across the new object
    page.keyboard.press("b")
    ys, xs = np.nonzero(new)
    y = int(np.median(ys))
    page.mouse.move(*_click_pixel(page, int(xs.min()) - 3, y))
    page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(*_click_pixel(page, int(xs.max()) + 3, y), steps=6)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Erased')")
    after = _page_labels(page)
    assert (after == drawn.max()).sum() < new.sum() and not after[y, int(np.median(xs))]
    page.keyboard.press("Escape")
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    page.wait_for_function(f"document.querySelector('#count').textContent === '{count}'")

    # box delete (X): every object mostly inside the dragged box goes, in one undoable step
    current = _page_labels(page)
    box = (0, 0, current.shape[1] // 2, current.shape[0] // 2)
    inside = edit.objects_in_box(current, box)
    assert len(inside) >= 2
    page.keyboard.press("x")
    page.mouse.move(*_click_pixel(page, box[0], box[1]))
    page.mouse.down()
    page.mouse.move(*_click_pixel(page, box[2], box[3]), steps=5)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Deleted the objects')")
    np.testing.assert_array_equal(_page_labels(page), edit.delete_objects(current, inside))
    page.keyboard.press("Escape")
    page.keyboard.press("Control+z")
    page.wait_for_function(f"document.querySelector('#count').textContent === '{count}'")


def test_try_a_sample_image(app, models_dir):
    """A newcomer's first minute: the sample button segments the site's own example image (the
    StarDist sample, CC0), as CPython segments it."""
    image, _ = stardist_sample()
    ref = cpython_labels(tifffile.imread(image), models_dir)
    page = app.page
    assert page.locator("#sample").is_visible()
    set_status_pending(page)
    page.click("#sample")
    wait_done(page)
    assert abs(int(page.text_content("#count")) - int(ref.max())) <= max(1, int(0.01 * ref.max()))
    assert "nuclei_stardist.tif" in page.text_content("body")


def _page_file_bytes(page, expression: str) -> bytes:
    """The bytes of a Blob the page's ``expression`` (awaited) gives."""
    import base64

    b64 = page.evaluate(f"""async () => {{
      const b = new Uint8Array(await (await {expression}).arrayBuffer());
      let s = ''; for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
      return btoa(s); }}""")
    return base64.b64decode(b64)


def test_teach_download_and_load_a_model(app, sample, models_dir, tmp_path):
    """Teach in the page: two corrected quarters of the StarDist sample (their objects replaced by
    the ground truth) adapt nuclei_unet, whose AP@0.5 on the other half then rises; the taught
    model downloads as a zip (ONNX, rdf.yaml, card) that CPython runs with the page's labels,
    and loads back into the page; a file that is no model is refused and the page keeps working."""
    from tools.browser import segment_in_page

    import piximi_py
    from piximi_py.metrics import average_precision

    page = app.page
    image_path, mask_path = stardist_sample()
    truth = tifffile.imread(mask_path).astype(np.int32)
    h, w = sample.shape[0] // 2, sample.shape[1] // 2
    page.select_option("#model", "nuclei_unet")
    for name, rows in (("top-left.tif", slice(0, h)), ("bottom-left.tif", slice(h, None))):
        path = tmp_path / name
        tifffile.imwrite(path, sample[rows, :w])
        set_status_pending(page)
        page.set_input_files("#file", str(path))
        wait_done(page)
        gt = truth[rows, :w]
        res = page.evaluate("([labels, h, w]) => window.piximi.markCorrected({labels, height: h, width: w})",
                            [gt.ravel().tolist(), gt.shape[0], gt.shape[1]])
        assert name in res["corrected"]
    assert res["count"] == 2 and not page.locator("#teach-run").is_disabled()
    right = tmp_path / "right.tif"
    tifffile.imwrite(right, sample[:, w:])
    before = segment_in_page(page, right.read_bytes(), model="nuclei_unet", backend="wasm")["labels"]

    page.click("#teach-run")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Taught')"
                           " || !document.querySelector('#error').hidden", timeout=120_000)
    assert page.locator("#error").is_hidden(), page.text_content("#error")
    taught = page.eval_on_selector("#model", "s => s.value")
    assert taught.startswith("nuclei_unet+taught"), taught
    assert "Taught on 2 image(s)" in page.text_content("#teach-info")
    after = segment_in_page(page, right.read_bytes(), model=taught, backend="wasm")["labels"]
    ap_before, ap_after = (average_precision(truth[:, w:], x) for x in (before, after))
    assert ap_after >= ap_before + 0.05, (ap_before, ap_after)

    # download: a zip CPython runs, with the page's labels
    data = _page_file_bytes(page, f"window.piximi.downloadModel('{taught}')")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        onnx_name = next(n for n in names if n.endswith(".onnx"))
        assert {"rdf.yaml", "README.md"} <= names and any(n.endswith("test_output.npy") for n in names)
        assert "top-left.tif" in zf.read("README.md").decode()
        (tmp_path / onnx_name).write_bytes(zf.read(onnx_name))
    native = piximi_py.segment_image(sample[:, w:], model=str(tmp_path / onnx_name), models_dir=models_dir)
    np.testing.assert_array_equal(native.labels, after)

    # load it back into the page; a file that is not a model is refused with a message
    page.set_input_files("#model-file", str(tmp_path / onnx_name))
    page.wait_for_function(f"document.querySelector('#model').value === 'file:{onnx_name}'")
    loaded = segment_in_page(page, right.read_bytes(), model=f"file:{onnx_name}", backend="wasm")["labels"]
    np.testing.assert_array_equal(loaded, after)
    bad = tmp_path / "not_a_model.onnx"
    bad.write_bytes(b"this is not an ONNX file")
    page.set_input_files("#model-file", str(bad))
    page.wait_for_function("!document.querySelector('#error').hidden")
    assert "not_a_model.onnx" in page.text_content("#error")
    # a file over the size limit is refused before it is read (sparse: no disk or memory spent)
    from piximi_py.modelfile import MAX_MODEL_BYTES

    huge = tmp_path / "huge.onnx"
    with huge.open("wb") as f:
        f.truncate(MAX_MODEL_BYTES + 1)
    page.evaluate("document.querySelector('#error').hidden = true")
    page.set_input_files("#model-file", str(huge))
    page.wait_for_function("!document.querySelector('#error').hidden")
    assert "huge.onnx" in page.text_content("#error") and "MiB supported" in page.text_content("#error")
    page.select_option("#model", "nuclei")
    assert segment_in_page(page, right.read_bytes(), backend="wasm")["count"] > 10


def test_stained_slide_gets_the_suggested_model(app, models_dir, tmp_path):
    """A stained slide (scikit-image's immunohistochemistry sample, real H-DAB) opened with the
    fluorescence default: the page says why it suggests the brightfield model, and one click
    segments it with that model, with CPython's labels."""
    pytest.importorskip("skimage")
    from PIL import Image
    from skimage import data

    slide = data.immunohistochemistry()[:256, :256]
    path = tmp_path / "ihc_slide.png"
    Image.fromarray(slide).save(path)
    page = app.page
    page.select_option("#model", "nuclei")
    set_status_pending(page)
    page.set_input_files("#file", str(path))
    wait_done(page)
    assert page.locator("#model-suggestion").is_visible()
    assert "bright background" in page.text_content("#model-suggestion-text")
    set_status_pending(page)
    page.click("#use-suggested")
    wait_done(page)
    assert page.eval_on_selector("#model", "s => s.value") == "nuclei_hematoxylin"
    assert page.locator("#model-suggestion").is_hidden()
    np.testing.assert_array_equal(_page_labels(page), cpython_labels(str(path), models_dir, "nuclei_hematoxylin"))
    page.select_option("#model", "nuclei")


def test_whole_cells_channel_choice(app, sample, models_dir, tmp_path):
    """With the whole-cell model the page offers a cytoplasm and a nuclei channel (named from
    the file), shows what "auto" chose, re-segments on a change with CPython's labels, and
    links the nuclei by default (cells grown from them) unless unticked."""
    import piximi_py

    path = tmp_path / "cells_two_channel.ome.tif"
    planes = np.stack([np.flip(sample, axis=1), sample])
    tifffile.imwrite(path, planes, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["Actin", "Hoechst"]}})
    page = app.page
    assert page.is_checked("#link-nuclei")
    page.select_option("#model", "cells")
    set_status_pending(page)
    page.set_input_files("#file", str(path))
    wait_done(page)
    assert page.locator("#cell-channels").is_visible() and page.locator("#planes").is_hidden()
    options = page.eval_on_selector_all("#channel-nuclei option", "os => os.map((o) => o.text)")
    assert options == ["auto: 2", "none", "1 (Actin)", "2 (Hoechst)"]
    linked = piximi_py.segment_image(str(path), model="cells", nuclei="nuclei", models_dir=models_dir)
    assert linked.channels == {"cyto": 0, "nuclei": 1}
    assert_same_instances(linked.labels, _page_labels(page), "cells with their nuclei, page vs CPython")
    assert page.text_content("#count") == f"{linked.count} cells, {linked.nuclei.count} nuclei"
    set_status_pending(page)
    page.select_option("#channel-nuclei", "none")   # no nuclear channel: nothing to link
    wait_done(page)
    assert_same_instances(piximi_py.segment_image(str(path), model="cells", channels={"cyto": 0},
                                                  models_dir=models_dir).labels, _page_labels(page),
                          "cells without nuclei, page vs CPython")
    set_status_pending(page)
    page.select_option("#channel-nuclei", "1")
    wait_done(page)
    assert_same_instances(linked.labels, _page_labels(page), "cells with their nuclei again, page vs CPython")
    set_status_pending(page)
    page.uncheck("#link-nuclei")
    wait_done(page)
    alone = piximi_py.segment_image(str(path), model="cells", channels={"cyto": 0, "nuclei": 1},
                                    models_dir=models_dir)
    assert_same_instances(alone.labels, _page_labels(page), "cells, nuclei not linked, page vs CPython")
    assert page.text_content("#count") == str(alone.count)
    page.check("#link-nuclei")
    page.select_option("#model", "nuclei")
    assert page.locator("#cell-channels").is_hidden()


def test_offline_after_first_visit(app, files, models_dir):
    """After the first visit the service worker serves the whole site: reload
    with the network off and segment a file."""
    from tools.browser import segment_in_page

    page = app.page
    _wait_core_cached(page)
    # a model used once online (fetched on first use, with progress) is cached for offline use
    crop = files["batch"][0].read_bytes()
    other = segment_in_page(page, crop, model="nuclei_int8", filename="crop.tif")
    assert other["ok"], other
    app.context.set_offline(True)
    offline = app.context.new_page()
    offline.set_default_timeout(180_000)
    try:
        offline.goto(app.origin + "/index.html?backend=wasm")
        offline.evaluate("window.piximi.ready")
        # the first visit saved the booted interpreter; this one restored it (pyodide_boot.mjs)
        assert page.evaluate("window.piximi.startup().pyodide_snapshot")["state"] == "made"
        restored = offline.evaluate("window.piximi.startup().pyodide_snapshot")
        assert restored["state"] == "restored" and not restored.get("error"), restored
        offline.set_input_files("#file", str(files["batch"][0]))
        offline.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')")
        ref = cpython_labels(tifffile.imread(files["batch"][0]), models_dir)
        assert int(offline.text_content("#count")) == int(ref.max())
        again = segment_in_page(offline, crop, model="nuclei_int8", filename="crop.tif")
        assert again["ok"], again
        np.testing.assert_array_equal(again["labels"], other["labels"])
        # a model never used is not there: a clear message, the page keeps working (no test of
        # this module runs nuclei_fast_int8's file; nuclei_unet's is used by Teach and the H&E test)
        never = segment_in_page(offline, crop, model="nuclei_fast_int8", filename="crop.tif")
        assert not never["ok"] and "could not load" in never["message"], never
        # the service worker sends the page's CSP as a header on every file (worker scripts included)
        csp = offline.get_attribute("meta[http-equiv=Content-Security-Policy]", "content")
        for name in ("index.html", "app.js", "worker.py"):
            got = offline.evaluate(f"fetch('{name}').then((r) => r.headers.get('content-security-policy'))")
            assert got == csp, (name, got)
        # files are cached with those headers and handed over as cached (Chromium keeps the
        # compiled WebAssembly beside a cached file only when it is not re-wrapped)
        stored = offline.evaluate("""async () => {
          const name = (await caches.keys()).find((k) => k.startsWith('piximi-'));
          const r = await (await caches.open(name)).match('pyodide/pyodide.asm.wasm');
          return r && {type: r.headers.get('content-type'), coep: r.headers.get('cross-origin-embedder-policy')};
        }""")
        assert stored == {"type": "application/wasm", "coep": "require-corp"}, stored
        # and nothing reached the network: a fetch outside the cache fails
        assert offline.evaluate("fetch('not-cached-' + Math.random()).then(() => 'online', () => 'offline')") == "offline"
    finally:
        offline.close()
        app.context.set_offline(False)


def test_a_bad_pyodide_snapshot_is_made_again(app, files, models_dir):
    """A snapshot Pyodide refuses (another build's, or damaged) costs one ordinary boot: the
    page starts, says why, segments as before, and the next visit restores the new snapshot."""
    from tools.browser import segment_in_page

    page = app.page
    page.evaluate("""async () => {
      const cache = await caches.open("pyodide-snapshot");
      for (const req of await cache.keys()) await cache.put(req, new Response(new Uint8Array(4096)));
    }""")
    pages = []
    try:
        for want in ("made", "restored"):
            visit = app.context.new_page()
            pages.append(visit)
            visit.set_default_timeout(180_000)
            visit.goto(app.origin + "/index.html?backend=wasm")
            visit.evaluate("window.piximi.ready")
            snapshot = visit.evaluate("window.piximi.startup().pyodide_snapshot")
            assert snapshot["state"] == want, snapshot
            if want == "made":
                assert "magic number" in snapshot["error"], snapshot
                visit.wait_for_function("""async () => {
                  const cache = await caches.open("pyodide-snapshot");
                  const [req] = await cache.keys();
                  return req && (await (await cache.match(req)).arrayBuffer()).byteLength > 1e6;
                }""")
        image = files["batch"][0]
        got = segment_in_page(pages[-1], image.read_bytes(), filename=image.name)
        assert got["ok"], got
        np.testing.assert_array_equal(got["labels"], cpython_labels(tifffile.imread(image), models_dir))
    finally:
        for visit in pages:
            visit.close()

// piximi-py web bridge: DOM events + window.piximi API. All image work happens in
// Python (piximi_py) inside a PyScript worker; this file only moves bytes and draws.
const BASE = new URL("./", location.href).href;
const abs = (p) => new URL(p, BASE).href;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ---------------------------------------------------------------- UI helpers
const mb = (n) => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;
function status(text, frac) {
  $("status").textContent = text;
  const bar = $("progress");
  if (frac == null) bar.removeAttribute("value");
  else bar.value = frac;
}
function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// --------------------------------------------- cross-origin isolation (threads)
// On static hosts without COOP/COEP headers, sw.js adds them; the first visit
// reloads once after the service worker takes control ("coi-serviceworker").
async function setupServiceWorker() {
  if (!("serviceWorker" in navigator) || params.has("nosw")) return;
  if (navigator.serviceWorker.controller && window.crossOriginIsolated) {
    // A returning visit, already served by the worker: its update check need not hold up start-up.
    navigator.serviceWorker.register(abs("sw.js"), { scope: BASE })
      .catch((e) => console.warn("service worker not registered:", e));
    return;
  }
  try {
    await navigator.serviceWorker.register(abs("sw.js"), { scope: BASE });
  } catch (e) {
    console.warn("service worker not registered:", e);
    return;
  }
  if (!navigator.serviceWorker.controller && window.crossOriginIsolated) {
    // First visit: let the new service worker take this page over before the runtime
    // loads, so that it comes through it (gzip copies, cached as they arrive).
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) {
      await Promise.race([
        new Promise((r) => navigator.serviceWorker.addEventListener("controllerchange", r, { once: true })),
        new Promise((r) => setTimeout(r, 3000)),
      ]);
    }
  }
  if (!window.crossOriginIsolated && !sessionStorage.getItem("piximi-coi-reload")) {
    sessionStorage.setItem("piximi-coi-reload", "1");
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) {
      await new Promise((r) =>
        navigator.serviceWorker.addEventListener("controllerchange", r, { once: true }));
    }
    location.reload();
    await new Promise(() => {}); // never resolves: the page is going away
  }
}

// ---------------------------------------------------------------- worker
let worker = null;
let defaultModel = null;
let modelList = [];
let promptModel = null; // id of the promptable (SAM) model, if the site has one
let queue = Promise.resolve();

// "Nuclei, fluorescence — 7.9 MB, ~0.6 s per 512²": size from `bytes`, speed from the
// optional `latency_ms_512` (a number, or {backend: ms}).
function modelLabel(m, backend) {
  const parts = [];
  if (m.bytes) parts.push(`${(m.bytes / 1e6).toFixed(1)} MB`);
  let ms = m.latency_ms_512;
  if (ms && typeof ms === "object") ms = ms[backend] ?? ms.wasm ?? Object.values(ms)[0];
  if (typeof ms === "number" && ms > 0) {
    parts.push(ms < 100 ? `~${Math.round(ms)} ms per 512²` : `~${(ms / 1000).toFixed(1)} s per 512²`);
  }
  const name = m.name || m.id;
  return parts.length ? `${name} — ${parts.join(", ")}` : name;
}

function unwrap(res) {
  if (res && res.ok) return res;
  const err = new Error(res?.error?.message || "unknown error in the worker");
  err.name = res?.error?.type || "Error";
  throw err;
}

let siteBuild = null; // build.json
// Where start-up time goes (ms since navigation; python -m bench.startup prints it).
const startup = { marks: {}, worker: null };
const mark = (name) => { startup.marks[name] = performance.now(); };

async function start() {
  const t0 = performance.now();
  status("Starting…", 0.02);
  await setupServiceWorker();
  mark("service_worker");
  const build = await (await fetch(abs("build.json"))).json();
  siteBuild = build;
  mark("build_json");
  status("Loading the Python runtime…", 0.1);
  const { PyWorker } = await import(abs("pyscript/core.js"));
  mark("pyscript");
  worker = await PyWorker(abs(build.worker), {
    type: "pyodide",
    // our own copy, never the CDN; boot.mjs wraps pyodide.mjs with a memory snapshot
    version: abs("pyodide/boot.mjs"),
    config: {},
  });
  mark("pyodide");
  worker.sync.progress = (stage, done, total) => {
    if (stage === "packages") status(done ? "Packages loaded" : "Loading numpy, scipy, piximi_py…", done ? 0.6 : 0.3);
    else if (stage === "model") status(done ? "Model loaded" : "Loading the model…", done ? 0.95 : 0.7);
    else if (stage === "sam_model") status(done ? "SAM model ready" : "Loading the SAM model (first prompt only, a few seconds)…", done ? 1 : null);
    else if (stage === "embedding") {
      status(total > 1 ? `Computing image embeddings with SAM: ${done}/${total}…`
        : done ? "Embedding ready" : "Computing the image embedding for this region (1–2 s)…", total ? done / total : null);
      return total > 1 && refineJob.cancel;   // true: the worker stops refining
    }
    else if (stage === "teach") {
      status(`Teaching the model from the corrected images (${done}/${total})…`, total ? done / total : null);
      return teachJob.cancel;   // true: the worker stops teaching, the model is unchanged
    }
    else if (stage === "download") status(`Downloading a model (first use, then cached): ${mb(done)} of ${mb(total)}…`, total ? done / total : null);
    else if (stage === "diameter") status(done < total ? `Measuring the nuclei's size (pass ${done + 1})…` : "Size measured", done / total);
    else status(`${stage}: ${done}/${total}`, total ? done / total : null);
  };
  const res = unwrap(await worker.sync.init({
    base: BASE,
    pyodide_packages: build.pyodide_packages,
    wheels: build.wheels,
    deferred_pyodide_packages: build.deferred_pyodide_packages,
    deferred_wheels: build.deferred_wheels,
    ort_modules: build.ort_modules,
    ort_wasm_paths: build.ort_wasm_paths,
    codec_modules: build.codec_modules,
    models_index: build.models_index,
    backend: params.get("backend") || "auto",
    probe_backend: params.get("probe") !== "0", // "auto": time WebGPU and WASM once per model and GPU
    num_threads: params.has("threads") ? Number(params.get("threads")) : null,
  }));
  mark("worker_init");
  startup.worker = res.timings || null;
  startup.pyodide_snapshot = res.pyodide_snapshot || null;
  defaultModel = res.default_model;
  modelList = res.models;
  promptModel = res.prompt_model;
  const psel = $("prompt-model");
  psel.replaceChildren(...(res.prompt_models || []).map((m) => new Option(m.name, m.id, false, m.id === promptModel)));
  $("prompt-model-label").hidden = (res.prompt_models || []).length < 2;
  const sel = $("model");
  sel.replaceChildren(...modelList.map((m) => new Option(modelLabel(m, res.backend), m.id, false, m.id === defaultModel)));
  document.body.classList.toggle("can-prompt", !!promptModel);
  $("backend-used").textContent = res.backend;
  $("backend-used").title = res.backend_probe ? `chosen by measurement: ${res.backend_probe.reason}` : "";
  status(`Ready (${((performance.now() - t0) / 1000).toFixed(1)} s, ${res.backend}` +
         `${window.crossOriginIsolated ? ", threads" : ""})`, 1);
  document.body.classList.add("ready");
  $("sample").hidden = !build.sample;
  mark("ready");
  return { models: modelList, defaultModel, backend: res.backend, promptModel };
}

async function toBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  if (input instanceof Blob) return new Uint8Array(await input.arrayBuffer());
  throw new TypeError("segment(input): input must be a File, Blob, ArrayBuffer or Uint8Array of an image file");
}

function inWorker(fn) {
  // one call at a time in the worker; a failure does not block the next
  const p = queue.then(fn, fn);
  queue = p.catch(() => {});
  return p;
}

async function segment(input, options = {}) {
  await ready;
  const bytes = await toBytes(input);
  const opts = {
    model: options.model || defaultModel,
    backend: options.backend || "auto",
    filename: options.filename || (input instanceof File ? (input.webkitRelativePath || input.name) : null),
    display: !!options.display,
    index: options.index || null,          // {C: 1, Z: 3}: plane of a multi-plane file
    project: options.project || null,      // {Z: "max"}: projection instead of a plane
    pixel_size: options.pixelSize || null, // µm per pixel [y, x]; default: from the file
    diameter: options.diameter ?? null,    // nucleus diameter in px; null: estimated per image
    diameter_um: options.diameterUm ?? null, // ... or in µm, with the pixel size
    augment: options.augment ?? false,     // average the model's output over three scales (~3x the model's time)
    invert: options.invert ?? false,       // dark cells on a lighter background (phase contrast, DIC): read the image inverted
    channels: options.channels || null,    // whole cells: {cyto: 1, nuclei: 0} ("auto": from the file); null: all from the file
    nuclei: options.nuclei || null,        // whole cells: a nuclei model id to segment and link the nuclei
    split_by_nuclei: options.splitByNuclei ?? true, // with nuclei: each cell grows from one nucleus; false: the cell model's own cells
    measure: options.measure !== false,
    batch: !!options.batch,
  };
  const run = async () => {
    const t0 = performance.now();
    const res = unwrap(await worker.sync.segment(bytes, opts));
    res.timings.roundtrip = performance.now() - t0;
    delete res.ok;
    return res;
  };
  return inWorker(run);
}

// What a file holds (axes, sizes, pixel size, channel names), from its header.
async function describe(input, options = {}) {
  await ready;
  const bytes = await toBytes(input);
  const filename = options.filename || (input instanceof File ? input.name : null);
  return inWorker(async () => {
    const res = unwrap(await worker.sync.describe(bytes, { filename }));
    delete res.ok;
    return res;
  });
}

// The last segmentation as a file (made by Python in the worker): a Blob with a name.
// kind: labels | mask | overlay | csv | coco | coco_polygon | rois | all
async function exportResult(kind, options = {}) {
  await ready;
  return inWorker(async () => {
    const res = unwrap(await worker.sync.export(kind, options));
    const blob = new Blob([res.data], { type: res.mime });
    blob.filename = res.name;
    return blob;
  });
}

// Segment many files; onFile(i, file, result | Error) after each. Stops early
// when signal.aborted (the image in progress finishes first). Resolves to a zip
// Blob of all results (labels, CSV, ROIs, COCO per image + batch_report.csv).
async function batch(files, { onFile, signal, ...options } = {}) {
  await ready;
  await inWorker(async () => worker.sync.batch_clear());
  const results = [];
  for (let i = 0; i < files.length; i++) {
    if (signal?.aborted) break;
    const file = files[i];
    const name = file.webkitRelativePath || file.name || `image${i + 1}`;
    let res;
    try {
      res = await segment(file, { ...options, filename: name, batch: true, display: false });
      res = { name, count: res.count, width: res.width, height: res.height,
              summary: res.summary, timings: res.timings };
    } catch (e) {
      res = e;
      await inWorker(async () => worker.sync.batch_fail(name, e.message));
    }
    results.push(res);
    onFile?.(i, file, res);
  }
  const zip = await inWorker(async () => unwrap(await worker.sync.batch_zip()));
  const blob = new Blob([zip.data], { type: zip.mime });
  blob.filename = zip.name;
  return { results, zip: blob, cancelled: !!signal?.aborted };
}

// Promptable segmentation (SAM). target: an image id (from segment(), res.image_id),
// null for the last segmented image, or a file (File, Blob, ArrayBuffer, Uint8Array).
// request: {boxes: [x0, y0, x1, y1], points: [[x, y], ...], labels: [1 | 0, ...], multimask, diameter}.
// options: backend, model (a prompt-segmentation id of models/index.json; default: its default one).
// Resolves to {image_id, mask: {bbox, width, height, area, bits}, iou, backend, cached, timings}.
async function prompt(target, request = {}, options = {}) {
  await ready;
  let imageId = typeof target === "string" ? target : "";
  const bytes = target != null && typeof target !== "string" ? await toBytes(target) : null;
  const req = {};
  for (const k of ["boxes", "points", "labels", "multimask", "diameter"]) if (request[k] != null) req[k] = request[k];
  return inWorker(async () => {
    const t0 = performance.now();
    if (bytes) {
      const filename = options.filename || (target instanceof File ? target.name : null);
      imageId = unwrap(await worker.sync.open_image(bytes, {
        filename, index: options.index || null, project: options.project || null })).image_id;
    }
    const res = unwrap(await worker.sync.prompt(imageId, req, { backend: options.backend || "auto",
                                                                model: options.model || null }));
    res.timings.roundtrip_ms = performance.now() - t0;
    delete res.ok;
    return res;
  });
}

// "Refine all": every object of the last segmentation re-segmented by SAM from its box.
async function refine(options = {}) {
  await ready;
  return inWorker(async () => {
    const t0 = performance.now();
    const res = unwrap(await worker.sync.refine(options.imageId || "", { backend: options.backend || "auto",
                                                                        model: options.model || null,
                                                                        min_iou: options.minIou ?? 0 }));
    res.timings.roundtrip_ms = performance.now() - t0;
    delete res.ok;
    if (view && view.res.image_id === res.image_id) updateLabels(res);
    return res;
  });
}

// ---------------------------------------------------------------- teach
// Corrected images teach the model (piximi_py.webteach): the taught model is added
// to the model list, used for the images that follow, and can be downloaded.
const teachJob = { running: false, cancel: false };

async function markCorrected(options = {}) {
  await ready;
  return inWorker(async () => {
    const r = unwrap(await worker.sync.mark_corrected(options));
    delete r.ok;
    $("teach-info").textContent = r.count ? `${r.count} corrected image(s): ${r.corrected.join(", ")}` : "";
    $("teach-run").disabled = !r.count;
    return { ...r };
  });
}

function addModel(entry) {
  modelList = modelList.filter((m) => m.id !== entry.id).concat([entry]);
  const sel = $("model");
  [...sel.options].filter((o) => o.value === entry.id).forEach((o) => o.remove());
  sel.append(new Option(modelLabel(entry, $("backend-used").textContent), entry.id));
  sel.value = entry.id;
}

async function teach(options = {}) {
  await ready;
  return inWorker(async () => {
    const res = unwrap(await worker.sync.teach({ model: options.model || null, budget_s: options.budgetS ?? 45 }));
    delete res.ok;
    addModel(res.model);
    return res;
  });
}

async function downloadModel(modelId = null) {
  await ready;
  return inWorker(async () => {
    const res = unwrap(await worker.sync.download_model(modelId || $("model").value || ""));
    const blob = new Blob([res.data], { type: "application/zip" });
    blob.filename = res.filename;
    return blob;
  });
}

async function loadModel(input, options = {}) {
  await ready;
  const filename = options.filename || (input instanceof File ? input.name : "model.onnx");
  // Checked before the file is read: the worker refuses it too, but only after a copy of it.
  const size = input?.size ?? input?.byteLength ?? 0;
  const limit = siteBuild?.max_model_bytes;
  if (limit && size > limit) {
    throw new Error(`model file '${filename}' is ${Math.round(size / 2 ** 20)} MiB, more than the ` +
                    `${Math.round(limit / 2 ** 20)} MiB supported`);
  }
  const bytes = await toBytes(input);
  return inWorker(async () => {
    const res = unwrap(await worker.sync.load_model(bytes, { filename }));
    addModel(res.model);
    return { ...res.model };
  });
}

async function runTeach() {
  await cancellableJob(teachJob, "teach-run", { label: "Teach", cancelLabel: "Cancel teaching", failed: "Teaching failed" },
    async () => {
      const res = await teach();
      const r = res.report;
      $("teach-info").textContent = `Taught on ${res.images.length} image(s): objects ~${res.diameter.toFixed(1)} px, ` +
        `${r.head_refitted ? "last layer refitted" : "last layer kept"}; AP@0.5 on the corrected images ` +
        `${r.ap50_corrected_before} → ${r.ap50_corrected_after}. Selected for the images you open next.`;
      status(`Taught in ${r.seconds.toFixed(1)} s`, 1);
      $("model-download").disabled = false;
    });
}

// A long worker task behind a button that becomes its Cancel button while it runs: a second
// click sets `job.cancel`, which the worker's progress callback returns (true: stop).
async function cancellableJob(job, buttonId, { label, cancelLabel, failed }, work) {
  const button = $(buttonId);
  if (job.running) { job.cancel = true; button.textContent = "Cancelling…"; return; }
  showError("");
  Object.assign(job, { running: true, cancel: false });
  button.textContent = cancelLabel;
  document.body.classList.add("busy");
  try {
    await work();
  } catch (e) {
    if (e.name === "Cancelled") status(e.message, 1);
    else { showError(e.message); status(failed, 1); }
  } finally {
    Object.assign(job, { running: false, cancel: false });
    button.textContent = label;
    document.body.classList.remove("busy");
  }
}

const ready = start();
ready.catch((e) => { status("Failed to load", 0); showError(e.message); });
// ---------------------------------------------------------------- offline
// The service worker caches what the default path runs once the page is ready,
// and every other file when it is first used; "Make everything available
// offline" (window.piximi.offline()) fetches the rest on request.
let precacheSeq = 0;
async function precache(all, onProgress) {
  if (!("serviceWorker" in navigator) || params.has("nosw")) {
    throw new Error("offline use needs the service worker, which this page runs without");
  }
  const reg = await navigator.serviceWorker.getRegistration(BASE);
  const sw = reg?.active;
  if (!sw) throw new Error("the service worker is not active yet: reload the page and try again");
  const id = ++precacheSeq;
  return new Promise((resolve, reject) => {
    const onMessage = (event) => {
      const m = event.data || {};
      if (m.id !== id) return;
      if (m.type === "precache-progress") onProgress?.({ ...m });
      else if (m.type === "precache-done") {
        navigator.serviceWorker.removeEventListener("message", onMessage);
        if (m.error) reject(new Error(`offline copy failed: ${m.error}`));
        else resolve({ files: m.files, bytes: m.bytes, failed: m.failed });
      }
    };
    navigator.serviceWorker.addEventListener("message", onMessage);
    sw.postMessage({ type: "precache", all, id });
  });
}

// What this browser holds for offline use: {total_files, total_bytes, missing_files, missing_bytes}.
async function offlineStatus() {
  const manifest = await (await fetch(abs("manifest.json"), { cache: "no-cache" })).json();
  const name = `piximi-${manifest.version}`;
  const keys = (await caches.has(name)) ? await (await caches.open(name)).keys() : [];
  const have = new Set(keys.map((r) => new URL(r.url).pathname));
  const missing = Object.entries(manifest.files).filter(([f]) => !have.has(new URL(f, BASE).pathname));
  return {
    total_files: Object.keys(manifest.files).length, total_bytes: manifest.total_bytes,
    missing_files: missing.length, missing_bytes: missing.reduce((n, [, f]) => n + (f.gz || f.size), 0),
  };
}

async function showOfflineButton() {
  const button = $("offline");
  try {
    const st = await offlineStatus();
    button.hidden = st.missing_files === 0;
    button.textContent = `Make everything available offline (${mb(st.missing_bytes)} more)`;
  } catch (e) {
    button.hidden = true; // offline already, or no service worker
  }
}

async function makeOffline({ onProgress } = {}) {
  await ready;
  const res = await precache(true, onProgress);
  await showOfflineButton();
  return res;
}

// Imports the first image needs, done while the user picks a file (queued like any call).
ready.then(() => inWorker(async () => { startup.warm_up = { ...(await worker.sync.warm_up()) }; }))
  .catch(() => {});

ready.then(async () => {
  if (!("serviceWorker" in navigator) || params.has("nosw")) return;
  await precache(false).catch(() => {});
  await showOfflineButton();
}).catch(() => {});

$("offline").addEventListener("click", async () => {
  const button = $("offline");
  button.disabled = true;
  try {
    const res = await makeOffline({
      onProgress: (p) => status(`Downloading for offline use: ${mb(p.bytes)} of ${mb(p.total)} (${p.done}/${p.files} files)…`,
        p.total ? p.bytes / p.total : null),
    });
    status(res.failed ? `Offline copy incomplete: ${res.failed} files failed; try again online`
      : "Everything is available offline", 1);
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
});

window.piximi = {
  ready,
  // models the page can segment with; {all: true} lists every model with its task
  models: async ({ all = false } = {}) => {
    await ready;
    if (!all) return modelList.map((m) => ({ ...m }));
    return [...(await inWorker(async () => worker.sync.models(true)))].map((m) => ({ ...m }));
  },
  segment,
  describe,
  export: exportResult,
  batch,
  prompt,
  refine,
  // edit the last segmentation's objects (undoable): "delete" {labels | box}, "merge" {labels},
  // "split" {start, end}, "paint" {points, radius, label}, "erase" {points, radius},
  // "polygon" {points}, "undo", "redo" -> {changed, count, undo, redo, label}
  edit: editLabels,
  // teaching: keep the last segmentation, as edited, as a corrected example ({remove, clear});
  // adapt the model to the corrected examples ({model, budgetS}) -> {model, report, diameter};
  // a model as a zip (ONNX, rdf.yaml, card); a model file of the user's, checked, added to the list
  markCorrected,
  teach,
  downloadModel,
  loadModel,
  // offline use: fetch every file not cached yet ({onProgress({done, files, bytes, total})}),
  // and what is cached now
  offline: makeOffline,
  offlineStatus: async () => { await ready; return offlineStatus(); },
  // diagnostics: start-up marks (ms since navigation) and the worker's own timings
  startup: () => JSON.parse(JSON.stringify(startup)),
  // diagnostics: the worker's WebAssembly heap and Python object counts
  memory: async () => { await ready; const r = await inWorker(async () => worker.sync.memory()); return { ...r }; },
};

// ---------------------------------------------------------------- drawing
// The worker sends an 8-bit rendition of the image (auto percentile contrast),
// the labels and the measurements; here we only paint them.
function colour(id) {
  const h = (id * 137.508) % 360; // golden angle: neighbours differ (same as export.label_colours)
  const s = 0.9, l = 0.55, a = s * Math.min(l, 1 - l);
  const f = (n) => { const k = (n + h / 30) % 12; return l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)); };
  return [255 * f(0), 255 * f(8), 255 * f(4)];
}

let view = null; // {res, name, rowOf: Map label -> row}

function paintImage() {
  const { width: w, height: h, image } = view.res;
  const lo = Number($("contrast-min").value), hi = Math.max(lo + 1, Number($("contrast-max").value));
  const lut = new Uint8ClampedArray(256);
  for (let g = 0; g < 256; g++) lut[g] = ((g - lo) * 255) / (hi - lo);
  const canvas = $("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(w, h);
  const px = new Uint32Array(out.data.buffer);
  for (let i = 0; i < w * h; i++) { const g = image ? lut[image[i]] : 0; px[i] = 0xff000000 | (g << 16) | (g << 8) | g; }
  ctx.putImageData(out, 0, 0);
}

function paintLabels() {
  // two layers: filled objects (CSS opacity = the slider) and outlines (opaque)
  const { width: w, height: h, labels } = view.res;
  const fillC = $("overlay-fill"), edgeC = $("overlay-edge");
  for (const c of [fillC, edgeC]) { c.width = w; c.height = h; }
  const fctx = fillC.getContext("2d"), ectx = edgeC.getContext("2d");
  const fimg = fctx.createImageData(w, h), eimg = ectx.createImageData(w, h);
  const fp = new Uint32Array(fimg.data.buffer), ep = new Uint32Array(eimg.data.buffer);
  const lut = new Map();
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i++) {
      const l = labels[i];
      if (!l) continue;
      let c = lut.get(l);
      if (c === undefined) { const [r, g, b] = colour(l); c = 0xff000000 | (b << 16) | (g << 8) | r; lut.set(l, c); }
      fp[i] = c;
      if ((x === 0 || labels[i - 1] !== l) || (x === w - 1 || labels[i + 1] !== l) ||
          (y === 0 || labels[i - w] !== l) || (y === h - 1 || labels[i + w] !== l)) ep[i] = c;
    }
  }
  fctx.putImageData(fimg, 0, 0); ectx.putImageData(eimg, 0, 0);
  applyOverlayStyle();
}

function applyOverlayStyle() {
  const fill = $("mode").value === "fill";
  const opacity = Number($("opacity").value);
  // fill: objects at the chosen opacity, outlines opaque; outline: outlines at the opacity
  $("overlay-fill").style.opacity = fill ? String(opacity) : "0";
  $("overlay-edge").style.opacity = fill ? "1" : String(opacity);
}

// zoom and pan: a CSS transform of the stacked canvases (the GPU composites them)
const zoom = { s: 1, x: 0, y: 0 };
function applyZoom() {
  $("stack").style.transform = `translate(${zoom.x}px, ${zoom.y}px) scale(${zoom.s})`;
  $("zoom-level").textContent = `${Math.round(zoom.s * 100)}%`;
}
function fitZoom() {
  if (!view) return;
  const vp = $("viewport").getBoundingClientRect();
  zoom.s = Math.min(1, vp.width / view.res.width, vp.height / view.res.height) || 1;
  zoom.x = 0; zoom.y = 0;
  applyZoom();
}
function setupViewport() {
  const vp = $("viewport");
  vp.addEventListener("wheel", (e) => {
    if (!view) return;
    e.preventDefault();
    const r = vp.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    const f = Math.exp(-e.deltaY * 0.0015);
    const s = Math.min(32, Math.max(0.02, zoom.s * f));
    zoom.x = mx - ((mx - zoom.x) * s) / zoom.s; zoom.y = my - ((my - zoom.y) * s) / zoom.s; zoom.s = s;
    applyZoom();
  }, { passive: false });
  let drag = null;
  vp.addEventListener("pointerdown", (e) => {
    if (promptOn() && e.button === 0) { promptPointer.down(e); vp.setPointerCapture(e.pointerId); return; }
    if (toolOn() && e.button === 0) { toolPointer.down(e); vp.setPointerCapture(e.pointerId); return; }
    drag = { x: e.clientX - zoom.x, y: e.clientY - zoom.y, moved: false }; vp.setPointerCapture(e.pointerId);
  });
  vp.addEventListener("pointermove", (e) => {
    if (promptPointer.active) promptPointer.move(e);
    else if (toolPointer.active) toolPointer.move(e);
    else if (drag) { zoom.x = e.clientX - drag.x; zoom.y = e.clientY - drag.y; drag.moved = true; applyZoom(); }
    else hover(e);
  });
  vp.addEventListener("pointerup", (e) => {
    if (promptPointer.active) { promptPointer.up(e); return; }
    if (toolPointer.active) { toolPointer.up(e); return; }
    if (drag && !drag.moved) {
      hover(e, true);
      const p = pixelAt(e);
      select(p ? view.res.labels[p[1] * view.res.width + p[0]] : 0, e.shiftKey);
    }
    drag = null;
  });
  $("zoom-fit").addEventListener("click", fitZoom);
}

function pixelAt(e, clamp = false) {
  const r = $("canvas").getBoundingClientRect(); // includes the transform
  let x = Math.floor(((e.clientX - r.left) / r.width) * view.res.width);
  let y = Math.floor(((e.clientY - r.top) / r.height) * view.res.height);
  if (clamp) {
    x = Math.min(view.res.width - 1, Math.max(0, x));
    y = Math.min(view.res.height - 1, Math.max(0, y));
  }
  return x >= 0 && y >= 0 && x < view.res.width && y < view.res.height ? [x, y] : null;
}

function hover(e, pin = false) {
  if (!view) return;
  const p = pixelAt(e);
  const label = p ? view.res.labels[p[1] * view.res.width + p[0]] : 0;
  showObject(label, pin);
}

const FMT = (v) => (Number.isInteger(v) ? String(v) : v.toPrecision(4));
function showObject(label, pin = false) {
  const box = $("object-info");
  const row = label ? view.rowOf.get(label) : undefined;
  if (row === undefined) { if (!pin) return; box.textContent = "Background"; return; }
  const m = view.res.measurements;
  box.replaceChildren(...Object.keys(m).map((k) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<th>${k}</th><td>${FMT(m[k][row])}</td>`;
    return tr;
  }));
  box.dataset.label = String(label);
  document.querySelectorAll("#measurements tr.sel").forEach((tr) => tr.classList.remove("sel"));
  document.querySelector(`#measurements tr[data-label="${label}"]`)?.classList.add("sel");
}

const TABLE_COLUMNS = ["label", "area", "area_um2", "centroid_x", "centroid_y", "perimeter",
                       "eccentricity", "solidity", "intensity_mean", "intensity_mean-0", "intensity_mean-1", "intensity_mean-2"];
const MAX_ROWS = 1000; // the CSV has all of them
function showMeasurements(res) {
  const m = res.measurements, table = $("measurements");
  view.rowOf = new Map();
  if (!m) { table.replaceChildren(); $("summary").textContent = ""; return; }
  const n = m.label.length;
  for (let i = 0; i < n; i++) view.rowOf.set(m.label[i], i);
  const cols = TABLE_COLUMNS.filter((c) => c in m);
  const head = document.createElement("tr");
  head.innerHTML = cols.map((c) => `<th>${c}</th>`).join("");
  const rows = [head];
  for (let i = 0; i < Math.min(n, MAX_ROWS); i++) {
    const tr = document.createElement("tr");
    tr.dataset.label = String(m.label[i]);
    tr.innerHTML = cols.map((c) => `<td>${FMT(m[c][i])}</td>`).join("");
    rows.push(tr);
  }
  table.replaceChildren(...rows);
  const s = res.summary;
  const um = res.pixel_size ? `, mean area ${s.mean_area_um2.toFixed(1)} µm² (pixel ${res.pixel_size[1].toPrecision(3)} µm)` : "";
  $("summary").textContent = `${s.count} objects, mean area ${s.mean_area.toFixed(1)} px${um}` +
    (n > MAX_ROWS ? ` — first ${MAX_ROWS} rows shown, all in the CSV` : "");
}

function showResult(res, name) {
  $("count").textContent = String(res.count);
  $("backend-used").textContent = res.backend;
  $("result-name").textContent = `${name} — ${res.width}×${res.height}, model ${res.model}`;
  showDiameter(res);
  showSuggestion(res);
  showChannelsUsed(res);
  if (res.nuclei_count != null) $("count").textContent = `${res.count} cells, ${res.nuclei_count} nuclei`;
  else if (res.nuclei_skipped) $("count").textContent = `${res.count} cells (${res.nuclei_skipped})`;
  const rows = ["decode", "preprocess", "diameter", "inference", "postprocess", "measure", "total", "roundtrip"]
    .filter((k) => k in res.timings)
    .map((k) => `<tr><th>${k}</th><td>${res.timings[k].toFixed(1)} ms</td></tr>`);
  $("timings").innerHTML = rows.join("");
}

// A stained slide segmented with a fluorescence model (or the reverse): the model the image
// calls for, why, and one click to use it (the user's choice otherwise stands).
function showSuggestion(res) {
  const taskOf = (id) => modelList.find((m) => m.id === id)?.task;
  const differs = res.suggested_model && taskOf(res.suggested_model) !== taskOf(res.model);
  $("model-suggestion").hidden = !differs;
  if (!differs) return;
  const m = modelList.find((x) => x.id === res.suggested_model);
  $("model-suggestion-text").textContent = `This image looks like ${res.suggested_because}. Suggested model: ${m?.name || m?.id}.`;
  $("use-suggested").dataset.model = res.suggested_model;
}

// The diameter field: empty = estimate; after a run it shows what was used (estimated or typed).
function showDiameter(res) {
  const note = $("diameter-note");
  if (!res.model_diameter) { note.textContent = "(this model uses images as they are)"; return; }
  if (res.diameter_estimated) $("diameter").placeholder = `auto: ${res.diameter.toFixed(1)}`;
  else if (!res.diameter) $("diameter").placeholder = "auto";
  note.textContent = res.diameter == null ? "(no nuclei found to measure)"
    : `${res.diameter_estimated ? "estimated" : "given"}; ` +
      (res.scale === 1 ? "image used as it is" : `image rescaled ×${res.scale.toPrecision(3)}`);
}

// The diameter typed in the field, or null (estimate); a bad value throws with a message.
function diameterChoice() {
  const field = $("diameter");
  if (field.value.trim() === "") return null;
  const px = Number(field.value);
  if (!Number.isFinite(px) || px <= 0) throw new Error(`Nucleus diameter must be a positive number of pixels, not "${field.value}"`);
  return px;
}

function render(res, name) {
  selection.clear(); // a new image: a new edit history in the worker
  $("edit-delete").disabled = $("edit-merge").disabled = $("edit-undo").disabled = $("edit-redo").disabled = true;
  view = { res, name, rowOf: new Map() };
  paintImage();
  paintLabels();
  showMeasurements(res);
  showResult(res, name);
  fitZoom();
  resetPrompt();
  document.body.classList.add("has-result");
}

// New labels for the image shown (SAM accept / refine): whole, or a patch
// {bbox: [x0, y0, x1, y1], labels} of the rectangle that changed.
function updateLabels(res) {
  const r = view.res;
  if (res.labels) r.labels = res.labels;
  else if (res.patch) {
    const [x0, y0, x1, y1] = res.patch.bbox, pw = x1 - x0 + 1;
    for (let y = y0; y <= y1; y++) r.labels.set(res.patch.labels.subarray((y - y0) * pw, (y - y0 + 1) * pw), y * r.width + x0);
  }
  r.measurements = res.measurements;
  r.summary = res.summary;
  r.count = res.count;
  paintLabels();
  showMeasurements(r);
  $("count").textContent = String(res.count);
  if (res.undo !== undefined) { $("edit-undo").disabled = !res.undo; $("edit-redo").disabled = !res.redo; }
}

// ---------------------------------------------------------------- editing
// piximi_py.edit in the worker on the last segmentation; the page redraws the
// rectangle that changed. Click selects an object, shift-click adds to the
// selection; Delete, M (merge), S (split: draw a line across an object), Ctrl+Z, Ctrl+Shift+Z.
const selection = new Set();

async function editLabels(op, options = {}) {
  await ready;
  const res = await inWorker(async () => unwrap(await worker.sync.edit(op, options)));
  if (res.changed && view && view.res.image_id === res.image_id) updateLabels(res);
  return { changed: res.changed, count: res.count, undo: res.undo, redo: res.redo, label: res.label ?? null };
}

function select(label, add) {
  if (!add) selection.clear();
  if (label) { if (add && selection.has(label)) selection.delete(label); else selection.add(label); }
  $("edit-delete").disabled = selection.size === 0;
  $("edit-merge").disabled = selection.size < 2;
  $("edit-info").textContent = selection.size ? `Selected: ${[...selection].join(", ")}` : "";
}

async function runEdit(op, options, done) {
  try {
    showError("");
    const res = await editLabels(op, options);
    select(0, false);
    if (done) status(`${done}: ${res.count} objects`, 1);
  } catch (e) { showError(e.message); }
}

// Pointer tools on the image: "split" (a line across an object), "draw" (the outline of a
// new object), "brush" (paint the selected object or a new one; shift erases).
let editTool = null;
const toolOn = () => !!editTool && !!view;
function setEditTool(on, tool = "split") {
  if (on) setPromptMode(false);
  editTool = on ? tool : null;
  document.body.classList.toggle("edit-tool", !!editTool);
  for (const t of ["box", "split", "draw", "brush"]) $(`edit-${t}`).setAttribute("aria-pressed", String(editTool === t));
  const hints = { box: "Drag a box: the objects inside it are deleted", split: "Draw a line across the object to split",
                  draw: "Draw the outline of the new object", brush: "Paint: drag over the image (shift: erase)" };
  if (editTool) $("edit-info").textContent = `${hints[editTool]} (Esc: stop)`;
  else if (!selection.size) $("edit-info").textContent = "";
}
const toggleTool = (tool) => setEditTool(editTool !== tool, tool);

const toolPointer = {
  active: false, start: null, path: [], erase: false,
  down(e) { this.active = true; this.start = pixelAt(e, true); this.path = [this.start]; this.erase = e.shiftKey; },
  move(e) {
    const p = pixelAt(e, true);
    if (editTool === "split") { drawPrompt(null, [this.start, p]); return; }
    if (editTool === "box") { drawPrompt(boxOf(this.start, p)); return; }
    const last = this.path[this.path.length - 1];
    if (p[0] !== last[0] || p[1] !== last[1]) this.path.push(p);
    drawPrompt(null, null, this.path, editTool === "brush" ? brushRadius() : 0);
  },
  up(e) {
    this.active = false;
    const end = pixelAt(e, true);
    drawPrompt();
    if (editTool === "split") {
      if (Math.hypot(end[0] - this.start[0], end[1] - this.start[1]) < 2) return;
      runEdit("split", { start: this.start, end }, "Split");
    } else if (editTool === "box") {
      if (Math.hypot(end[0] - this.start[0], end[1] - this.start[1]) < 2) return;
      runEdit("delete", { box: boxOf(this.start, end) }, "Deleted the objects in the box");
    } else if (editTool === "draw") {
      if (this.path.length < 3) return;
      runEdit("polygon", { points: this.path }, "Object drawn");
    } else if (this.erase) {
      runEdit("erase", { points: this.path, radius: brushRadius() }, "Erased");
    } else {
      const label = selection.size === 1 ? [...selection][0] : null;
      runEdit("paint", { points: this.path, radius: brushRadius(), ...(label ? { label } : {}) }, "Painted");
    }
  },
};
const boxOf = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
const brushRadius = () => Math.max(1, Number($("brush-radius").value) || 4);

// ---------------------------------------------------------------- prompt mode (SAM)
// Drag a box: a new object. Click: a positive point; shift- or alt-click: a negative
// point refining the current object. Enter / Accept adds it to the labels, Esc cancels.
let pobj = null;                 // {box, points, labels, mask, iou}
const pjob = { busy: false, again: false };
const promptOn = () => document.body.classList.contains("prompt-mode") && !!view;

function resetPrompt() {
  pobj = null;
  $("prompt-accept").disabled = $("prompt-cancel").disabled = true;
  $("prompt-info").textContent = "";
  drawPrompt();
}

function setPromptMode(on) {
  if (on) setEditTool(false);
  document.body.classList.toggle("prompt-mode", on);
  $("prompt-mode").setAttribute("aria-pressed", String(on));
  if (!on) cancelPrompt();
}

const promptPointer = {
  active: false, start: null, startClient: null, end: null, moved: false,
  down(e) {
    this.active = true; this.moved = false;
    this.start = pixelAt(e, true); this.end = this.start; this.startClient = [e.clientX, e.clientY];
  },
  move(e) {
    this.end = pixelAt(e, true);
    if (Math.hypot(e.clientX - this.startClient[0], e.clientY - this.startClient[1]) > 4) this.moved = true;
    if (this.moved) drawPrompt(this.box());
  },
  up(e) {
    this.active = false;
    this.end = pixelAt(e, true);
    if (this.moved) {
      const box = this.box();
      if (box[2] > box[0] && box[3] > box[1]) { pobj = { box, points: [], labels: [] }; runPrompt(); }
      else drawPrompt();
      return;
    }
    const p = pixelAt(e);
    if (!p) return;
    const label = e.shiftKey || e.altKey ? 0 : 1;
    if (!pobj) {
      if (label === 0) { $("prompt-info").textContent = "Click on an object or drag a box first; shift-click removes a region"; return; }
      pobj = { box: null, points: [], labels: [] };
    }
    pobj.points.push(p); pobj.labels.push(label);
    runPrompt();
  },
  box() {
    const [a, b] = [this.start, this.end];
    return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  },
};

async function runPrompt() {
  if (pjob.busy) { pjob.again = true; return; }   // the latest state is sent when this one ends
  pjob.busy = true;
  drawPrompt();
  try {
    do {
      pjob.again = false;
      const obj = pobj;
      if (!obj) break;
      const req = { labels: obj.labels };
      if (obj.box) req.boxes = obj.box;
      if (obj.points.length) req.points = obj.points;
      else delete req.labels;
      const res = await prompt(view.res.image_id, req, { backend: $("backend").value,
                                                         model: $("prompt-model").value || null });
      if (obj !== pobj) continue;                  // cancelled or replaced meanwhile
      obj.mask = res.mask; obj.iou = res.iou;
      const t = res.timings;
      $("prompt-info").textContent = res.mask.area
        ? `Object: ${res.mask.area} px, predicted IoU ${res.iou.toFixed(2)} — Enter: accept, Esc: cancel ` +
          `(${res.cached ? "embedding cached" : `embedding ${t.embedding_ms.toFixed(0)} ms`}, decoder ${t.decoder_ms.toFixed(0)} ms)`
        : "No object found here: drag a box around it or click inside it";
      $("prompt-accept").disabled = !res.mask.area;
      $("prompt-cancel").disabled = false;
      status(`Prompt: ${t.total_ms.toFixed(0)} ms (${res.backend})`, 1);
      drawPrompt();
    } while (pjob.again);
  } catch (e) {
    showError(e.message);
    status("Prompt failed", 1);
  } finally {
    pjob.busy = false;
  }
}

async function acceptPrompt() {
  if (!pobj?.mask?.area || pjob.busy) return;
  try {
    showError("");
    const res = await inWorker(async () => unwrap(await worker.sync.prompt_accept({})));
    updateLabels(res);
    showObject(res.label, true);
    status(`Added object ${res.label}${res.removed.length ? ` (replacing ${res.removed.join(", ")})` : ""}: ${res.count} objects`, 1);
    resetPrompt();
  } catch (e) { showError(e.message); }
}

function cancelPrompt() {
  if (!pobj) return;
  resetPrompt();
  inWorker(async () => worker.sync.prompt_cancel()).catch(() => {});
}

const refineJob = { running: false, cancel: false };
async function refineAll() {
  if (!view) return;
  if (!refineJob.running) cancelPrompt();
  await cancellableJob(refineJob, "refine-all", { label: "Refine all with SAM", cancelLabel: "Cancel refine",
                                                  failed: "Refine failed" }, async () => {
    status("Refining every object with SAM…", null);
    const res = await refine({ backend: $("backend").value, model: $("prompt-model").value || null });
    status(`Refined ${res.objects} objects with SAM in ${(res.timings.total_ms / 1000).toFixed(1)} s ` +
           `(${res.windows} embeddings, ${res.backend})`, 1);
  });
}

// the current object: its mask (yellow), box and points, or the box being dragged
function drawPrompt(dragBox = null, line = null, path = null, radius = 0) {
  const c = $("prompt-layer");
  if (!view) return;
  const { width: w, height: h } = view.res;
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const m = pobj?.mask;
  if (m?.area) {
    const [x0, y0] = m.bbox, img = ctx.createImageData(m.width, m.height);
    const px = new Uint32Array(img.data.buffer);
    for (let i = 0; i < m.width * m.height; i++) if ((m.bits[i >> 3] >> (7 - (i & 7))) & 1) px[i] = 0x7300dcff; // ABGR
    ctx.putImageData(img, x0, y0);
  }
  const lw = Math.max(1, 1.5 / zoom.s);
  ctx.lineWidth = lw;
  const box = dragBox || pobj?.box;
  if (box) {
    ctx.strokeStyle = "#ffe14d";
    ctx.setLineDash(dragBox ? [4 * lw, 3 * lw] : []);
    ctx.strokeRect(box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1);
    ctx.setLineDash([]);
  }
  (pobj?.points || []).forEach(([x, y], i) => {
    ctx.fillStyle = pobj.labels[i] ? "#33dd55" : "#ff4040";
    ctx.beginPath(); ctx.arc(x + 0.5, y + 0.5, Math.max(2, 4 / zoom.s), 0, 2 * Math.PI); ctx.fill();
  });
  if (path && path.length > 1) { // the outline or brush stroke being drawn
    ctx.strokeStyle = "#9fd3ff";
    ctx.lineWidth = radius ? 2 * radius : lw;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(path[0][0] + 0.5, path[0][1] + 0.5);
    for (const [x, y] of path.slice(1)) ctx.lineTo(x + 0.5, y + 0.5);
    ctx.stroke();
    ctx.lineWidth = lw;
  }
  if (line) { // the split tool's line, as it is drawn
    ctx.strokeStyle = "#9fd3ff";
    ctx.beginPath(); ctx.moveTo(line[0][0] + 0.5, line[0][1] + 0.5); ctx.lineTo(line[1][0] + 0.5, line[1][1] + 0.5); ctx.stroke();
  }
}

// ---------------------------------------------------------------- planes (C/Z/T)
let current = null; // {file, info}
function planeChoice() {
  const index = {}, project = {};
  document.querySelectorAll("#planes select[data-axis]").forEach((s) => {
    if (s.value === "max") project[s.dataset.axis] = "max";
    else index[s.dataset.axis] = Number(s.value);
  });
  return { index, project };
}
// Whole-cell models read named channels (input_roles): the image channel of each, chosen here.
function readsChannels(modelId) {
  return (modelList.find((m) => m.id === modelId)?.input_roles || []).length > 0;
}
function showChannels(info) {
  const multi = readsChannels($("model").value);
  // invert reads one plane or a cytoplasm channel: a colour or stain model refuses it
  const invertible = modelList.find((m) => m.id === ($("model").value || defaultModel))?.invertible ?? true;
  $("invert").disabled = !invertible;
  if (!invertible) $("invert").checked = false;
  $("diameter-what").textContent = multi ? "Cell" : "Nucleus";
  $("cell-channels").hidden = !multi || !info;
  if (!multi || !info) return;
  const count = info.sizes?.C || ((info.sizes?.S || 1) >= 3 ? 3 : 1);
  const names = info.channel_names || (count === 3 && !info.sizes?.C ? ["red", "green", "blue"] : []);
  const options = (none) => [new Option("auto", "auto"), ...(none ? [new Option("none", "none")] : []),
    ...Array.from({ length: count }, (_, i) => new Option(`${i + 1}${names[i] ? ` (${names[i]})` : ""}`, String(i)))];
  $("channel-cyto").replaceChildren(...options(false));
  $("channel-nuclei").replaceChildren(...options(true));
}
// After a run: what "auto" chose.
function showChannelsUsed(res) {
  if (!res.channels) return;
  for (const role of ["cyto", "nuclei"]) {
    const auto = $(`channel-${role}`).options[0];
    if (auto) auto.text = `auto: ${res.channels[role] == null ? "none" : res.channels[role] + 1}`;
  }
}
function channelChoice() {
  if (!readsChannels($("model").value)) return {};
  const cyto = $("channel-cyto").value, nuclei = $("channel-nuclei").value;
  const nucleiModel = modelList.find((m) => m.task === "nuclei-fluorescence" && m.default)?.id;
  const pick = (v) => (v === "auto" ? "auto" : v === "none" ? null : Number(v));
  return {
    channels: { cyto: pick(cyto), nuclei: pick(nuclei) },
    // linked by default: cells grown from their nuclei do far better on unfamiliar images
    nuclei: $("link-nuclei").checked && nuclei !== "none" ? nucleiModel : null,
    splitByNuclei: $("split-by-nuclei").checked,
  };
}

function showPlanes(info) {
  const box = $("planes");
  const names = { C: "Channel", Z: "Z-plane", T: "Time point", Q: "Plane", I: "Plane", S: "Sample" };
  // a whole-cell model takes its channels from the cytoplasm / nuclei choice, not one C plane
  const axes = [...info.axes].filter((a) => !"YXS".includes(a) && info.sizes[a] > 1 &&
                                            !(a === "C" && readsChannels($("model").value)));
  showChannels(info);
  box.replaceChildren(...axes.map((a) => {
    const label = document.createElement("label");
    label.textContent = `${names[a] || a} `;
    const sel = document.createElement("select");
    sel.dataset.axis = a; sel.id = `plane-${a}`;
    for (let i = 0; i < info.sizes[a]; i++) {
      const cname = a === "C" && info.channel_names ? ` (${info.channel_names[i]})` : "";
      sel.add(new Option(`${i + 1}${cname}`, String(i)));
    }
    if (a === "Z") sel.add(new Option("max projection", "max"));
    sel.addEventListener("change", () => current && segmentCurrent());
    label.append(sel);
    return label;
  }));
  box.hidden = axes.length === 0;
}

// ---------------------------------------------------------------- one file
async function segmentCurrent() {
  const { file } = current;
  showError("");
  status(`Segmenting ${file.name}…`, null);
  document.body.classList.add("busy");
  try {
    const res = await segment(file, { model: $("model").value || undefined, backend: $("backend").value,
                                      display: true, diameter: diameterChoice(), augment: $("augment").checked,
                                      invert: $("invert").checked,
                                      ...planeChoice(), ...channelChoice() });
    render(res, file.name);
    status(`Done: ${res.count} objects in ${res.timings.total.toFixed(0)} ms (${res.backend})`, 1);
  } catch (e) {
    showError(e.message);
    status("Could not segment this file", 1);
  } finally {
    document.body.classList.remove("busy");
  }
}

async function handleFile(file) {
  if (!file) return;
  showError("");
  try {
    const info = await describe(file);
    current = { file, info };
    showPlanes(info);
  } catch (e) {
    current = null;
    showPlanes({ axes: "YX", sizes: {} });
    showError(e.message);
    status("Could not read this file", 1);
    return;
  }
  await segmentCurrent();
}

// "Try a sample image": the site's own example, segmented like a file the user opened.
async function openSample() {
  try {
    showError("");
    status("Loading the sample image…", null);
    const res = await fetch(abs(siteBuild.sample));
    if (!res.ok) throw new Error(`could not load the sample image (HTTP ${res.status})`);
    const name = siteBuild.sample.split("/").pop();
    await handleFile(new File([await res.blob()], name, { type: "image/tiff" }));
  } catch (e) { showError(e.message); status("Could not load the sample image", 1); }
}

async function download(blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = blob.filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// ---------------------------------------------------------------- batch
let batchAbort = null;
const IMAGE_RE = /\.(tiff?|png|jpe?g|bmp)$/i;
async function handleFiles(list) {
  const files = [...list].filter((f) => IMAGE_RE.test(f.name));
  if (files.length === 0) { showError("no image files (TIFF, PNG, JPEG, BMP) in the selection"); return; }
  if (files.length === 1) return handleFile(files[0]);
  showError("");
  const ul = $("batch-list");
  const items = files.map((f) => {
    const li = document.createElement("li");
    li.dataset.status = "queued";
    li.textContent = `${f.webkitRelativePath || f.name}: queued`;
    return li;
  });
  ul.replaceChildren(...items);
  $("batch").hidden = false;
  $("batch-download").disabled = true;
  $("batch-cancel").disabled = false;
  const bar = $("batch-progress");
  bar.max = files.length; bar.value = 0;
  batchAbort = new AbortController();
  document.body.classList.add("busy");
  let ok = 0, failed = 0;
  try {
    const out = await batch(files, {
      model: $("model").value || undefined, backend: $("backend").value, signal: batchAbort.signal,
      diameter: diameterChoice(), augment: $("augment").checked, invert: $("invert").checked, ...channelChoice(),
      onFile: (i, f, res) => {
        const li = items[i];
        if (res instanceof Error) { failed++; li.dataset.status = "failed"; li.textContent = `${f.name}: failed — ${res.message}`; }
        else { ok++; li.dataset.status = "done"; li.textContent = `${f.name}: ${res.count} objects` + (res.diameter ? `, nuclei ${res.diameter.toFixed(0)} px across` : ""); }
        items[i + 1]?.setAttribute("data-status", "running");
        bar.value = i + 1;
        $("batch-status").textContent = `${i + 1}/${files.length} files: ${ok} segmented, ${failed} failed`;
      },
    });
    items.forEach((li) => { if (li.dataset.status === "queued" || li.dataset.status === "running") { li.dataset.status = "cancelled"; li.textContent += " (cancelled)"; } });
    $("batch-status").textContent = `${out.cancelled ? "Cancelled" : "Done"}: ${ok} segmented, ${failed} failed of ${files.length}`;
    lastZip = out.zip;
    $("batch-download").disabled = false;
    status($("batch-status").textContent, 1);
  } catch (e) {
    showError(e.message);
  } finally {
    $("batch-cancel").disabled = true;
    document.body.classList.remove("busy");
  }
}
let lastZip = null;

// ---------------------------------------------------------------- wiring
$("file").addEventListener("change", (e) => handleFiles(e.target.files));
$("folder").addEventListener("change", (e) => handleFiles(e.target.files));
$("mode").addEventListener("change", applyOverlayStyle);
for (const id of ["diameter", "augment", "invert"]) $(id).addEventListener("change", () => current && segmentCurrent());
$("model").addEventListener("change", () => (current ? showPlanes(current.info) : showChannels(null)));
for (const id of ["channel-cyto", "channel-nuclei", "link-nuclei", "split-by-nuclei"]) $(id).addEventListener("change", () => current && segmentCurrent());
$("opacity").addEventListener("input", applyOverlayStyle);
for (const id of ["contrast-min", "contrast-max"]) $(id).addEventListener("input", () => view && paintImage());
$("contrast-auto").addEventListener("click", () => { $("contrast-min").value = 0; $("contrast-max").value = 255; view && paintImage(); });
$("batch-cancel").addEventListener("click", () => batchAbort?.abort());
$("batch-download").addEventListener("click", () => lastZip && download(lastZip));
document.querySelectorAll("[data-export]").forEach((b) => b.addEventListener("click", async () => {
  try {
    showError("");
    await download(await exportResult(b.dataset.export, { mode: $("mode").value, opacity: Number($("opacity").value) }));
  } catch (e) { showError(e.message); }
}));
$("measurements").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-label]");
  if (tr) showObject(Number(tr.dataset.label), true);
});
setupViewport();
$("prompt-mode").addEventListener("click", () => setPromptMode(!document.body.classList.contains("prompt-mode")));
$("prompt-accept").addEventListener("click", acceptPrompt);
$("prompt-cancel").addEventListener("click", cancelPrompt);
$("refine-all").addEventListener("click", refineAll);
$("sample").addEventListener("click", openSample);
$("teach-mark").addEventListener("click", async () => {
  try { await markCorrected(); } catch (e) { showError(e.message); }
});
$("teach-run").addEventListener("click", runTeach);
$("use-suggested").addEventListener("click", () => {
  $("model").value = $("use-suggested").dataset.model;
  if (current) segmentCurrent();
});
$("model-download").addEventListener("click", async () => {
  try { download(await downloadModel()); } catch (e) { showError(e.message); }
});
$("model-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  try {
    showError("");
    const m = await loadModel(file);
    $("teach-info").textContent = `Loaded ${m.name}`;
    $("model-download").disabled = false;
  } catch (err) { showError(err.message); }
  e.target.value = "";
});
$("edit-delete").addEventListener("click", () => selection.size && runEdit("delete", { labels: [...selection] }, "Deleted"));
$("edit-merge").addEventListener("click", () => selection.size > 1 && runEdit("merge", { labels: [...selection] }, "Merged"));
$("edit-split").addEventListener("click", () => toggleTool("split"));
$("edit-box").addEventListener("click", () => toggleTool("box"));
$("edit-draw").addEventListener("click", () => toggleTool("draw"));
$("edit-brush").addEventListener("click", () => toggleTool("brush"));
$("edit-undo").addEventListener("click", () => runEdit("undo", {}, "Undone"));
$("edit-redo").addEventListener("click", () => runEdit("redo", {}, "Redone"));
document.addEventListener("keydown", (e) => {
  if (!view || promptOn() || e.target.closest?.("input, select, textarea")) return;
  const mod = e.ctrlKey || e.metaKey;
  if (mod && e.key.toLowerCase() === "z") { e.preventDefault(); runEdit(e.shiftKey ? "redo" : "undo", {}, e.shiftKey ? "Redone" : "Undone"); }
  else if (mod && e.key.toLowerCase() === "y") { e.preventDefault(); runEdit("redo", {}, "Redone"); }
  else if (mod) return;
  else if ((e.key === "Delete" || e.key === "Backspace") && selection.size) { e.preventDefault(); $("edit-delete").click(); }
  else if (e.key.toLowerCase() === "m" && selection.size > 1) { e.preventDefault(); $("edit-merge").click(); }
  else if (e.key.toLowerCase() === "s") { e.preventDefault(); toggleTool("split"); }
  else if (e.key.toLowerCase() === "x") { e.preventDefault(); toggleTool("box"); }
  else if (e.key.toLowerCase() === "d") { e.preventDefault(); toggleTool("draw"); }
  else if (e.key.toLowerCase() === "b") { e.preventDefault(); toggleTool("brush"); }
  else if (e.key === "Escape" && toolOn()) { e.preventDefault(); setEditTool(false); }
});
document.addEventListener("keydown", (e) => {
  if (!promptOn() || e.target.closest?.("input, select, textarea")) return;
  if (e.key === "Enter") { e.preventDefault(); acceptPrompt(); }
  else if (e.key === "Escape") { e.preventDefault(); cancelPrompt(); }
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  handleFiles(e.dataTransfer.files);
});

// ---------------------------------------------------------------- embedding
// A page that embeds this one in an iframe (embed.js, <piximi-segmenter>) calls
// window.piximi through postMessage: {piximi: 1, id, type, ...} -> {piximi: 1, id, ok, result | error}.
if (window.parent !== window) {
  document.body.classList.add("embedded");
  window.addEventListener("message", async (e) => {
    const msg = e.data;
    if (e.source !== window.parent || !msg || msg.piximi !== 1 || !msg.type) return;
    const target = e.origin === "null" ? "*" : e.origin;
    const reply = (body, transfer = []) => e.source.postMessage({ piximi: 1, id: msg.id, ...body }, target, transfer);
    try {
      let result, transfer = [];
      if (msg.type === "ready") {
        const r = await ready;
        result = { models: r.models.map((m) => ({ ...m })), defaultModel: r.defaultModel, backend: r.backend };
      } else if (msg.type === "models") {
        result = await window.piximi.models(msg.options || {});
      } else if (msg.type === "segment") {
        result = await segment(msg.data, msg.options || {});
        transfer = [result.labels.buffer];
      } else if (msg.type === "export") {
        const blob = await exportResult(msg.kind, msg.options || {});
        result = { data: new Uint8Array(await blob.arrayBuffer()), name: blob.filename, mime: blob.type };
        transfer = [result.data.buffer];
      } else {
        throw new Error(`unknown request ${msg.type}`);
      }
      reply({ ok: true, result }, transfer);
    } catch (err) {
      reply({ ok: false, error: { name: err.name, message: String(err.message) } });
    }
  });
}

// piximi-py web bridge: DOM events + window.piximi API. All image work happens in
// Python (piximi_py) inside a PyScript worker; this file only moves bytes and draws.
const BASE = new URL("./", location.href).href;
const abs = (p) => new URL(p, BASE).href;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ---------------------------------------------------------------- UI helpers
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
  try {
    await navigator.serviceWorker.register(abs("sw.js"), { scope: BASE });
  } catch (e) {
    console.warn("service worker not registered:", e);
    return;
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
let queue = Promise.resolve();

function unwrap(res) {
  if (res && res.ok) return res;
  const err = new Error(res?.error?.message || "unknown error in the worker");
  err.name = res?.error?.type || "Error";
  throw err;
}

async function start() {
  const t0 = performance.now();
  status("Starting…", 0.02);
  await setupServiceWorker();
  const build = await (await fetch(abs("build.json"))).json();
  status("Loading the Python runtime…", 0.1);
  const { PyWorker } = await import(abs("pyscript/core.js"));
  worker = await PyWorker(abs(build.worker), {
    type: "pyodide",
    version: abs("pyodide/pyodide.mjs"), // our own copy: never the CDN
    config: {},
  });
  worker.sync.progress = (stage, done, total) => {
    if (stage === "packages") status(done ? "Packages loaded" : "Loading numpy, scipy, piximi_py…", done ? 0.6 : 0.3);
    else if (stage === "model") status(done ? "Model loaded" : "Loading the model…", done ? 0.95 : 0.7);
    else status(`${stage}: ${done}/${total}`, total ? done / total : null);
  };
  const res = unwrap(await worker.sync.init({
    base: BASE,
    pyodide_packages: build.pyodide_packages,
    wheels: build.wheels,
    ort_module: build.ort_module,
    ort_wasm_paths: build.ort_wasm_paths,
    models_index: build.models_index,
    backend: params.get("backend") || "auto",
    num_threads: params.has("threads") ? Number(params.get("threads")) : null,
  }));
  defaultModel = res.default_model;
  modelList = res.models;
  const sel = $("model");
  sel.replaceChildren(...modelList.map((m) => new Option(m.name || m.id, m.id, false, m.id === defaultModel)));
  $("backend-used").textContent = res.backend;
  status(`Ready (${((performance.now() - t0) / 1000).toFixed(1)} s, ${res.backend}` +
         `${window.crossOriginIsolated ? ", threads" : ""})`, 1);
  document.body.classList.add("ready");
  return { models: modelList, defaultModel, backend: res.backend };
}

async function toBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  if (input instanceof Blob) return new Uint8Array(await input.arrayBuffer());
  throw new TypeError("segment(input): input must be a File, Blob, ArrayBuffer or Uint8Array of an image file");
}

async function segment(input, options = {}) {
  await ready;
  const bytes = await toBytes(input);
  const opts = {
    model: options.model || defaultModel,
    backend: options.backend || "auto",
    filename: options.filename || (input instanceof File ? input.name : null),
    display: !!options.display,
  };
  const run = async () => {
    const t0 = performance.now();
    const res = unwrap(await worker.sync.segment(bytes, opts));
    res.timings.roundtrip = performance.now() - t0;
    delete res.ok;
    return res;
  };
  const p = queue.then(run, run); // one image at a time; a failure does not block the next
  queue = p.catch(() => {});
  return p;
}

const ready = start();
ready.catch((e) => { status("Failed to load", 0); showError(e.message); });
// Once everything the page needs is loaded, let the service worker cache the
// whole site (manifest.json) for offline use.
ready.then(async () => {
  if (!("serviceWorker" in navigator) || params.has("nosw")) return;
  const reg = await navigator.serviceWorker.getRegistration(BASE);
  reg?.active?.postMessage({ type: "precache" });
}).catch(() => {});

window.piximi = {
  ready,
  models: async () => { await ready; return modelList.map((m) => ({ ...m })); },
  segment,
};

// ---------------------------------------------------------------- drawing
function colour(id) {
  const h = (id * 137.508) % 360; // golden angle: neighbours differ
  const s = 0.9, l = 0.55, a = s * Math.min(l, 1 - l);
  const f = (n) => { const k = (n + h / 30) % 12; return l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)); };
  return [255 * f(0), 255 * f(8), 255 * f(4)];
}

function draw(res) {
  const { width: w, height: h, labels, image } = res;
  const canvas = $("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(w, h);
  const px = out.data;
  const fill = $("fill").checked;
  const lut = new Map();
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i++) {
      const g = image ? image[i] : 0, l = labels[i], o = 4 * i;
      px[o] = px[o + 1] = px[o + 2] = g; px[o + 3] = 255;
      if (!l) continue;
      const edge = (x === 0 || labels[i - 1] !== l) || (x === w - 1 || labels[i + 1] !== l) ||
                   (y === 0 || labels[i - w] !== l) || (y === h - 1 || labels[i + w] !== l);
      if (!edge && !fill) continue;
      let c = lut.get(l);
      if (!c) { c = colour(l); lut.set(l, c); }
      const a = edge ? 1 : 0.35;
      px[o] = g * (1 - a) + c[0] * a; px[o + 1] = g * (1 - a) + c[1] * a; px[o + 2] = g * (1 - a) + c[2] * a;
    }
  }
  ctx.putImageData(out, 0, 0);
}

function showResult(res, name) {
  $("count").textContent = String(res.count);
  $("backend-used").textContent = res.backend;
  $("result-name").textContent = `${name} — ${res.width}×${res.height}, model ${res.model}`;
  const rows = ["decode", "preprocess", "inference", "postprocess", "total", "roundtrip"]
    .filter((k) => k in res.timings)
    .map((k) => `<tr><th>${k}</th><td>${res.timings[k].toFixed(1)} ms</td></tr>`);
  $("timings").innerHTML = rows.join("");
}

async function handleFile(file) {
  if (!file) return;
  showError("");
  status(`Segmenting ${file.name}…`, null);
  document.body.classList.add("busy");
  try {
    const res = await segment(file, { model: $("model").value || undefined, backend: $("backend").value, display: true });
    draw(res);
    lastResult = res;
    showResult(res, file.name);
    status(`Done: ${res.count} objects in ${res.timings.total.toFixed(0)} ms (${res.backend})`, 1);
  } catch (e) {
    showError(e.message);
    status("Could not segment this file", 1);
  } finally {
    document.body.classList.remove("busy");
  }
}

let lastResult = null;
$("file").addEventListener("change", (e) => handleFile(e.target.files[0]));
$("fill").addEventListener("change", () => lastResult && draw(lastResult));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  handleFile(e.dataTransfer.files[0]);
});

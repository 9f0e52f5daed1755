// piximi-py service worker:
//  * caches the site for offline use (cache-first): the files the default path
//    runs after the first visit, every other file when it is first used;
//  * adds COOP/COEP/CORP headers to same-origin responses so the page is
//    cross-origin isolated (threads) on static hosts ("coi-serviceworker" pattern),
//    and the Content-Security-Policy header.
const VERSION = "__PIXIMI_VERSION__";
const CACHE = `piximi-${VERSION}`;
const SCOPE = new URL("./", self.location).href;
// The page's Content-Security-Policy (index.html's meta tag, which a test keeps
// equal), sent as a header too, so that worker scripts are held to it as well.
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval' blob:; worker-src 'self' blob:; connect-src 'self' blob: data:; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'none'";

// Precaching is asked for by the page once it is ready (app.js), so the first
// visit does not download everything twice: the files the page just loaded come
// from the HTTP cache (revalidated), only the rest goes over the network. Only the
// manifest's "core" files are precached (what the default path runs); the rest
// (other models, the WebGPU runtime, codecs) is cached when first used, or all at
// once when the page asks for everything ("Make everything available offline").
self.addEventListener("install", () => self.skipWaiting());

// The site's manifest (files, sizes, gzip copies), fetched once per service worker life.
let manifestPromise = null;
function siteManifest() {
  manifestPromise ??= fetch(SCOPE + "manifest.json", { cache: "no-cache" }).then((r) => r.json())
    .catch(() => { manifestPromise = null; return { files: {} }; });
  return manifestPromise;
}

const TYPES = { wasm: "application/wasm", js: "text/javascript", mjs: "text/javascript", json: "application/json",
  py: "text/plain; charset=utf-8", onnx: "application/octet-stream", zip: "application/zip", whl: "application/zip" };

// A site file from the network: its gzip copy decoded here when the build made one
// (hosts that compress nothing then still send less), else the file itself.
async function fetchSiteFile(request) {
  const rel = new URL(request.url).pathname.slice(new URL(SCOPE).pathname.length);
  const entry = (await siteManifest()).files?.[rel];
  if (entry?.gz && typeof DecompressionStream === "function") {
    const res = await fetch(SCOPE + rel + ".gz");
    if (res.ok && res.body) {
      const type = TYPES[rel.split(".").pop()] || "application/octet-stream";
      return new Response(res.body.pipeThrough(new DecompressionStream("gzip")),
        { status: 200, headers: { "Content-Type": type, "Content-Length": String(entry.size) } });
    }
  }
  return fetch(request);
}

async function precache(all, report) {
  const cache = await caches.open(CACHE);
  const manifest = await siteManifest();
  const names = all ? Object.keys(manifest.files) : (manifest.core || Object.keys(manifest.files));
  const todo = [];
  for (const p of ["", ...names]) {
    if (!(await cache.match(SCOPE + p))) todo.push(p);
  }
  const sent = (p) => manifest.files[p]?.gz || manifest.files[p]?.size || 0; // bytes on the wire
  const total = todo.reduce((n, p) => n + sent(p), 0);
  let bytes = 0, failed = 0;
  report({ done: 0, files: todo.length, bytes, total });
  for (const [i, p] of todo.entries()) { // one at a time: gentle on the network and the page
    try {
      const res = await fetchSiteFile(new Request(SCOPE + p));
      if (res.ok) await cache.put(SCOPE + p, isolate(res, SCOPE + p));
      else failed += 1;
    } catch (e) { failed += 1; /* offline: cached later on use */ }
    bytes += sent(p);
    report({ done: i + 1, files: todo.length, bytes, total });
  }
  return { files: todo.length, bytes, failed };
}

self.addEventListener("message", (event) => {
  const msg = event.data || {};
  if (msg.type !== "precache") return;
  const reply = (data) => event.source?.postMessage({ id: msg.id, ...data });
  event.waitUntil(precache(!!msg.all, (p) => reply({ type: "precache-progress", ...p }))
    .then((r) => reply({ type: "precache-done", ...r }),
          (e) => reply({ type: "precache-done", error: String(e) })));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith("piximi-") && key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

function isolate(res, url) {
  if (!res || res.status === 0 || res.type === "opaque") return res;
  const headers = new Headers(res.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  headers.set("Cross-Origin-Resource-Policy", "same-origin");
  // examples/ are pages of their own (a lab page embedding the app), with their own inline scripts
  if (!url.startsWith(SCOPE + "examples/") && !headers.has("Content-Security-Policy")) {
    headers.set("Content-Security-Policy", CSP);
  }
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

// Files are cached with their headers set (isolate) and a cached file is handed to the
// page as Cache Storage returns it, not re-wrapped: Chromium then keeps the compiled
// WebAssembly (Pyodide's, onnxruntime-web's) beside the cached file and reuses it on
// the next visit, optimized code included. Without it a returning visit, whose
// interpreter comes from the memory snapshot, ran Python in baseline code for its
// first second (python -m bench.startup --warm-repeats; README, "Start-up").
self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || !req.url.startsWith(SCOPE)) return;
  if (req.headers.has("range")) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const hit = await cache.match(req, { ignoreSearch: req.mode === "navigate" });
    if (hit) return hit.headers.has("Cross-Origin-Embedder-Policy") ? hit : isolate(hit, req.url);
    const res = isolate(await fetchSiteFile(req), req.url);
    const path = req.url.split("?")[0];
    if (!res.ok || path === SCOPE + "manifest.json") return res;
    if (path.endsWith(".wasm")) {
      // compiled from the cached copy even on the first visit, so that its compiled code
      // is kept for the second (one wait for the whole file instead of compiling as it
      // arrives: 10 MB, once)
      try {
        await cache.put(req, res.clone());
        const stored = await cache.match(req);
        if (stored) return stored;
      } catch { /* storage full or denied: the network's copy */ }
      return res;
    }
    cache.put(req, res.clone()).catch(() => {});
    return res;
  })());
});

// piximi-py service worker:
//  * caches every file of manifest.json for offline use (cache-first);
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
// from the HTTP cache (revalidated), only the rest goes over the network.
self.addEventListener("install", () => self.skipWaiting());

async function precache() {
  const cache = await caches.open(CACHE);
  const manifest = await (await fetch(SCOPE + "manifest.json", { cache: "no-cache" })).json();
  const urls = ["", ...Object.keys(manifest.files)].map((p) => SCOPE + p);
  for (const url of urls) { // one at a time: gentle on the network and the page
    if (await cache.match(url)) continue;
    try {
      const res = await fetch(url);
      if (res.ok) await cache.put(url, res);
    } catch (e) { /* offline: cached later on use */ }
  }
}

self.addEventListener("message", (event) => {
  if (event.data?.type === "precache") event.waitUntil(precache());
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

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || !req.url.startsWith(SCOPE)) return;
  if (req.headers.has("range")) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const hit = await cache.match(req, { ignoreSearch: req.mode === "navigate" });
    if (hit) return isolate(hit, req.url);
    const res = await fetch(req);
    if (res.ok && req.url.split("?")[0] !== SCOPE + "manifest.json") {
      cache.put(req, res.clone()).catch(() => {});
    }
    return isolate(res, req.url);
  })());
});

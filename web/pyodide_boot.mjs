// Pyodide's loader as the PyScript worker sees it (app.js passes this module as
// PyWorker's `version`; it sits beside pyodide.mjs, so the index URL is the same),
// with a memory snapshot of the booted interpreter.
//
// Booting Pyodide (instantiating the runtime, then initializing Python) takes most
// of the start-up. The first visit boots it as usual, then saves the interpreter's
// memory in this origin's Cache Storage; later visits restore that memory instead
// of initializing Python again (python -m bench.startup measures both). Only the
// bare interpreter is kept: packages with compiled extensions (numpy, scipy) cannot
// be restored from a snapshot in Pyodide 0.27 and load as before. A damaged snapshot
// (checked here) or another Pyodide build's (refused by Pyodide) is dropped and made
// again, so a failure here costs one ordinary boot, never the page.
import { loadPyodide as bootPyodide, version } from "./pyodide.mjs";

export { version };

// Kept out of the service worker's "piximi-<version>" caches, which a new site
// version deletes: the snapshot belongs to the Pyodide build, not to the site.
const CACHE = "pyodide-snapshot";
const KEY = new URL(`pyodide-${version}.snapshot`, import.meta.url).href;

// How this boot went ("restored", "made" or "plain"), read by worker.py for the
// start-up timings.
const snapshotState = { state: "plain", error: null, save: null };
globalThis.piximiPyodideSnapshot = snapshotState;

// Pyodide's snapshot layout (0.27): a 48-byte header (magic number, offset of the
// memory, length of the serialized JavaScript references, 0, build id), then the
// references, then the memory. A snapshot whose memory cannot be a WebAssembly memory
// makes Pyodide's instantiation fail without ever settling, so it is refused here.
const SNAPSHOT_MAGIC = 1886286592;
const WASM_PAGE = 65536;
// A restore takes about a second; one that has not finished by then is given up for a boot.
const RESTORE_TIMEOUT_MS = 30_000;

function checkSnapshot(snapshot) {
  if (snapshot.byteLength < 48 || snapshot.byteOffset % 4) throw new Error("Snapshot is too short");
  const [magic, memoryAt] = new Uint32Array(snapshot.buffer, snapshot.byteOffset, 2);
  const memory = snapshot.byteLength - memoryAt;
  if (magic !== SNAPSHOT_MAGIC) throw new Error("Snapshot has invalid magic number");
  if (memoryAt < 48 || memory < 256 * WASM_PAGE || memory % WASM_PAGE) {
    throw new Error(`Snapshot memory of ${memory} bytes is not a WebAssembly memory`);
  }
}

function withTimeout(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Snapshot restore took over ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function snapshotCache() {
  try {
    return typeof caches === "undefined" ? null : await caches.open(CACHE);
  } catch {
    return null; // storage denied (private windows, file://): boot as usual
  }
}

export async function loadPyodide(options = {}) {
  const cache = await snapshotCache();
  const saved = cache && (await cache.match(KEY).catch(() => null));
  if (saved) {
    try {
      const snapshot = new Uint8Array(await saved.arrayBuffer());
      checkSnapshot(snapshot);
      const pyodide = await withTimeout(bootPyodide({ ...options, _loadSnapshot: snapshot }), RESTORE_TIMEOUT_MS);
      snapshotState.state = "restored";
      return pyodide;
    } catch (err) {
      snapshotState.error = String(err?.message || err);
      await cache.delete(KEY).catch(() => {});
    }
  }
  if (!cache) return bootPyodide(options);
  const pyodide = await bootPyodide({ ...options, _makeSnapshot: true });
  let snapshot = null;
  try {
    // Taken before any other code runs Python or hands it JavaScript objects.
    snapshot = pyodide.makeMemorySnapshot();
  } catch (err) {
    snapshotState.error = String(err?.message || err);
  }
  // _makeSnapshot hands Python a recording proxy of globalThis as the `js` module, and
  // calling methods through it fails ("Illegal invocation"): give this interpreter the
  // real globalThis, as a restored one has. Nothing has imported `js` yet.
  pyodide._api.config.jsglobals = globalThis;
  pyodide.registerJsModule("js", globalThis);
  pyodide.runPython("import sys; sys.modules.pop('js', None)");
  if (snapshot) {
    snapshotState.state = "made";
    // Written when the worker is ready (worker.py calls save): the 21 MB write would
    // compete with start-up.
    snapshotState.save = () => {
      snapshotState.save = null;
      return cache.put(KEY, new Response(snapshot, { headers: { "Content-Type": "application/octet-stream" } }))
        .catch((err) => { snapshotState.error = String(err?.message || err); })
        .finally(() => { snapshot = null; });
    };
  }
  return pyodide;
}

// One model in onnxruntime-web under Node, on WebGPU (Dawn's Node bindings, npm `webgpu`)
// or WASM: the page's own model files and onnxruntime-web build, outside Chromium, so that a
// GPU machine without a browser can time them. `python -m bench.webgpu` drives it.
//
//   node bench/webgpu_node.mjs --model F.onnx --ep webgpu|wasm --input NAME=SHAPE=FILE.bin ...
//        [--runs 10] [--threads 1] [--out DIR] [--build ort.min.mjs] [--dist ORT_DIST] [--webgpu-module PATH]
//
// Inputs are raw little-endian files (float32, or int64 with NAME ending in ":int64"). Prints
// one JSON line: {ep, adapter, create_ms, first_ms, runs_ms, median_ms, outputs: {name: shape}};
// with --out, each output's float32 values go to DIR/NAME.bin (for the comparison with native
// onnxruntime). The page's WebGPU build is ort.min.mjs (JSEP); its wasm side runs with one
// thread here (it fetches its worker module before starting threads, which Node cannot do for
// a file: URL), which does not matter on WebGPU; WASM figures use ort.node.min.mjs, the same
// ort-wasm-simd-threaded.wasm as the page's ort.wasm.min.mjs, with --threads threads.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

function parseArgs(argv) {
  const a = { inputs: [], runs: 10, threads: 1, ep: "webgpu", out: null, build: null, webgpuModule: null, model: null,
              dist: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === "--input") a.inputs.push(argv[++i]);
    else if (k === "--runs") a.runs = Number(argv[++i]);
    else if (k === "--threads") a.threads = Number(argv[++i]);
    else if (k === "--ep") a.ep = argv[++i];
    else if (k === "--out") a.out = argv[++i];
    else if (k === "--build") a.build = argv[++i];
    else if (k === "--webgpu-module") a.webgpuModule = argv[++i];
    else if (k === "--model") a.model = argv[++i];
    else if (k === "--dist") a.dist = argv[++i];
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = args.dist || join(root, "node_modules", "onnxruntime-web", "dist");
let adapterInfo = null;

if (args.ep === "webgpu") {
  const { create, globals } = await import(pathToFileURL(args.webgpuModule || join(root, "node_modules", "webgpu", "index.js")).href);
  Object.assign(globalThis, globals);
  const gpu = create([]);
  // dawn.node accepts no SharedArrayBuffer, and onnxruntime-web uploads straight from its
  // (shared, threaded) wasm memory: copy those bytes out first
  const writeBuffer = GPUQueue.prototype.writeBuffer;
  GPUQueue.prototype.writeBuffer = function (buffer, offset, data, dataOffset = 0, size) {
    if (data instanceof SharedArrayBuffer) {
      return writeBuffer.call(this, buffer, offset, new Uint8Array(data, dataOffset, size ?? data.byteLength - dataOffset).slice());
    }
    if (ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer) {
      return writeBuffer.call(this, buffer, offset, data.slice(dataOffset, dataOffset + (size ?? data.length - dataOffset)));
    }
    return size === undefined ? writeBuffer.call(this, buffer, offset, data, dataOffset)
      : writeBuffer.call(this, buffer, offset, data, dataOffset, size);
  };
  globalThis.navigator = { gpu };
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    console.log(JSON.stringify({ ep: "webgpu", error: "no WebGPU adapter (no Vulkan driver found?)" }));
    process.exit(2);
  }
  const info = adapter.info || {};
  adapterInfo = { vendor: info.vendor, architecture: info.architecture, device: info.device,
                  description: info.description, features: [...adapter.features].sort() };
}

const build = args.build || (args.ep === "webgpu" ? "ort.min.mjs" : "ort.node.min.mjs");
const ort = await import(pathToFileURL(join(dist, build)).href);
ort.env.wasm.wasmPaths = pathToFileURL(dist).href + "/";
ort.env.wasm.numThreads = args.ep === "webgpu" ? 1 : args.threads;
ort.env.logLevel = "error";

function readInput(spec) {
  // NAME[:int64]=1x1x512x512=FILE.bin
  const [nameType, shapeText, file] = spec.split("=");
  const [name, type = "float32"] = nameType.split(":");
  const shape = shapeText.split("x").map(Number);
  const bytes = readFileSync(file);
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const data = type === "int64" ? new BigInt64Array(buf) : new Float32Array(buf);
  return [name, new ort.Tensor(type, data, shape)];
}

const t0 = performance.now();
const session = await ort.InferenceSession.create(readFileSync(args.model), {
  executionProviders: [args.ep], graphOptimizationLevel: "all" });
const createMs = performance.now() - t0;
const feeds = Object.fromEntries(args.inputs.map(readInput));

async function runOnce() {
  const t = performance.now();
  const out = await session.run(feeds);
  const values = {};
  for (const name of session.outputNames) values[name] = { dims: out[name].dims, data: await out[name].getData() };
  return [performance.now() - t, values];
}

const [firstMs, first] = await runOnce();
const times = [];
for (let i = 0; i < args.runs; i++) times.push((await runOnce())[0]);
const sorted = [...times].sort((a, b) => a - b);
const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : firstMs;
if (args.out) {
  mkdirSync(args.out, { recursive: true });
  for (const [name, v] of Object.entries(first)) {
    const f32 = v.data instanceof Float32Array ? v.data : Float32Array.from(v.data, Number);
    writeFileSync(join(args.out, name.replace(/[^A-Za-z0-9_.-]/g, "_") + ".bin"), Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength));
  }
}
console.log(JSON.stringify({
  ep: args.ep, build, adapter: adapterInfo, create_ms: createMs, first_ms: firstMs, runs_ms: times, median_ms: median,
  outputs: Object.fromEntries(Object.entries(first).map(([k, v]) => [k, v.dims])),
}));
process.exit(0);

// One ONNX model in onnxruntime-web (WASM provider) under Node, without a page:
// run times, and with --profile onnxruntime's per-operator trace.
//
//   node bench/ortweb_node.mjs MODEL.onnx --input image=1x1x512x512 [--input point_coords=1x2x2:0..255 ...]
//        [--threads 1] [--runs 21] [--profile] [--build ort.node.min.mjs]
//
// For looking inside a model (which operators take the time); the page's own
// figures come from `python -m bench`, `bench.prompt` and `bench.ortweb_builds`
// (Chromium). Inputs are filled with seeded pseudo-random values in the given
// range (default -1..1; integers when the range is of integers no wider than 8,
// e.g. point labels 2..3), so every run sees the same tensors. Prints one JSON
// line: median, min and all run times in ms; with --profile, onnxruntime-web's
// trace of every run (warm-up included) comes first, one JSON event a line
// (those starting with {"cat"; "dur" in microseconds, "args.op_name").
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

function parseArgs(argv) {
  const args = { inputs: [], threads: 1, runs: 21, profile: false, model: null, build: "ort.node.min.mjs" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--input") args.inputs.push(argv[++i]);
    else if (a === "--threads") args.threads = Number(argv[++i]);
    else if (a === "--runs") args.runs = Number(argv[++i]);
    else if (a === "--profile") args.profile = true;
    else if (a === "--build") args.build = argv[++i];
    else args.model = a;
  }
  return args;
}

function makeInput(spec, seed) {
  // name=1x2x2:lo..hi
  const [name, rest] = spec.split("=");
  const [shapeText, range = "-1..1"] = rest.split(":");
  const shape = shapeText.split("x").map(Number);
  const [lo, hi] = range.split("..").map(Number);
  const n = shape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;   // LCG: reproducible, no dependency
    data[i] = lo + (hi - lo) * (s / 4294967296);
  }
  if (Number.isInteger(lo) && Number.isInteger(hi) && hi - lo <= 8) for (let i = 0; i < n; i++) data[i] = Math.round(data[i]);
  return [name, new ort.Tensor("float32", data, shape)];
}

const args = parseArgs(process.argv.slice(2));
// The page runs WASM sessions in ort.wasm.min.mjs (piximi_py.backends.ortweb). Its Node
// flavour, ort.node.min.mjs, runs the same ort-wasm-simd-threaded.wasm; the browser files
// themselves fetch their worker module before starting threads, which Node's fetch cannot
// do for a file: URL, so they run here with --threads 1 only (--build ort.min.mjs: JSEP).
const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "onnxruntime-web", "dist");
const ort = await import(pathToFileURL(join(dist, args.build)).href);
ort.env.wasm.wasmPaths = pathToFileURL(dist).href + "/";
ort.env.wasm.numThreads = args.threads;
ort.env.logLevel = "error";
const session = await ort.InferenceSession.create(readFileSync(args.model), {
  executionProviders: ["wasm"], graphOptimizationLevel: "all", enableProfiling: args.profile,
});
const feeds = Object.fromEntries(args.inputs.map((s, i) => makeInput(s, 12345 + i)));
await session.run(feeds); // warm-up
const times = [];
for (let i = 0; i < args.runs; i++) {
  const t = performance.now();
  await session.run(feeds);
  times.push(performance.now() - t);
}
// onnxruntime-web prints the trace of every run to stdout, an event a line
if (args.profile) session.endProfiling();
const sorted = [...times].sort((a, b) => a - b);
console.log(JSON.stringify({
  model: args.model, build: args.build, threads: args.threads, median_ms: sorted[Math.floor(sorted.length / 2)], min_ms: sorted[0],
  times_ms: times.map((t) => Math.round(t * 100) / 100),
}));
await session.release();
process.exit(0);

// Compile the Python modules of the wheels the page installs to bytecode for the page's own
// Python (Pyodide's, run here in Node.js): python -m tools.site calls it at build time.
//   node tools/precompile.mjs IN.whl OUT.whl [IN.whl OUT.whl ...]
// The Python side is tools/precompile.py; this file only boots Pyodide and moves files.
import { loadPyodide } from "pyodide";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const py = await loadPyodide();
py.runPython(readFileSync(join(here, "precompile.py"), "utf8"));
const precompile = py.globals.get("precompile_wheel");
for (let i = 0; i + 1 < args.length; i += 2) {
  const out = precompile(new Uint8Array(readFileSync(args[i])));
  writeFileSync(args[i + 1], out.toJs());
  out.destroy();
}

"""Start-up of the page: cold and warm visits (``python -m bench.startup``).

The built site (``dist/``) is served on localhost with COOP/COEP, as
``./piximi.sh serve`` does, and visited by headless Chromium:

* **cold**: a fresh browser profile (nothing cached, no service worker);
* **warm**: the same profile opened again (HTTP cache, the service worker's
  cache and Chromium's compiled-code cache as a returning user has them).

For each visit: time to ``window.piximi.ready`` and to the first segmented
512² image (the StarDist sample, from navigation), bytes the server sent
before ready and within the first ``--window`` seconds (what the service
worker fetches in the background included), and where the time to ready
goes, from the page's start-up marks (``window.piximi.startup()``).

One run prints one table; quote ratios from the same run. ``--site DIR`` adds
the visits of another built site (e.g. an older commit's ``dist/``) to the
same run and table, for a fair comparison on a noisy machine, and
``--cold-repeats N`` / ``--warm-repeats N`` add N more fresh-profile /
returning visits of each site, the sites alternated, and their median time
to ready (single warm visits move by ±0.3 s here).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: page marks (ms since navigation) in order, with what the interval before each one holds
PAGE_STEPS = [
    ("service_worker", "service worker registration"),
    ("build_json", "build.json"),
    ("pyscript", "PyScript import"),
    ("pyodide", "Pyodide boot (runtime, stdlib, worker start)"),
    ("worker_init", "worker init (below)"),
    ("ready", "page set-up after init"),
]
#: worker timings (ms), in the order they happen inside "worker init"
WORKER_STEPS = [
    ("packages", "  packages: numpy + piximi_py"),
    ("import", "  import piximi_py"),
    ("onnxruntime", "  onnxruntime-web import + init"),
    ("onnxruntime_start", "  (onnxruntime-web's WASM start, beside the import)"),
    ("onnxruntime_start_import", "  (of which the build's module import)"),
    ("model_index", "  model index"),
    ("model_session", "  default model: download + session"),
]

FIRST_SEGMENT_JS = """
async (b64) => {
  const u = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const r = await window.piximi.segment(u, {filename: "first.tif"});
  return {at: performance.now(), count: r.count, backend: r.backend};
}
"""


def visit(playwright, origin: str, profile: Path, server, image_b64: str, window_s: float) -> dict:
    """One visit of ``origin`` with the browser profile at ``profile``."""
    from tools.browser import BASE_ARGS, CHROMIUM

    ctx = playwright.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM,
                                                       headless=True, args=BASE_ARGS)
    try:
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.set_default_timeout(300_000)
        sent0 = server.bytes_sent
        t_nav = time.perf_counter()
        page.goto(f"{origin}/index.html")
        info = page.evaluate("window.piximi.ready")
        bytes_ready = server.bytes_sent - sent0
        ready_at = page.evaluate("performance.now()")
        first = page.evaluate(FIRST_SEGMENT_JS, image_b64)
        # a site built before the start-up marks existed (--site of an older build)
        startup = page.evaluate("window.piximi.startup ? window.piximi.startup() : {marks: {}}")
        startup["marks"].setdefault("ready", ready_at)
        left = window_s - (time.perf_counter() - t_nav)
        if left > 0:
            time.sleep(left)
        bytes_window = server.bytes_sent - sent0
        return {"ready_ms": startup["marks"]["ready"], "first_segment_ms": first["at"],
                "warm_up_ms": (sum(startup["warm_up"].get(k) or 0 for k in ("ms", "packages_ms"))
                               if startup.get("warm_up") else None),
                "bytes_before_ready": bytes_ready, "bytes_in_window": bytes_window,
                "backend": info["backend"], "count": first["count"], "marks": startup["marks"],
                "worker": startup.get("worker") or {},
                "pyodide_snapshot": (startup.get("pyodide_snapshot") or {}).get("state")}
    finally:
        ctx.close()


def breakdown(v: dict) -> list[tuple[str, float]]:
    """(step, ms) from the page's marks and the worker's timings."""
    rows, prev = [], 0.0
    if "worker_init" not in v["marks"]:  # a site built before the marks: its time to ready only
        return rows
    for key, label in PAGE_STEPS:
        at = v["marks"].get(key)
        if at is None:
            continue
        rows.append((label, at - prev))
        prev = at
        if key == "worker_init":
            rows += [(label2, v["worker"][k]) for k, label2 in WORKER_STEPS if k in v["worker"]]
    return rows


def format_table(runs: dict, window_s: float) -> str:
    """``runs``: {site name: {"cold": visit, "warm": visit}} -> one markdown table."""
    mb = 1e6
    visits = [(name, kind, r[kind]) for name, r in runs.items() for kind in ("cold", "warm")]
    many = len(runs) > 1
    head = [f"{kind} ({name})" if many else f"{kind} ({'fresh profile' if kind == 'cold' else 'second visit'})"
            for name, kind, _ in visits]
    lines = ["| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]

    def row(label, fmt):
        lines.append(f"| {label} | " + " | ".join(fmt(v) for _, _, v in visits) + " |")

    row("time to ready", lambda v: f"{v['ready_ms'] / 1000:.2f} s")
    row("time to the first segmented 512² image", lambda v: f"{v['first_segment_ms'] / 1000:.2f} s")
    row("bytes before ready", lambda v: f"{v['bytes_before_ready'] / mb:.1f} MB")
    row(f"bytes in the first {window_s:g} s", lambda v: f"{v['bytes_in_window'] / mb:.1f} MB")
    row("packages and imports for the first image, after ready (while a file is picked)",
        lambda v: "(before ready)" if v["warm_up_ms"] is None else f"{v['warm_up_ms']:.0f} ms")
    row("backend", lambda v: v["backend"])
    row("Pyodide memory snapshot (pyodide_boot.mjs)", lambda v: v.get("pyodide_snapshot") or "none")
    lines.append("| **where the time to ready goes** |" + " |" * len(visits))
    steps = [dict(breakdown(v)) for _, _, v in visits]
    for label in dict.fromkeys(k for st in steps for k in st):
        lines.append(f"| {label} | " + " | ".join(f"{st[label]:.0f} ms" if label in st else "" for st in steps) + " |")
    return "\n".join(lines)


def repeated_visits(playwright, sites: dict, image_b64: str, repeats: int, warm: bool = False) -> dict:
    """``repeats`` visits of each site, the order of the sites reversed every round (the first
    visit of a run is often the slowest): fresh profiles, or with ``warm`` one profile per site,
    visited once first (not counted) and then again and again as a returning user's.
    Returns {site name: [ms to ready]}."""
    from tools import site as site_mod

    def fresh_profile():
        return tempfile.TemporaryDirectory(prefix="piximi-profile-")

    servers = {name: site_mod.serve_background(directory=dist) for name, dist in sites.items()}
    profiles = {name: fresh_profile() for name in sites} if warm else {}
    ready = {name: [] for name in sites}
    try:
        for name, profile in profiles.items():
            server, origin = servers[name]
            visit(playwright, origin, Path(profile.name), server, image_b64, 0)
        for i in range(repeats):
            for name in (list(sites) if i % 2 == 0 else list(sites)[::-1]):
                server, origin = servers[name]
                with (contextlib.nullcontext(profiles[name].name) if warm else fresh_profile()) as profile:
                    ready[name].append(visit(playwright, origin, Path(profile), server, image_b64, 0)["ready_ms"])
    finally:
        for server, _ in servers.values():
            server.shutdown()
        for profile in profiles.values():
            profile.cleanup()
    return ready


def main(argv=None) -> int:
    import base64

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=30.0, help="seconds after navigation to count bytes over")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--site", action="append", default=[], metavar="DIST",
                    help="also visit this built site (e.g. an older commit's dist/), in the same run, "
                         "for a comparison; repeatable")
    ap.add_argument("--cold-repeats", type=int, default=0, metavar="N",
                    help="then N more fresh-profile visits of each site, the sites alternated, and their "
                         "median time to ready (with --site: a fairer cold comparison than one visit each)")
    ap.add_argument("--warm-repeats", type=int, default=0, metavar="N",
                    help="then N more returning visits of each site (one profile each, visited once first), "
                         "sites alternated: the median time to ready")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from tools import samples
    from tools import site as site_mod

    sites = {"this build": site_mod.build_site()}
    sites.update({str(Path(d)): Path(d) for d in args.site})
    image, _ = samples.stardist_sample()
    image_b64 = base64.b64encode(image.read_bytes()).decode()
    runs = {}
    with sync_playwright() as pw:
        for name, dist in sites.items():
            server, origin = site_mod.serve_background(directory=dist)
            with tempfile.TemporaryDirectory(prefix="piximi-profile-") as profile:
                runs[name] = {kind: visit(pw, origin, Path(profile), server, image_b64, args.window)
                              for kind in ("cold", "warm")}
            server.shutdown()
        cold = repeated_visits(pw, sites, image_b64, args.cold_repeats) if args.cold_repeats else {}
        warm = repeated_visits(pw, sites, image_b64, args.warm_repeats, warm=True) if args.warm_repeats else {}
    print(format_table(runs, args.window))
    for times_by_site, what in ((cold, "fresh-profile"), (warm, "returning (warm)")):
        if times_by_site:
            print(f"\nmedian time to ready of {len(next(iter(times_by_site.values())))} {what} visits per site, "
                  "sites alternated:")
            for name, times in times_by_site.items():
                print(f"  {name}: {statistics.median(times) / 1000:.2f} s  "
                      f"({', '.join(f'{t / 1000:.2f}' for t in times)})")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "window_s": args.window, "cold_ready_ms": cold,
                                               "warm_ready_ms": warm}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

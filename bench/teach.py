"""Teach in the page, on sources the model never saw: AP@0.5 on the other images before and after.

    python -m bench.teach [--corrected 2] [--images 16] [--sources S ...] [--json]

For each source with a leave-one-source-out fold model (``training.loso.fold_model``:
``runs/loso/without_SOURCE`` from ``python build.py loso-train``, a model that never saw that
source; for a set nothing trains on, the fold recipe trained on every source), one run in
headless Chromium (WASM, 2 threads at most): the fold model is loaded as a user's
model file ("Load model…"), the first ``--corrected`` images of the source (by a
hash of the name, ``training.loso.source_pairs``) are segmented and marked as
corrected with their ground truth as the corrected objects (what a user's
corrections would give at best), "Teach" adapts the model, and the next
``--images`` images are segmented with the fold model and with the taught one.
Rows: AP@0.5 and mAP of both, the gain, Teach's time in the page and what it
kept. A set nothing trains on also gets a row for the shipped default. A last
row does the same with the shipped ``nuclei_unet`` on the StarDist sample (two
corrected quarters, scored on the other half), which needs no data from
``../shared``.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MARK_JS = "([labels, h, w]) => window.piximi.markCorrected({labels, height: h, width: w})"
TEACH_JS = """async () => {
  const t0 = performance.now();
  const r = await window.piximi.teach();
  return { id: r.model.id, report: r.report, diameter: r.diameter, ms: performance.now() - t0 };
}"""
LOAD_JS = """async ([b64, name]) => {
  const u = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return (await window.piximi.loadModel(new File([u], name))).id;
}"""


def _tiff(image: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, image)
    return buf.getvalue()


def run_case(page, name: str, model_id: str, corrected: list, scored: list) -> dict:
    """Teach ``model_id`` in ``page`` on ``corrected`` (name, image, truth) and score ``scored``."""
    from piximi_py.metrics import evaluate_instances
    from tools.browser import segment_in_page

    page.evaluate("window.piximi.markCorrected({clear: true})")
    for image_name, image, truth in corrected:
        res = segment_in_page(page, _tiff(image), model=model_id, backend="wasm", filename=image_name)
        if not res["ok"]:
            raise SystemExit(f"{image_name}: {res['message']}")
        page.evaluate(MARK_JS, [truth.astype(np.int32).ravel().tolist(), *truth.shape])
    taught = page.evaluate(TEACH_JS)
    rows = {"before": [], "after": []}
    for image_name, image, truth in scored:
        data = _tiff(image)
        for when, mid in (("before", model_id), ("after", taught["id"])):
            res = segment_in_page(page, data, model=mid, backend="wasm", filename=image_name)
            rows[when].append(evaluate_instances(truth, res["labels"]))
    mean = {w: {k: round(float(np.mean([r[k] for r in rs])), 4) for k in ("ap50", "map")} for w, rs in rows.items()}
    return {"case": name, "model": model_id, "corrected": len(corrected), "scored": len(scored),
            "before": mean["before"], "after": mean["after"],
            "gain_ap50": round(mean["after"]["ap50"] - mean["before"]["ap50"], 4),
            "teach_s": round(taught["ms"] / 1000, 2), "head_refitted": taught["report"].get("head_refitted"),
            "diameter": taught["diameter"], "report": taught["report"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corrected", type=int, default=2, help="corrected images per source")
    ap.add_argument("--images", type=int, default=16, help="other images scored per source")
    ap.add_argument("--sources", nargs="*", help="fold sources (default: every fold found)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import base64

    from bench import app_page
    from piximi_py.io import read_image
    from tools import samples
    from training import loso

    sources = args.sources or [s for s in loso.evaluated_sources() if loso.fold_model(s) is not None]
    results = []
    with app_page("?backend=wasm&threads=2", timeout_ms=600_000) as (page, _):
        for source in sources:
            fold = loso.fold_model(source)
            pairs = loso.source_pairs(source, max_images=args.corrected + args.images)
            if fold is None or len(pairs) <= args.corrected:
                print(f"{source}: skipped (its fold model or its images missing: "
                      "python build.py loso-train, ../shared/data)", file=sys.stderr)
                continue
            data = [(Path(ip).name, read_image(ip), read_image(mp).astype(np.int32)) for _, _, ip, mp in pairs]
            file_name = f"without_{source}.onnx"
            model_id = page.evaluate(LOAD_JS, [base64.b64encode(fold.read_bytes()).decode(), file_name])
            t = time.perf_counter()
            results.append(run_case(page, f"{source} (fold model, never saw it)", model_id,
                                    data[:args.corrected], data[args.corrected:]))
            if not loso.trained_on("nuclei", source):  # the default never saw it either: as a user would start
                results.append(run_case(page, f"{source} (shipped nuclei, never saw it)", "nuclei",
                                        data[:args.corrected], data[args.corrected:]))
            print(f"{source}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
        image_path, mask_path = samples.stardist_sample()
        image, truth = read_image(image_path), read_image(mask_path).astype(np.int32)
        h, w = image.shape[0] // 2, image.shape[1] // 2
        results.append(run_case(page, "StarDist sample (shipped model; left quarters corrected, right half scored)",
                                "nuclei_unet", [("top-left", image[:h, :w], truth[:h, :w]),
                                                ("bottom-left", image[h:, :w], truth[h:, :w])],
                                [("right", image[:, w:], truth[:, w:])]))
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| images taught from | corrected | scored | AP@0.5 before → after | mAP before → after | "
          "gain AP@0.5 | Teach in the page | last layer refitted | diameter taught |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['corrected']} | {r['scored']} | {r['before']['ap50']:.3f} → {r['after']['ap50']:.3f} "
              f"| {r['before']['map']:.3f} → {r['after']['map']:.3f} | {r['gain_ap50']:+.3f} | {r['teach_s']:.1f} s "
              f"| {'yes' if r['head_refitted'] else 'no'} | {r['diameter']:.1f} px |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

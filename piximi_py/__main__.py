"""Command line: ``python -m piximi_py segment IMAGES... --out DIR``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}


def _expand(inputs: list[str]) -> list[Path]:
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return files


def _segment_command(args) -> int:
    import tifffile

    from . import ImageReadError, segment_image

    files = _expand(args.images)
    if not files:
        print("no image files given", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    t0 = time.perf_counter()
    for i, path in enumerate(files, 1):
        prefix = f"[{i}/{len(files)}] {path.name}"
        try:
            result = segment_image(path, args.model, threads=args.threads)
        except ImageReadError as exc:
            failures += 1
            print(f"{prefix}: skipped: {exc}", file=sys.stderr, flush=True)
            continue
        target = out / f"{path.stem}_labels.tif"
        tmp = target.with_suffix(".tif.part")
        tifffile.imwrite(tmp, result.labels, imagej=result.labels.dtype == "uint16",
                         compression=None)
        tmp.replace(target)
        print(f"{prefix}: {result.count} objects, {result.timings['total']:.0f} ms -> {target}",
              file=sys.stderr, flush=True)
    print(f"done: {len(files) - failures} segmented, {failures} failed, "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m piximi_py",
                                     description="Nuclei instance segmentation (piximi-py).")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment images or folders of images")
    seg.add_argument("images", nargs="+", help="image files or folders (TIFF, PNG, JPEG, BMP)")
    seg.add_argument("--out", required=True, help="folder for the label TIFFs")
    seg.add_argument("--model", default=None, help="model id (default: the default nuclei model)")
    seg.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    sub.add_parser("models", help="list the available models")
    args = parser.parse_args(argv)
    if args.command == "segment":
        return _segment_command(args)
    from . import load_models

    for spec in load_models():
        print(f"{spec.id}\t{spec.task}\t{spec.name}{'  (default)' if spec.default else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

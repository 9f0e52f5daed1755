"""Command line: ``python -m piximi_py segment IMAGES... --out DIR [--scheduler local]``."""
from __future__ import annotations

import argparse
import sys


def _segment_command(args) -> int:
    from .distributed import expand_inputs, run_batch

    items = expand_inputs(args.images, exclude=args.out)
    if not items:
        print("no image files given", file=sys.stderr)
        return 2
    try:
        report = run_batch(items, args.out, args.model, scheduler=args.scheduler,
                           workers=args.workers, threads=args.threads, overwrite=args.overwrite,
                           log=sys.stderr, diameter=args.diameter, diameter_um=args.diameter_um,
                           channels=args.channels, nuclei=args.nuclei,
                           augment=args.augment, split_by_nuclei=not args.keep_model_cells,
                           invert=args.invert, index=args.index, project=args.project)
    except KeyboardInterrupt:
        print("interrupted: complete outputs are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if report["failed"] else 0


def _axes(what: str):
    def parse(text: str) -> dict:
        from .io import parse_axes

        try:
            return parse_axes(text, what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _channels(text: str) -> dict:
    from .channels import parse_channels

    try:
        return parse_channels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m piximi_py",
                                     description="Nuclei instance segmentation (piximi-py).")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment", help="segment images or folders of images",
        description="Writes NAME_labels.tif and NAME_measurements.csv per image, and "
                    "run_images.csv, run_objects.csv and run_report.json for the run. Images "
                    "whose outputs already exist are skipped (an interrupted run resumes); "
                    "--overwrite recomputes them.")
    seg.add_argument("images", nargs="+", help="image files or folders (TIFF, PNG, JPEG, BMP)")
    seg.add_argument("--out", required=True, help="folder for the outputs")
    seg.add_argument("--model", default=None, help="model id (default: the default nuclei model), or an .onnx file shaped like them")
    seg.add_argument("--threads", type=int, default=None,
                     help="onnxruntime threads per session (default: onnxruntime's choice in "
                          "this process, 1 per Dask worker thread)")
    seg.add_argument("--scheduler", default=None,
                     help="run on Dask: 'local' (a LocalCluster, one worker process per core) "
                          "or the address of a running scheduler (tcp://HOST:8786); "
                          "default: in this process")
    seg.add_argument("--workers", type=int, default=None,
                     help="worker processes of --scheduler local (default: one per core)")
    size = seg.add_mutually_exclusive_group()
    size.add_argument("--diameter", type=float, default=None, metavar="PX",
                      help="typical nucleus diameter in pixels; images are rescaled so that their nuclei "
                           "match the model's (default: estimated per image)")
    size.add_argument("--diameter-um", type=float, default=None, metavar="UM",
                      help="the same in µm, with each file's pixel size")
    seg.add_argument("--channels", type=_channels, default=None, metavar="ROLE=C,...",
                     help="for a whole-cell model: the image channel (from 0) of each input, e.g. "
                          "cyto=1,nuclei=0; leave nuclei out without a nuclear stain; ROLE=auto: chosen "
                          "as by default (from the file's channel names, else cytoplasm green and nuclei blue)")
    seg.add_argument("--index", type=_axes("--index"), default=None, metavar="AXIS=N,...",
                     help="for stacks (TIFF, OME-TIFF, ImageJ): the plane of each other axis, e.g. Z=3,T=0 "
                          "(from 0; default: the first)")
    seg.add_argument("--project", type=_axes("--project"), default=None, metavar="AXIS=max|mean,...",
                     help="for stacks: axes projected onto the plane, e.g. Z=max")
    seg.add_argument("--nuclei", default=None, metavar="MODEL",
                     help="with a whole-cell model: also segment the nuclear channel with this nuclei model "
                          "(e.g. nuclei) and link each cell to its nucleus (nucleus_label column, "
                          "NAME_nuclei_labels.tif, nuclei in the ROI set and COCO file)")
    seg.add_argument("--keep-model-cells", action="store_true",
                     help="with --nuclei: keep the cell model's own cells instead of growing each cell from one "
                          "nucleus (the default, far better on images unlike the training images)")
    seg.add_argument("--augment", action="store_true",
                     help="average the model's probabilities over each image at three scales around its diameter's: "
                          "more accurate on images unlike the training images, three passes of the model")
    seg.add_argument("--invert", action="store_true",
                     help="read each image (a whole-cell model: its cytoplasm channel) with its intensities flipped, "
                          "for dark cells on a lighter background (phase contrast, brightfield, DIC) from a microscope "
                          "unlike the training ones; wrong for fluorescence")
    seg.add_argument("--overwrite", action="store_true",
                     help="recompute images whose outputs already exist (default: skip them)")
    sub.add_parser("models", help="list the available models")
    args = parser.parse_args(argv)
    if args.command == "segment":
        return _segment_command(args)
    from . import load_models

    for spec in load_models():
        print(f"{spec.id}\t{spec.task}\t{spec.name}{'  (default for its task)' if spec.default else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

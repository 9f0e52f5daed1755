"""Whole cells: the shipped two-channel model, channel choice, cells linked to their nuclei,
and their exports."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from realdata import stardist_sample, two_channel_sample

import piximi_py
from piximi_py.io import read_image
from piximi_py.measure import link_nuclei

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_channel():
    """The StarDist sample (real nuclei) written as a 2-channel OME-TIFF: its DNA stain twice,
    as a cytoplasm stand-in and as the nuclear channel, with the channel names a microscope writes."""
    return two_channel_sample(), read_image(stardist_sample()[0])


def test_cells_model_is_shipped(models_dir):
    spec = piximi_py.find_model(piximi_py.load_models(models_dir), "cells")
    assert spec.input_roles == ["cyto", "nuclei"] and spec.channels == 2 and spec.diameter > 0
    assert (models_dir / spec.file).exists() and (models_dir / "cells.rdf.yaml").exists()
    # the default whole-image model is still the nuclei one
    assert piximi_py.find_model(piximi_py.load_models(models_dir), None).id == "nuclei"


def test_channels_from_names_and_nuclei_linked(two_channel):
    path, plane = two_channel
    result = piximi_py.segment_image(path, model="cells", nuclei="nuclei")
    assert result.channels == {"cyto": 0, "nuclei": 1}  # from the OME channel names
    assert result.count > 0
    # the nuclei are the nuclei model's own labels of the nuclear channel
    np.testing.assert_array_equal(result.nuclei.labels, piximi_py.segment(plane, model="nuclei"))
    np.testing.assert_array_equal(result.nucleus_of, link_nuclei(result.labels, result.nuclei.labels)[0])
    timings = result.timings   # the nuclei and their links are part of the result's time
    assert timings["nuclei"] >= result.nuclei.timings["total"] > 0
    assert timings["total"] >= timings["nuclei"] + timings["preprocess"]
    # given explicitly, the same; without a nuclear channel the model reads zeros there
    same = piximi_py.segment_image(path, model="cells", channels={"cyto": 0, "nuclei": 1}, nuclei="nuclei")
    np.testing.assert_array_equal(same.labels, result.labels)
    alone = piximi_py.segment_image(path, model="cells", channels={"cyto": 0})
    assert alone.channels == {"cyto": 0, "nuclei": None} and alone.count > 0
    with pytest.raises(ValueError, match="no nuclear channel"):
        piximi_py.segment_image(path, model="cells", channels={"cyto": 0}, nuclei="nuclei")
    # channels left to a file that has no nuclear channel: the cells alone, and a warning says so
    with pytest.warns(UserWarning, match="no nuclear channel in this image"):
        single = piximi_py.segment_image(plane, model="cells", nuclei="nuclei")
    assert single.nuclei is None and single.channels == {"cyto": 0, "nuclei": None}
    np.testing.assert_array_equal(single.labels, piximi_py.segment(plane, model="cells"))


def test_batch_links_nuclei_as_the_api_does_inside_an_event_loop(two_channel, tmp_path):
    """A batch run (run_batch, in process) started where an event loop is running (Jupyter)
    segments, and a file without a nuclear channel gives its cells alone, with a note, as the
    API and the page do, rather than failing."""
    import asyncio
    import csv

    from piximi_py.distributed import run_batch
    from piximi_py.pipeline import NO_NUCLEAR_CHANNEL

    path, plane = two_channel
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, plane)

    async def in_a_loop():
        return run_batch([path, single], tmp_path / "out", "cells", nuclei="nuclei", log=None)

    report = asyncio.run(in_a_loop())
    assert report["failures"] == [] and report["segmented"] == 2, report
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "out" / "run_images.csv"))}
    assert rows["single"]["note"] == NO_NUCLEAR_CHANNEL and rows["two_channel"]["note"] == ""
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "single_labels.tif"),
                                  piximi_py.segment(plane, model="cells"))
    assert (tmp_path / "out" / "two_channel_nuclei_labels.tif").exists()
    assert not (tmp_path / "out" / "single_nuclei_labels.tif").exists()


def test_a_role_left_auto_is_chosen_from_the_file_everywhere(two_channel, tmp_path):
    """A role given as "auto" takes the file's choice in the API, as in the page and the command
    line (one reading, pipeline.read_for_model): a C index does not override the roles."""
    path, _ = two_channel
    named = piximi_py.segment_image(path, model="cells", nuclei="nuclei")
    auto = piximi_py.segment_image(path, model="cells", channels={"cyto": 0, "nuclei": "auto"}, nuclei="nuclei",
                                   index={"C": 0})
    assert auto.channels == named.channels == {"cyto": 0, "nuclei": 1}
    np.testing.assert_array_equal(auto.labels, named.labels)
    run = subprocess.run([sys.executable, "-m", "piximi_py", "segment", str(path), "--model", "cells", "--out",
                          str(tmp_path), "--channels", "cyto=auto,nuclei=auto", "--nuclei", "nuclei"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "two_channel_labels.tif"), named.labels)
    with pytest.raises(ValueError, match="must be a channel number"):
        piximi_py.segment_image(path, model="cells", channels={"cyto": "green"})


def test_cells_grow_from_their_nuclei(two_channel):
    path, _ = two_channel
    grown = piximi_py.segment_image(path, model="cells", nuclei="nuclei")
    own = piximi_py.segment_image(path, model="cells", nuclei="nuclei", split_by_nuclei=False)
    alone = piximi_py.segment_image(path, model="cells", channels={"cyto": 0, "nuclei": 1})
    # off: the cell model's own cells, linked as they are
    np.testing.assert_array_equal(own.labels, alone.labels)
    np.testing.assert_array_equal(own.nuclei.labels, grown.nuclei.labels)
    # on: the nuclei split the cells the model's own seeds merged (15 of its 102 cells hold two or more
    # nuclei on this image); grown from them, no cell holds two
    several = {name: int((link_nuclei(r.labels, r.nuclei.labels)[1] >= 2).sum()) for name, r in
               (("grown", grown), ("own", own))}
    assert several == {"grown": 0, "own": several["own"]} and several["own"] > 0 and grown.count > own.count
    np.testing.assert_array_equal(grown.nucleus_of, link_nuclei(grown.labels, grown.nuclei.labels)[0])
    with pytest.raises(ValueError, match="split_by_nuclei must be true or false"):
        piximi_py.segment_image(path, model="cells", nuclei="nuclei", split_by_nuclei="no")


@pytest.mark.parametrize("channels, message", [({"cyto": 2}, "not in the image"),
                                               ({"cyto": 0, "nucleus": 1}, "unknown channel role"),
                                               ({"nuclei": 1}, "'cyto' channel is needed")])
def test_bad_channels_are_refused(two_channel, channels, message):
    with pytest.raises(ValueError, match=message):
        piximi_py.segment_image(two_channel[0], model="cells", channels=channels)


def test_cli_writes_cells_with_their_nuclei(two_channel, tmp_path):
    path, _ = two_channel
    run = [sys.executable, "-m", "piximi_py", "segment", str(path), "--model", "cells"]
    ok = subprocess.run(run + ["--out", str(tmp_path / "a"), "--channels", "cyto=0,nuclei=1", "--nuclei", "nuclei"],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    out = tmp_path / "a"
    stem = "two_channel"
    cells = tifffile.imread(out / f"{stem}_labels.tif")
    nuclei = tifffile.imread(out / f"{stem}_nuclei_labels.tif")
    np.testing.assert_array_equal(cells, piximi_py.segment(path, model="cells", channels={"cyto": 0, "nuclei": 1},
                                                           nuclei="nuclei"))
    header, *rows = (out / f"{stem}_measurements.csv").read_text().splitlines()
    columns = header.split(",")
    assert "nucleus_label" in columns and "nuclei" in columns and len(rows) == cells.max()
    nucleus_of = link_nuclei(cells, nuclei)[0]
    linked = {int(r.split(",")[0]): int(r.split(",")[columns.index("nucleus_label")]) for r in rows}
    assert linked == {i: int(nucleus_of[i]) for i in linked}
    coco = json.loads((out / f"{stem}_coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cell", "nucleus"]
    assert sum(a["category_id"] == 2 for a in coco["annotations"]) == len(np.unique(nuclei)) - 1
    names = zipfile.ZipFile(io.BytesIO((out / f"{stem}_rois.zip").read_bytes())).namelist()
    assert any(n.startswith("cell-") for n in names) and any(n.startswith("nucleus-") for n in names)
    bad = subprocess.run(run + ["--out", str(tmp_path / "b"), "--channels", "cyto:0"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "ROLE=CHANNEL" in bad.stderr
    own = subprocess.run(run + ["--out", str(tmp_path / "c"), "--channels", "cyto=0,nuclei=1", "--nuclei", "nuclei",
                                "--keep-model-cells"], capture_output=True, text=True, cwd=ROOT)
    assert own.returncode == 0, own.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c" / f"{stem}_labels.tif"),
                                  piximi_py.segment(path, model="cells", channels={"cyto": 0, "nuclei": 1}))


def test_foreground_threshold_is_chosen_without_the_source_it_is_scored_on():
    from training.cells import choose_foreground

    # AP@0.5 of each fold on its left-out source, by foreground threshold
    scores = {"a": {"0.3": 0.9, "0.6": 0.1}, "b": {"0.3": 0.2, "0.6": 0.4}, "c": {"0.3": 0.1, "0.6": 0.3}}
    assert choose_foreground(scores) == 0.3  # best mean over every source
    assert choose_foreground(scores, leave_out="a") == 0.6  # a's own score does not choose its threshold
    assert choose_foreground(scores, leave_out="b") == 0.3
    assert choose_foreground({"a": {"0.4": 0.5}}, leave_out="a") is None


def test_flow_error_is_chosen_at_each_folds_own_threshold_without_its_source():
    from training.cells import choose_flow_error, with_flow_error

    foreground = {"a": {"0.3": 0.9, "0.6": 0.1}, "b": {"0.3": 0.2, "0.6": 0.4}, "c": {"0.3": 0.1, "0.6": 0.3}}
    # AP@0.5 of each fold by largest flow error, at the thresholds the choices need (0.3 and, for a, 0.6)
    errors = {"0.3": {"a": {"off": 0.9, "0.7": 0.2}, "b": {"off": 0.2, "0.7": 0.3}, "c": {"off": 0.1, "0.7": 0.2}},
              "0.6": {"a": {"off": 0.1, "0.7": 0.1}, "b": {"off": 0.4, "0.7": 0.4}, "c": {"off": 0.3, "0.7": 0.5}}}
    assert choose_flow_error(errors, foreground) is None  # at 0.3 over every source: keep every cell
    assert choose_flow_error(errors, foreground, leave_out="b") is None
    assert choose_flow_error(errors, foreground, leave_out="a") == 0.7  # at a's threshold 0.6, on b and c
    tie = {"0.3": {s: {"off": 0.5, "0.7": 0.5} for s in "abc"}}
    assert choose_flow_error(tie, {s: {"0.3": 0.5} for s in "abc"}) is None  # a tie keeps every cell
    from piximi_py.models import ModelSpec

    spec = ModelSpec(id="cells", name="cells", task="cells", file="x.onnx", instances="flows",
                     postprocess={"foreground_threshold": 0.3, "max_flow_error": 0.7})
    assert with_flow_error(spec, 0.8).postprocess == {"foreground_threshold": 0.3, "max_flow_error": 0.8}
    assert with_flow_error(spec, "off").postprocess == {"foreground_threshold": 0.3}


def test_the_settings_grid_is_scored_again_only_when_what_it_scored_changed(tmp_path, monkeypatch):
    """The folds' grid (half an hour) is read back while the folds, images and settings are those it
    was scored with, and scored afresh when any fold model, post-processing step or the code that
    scores them (the diameter estimate's rules, the instances) changes."""
    import dataclasses

    from piximi_py.models import ModelSpec
    from training import cells

    sets = []
    for name in ("a", "b"):
        (tmp_path / "data" / name / "images").mkdir(parents=True)
        (tmp_path / "data" / name / "images" / "1.tif").write_bytes(b"")
        (tmp_path / "runs" / f"without_{name}_stage2").mkdir(parents=True)
        (tmp_path / "runs" / f"without_{name}_stage2" / "model.onnx").write_bytes(name.encode())
        sets.append(tmp_path / "data" / name)
    monkeypatch.setattr(cells, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(cells, "FOREGROUND_FILE", tmp_path / "runs" / "foreground.json")
    monkeypatch.setattr(cells, "cell_sets", lambda: sets)
    scored = []

    def grid(spec, max_images):
        scored.append(spec)
        return {"scores": {"a": {"0.3": 0.5}}, "flow_error_scores": {"0.3": {"a": {"off": 0.5}}}}

    monkeypatch.setattr(cells, "postprocess_choices", grid)
    spec = ModelSpec(id="cells", name="cells", task="cells", file="x.onnx", instances="flows",
                     postprocess={"foreground_threshold": 0.3, "steps": 60, "max_flow_error": 0.7})

    def saved(spec):
        choices = cells.saved_postprocess_choices(spec)
        cells.FOREGROUND_FILE.write_text(json.dumps(choices))
        return choices

    first = saved(spec)
    assert len(scored) == 1 and first["scores"] == {"a": {"0.3": 0.5}}
    # the two settings the grid chooses, and what only describes the model, do not score it again
    again = dataclasses.replace(spec, name="renamed", file="y.onnx", metrics={"ap50": 1.0},
                                postprocess={"foreground_threshold": 0.5, "steps": 60})
    assert saved(again) == first and len(scored) == 1
    saved(dataclasses.replace(spec, postprocess={**spec.postprocess, "steps": 40}))
    assert len(scored) == 2
    (tmp_path / "runs" / "without_b_stage2" / "model.onnx").write_bytes(b"retrained")
    saved(spec)
    assert len(scored) == 3
    estimate = tmp_path / "piximi_py" / "estimate.py"  # the code that scores the grid, changed
    estimate.parent.mkdir()
    for name in cells.SCORING_MODULES:
        (estimate.parent / f"{name}.py").write_text(name)
    monkeypatch.setattr(cells, "ROOT", tmp_path)
    saved(spec)
    saved(spec)
    assert len(scored) == 4
    estimate.write_text("another rule")
    saved(spec)
    assert len(scored) == 5


def test_a_grid_of_settings_runs_the_model_once_for_what_they_share(two_channel, models_dir):
    """The flow error check is after the model and outside the diameter estimate: a second setting
    of it on the same image is answered from memory, with the labels the model gives afresh."""
    from piximi_py.backends.onnxruntime import OnnxRuntimeBackend
    from piximi_py.pipeline import segment_async
    from training.cells import RepeatedRuns, with_flow_error

    class Counted(OnnxRuntimeBackend):
        runs = 0

        async def run(self, batch):
            Counted.runs += 1
            return await super().run(batch)

    spec = piximi_py.find_model(piximi_py.load_models(models_dir), "cells")
    image = read_image(two_channel[0], keep_channels=True)
    channels = {"cyto": 0, "nuclei": 1}
    fresh = OnnxRuntimeBackend(str(models_dir / spec.file))
    remembered = RepeatedRuns(Counted(str(models_dir / spec.file)))
    for error in (0.7, None):
        setting = with_flow_error(spec, error)
        before = Counted.runs
        got = piximi_py.run_sync(segment_async(image, setting, remembered, channels=channels))
        want = piximi_py.run_sync(segment_async(image, setting, fresh, channels=channels))
        np.testing.assert_array_equal(got.labels, want.labels)
        assert got.diameter == want.diameter
        assert (Counted.runs > before) == (error == 0.7)  # the second setting ran no model
    remembered.forget()
    piximi_py.run_sync(segment_async(image, spec, remembered, channels=channels))
    assert Counted.runs > before


def test_the_card_says_how_the_model_compares_with_the_baseline_from_the_evaluation():
    """The verdict beside the classical baseline is derived from the evaluation, never fixed text."""
    from training.cells import against_baseline

    report = {"fold_mean": {"ap50": 0.5, "map": 0.2}, "fold_with_nuclei_mean": {"ap50": 0.4, "map": 0.1},
              "baseline_mean": {"ap50": 0.45, "map": 0.16}}
    text = against_baseline(report)
    assert "0.500 / 0.200 alone (1.25× the baseline's mAP, above it in AP@0.5 and mAP)" in text
    assert "0.400 / 0.100 with the nuclei linked (0.62× the baseline's mAP, not above it)" in text
    assert text.endswith("not met, hence experimental.")
    good = {"ap50": 0.8, "map": 0.55}
    assert against_baseline({**report, "fold_mean": good, "fold_with_nuclei_mean": good}).endswith(": met.")


def test_a_gpu_runs_checkpoints_land_where_the_folds_and_the_export_look(tmp_path, monkeypatch):
    """``python -m training.cells unpack`` puts each run a GPU run trained (one schedule, in its last
    stage's folder) where ``fold_dir`` and the export look, as ONNX too, and training then keeps
    them rather than training their stages again on this machine."""
    pytest.importorskip("torch")
    from training import cells
    from training.models.unet import Unet
    from training.train import model_config, save_checkpoint
    from training.zoo import pack

    monkeypatch.setattr(cells, "RUNS", tmp_path / "runs")
    gpu_runs = tmp_path / "gpu"  # the runs folder of the GPU machine, as gpu_run leaves it
    kwargs = {"base_width": 4, "space_to_depth": 4}
    for name, stages, _ in cells.runs():
        model = Unet("vanilla", in_channels=2, classes=3, depth=2, activation="flows", **kwargs)
        folder = gpu_runs / cells.run_dir(name, len(stages) - 1).name
        folder.mkdir(parents=True)
        save_checkpoint(model, model_config(model, 2, "vanilla", 2, kwargs), folder / "model.pt", 5, half=True)
    bundles = pack(gpu_runs, tmp_path)
    onnx = [f for bundle in bundles for f in cells.unpack_runs(bundle)]
    assert len(onnx) == len(cells.runs()) and all(f.exists() for f in onnx)
    for source in cells.CELLS:
        assert (cells.fold_dir(source) / "model.onnx") in onnx
    monkeypatch.setattr(cells, "cell_sets", lambda: [tmp_path])  # "found": nothing may train
    assert sorted(cells.train_all()) == sorted(onnx)

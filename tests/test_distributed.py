"""Segmenting a screen on Dask: a real LocalCluster of 2 worker processes, 24 real images.

The images are the four 256x256 quadrants of the StarDist sample, each as is,
flipped and rotated (plus one broken file). Labels are compared with the
single-process command line, never with fixed values, so a retrained model
does not break these tests.
"""
import csv
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")
from distributed import Client, LocalCluster  # noqa: E402

import piximi_py  # noqa: E402
from piximi_py.distributed import (RUN_IMAGES_CSV, RUN_OBJECTS_CSV, RUN_REPORT,  # noqa: E402
                                   expand_inputs, output_paths, run_batch)
from realdata import ROOT, stardist_sample  # noqa: E402

VIEWS = {"id": lambda a: a, "fliplr": np.fliplr, "flipud": np.flipud,
         "rot90": np.rot90, "rot180": lambda a: np.rot90(a, 2), "transpose": np.transpose}
N_IMAGES = 24


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """``plate{0,1}/q{0,1}_{view}.tif`` (24 real images) and ``broken.tif``."""
    image_path, _ = stardist_sample()
    image = tifffile.imread(image_path)
    folder = tmp_path_factory.mktemp("screen")
    for qy in (0, 1):
        (folder / f"plate{qy}").mkdir()
        for qx in (0, 1):
            crop = image[qy * 256:(qy + 1) * 256, qx * 256:(qx + 1) * 256]
            for view, f in VIEWS.items():
                tifffile.imwrite(folder / f"plate{qy}" / f"q{qx}_{view}.tif",
                                 np.ascontiguousarray(f(crop)))
    (folder / "broken.tif").write_bytes(b"II*\x00 truncated")
    names = [name for _, name in expand_inputs([folder]) if name != "broken"]
    assert len(names) == N_IMAGES
    return folder, names


@pytest.fixture(scope="module")
def reference(screen, tmp_path_factory):
    """Outputs of the plain, single-process command line."""
    folder, names = screen
    out = tmp_path_factory.mktemp("cli")
    proc = subprocess.run([sys.executable, "-m", "piximi_py", "segment", str(folder), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr  # the broken file
    assert "broken.tif: skipped" in proc.stderr and f"done: {N_IMAGES} segmented" in proc.stderr
    return out


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        yield client


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_outputs(out, reference, names, out_names=None):
    for name, out_name in zip(names, out_names or names):
        ref_labels, ref_csv = output_paths(reference, name)
        labels, measurements = output_paths(out, out_name)
        np.testing.assert_array_equal(tifffile.imread(labels), tifffile.imread(ref_labels),
                                      err_msg=name)
        assert measurements.read_bytes() == ref_csv.read_bytes(), name


def complete_outputs(out, names):
    """``{name: (mtime_ns, inode) of both outputs}`` of the images whose outputs both exist."""
    done = {}
    for name in names:
        paths = output_paths(out, name)
        if all(p.exists() for p in paths):
            done[name] = [(p.stat().st_mtime_ns, p.stat().st_ino) for p in paths]
    return done


def wait_idle(client, timeout=60):
    """Until no worker executes a task (cancelled tasks run to their end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.run(lambda dask_worker: dask_worker.state.executing_count).values()):
            return
        time.sleep(0.2)
    raise TimeoutError("workers still busy")


def test_dask_run_matches_single_process_cli(screen, reference, client, tmp_path):
    folder, names = screen
    report = run_batch(expand_inputs([folder]), tmp_path, scheduler=client, log=None)

    assert (report["segmented"], report["existing"], report["failed"]) == (N_IMAGES, 0, 1)
    assert_same_outputs(tmp_path, reference, names)
    assert report["cluster"]["workers"] == 2 and report["cluster"]["workers_used"] == 2
    assert report["options"]["threads_per_session"] == 1
    # one onnxruntime session per worker process, created once and reused for every image
    sessions = client.run(lambda: piximi_py._cached_backend.cache_info().misses)
    assert list(sessions.values()) == [1, 1], sessions

    # the run's tables and report
    rows = read_rows(tmp_path / RUN_IMAGES_CSV)
    assert sorted(r["name"] for r in rows) == sorted(names + ["broken"])
    bad = [r for r in rows if r["status"] == "failed"]
    assert [r["name"] for r in bad] == ["broken"] and "'broken.tif'" in bad[0]["error"]
    assert json.loads((tmp_path / RUN_REPORT).read_text()) == report
    assert report["failures"] == [{"path": str(folder / "broken.tif"), "error": bad[0]["error"]}]
    model_file = Path(report["model"]["file"])
    assert report["model"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert {"python", "piximi_py", "numpy", "onnxruntime", "dask", "distributed"} \
        <= set(report["versions"])
    assert set(report["timings_ms"]) >= {"decode", "inference", "postprocess", "measure", "total"}
    objects = read_rows(tmp_path / RUN_OBJECTS_CSV)
    assert len(objects) == report["objects"] == sum(int(r["objects"]) for r in rows)
    assert [o["image"] for o in objects] == sorted((o["image"] for o in objects), key=names.index)


def test_killed_worker_tasks_are_retried(screen, reference, client, tmp_path):
    folder, names = screen
    items = expand_inputs([folder])
    pids = client.run(os.getpid)
    killed = {}

    def kill_once(i, summary):
        if killed:
            return
        # the scheduler hands the next image to a worker a moment after a result comes back
        # (a failed decode comes back at once), so wait for a worker with an image in hand
        deadline = time.monotonic() + 10
        while not (busy := {a: k for a, k in client.processing().items() if k}):
            if time.monotonic() > deadline:
                return                          # try again at the next result
            time.sleep(0.05)
        addr, keys = sorted(busy.items())[0]
        os.kill(pids[addr], signal.SIGKILL)
        killed.update(pid=pids[addr], images={int(str(k).rsplit("-", 1)[1]) for k in keys})

    report = run_batch(items, tmp_path, scheduler=client, log=None, on_result=kill_once)
    assert killed["images"]
    # an image the victim had finished writing (outputs land whole, by rename) when it was killed
    # is found complete when its task is retried: "existing"; every other image is segmented
    assert report["failed"] == 1 and report["existing"] <= len(killed["images"])
    assert report["segmented"] + report["existing"] == N_IMAGES
    assert_same_outputs(tmp_path, reference, names)
    rows = {int(r["index"]): r for r in read_rows(tmp_path / RUN_IMAGES_CSV)}
    assert len(rows) == N_IMAGES + 1
    for i in killed["images"]:  # the killed worker's images were redone elsewhere, or found done
        assert rows[i]["status"] == "existing" or (
            rows[i]["status"] == "segmented" and rows[i]["worker"].split(":")[1] != str(killed["pid"]))
    assert not list(tmp_path.rglob("*.part"))            # no half-written file is left
    client.wait_for_workers(2, timeout=120)              # the nanny restarted the victim
    assert killed["pid"] not in client.run(os.getpid).values()


def test_restarted_run_recomputes_nothing_complete(screen, reference, client, tmp_path):
    folder, names = screen
    items = expand_inputs([folder])

    def interrupt(i, summary):
        interrupt.seen += 1
        if interrupt.seen == 8:
            raise KeyboardInterrupt
    interrupt.seen = 0

    with pytest.raises(KeyboardInterrupt):
        run_batch(items, tmp_path, scheduler=client, log=None, on_result=interrupt)
    wait_idle(client)
    assert not (tmp_path / RUN_REPORT).exists()
    # an image whose labels were written but not its measurements is incomplete
    done = complete_outputs(tmp_path, names)
    partial = next(iter(done))
    output_paths(tmp_path, partial)[1].unlink()
    del done[partial]
    assert 0 < len(done) < N_IMAGES

    report = run_batch(items, tmp_path, scheduler=client, log=None)
    assert (report["segmented"], report["existing"], report["failed"]) == \
        (N_IMAGES - len(done), len(done), 1)
    assert {n: s for n, s in complete_outputs(tmp_path, names).items() if n in done} == done
    statuses = {r["name"]: r["status"] for r in read_rows(tmp_path / RUN_IMAGES_CSV)}
    assert {n for n, s in statuses.items() if s == "existing"} == set(done)
    assert statuses[partial] == "segmented"
    assert_same_outputs(tmp_path, reference, names)
    assert report["objects"] == len(read_rows(tmp_path / RUN_OBJECTS_CSV))

    # --overwrite recomputes everything
    again = run_batch(items, tmp_path, scheduler=client, log=None, overwrite=True)
    assert (again["segmented"], again["existing"]) == (N_IMAGES, 0)


def test_cli_on_a_running_cluster(screen, reference, client, tmp_path):
    folder, names = screen
    plate = [n for n in names if n.startswith("plate1/")]
    cmd = [sys.executable, "-m", "piximi_py", "segment", str(folder / "plate1"),
           "--out", str(tmp_path), "--scheduler", client.scheduler.address]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Dask: 2 workers" in proc.stderr and f"done: {len(plate)} segmented, 0 already done" in proc.stderr
    assert_same_outputs(tmp_path, reference, plate, [n.split("/", 1)[1] for n in plate])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and f"done: 0 segmented, {len(plate)} already done" in proc.stderr

"""Segment many images: one per-image job, run in this process or on a Dask cluster.

    python -m piximi_py segment SCREEN/ --out RESULTS/                      # this process
    python -m piximi_py segment SCREEN/ --out RESULTS/ --scheduler local    # all cores (LocalCluster)
    python -m piximi_py segment SCREEN/ --out RESULTS/ --scheduler tcp://HOST:8786

:func:`process_one` is the whole job for one image (read, segment with the
same pipeline as the page, measure, write the outputs atomically) and returns
a small summary. :func:`run_batch` maps it over the inputs, in this process
or as Dask tasks, and writes the run's tables and report. Per image ``NAME``:

* ``NAME_labels.tif`` -- instance labels (ImageJ-compatible uint16 TIFF);
* ``NAME_measurements.csv`` -- one row per object (:mod:`piximi_py.measure`);
* ``NAME_rois.zip`` -- ImageJ/Fiji ROI set, one traced polygon per object;
* ``NAME_coco.json`` -- COCO instance annotations (RLE), :mod:`piximi_py.export`.

Per run: ``run_images.csv`` (one row per input, failures included),
``run_objects.csv`` (every object of every image) and ``run_report.json``
(counts, failures, timings, versions, model sha256).

Outputs are written under a temporary name and renamed, so an output that
exists is complete; by default images whose outputs exist are not recomputed
(``overwrite=True`` redoes them), which makes an interrupted run resumable by
running the same command again.

Dask (``dask.distributed``) is imported only when a scheduler is asked for:
the page never needs it.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "expand_inputs", "output_paths", "process_one", "run_batch",
           "RUN_IMAGES_CSV", "RUN_OBJECTS_CSV", "RUN_REPORT"]

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
LABELS_SUFFIX = "_labels.tif"
NUCLEI_LABELS_SUFFIX = "_nuclei_labels.tif"  #: a whole-cell run's nuclei (``nuclei=``)
MEASUREMENTS_SUFFIX = "_measurements.csv"
ROIS_SUFFIX = "_rois.zip"
COCO_SUFFIX = "_coco.json"
RUN_IMAGES_CSV = "run_images.csv"
RUN_OBJECTS_CSV = "run_objects.csv"
RUN_REPORT = "run_report.json"
_TMP_SUFFIX = ".part"
_STAGES = ("decode", "preprocess", "diameter", "inference", "postprocess", "measure", "write", "total")
_IMAGE_COLUMNS = ("index", "path", "name", "status", "objects", "height", "width", "diameter", "error",
                  "note", "worker") + tuple(f"ms_{s}" for s in _STAGES)
_MAX_LISTED_FAILURES = 1000

_session_lock = threading.Lock()


# --------------------------------------------------------------------------- inputs and outputs

def expand_inputs(inputs, exclude=None) -> list[tuple[str, str]]:
    """Image files named by ``inputs`` and the output name of each.

    Parameters
    ----------
    inputs : list of str or Path
        Image files, or folders searched recursively for image files.
    exclude : path, optional
        A folder whose files are never inputs (the output folder).

    Returns
    -------
    list of (path, name)
        ``name`` is the file's stem, or for a file found in a folder its path
        below that folder without the suffix (``plate1/A01``), so outputs of
        ``plate1/A01.tif`` and ``plate2/A01.tif`` do not collide.
    """
    exclude = Path(exclude).resolve() if exclude is not None else None
    items = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*")
                                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
                if exclude is not None and found.resolve().is_relative_to(exclude):
                    continue
                items.append((str(found), image_stem(found.relative_to(path)).as_posix()))
        else:
            items.append((str(path), image_stem(path).name))
    return items


def image_stem(path) -> Path:
    """``path`` without its image suffix, ``.ome.tif`` counted as one (``a/b.ome.tif`` -> ``a/b``)."""
    path = Path(path).with_suffix("")
    return path.with_suffix("") if path.suffix.lower() == ".ome" else path


def output_paths(out_dir, name: str) -> tuple[Path, Path]:
    """``(labels TIFF, measurements CSV)`` of the image with output ``name``."""
    base = Path(out_dir) / name
    return base.with_name(base.name + LABELS_SUFFIX), base.with_name(base.name + MEASUREMENTS_SUFFIX)


def export_paths(out_dir, name: str) -> tuple[Path, Path]:
    """``(ImageJ ROI zip, COCO JSON)`` of the image with output ``name``."""
    base = Path(out_dir) / name
    return base.with_name(base.name + ROIS_SUFFIX), base.with_name(base.name + COCO_SUFFIX)


def _write_atomic(target: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``target``: ``target`` is never partial."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _format(value) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(int(value)) if isinstance(value, (int, np.integer)) else str(value)


def write_measurements(path, table: dict) -> None:
    """Write :func:`piximi_py.measure.regionprops_table` output as CSV (floats round-trip)."""
    from .export import measurements_csv

    with open(path, "w", newline="") as f:
        f.write(measurements_csv(table))


def _complete(out_dir, name: str) -> bool:
    """Whether all outputs of ``name`` exist (each was renamed into place whole)."""
    return all(p.exists() for p in output_paths(out_dir, name) + export_paths(out_dir, name))


def _count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return max(0, sum(1 for _ in f) - 1)


# --------------------------------------------------------------------------- one image

def _load_model(model, models_dir, threads):
    from . import _native_backend
    from .modelfile import resolve_model

    spec, path = resolve_model(model, models_dir)
    with _session_lock:  # one onnxruntime session per process, created once and reused
        backend = _native_backend(str(path), threads)
    return spec, backend


def _intensity(image: np.ndarray) -> np.ndarray:
    """The plane measured for ``intensity_*``: RGB averaged to gray."""
    return image[..., :3].astype(np.float32).mean(axis=-1) if image.ndim == 3 else image


def process_one(path, out_dir, model: str | None = None, *, name: str | None = None,
                models_dir=None, threads: int | None = None, index: dict | None = None,
                overwrite: bool = False, diameter: float | None = None,
                diameter_um: float | None = None, channels: dict | None = None,
                nuclei: str | None = None, augment: bool = False, split_by_nuclei: bool = True,
                invert: bool = False, project: dict | None = None) -> dict:
    """Segment and measure one image file and write its outputs.

    Writes ``NAME_rois.zip``, ``NAME_coco.json``, ``NAME_measurements.csv``
    then ``NAME_labels.tif`` in ``out_dir``,
    each under a temporary name renamed when complete. Both the command line
    and the Dask tasks run this function.

    Parameters
    ----------
    path : str or Path
        The image file; read here (on the worker), never shipped from a client.
    out_dir : str or Path
    model : str, optional
        Model id; default: the default nuclei model.
    name : str, optional
        Output name (default: the file's stem); may contain ``/``.
    models_dir : path, optional
        Where ``index.json`` and the ONNX files are (default:
        :func:`piximi_py.models.default_models_dir`).
    threads : int, optional
        onnxruntime intra-op threads of this process's session.
    index, project : dict, optional
        Plane selection and projection for multi-plane files
        (:func:`piximi_py.io.read_image`): ``{"Z": 3}``, ``{"Z": "max"}``.
    overwrite : bool
        Recompute even when both outputs exist.
    diameter, diameter_um : float, optional
        Nucleus diameter in pixels, or in µm (with the file's pixel size);
        None: estimated per image (:func:`piximi_py.segment_image`).
    channels : dict, optional
        Image channel of each input of a whole-cell model, ``{"cyto": 1, "nuclei": 0}``;
        None: chosen per file (:func:`piximi_py.channels.default_channels`).
    nuclei : str, optional
        With a whole-cell model: a nuclei model for the nuclear channel. Each
        cell is linked to its nucleus (``nucleus_label`` and ``nuclei`` columns),
        ``NAME_nuclei_labels.tif`` is written, and the ROI set and COCO file
        hold the nuclei too.
    split_by_nuclei : bool
        With ``nuclei``: grow each cell from one nucleus (default); False keeps
        the cell model's own cells (:func:`piximi_py.pipeline.add_nuclei`).
    augment : bool
        Average the model's probabilities over three scales
        (:func:`piximi_py.pipeline.predict_masks_averaged`; three passes of the model).
    invert : bool
        Read each image (a whole-cell model: its cytoplasm channel) inverted
        (:func:`piximi_py.pipeline.inverted`; dark cells on a lighter background).

    Returns
    -------
    dict
        ``status`` (``"segmented"``, ``"existing"`` when the outputs were
        already complete, or ``"failed"`` with ``error`` for a file that is not
        a readable image), ``objects``, ``height``, ``width``, ``worker``
        (``host:pid``) and ``ms`` (milliseconds per stage).
    """
    from . import export, resolve_diameter, run_sync
    from .channels import left_to_file
    from .io import ImageReadError, describe_image
    from .measure import nucleus_columns, regionprops_table
    from .pipeline import nuclei_skipped, read_for_model, segment_async

    t0 = time.perf_counter()
    path = Path(path)
    name = name or image_stem(path).name
    labels_path, csv_path = output_paths(out_dir, name)
    summary = {"path": str(path), "name": name, "status": "segmented", "objects": 0,
               "height": 0, "width": 0, "error": "", "note": "",
               "worker": f"{socket.gethostname()}:{os.getpid()}", "ms": {}}
    if not overwrite and _complete(out_dir, name):
        summary.update(status="existing", objects=_count_rows(csv_path))
        return summary

    spec, backend = _load_model(model, models_dir, threads)
    t = time.perf_counter()
    try:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"cannot open '{path.name}': {exc.strerror or exc}") from None
        info = describe_image(data, path.name)
        pixel_size = info.get("pixel_size")
        nuclear_channel_auto = left_to_file(channels, "nuclei")
        image, channels = read_for_model(data, spec, filename=path.name, index=index, project=project,
                                         channels=channels, info=info)
        decode_ms = (time.perf_counter() - t) * 1000.0
        px = resolve_diameter(diameter, diameter_um, pixel_size)
        # run_sync, not asyncio.run: a batch started inside a running event loop (Jupyter) works
        result = run_sync(segment_async(image, spec, backend, diameter=px, channels=channels,
                                        augment=augment, invert=invert))
        skipped = nuclei_skipped(result, nuclei, nuclear_channel_auto)
        if skipped:
            summary["note"] = skipped
        elif nuclei is not None:
            from .pipeline import add_nuclei

            result = run_sync(add_nuclei(result, *_load_model(nuclei, models_dir, threads),
                                         split_by_nuclei=split_by_nuclei))
    except (ImageReadError, ValueError) as exc:
        summary.update(status="failed", error=str(exc))
        summary["ms"]["total"] = (time.perf_counter() - t0) * 1000.0
        return summary
    ms = {k: v for k, v in result.timings.items() if k != "total"}
    ms["decode"] = decode_ms

    t = time.perf_counter()
    table = regionprops_table(result.labels, _intensity(image), pixel_size=pixel_size)
    linked = result.nuclei is not None
    if linked:
        table = nucleus_columns(table, result.labels, result.nuclei.labels)
    ms["measure"] = (time.perf_counter() - t) * 1000.0

    t = time.perf_counter()
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    rois_path, coco_path = export_paths(out_dir, name)
    nuclei_kw = {"nuclei": result.nuclei.labels, "nucleus_of": result.nucleus_of} if linked else {}
    _write_atomic(rois_path, lambda tmp: tmp.write_bytes(export.roi_zip(result.labels, **nuclei_kw)))
    _write_atomic(coco_path, lambda tmp: tmp.write_bytes(export.coco_json_bytes(
        result.labels, file_name=path.name, **({"category": "cell", **nuclei_kw} if linked else {}))))
    _write_atomic(csv_path, lambda tmp: write_measurements(tmp, table))
    if linked:
        _write_atomic(labels_path.with_name(labels_path.name.replace(LABELS_SUFFIX, NUCLEI_LABELS_SUFFIX)),
                      lambda tmp: tmp.write_bytes(export.labels_tiff(result.nuclei.labels, pixel_size=pixel_size)))
    _write_atomic(labels_path, lambda tmp: tmp.write_bytes(
        export.labels_tiff(result.labels, pixel_size=pixel_size)))
    ms["write"] = (time.perf_counter() - t) * 1000.0
    ms["total"] = (time.perf_counter() - t0) * 1000.0
    summary.update(objects=result.count, height=int(result.labels.shape[0]),
                   width=int(result.labels.shape[1]), ms=ms,
                   diameter=round(result.diameter, 2) if result.diameter else None,
                   diameter_estimated=result.diameter_estimated)
    return summary


def _summary(path, name, status: str, error: str = "", objects: int = 0) -> dict:
    """A summary made by the client (no worker ran the image)."""
    return {"path": str(path), "name": name, "status": status, "objects": objects, "height": 0,
            "width": 0, "error": error, "worker": "", "ms": {}}


# --------------------------------------------------------------------------- run bookkeeping

def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions(dask: bool) -> dict:
    from importlib import metadata

    from . import __version__

    names = ["numpy", "scipy", "tifffile", "onnxruntime"] + (["dask", "distributed"] if dask else [])
    versions = {"python": platform.python_version(), "piximi_py": __version__}
    for pkg in names:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def _resolved(model, models_dir):
    """The spec and ONNX path of ``model`` (:func:`piximi_py.modelfile.resolve_model`)."""
    from .modelfile import resolve_model

    return resolve_model(model, Path(models_dir).resolve() if models_dir else None)


def _model_info(spec, path) -> dict:
    """What the run's report says of its model (spec and path, :func:`_resolved`)."""
    sha = _sha256(path)
    return {"id": spec.id, "name": spec.name, "file": str(path.resolve()),
            "sha256": sha, "index_sha256": spec.sha256 or None,
            "matches_index": (sha == spec.sha256) if spec.sha256 else None}


def _worker_check(model, models_dir) -> dict:
    """Run on every Dask worker: what it would run, before any task is sent."""
    try:
        info = _model_info(*_resolved(model, models_dir))
        sha = info["sha256"]
    except Exception as exc:  # reported by the client
        sha = f"error: {exc}"
    return {"pid": os.getpid(), "host": socket.gethostname(), "model_sha256": sha,
            "onnxruntime": _versions(False)["onnxruntime"]}


class _Progress:
    """Whole-run progress: a tqdm bar on a terminal, else one line per image."""

    def __init__(self, total: int, stream, bar: bool | None):
        self.total, self.stream, self.done, self.t0 = total, stream, 0, time.perf_counter()
        self.bar = None
        if stream is not None and (bar or (bar is None and getattr(stream, "isatty", lambda: False)())):
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", file=stream, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, s: dict, labels_path: Path) -> None:
        self.done += 1
        if self.stream is None:
            return
        prefix = f"[{self.done}/{self.total}] {s['name']}{Path(s['path']).suffix}"
        if s["status"] == "failed":
            line = f"{prefix}: skipped: {s['error']}"
        elif s["status"] == "existing":
            line = f"{prefix}: already done ({s['objects']} objects) -> {labels_path}"
        else:
            line = f"{prefix}: {s['objects']} objects, {s['ms'].get('total', 0):.0f} ms -> {labels_path}"
        if self.bar is not None:
            if s["status"] == "failed":
                self.bar.write(line, file=self.stream)
            self.bar.update(1)
        else:
            print(line, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _Recorder:
    """Streams ``run_images.csv`` and keeps only counts, sums and the first failures."""

    def __init__(self, out_dir: Path, n: int):
        self.out_dir, self.n = out_dir, n
        self.status = bytearray(n)            # 0 pending, 1 segmented, 2 existing, 3 failed
        self.counts = {"segmented": 0, "existing": 0, "failed": 0}
        self.objects = 0
        self.ms_sum = dict.fromkeys(_STAGES, 0.0)
        self.ms_max = dict.fromkeys(_STAGES, 0.0)
        self.failures = []
        self.workers = set()
        self.tmp = out_dir / f".{RUN_IMAGES_CSV}.{os.getpid()}{_TMP_SUFFIX}"
        self.file = open(self.tmp, "w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(_IMAGE_COLUMNS)

    def add(self, i: int, s: dict) -> None:
        self.status[i] = {"segmented": 1, "existing": 2, "failed": 3}[s["status"]]
        self.counts[s["status"]] += 1
        self.objects += s["objects"]
        if s["worker"]:
            self.workers.add(s["worker"])
        if s["status"] == "segmented":
            for k, v in s["ms"].items():
                if k in self.ms_sum:
                    self.ms_sum[k] += v
                    self.ms_max[k] = max(self.ms_max[k], v)
        if s["status"] == "failed" and len(self.failures) < _MAX_LISTED_FAILURES:
            self.failures.append({"path": s["path"], "error": s["error"]})
        ms = [f"{s['ms'][k]:.1f}" if k in s["ms"] else "" for k in _STAGES]
        self.csv.writerow([i, s["path"], s["name"], s["status"], s["objects"], s["height"],
                           s["width"], s.get("diameter") or "", s["error"], s.get("note", ""), s["worker"], *ms])

    def abort(self):
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self, items, objects_csv: bool) -> None:
        self.file.close()
        os.replace(self.tmp, self.out_dir / RUN_IMAGES_CSV)
        if objects_csv:
            _write_atomic(self.out_dir / RUN_OBJECTS_CSV, lambda tmp: self._objects(items, tmp))
        for tmp in self.out_dir.rglob(f".*{_TMP_SUFFIX}"):  # left by workers that died mid-write
            if tmp.name.endswith(_TMP_SUFFIX) and (LABELS_SUFFIX in tmp.name
                                                   or MEASUREMENTS_SUFFIX in tmp.name):
                tmp.unlink(missing_ok=True)

    def _objects(self, items, tmp) -> None:
        """Concatenate the per-image measurements, in input order, streaming."""
        header_written = False
        with open(tmp, "w", newline="") as out:
            writer = csv.writer(out)
            for i, (path, name) in enumerate(items):
                if self.status[i] not in (1, 2):
                    continue
                with open(output_paths(self.out_dir, name)[1], newline="") as f:
                    rows = csv.reader(f)
                    header = next(rows, None)
                    if header is None:
                        continue
                    if not header_written:
                        writer.writerow(["image", *header])
                        header_written = True
                    for row in rows:
                        writer.writerow([name, *row])


# --------------------------------------------------------------------------- the run

def _as_items(inputs) -> list[tuple[str, str]]:
    items = [(str(x[0]), str(x[1])) if isinstance(x, (tuple, list)) else (str(x), image_stem(x).name)
             for x in inputs]
    seen = {}
    for path, name in items:
        if name in seen:
            raise ValueError(f"'{seen[name]}' and '{path}' would both write {name}{LABELS_SUFFIX}; "
                             "rename one or give their common parent folder as the input")
        seen[name] = path
    return items


def _in_process(items, out_dir, kw):
    for i, (path, name) in enumerate(items):
        try:
            yield i, process_one(path, out_dir, name=name, **kw)
        except Exception as exc:  # an unexpected error in one image must not stop the run
            yield i, _summary(path, name, "failed", f"{type(exc).__name__}: {exc}")


def _on_dask(client, items, out_dir, kw, retries: int):
    """Submit the images as tasks, at most a window at a time, and yield results as they finish.

    Images whose outputs are complete are not sent at all (unless
    ``overwrite``): resuming a large run costs no task per finished image.
    """
    from distributed import as_completed

    window = max(64, 4 * (sum(client.nthreads().values()) or 1))
    token = uuid.uuid4().hex[:8]
    pending = {}
    source = iter(enumerate(items))
    done = as_completed()

    def fill():
        """Submit until ``window`` tasks are pending; return the images already complete."""
        existing = []
        while len(pending) < window:
            i, (path, name) = next(source, (None, (None, None)))
            if i is None:
                break
            if not kw["overwrite"] and _complete(out_dir, name):
                objects = _count_rows(output_paths(out_dir, name)[1])
                existing.append((i, _summary(path, name, "existing", objects=objects)))
                continue
            future = client.submit(process_one, path, out_dir, name=name, **kw, retries=retries,
                                   key=f"piximi-segment-{token}-{i}")
            pending[future.key] = (i, path, name, future)
            done.add(future)
        return existing

    try:
        yield from fill()
        for future in done:
            i, path, name, _ = pending.pop(future.key)
            try:
                summary = future.result()
            except Exception as exc:  # raised every retry, or its worker died every time
                summary = _summary(path, name, "failed", f"{type(exc).__name__}: {exc}")
            future.release()
            yield i, summary
            yield from fill()
    finally:
        if pending:
            client.cancel([f for *_, f in pending.values()])


def _connect(scheduler, workers):
    """``(client, cluster or None)`` for ``"local"``, an address, or a Client."""
    import logging

    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return scheduler, None
    if scheduler == "local":
        n = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               silence_logs=logging.ERROR, dashboard_address=None)
        return Client(cluster), cluster
    return Client(scheduler), None


def run_batch(inputs, out_dir, model: str | None = None, *, scheduler=None,
              workers: int | None = None, threads: int | None = None, overwrite: bool = False,
              models_dir=None, index: dict | None = None, log=sys.stderr,
              progress_bar: bool | None = None, objects_csv: bool = True, retries: int = 2,
              on_result=None, diameter: float | None = None, diameter_um: float | None = None,
              channels: dict | None = None, nuclei: str | None = None,
              augment: bool = False, split_by_nuclei: bool = True, invert: bool = False,
              project: dict | None = None) -> dict:
    """Segment many images and write their outputs, the run's tables and report.

    Parameters
    ----------
    inputs : list of path or (path, name)
        Image files (see :func:`expand_inputs`); ``name`` is the output name.
    out_dir : path
    model : str, optional
        Model id (default: the default nuclei model).
    scheduler : None, "local", str or distributed.Client
        None runs in this process; ``"local"`` starts a ``LocalCluster`` of
        ``workers`` processes (default: one per core) with one thread each;
        an address (``tcp://host:8786``) connects to a running Dask cluster;
        a ``Client`` is used as it is (and left open).
    workers : int, optional
        Worker processes of the ``"local"`` cluster.
    threads : int, optional
        onnxruntime threads per session; on Dask 1 by default (one session
        per worker process, one thread per task).
    overwrite : bool
        Recompute images whose outputs exist (default: skip them, which
        resumes an interrupted run).
    models_dir : path, optional
        Must be readable at the same path by every worker.
    index, project : dict, optional
        Plane selection and projection for multi-plane files, for every image
        (:func:`process_one`).
    diameter, diameter_um : float, optional
        Nucleus diameter for every image, in pixels or µm; None: estimated per image.
    channels : dict, optional
        Image channel of each input of a whole-cell model, for every image
        (``{"cyto": 1, "nuclei": 0}``); None: chosen per file.
    nuclei : str, optional
        With a whole-cell model: a nuclei model that also segments each image's
        nuclear channel; cells are linked to their nuclei (:func:`process_one`).
    split_by_nuclei : bool
        With ``nuclei``: grow each cell from one nucleus (default), else keep
        the cell model's own cells.
    augment : bool
        Average the model's probabilities over three scales for every image
        (:func:`piximi_py.pipeline.predict_masks_averaged`; three passes of the model).
    invert : bool
        Read every image (a whole-cell model: its cytoplasm channel) inverted
        (:func:`process_one`); refused for a colour or stain model before any image is read.
    log : file or None
        Where progress and the summary go.
    progress_bar : bool, optional
        tqdm bar instead of one line per image (default: when ``log`` is a terminal).
    objects_csv : bool
        Also write ``run_objects.csv`` (every object of every image).
    retries : int
        Dask retries of a task that raised an unexpected error. Tasks of a
        worker that died are rescheduled by Dask whatever this is.
    on_result : callable(index, summary), optional
        Called in this process as each image finishes.

    Returns
    -------
    dict
        The run report, also written to ``out_dir/run_report.json``.
    """
    t_start, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    items = _as_items(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = _resolved(model, models_dir)  # once: the report's model and the invert check
    model_info = _model_info(*resolved)
    models_dir = str(Path(models_dir).resolve()) if models_dir else None
    use_dask = scheduler is not None
    from . import resolve_diameter
    from .pipeline import check_augment, check_flag, check_invert

    resolve_diameter(diameter, diameter_um, pixel_size=1.0)  # a bad value fails here, not per image
    check_augment(augment)
    check_flag(split_by_nuclei, "split_by_nuclei")
    check_invert(invert, resolved[0])
    kw = {"model": model, "models_dir": models_dir, "index": index, "project": project, "overwrite": overwrite,
          "threads": threads if threads is not None or not use_dask else 1,
          "diameter": diameter, "diameter_um": diameter_um, "channels": channels, "nuclei": nuclei,
          "augment": augment, "split_by_nuclei": split_by_nuclei, "invert": invert}

    client = cluster = None
    cluster_info = {"scheduler": "in-process", "workers": 1, "threads": 1, "worker_checks": None}
    if use_dask:
        client, cluster = _connect(scheduler, workers)
    try:
        if use_dask:
            checks = client.run(_worker_check, model, models_dir)
            bad = {a: c["model_sha256"] for a, c in checks.items()
                   if c["model_sha256"] != model_info["sha256"]}
            if bad:
                raise RuntimeError(f"workers do not see the model this client sees "
                                   f"(sha256 {model_info['sha256'][:12]}…): {bad}")
            cluster_info = {"scheduler": client.scheduler.address, "workers": len(checks),
                            "threads": sum(client.nthreads().values()), "worker_checks": checks}
            if log is not None:
                print(f"Dask: {len(checks)} workers, {cluster_info['threads']} threads at "
                      f"{cluster_info['scheduler']}", file=log, flush=True)
        t_tasks = time.perf_counter()
        recorder = _Recorder(out_dir, len(items))
        progress = _Progress(len(items), log, progress_bar)
        results = (_on_dask(client, items, str(out_dir), kw, retries) if use_dask
                   else _in_process(items, str(out_dir), kw))
        try:
            for i, summary in results:
                recorder.add(i, summary)
                progress.update(summary, output_paths(out_dir, summary["name"])[0])
                if on_result is not None:
                    on_result(i, summary)
        except BaseException:
            recorder.abort()
            raise
        finally:
            results.close()  # cancels the tasks still pending after an interruption
            progress.close()
        recorder.finish(items, objects_csv)
    finally:
        if client is not None and client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()

    t_end = time.perf_counter()
    wall, startup = t_end - t_start, t_tasks - t_start
    n_seg = recorder.counts["segmented"]
    report = {
        "started": started, "wall_s": round(wall, 3), "startup_s": round(startup, 3),
        "inputs": len(items), **recorder.counts, "objects": recorder.objects,
        # throughput from the first task on: cluster start-up excluded
        "images_per_s": round(n_seg / (t_end - t_tasks), 3) if n_seg else None,
        "timings_ms": {k: {"mean": round(recorder.ms_sum[k] / n_seg, 2),
                           "max": round(recorder.ms_max[k], 2)} for k in _STAGES} if n_seg else {},
        "failures": recorder.failures,
        "failures_not_listed": max(0, recorder.counts["failed"] - len(recorder.failures)),
        "model": model_info,
        "options": {"overwrite": overwrite, "threads_per_session": kw["threads"], "index": index, "project": project,
                    "diameter": diameter, "diameter_um": diameter_um, "channels": channels,
                    "nuclei": nuclei, "augment": augment, "split_by_nuclei": split_by_nuclei,
                    "invert": invert},
        "cluster": {**cluster_info, "workers_used": len(recorder.workers)},
        "versions": _versions(use_dask),
        "outputs": {"images": RUN_IMAGES_CSV, "objects": RUN_OBJECTS_CSV if objects_csv else None,
                    "per_image": f"NAME{LABELS_SUFFIX}, NAME{MEASUREMENTS_SUFFIX}"},
    }
    _write_atomic(out_dir / RUN_REPORT, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    if log is not None:
        rate = f"{report['images_per_s']:.2f} images/s" if n_seg else "nothing recomputed"
        print(f"done: {n_seg} segmented, {recorder.counts['existing']} already done, "
              f"{recorder.counts['failed']} failed, {wall:.1f} s ({rate}); "
              f"report: {out_dir / RUN_REPORT}", file=log, flush=True)
    return report

"""Page entry points for files of results (Pyodide only): the last segmentation as a label
TIFF, mask, overlay, CSV, COCO or ImageJ ROI zip (:func:`export`), and a batch's results
written into one zip as they come (``segment(..., batch=True)``, :func:`batch_fail`,
:func:`batch_zip`). The files themselves are :mod:`piximi_py.export`'s.
"""
from __future__ import annotations

import numpy as np

from .webstate import S, error_result, intensity, typed_array

__all__ = ["export", "batch_fail", "batch_zip", "batch_clear", "export_files", "zip_files", "current_batch",
           "file_stem", "EXPORTS", "BATCH_EXPORTS"]


def file_stem(name: str) -> str:
    """A file name without its folder and image suffix: the stem of its exports' names."""
    base = name.rsplit("/", 1)[-1]
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".bmp"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


#: kind -> (file name suffix, MIME type)
EXPORTS = {
    "labels": ("_labels.tif", "image/tiff"),
    "mask": ("_mask.tif", "image/tiff"),
    "overlay": ("_overlay.png", "image/png"),
    "csv": ("_measurements.csv", "text/csv"),
    "coco": ("_coco.json", "application/json"),
    "coco_polygon": ("_coco_polygons.json", "application/json"),
    "rois": ("_rois.zip", "application/zip"),
    "nuclei_labels": ("_nuclei_labels.tif", "image/tiff"),  # whole cells with their nuclei only
    "all": ("_results.zip", "application/zip"),
}


def export_file(last: dict, kind: str, options: dict | None = None) -> bytes:
    """The bytes of export ``kind`` (:data:`EXPORTS`) of a result (``S.last``'s form)."""
    from . import export as ex
    from .measure import nucleus_columns, regionprops_table

    options = options or {}
    labels = last["labels"]
    nuclei = last.get("nuclei")
    linked = {"nuclei": nuclei, "nucleus_of": last.get("nucleus_of")} if nuclei is not None else {}
    if kind == "nuclei_labels":
        if nuclei is None:
            raise ValueError("this result has no nuclei: segment whole cells with their nuclei first")
        return ex.labels_tiff(nuclei, pixel_size=last.get("pixel_size"))
    if kind == "labels":
        return ex.labels_tiff(labels, pixel_size=last.get("pixel_size"))
    if kind == "mask":
        return ex.mask_tiff(labels, pixel_size=last.get("pixel_size"))
    if kind == "overlay":
        return ex.overlay_png(last.get("image"), labels, mode=options.get("mode", "outline"),
                              opacity=float(options.get("opacity", 0.4)))
    if kind == "csv":
        table = last.get("table")
        if table is None:
            table = regionprops_table(labels, intensity(last["image"]),
                                      pixel_size=last.get("pixel_size"))
            if nuclei is not None:
                table = nucleus_columns(table, labels, nuclei)
        return ex.measurements_csv(table).encode("utf-8")
    if kind in ("coco", "coco_polygon"):
        return ex.coco_json_bytes(labels, file_name=last.get("name") or "image",
                                  encoding="polygon" if kind == "coco_polygon" else "rle",
                                  **({"category": "cell", **linked} if linked else {}))
    if kind == "rois":
        return ex.roi_zip(labels, **linked)
    raise ValueError(f"unknown export {kind!r}: use one of {', '.join(EXPORTS)}")


def export_files(last: dict, kinds, options: dict | None = None) -> dict:
    """Kind -> bytes of each of ``kinds`` (:func:`export_file`)."""
    return {kind: export_file(last, kind, options) for kind in kinds}


def zip_files(files: dict) -> bytes:
    """A deflated zip of name -> bytes."""
    import io as _io
    import zipfile

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def export(kind: str, options: dict | None = None) -> dict:
    """The last segmentation as a file: ``{"ok", "data" (Uint8Array), "name", "mime"}``.

    ``kind``: one of :data:`EXPORTS`; ``options``: mode/opacity for the overlay.
    """
    try:
        if not S.last:
            raise ValueError("nothing to export yet: segment an image first")
        if kind not in EXPORTS:
            raise ValueError(f"unknown export {kind!r}: use one of {', '.join(EXPORTS)}")
        stem = file_stem(S.last["name"])
        if kind == "all":
            kinds = [k for k in EXPORTS if k != "all" and (k != "nuclei_labels" or S.last.get("nuclei") is not None)]
            data = zip_files({stem + EXPORTS[k][0]: b for k, b in export_files(S.last, kinds, options).items()})
        else:
            data = export_file(S.last, kind, options)
        return {"ok": True, "data": typed_array(np.frombuffer(data, np.uint8)),
                "name": stem + EXPORTS[kind][0], "mime": EXPORTS[kind][1]}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


#: What a batch zip holds per image.
BATCH_EXPORTS = ("labels", "csv", "rois", "coco")


class Batch:
    """A zip being written (deflated) as the images of a batch are segmented."""

    def __init__(self):
        import io as _io
        import zipfile

        self.buf = _io.BytesIO()
        self.zf = zipfile.ZipFile(self.buf, "w", zipfile.ZIP_DEFLATED)
        self.rows = []
        self.names = set()

    def _unique(self, name: str) -> str:
        # compared without case: names that differ only in case are one file on macOS and Windows
        stem, k = file_stem(name), 1
        while stem.lower() in self.names:
            k += 1
            stem = f"{file_stem(name)}_{k}"
        self.names.add(stem.lower())
        return stem

    def add(self, name: str, exports: dict) -> None:
        stem = self._unique(name)
        for kind, data in exports.items():
            self.zf.writestr(stem + EXPORTS[kind][0], data)
        self.rows.append((name, stem, "segmented", ""))

    def fail(self, name: str, message: str) -> None:
        self.rows.append((name, "", "failed", message))

    def close(self) -> bytes:
        import csv
        import io as _io

        text = _io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["image", "outputs", "status", "error"])  # outputs: the stem of its files here
        writer.writerows(self.rows)
        self.zf.writestr("batch_report.csv", text.getvalue())
        self.zf.close()
        return self.buf.getvalue()


def current_batch() -> Batch:
    """The batch being written (a new one after :func:`batch_zip` or :func:`batch_clear`)."""
    if S.batch is None:
        S.batch = Batch()
    return S.batch


def batch_fail(name: str, message: str) -> dict:
    """Record a failed file of the batch (listed in the zip's ``batch_report.csv``)."""
    current_batch().fail(str(name), str(message))
    return {"ok": True}


def batch_zip() -> dict:
    """All batch results in one zip (``NAME_labels.tif``, ... and ``batch_report.csv``);
    the batch is then cleared."""
    try:
        batch, S.batch = current_batch(), None
        n = len(batch.rows)
        data = batch.close()
        return {"ok": True, "data": typed_array(np.frombuffer(data, np.uint8)),
                "name": "piximi_batch.zip", "mime": "application/zip", "images": n}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


def batch_clear() -> dict:
    """Drop the batch being written."""
    S.batch = None
    return {"ok": True}

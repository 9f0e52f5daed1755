"""Page entry points for teaching a model and for model files (Pyodide).

The page calls these through ``web/worker.py``:

* :func:`mark_corrected`: keep the last segmentation's image and its (edited)
  labels as a corrected example;
* :func:`teach`: adapt a model to the corrected examples
  (:func:`piximi_py.teach.teach`) and add the result to the models the page
  can run, for the images that follow;
* :func:`download_model`: a taught (or loaded) model as a zip: the ONNX file,
  its bioimage.io ``rdf.yaml``, test tensors and a card saying what it was
  adapted on;
* :func:`load_model`: a model file of the user's, checked before it is used.

Nothing leaves the page: the examples, the fit and the files stay in the worker.
"""
from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np

from . import onnxfile
from .modelfile import MAX_MODEL_BYTES, ModelFileError
from .webexport import zip_files
from .webstate import S, Cancelled, error_result, model_bytes, segmentation_spec, spec_dict, typed_array

__all__ = ["mark_corrected", "teach", "download_model", "load_model", "MAX_CORRECTED"]

#: Corrected images kept at most (the oldest is dropped).
MAX_CORRECTED = 8
#: Side of the zero image a loaded model is tried on.
TEST_SIDE = 64


def mark_corrected(options: dict | None = None) -> dict:
    """Keep the last segmentation's image, with its labels as edited, as a corrected example.

    ``options``: name (default: the image's), labels (instead of the current
    ones: the image's corrected objects made elsewhere, row-major, with
    ``height`` and ``width`` of the image), remove (forget this image), clear
    (forget all). Returns the names kept.
    """
    options = options or {}
    try:
        corrected = S.corrected
        if options.get("clear"):
            corrected.clear()
        elif not S.last or "labels" not in S.last:
            raise ValueError("segment and correct an image first")
        else:
            name = options.get("name") or S.last.get("name") or "image"
            if options.get("remove"):
                corrected.pop(name, None)
            else:
                labels = S.last["labels"]
                if options.get("labels") is not None:
                    shape = (int(options.get("height", 0)), int(options.get("width", 0)))
                    given = np.asarray(options["labels"])
                    if shape != labels.shape or given.size != labels.size:
                        raise ValueError(f"corrected labels of {given.size} pixels ({shape[0]}x{shape[1]}) do not "
                                         f"fit the image ({labels.shape[0]}x{labels.shape[1]})")
                    labels = given.reshape(shape).astype(np.int32)
                if not int(labels.max()):
                    raise ValueError("the image has no objects: a corrected image needs at least one")
                name = _example_key(corrected, name, S.last["image"])
                corrected.pop(name, None)
                corrected[name] = {"image": S.last["image"], "labels": labels.copy(),
                                   "model": S.last.get("model")}
                while len(corrected) > MAX_CORRECTED:
                    corrected.pop(next(iter(corrected)))
        return {"ok": True, "corrected": list(corrected), "count": len(corrected)}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


def _example_key(corrected: dict, name: str, image: np.ndarray) -> str:
    """The key of ``image``'s corrected example: ``name``, whose example it replaces when it holds
    the same image, else (another plane of a stack, another image of that name) ``name (2)``,
    ``name (3)``... so that no example is lost to another."""
    key, k = name, 1
    while key in corrected and not (corrected[key]["image"].shape == image.shape
                                    and np.array_equal(corrected[key]["image"], image)):
        k += 1
        key = f"{name} ({k})"
    return key


def _register(spec, data: bytes, extra: dict) -> dict:
    S.specs = [s for s in S.specs if s.id != spec.id] + [spec]
    S.model_bytes[spec.id] = data
    S.raw[spec.id] = {**extra, "bytes": len(data)}
    for key in [k for k in S.sessions if k[0] == spec.id]:  # a reloaded file replaces its sessions
        S.sessions.pop(key)
    return spec_dict(spec)


async def teach(options: dict | None = None, progress=None) -> dict:
    """Adapt a model to the corrected images and make it available as a new model.

    ``options``: model (the one to adapt; default the model of the corrected
    images, else the default), budget_s (seconds for the fit, default 45).
    ``progress("teach", done, total)`` is called as it goes; when it returns
    True the teaching stops (:class:`Cancelled`) and nothing changes.

    Returns ``{"ok", "model": the new model's entry, "report", "diameter", "images"}``.
    """
    from .backends.ortweb import OrtWebBackend
    from .pipeline import prepare_input
    from .teach import adapted_model_bytes, check_teachable, spec_from_metadata
    from .teach import teach as adapt

    options = options or {}
    try:
        corrected = S.corrected
        if not corrected:
            raise ValueError("mark at least one corrected image first (correct the objects, then "
                             "'Mark as corrected')")
        first = next(iter(corrected.values()))
        spec = segmentation_spec(options.get("model") or first.get("model"))
        check_teachable(spec)  # before the model is fetched and opened
        data = await model_bytes(spec)
        try:
            head = onnxfile.find_head(data)
        except onnxfile.OnnxFileError as exc:
            raise ValueError(f"model {spec.id!r} cannot be taught: {exc}") from None

        def report(stage, done, total):
            if progress and progress(stage, done, total):
                raise Cancelled("teaching cancelled: the model is unchanged")

        report("teach", 0, 1)
        backend = await OrtWebBackend.create(onnxfile.with_outputs(data, [head.features]), "wasm")
        try:
            examples = [(name, prepare_input(c["image"], spec), c["labels"]) for name, c in corrected.items()]
            adaptation = await adapt(examples, spec, head, backend, budget_s=float(options.get("budget_s", 45.0)),
                                     progress=report)
        finally:
            await backend.close()
        new = adapted_model_bytes(data, head, adaptation, spec)
        S.taught += 1
        base = spec.id.split("+taught")[0]
        new_id = f"{base}+taught{S.taught}"
        taught = spec_from_metadata(dataclasses.replace(
            spec, id=new_id, name=f"{spec.name.split(' — taught')[0]} — taught on {len(examples)} image(s)",
            file=f"{new_id}.onnx", sha256="", bytes=len(new), default=False, metrics={}), onnxfile.read_metadata(new))
        entry = _register(taught, new, {"taught": adaptation.description(spec)})
        return {"ok": True, "model": entry, "report": adaptation.report, "diameter": adaptation.diameter,
                "images": adaptation.images, "postprocess": adaptation.postprocess}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, np.float32))
    return buf.getvalue()


def _rdf(spec, stem: str, described: dict) -> str:
    """A bioimage.io description (format 0.5) of a taught model; strings JSON-quoted (valid YAML)."""
    q = json.dumps
    post = spec.postprocess
    channels = "[nuclei]" if spec.channels == 1 else "[red, green, blue]"
    step = spec.input_multiple
    output_text = (f"background / interior / boundary probabilities; instances: seeds = interior > "
                   f"{post.get('seed_threshold')}, grown within 1 - background > "
                   f"{post.get('foreground_threshold')} (piximi_py.postprocess)")
    return "\n".join([
        "format_version: 0.5.3", "type: model", f"name: {q(spec.name)}",
        f"description: {q(spec.description)}",
        "authors:", "- name: the user of piximi-py who corrected the images",
        "license: BSD-3-Clause", "tags: [nuclei, instance-segmentation, onnx, 2d, piximi-py-taught]",
        "documentation: README.md",
        "inputs:", "- id: image", "  description: percentile-normalized image", "  axes:",
        "  - type: batch", f"  - {{type: channel, channel_names: {channels}}}",
        f"  - {{type: space, id: y, size: {{min: {step}, step: {step}}}}}",
        f"  - {{type: space, id: x, size: {{min: {step}, step: {step}}}}}",
        f"  test_tensor: {{source: {q(stem + '.test_input.npy')}}}",
        "  data: {type: float32}",
        "  preprocessing:",
        f"  - {{id: scale_range, kwargs: {{axes: [y, x], min_percentile: {spec.normalize.get('low', 1.0)}, "
        f"max_percentile: {spec.normalize.get('high', 99.8)}}}}}",
        "outputs:", "- id: probabilities",
        "  description: " + q(output_text),
        "  axes:", "  - type: batch", "  - {type: channel, channel_names: [background, interior, boundary]}",
        "  - {type: space, id: y, size: {tensor_id: image, axis_id: y}}",
        "  - {type: space, id: x, size: {tensor_id: image, axis_id: x}}",
        f"  test_tensor: {{source: {q(stem + '.test_output.npy')}}}",
        "weights:", f"  onnx: {{source: {q(stem + '.onnx')}, opset_version: 17}}",
        "config:", f"  piximi: {q(described)}", ""])


def download_stem(spec) -> str:
    """The name a model's downloaded files share: its file's name without ``.onnx``, with
    characters that file systems or archives refuse (``:`` of a loaded file's id, ``/``, ...) as
    ``_``."""
    name = spec.file.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name[:-5] if name.endswith(".onnx") else name
    return re.sub(r"[^\w.+-]", "_", stem.removeprefix("file:")).strip("._") or "model"


def _card(spec, described: dict, stem: str | None = None) -> str:
    if "report" not in described:  # a shipped or loaded model, not taught here
        return "\n".join([f"# {spec.name}", "", spec.description, "",
                          f"Thresholds (foreground / seed): {spec.postprocess.get('foreground_threshold')} / "
                          f"{spec.postprocess.get('seed_threshold')}; model diameter {spec.diameter or 'none'} px.", ""])
    report = described.get("report", {})
    file = f"{stem or download_stem(spec)}.onnx"  # as the download names it
    lines = [f"# {spec.name}", "",
             f"Adapted in the page (piximi-py \"Teach\") from `{described.get('adapted_from')}` on "
             f"{len(described.get('images', []))} corrected image(s): "
             + ", ".join(f"`{i}`" for i in described.get("images", [])) + ".", "",
             "| | |", "|---|---|",
             f"| typical object diameter of those images | {described.get('diameter')} px (used for new images whose objects measure within 1.5x of it) |",
             f"| thresholds (foreground / seed) | {spec.postprocess.get('foreground_threshold')} / "
             f"{spec.postprocess.get('seed_threshold')} |",
             f"| last layer refitted | {'yes' if report.get('head_refitted') else 'no'} |"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in report.items() if k.startswith("ap50")]
    lines += ["", "AP@0.5 figures are on the corrected images themselves (\"held out\": each scored by what "
              "the others taught), not on other images.", "",
              "Run it again: in the page, 'Load model…'; in Python, "
              "`piximi_py.segment(image, model=\"" + file + "\")`; "
              "on the command line, `python -m piximi_py segment IMAGE --out RESULTS --model " + file + "`.", ""]
    return "\n".join(lines)


async def download_model(model_id: str | None = None) -> dict:
    """A zip of a model: ``{stem}.onnx``, ``rdf.yaml``, ``README.md`` and test tensors.

    Returns ``{"ok", "data": Uint8Array, "filename"}``.
    """
    from .backends.ortweb import OrtWebBackend

    try:
        spec = segmentation_spec(model_id)
        data = await model_bytes(spec)
        stem = download_stem(spec)
        described = S.raw.get(spec.id, {}).get("taught") or {"adapted_from": spec.id, "images": []}
        side = max(TEST_SIDE, spec.input_multiple)
        source = next(iter(S.corrected.values()), None)
        if source is not None:
            from .pipeline import prepare_input

            x = prepare_input(source["image"], spec)[:, :side, :side]
            x = np.pad(x, [(0, 0), (0, side - x.shape[1]), (0, side - x.shape[2])], mode="reflect")[None]
        else:
            x = np.random.default_rng(0).random((1, spec.channels, side, side), np.float32)
        backend = await OrtWebBackend.create(data, "wasm")
        try:
            y = await backend.run(x)
        finally:
            await backend.close()
        files = {f"{stem}.onnx": data, "rdf.yaml": _rdf(spec, stem, described).encode(),
                 "README.md": _card(spec, described, stem).encode(),
                 f"{stem}.test_input.npy": _npy(x), f"{stem}.test_output.npy": _npy(y)}
        return {"ok": True, "data": typed_array(np.frombuffer(zip_files(files), np.uint8)), "filename": f"{stem}.zip"}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)


async def load_model(data: bytes, options: dict | None = None) -> dict:
    """Check a model file of the user's and add it to the models the page can run.

    The file must look like the shipped models (one float image input, a
    ``(batch, 3, H, W)`` probability output, see :mod:`piximi_py.modelfile`):
    it is refused, with what does not fit, when it is empty, too large, not
    ONNX, or fails or gives the wrong shape on a test image. Tiling,
    normalization and thresholds follow the default model, except what a
    taught model records (:func:`piximi_py.teach.spec_from_metadata`).

    ``options``: filename. Returns ``{"ok", "model": its entry}``.
    """
    from .backends.ortweb import OrtWebBackend
    from .teach import spec_from_metadata

    options = options or {}
    try:
        data = bytes(data)
        name = str(options.get("filename") or "model.onnx")
        if not data:
            raise ModelFileError(f"model file '{name}' is empty (0 bytes)")
        if len(data) > MAX_MODEL_BYTES:
            raise ModelFileError(f"model file '{name}' is {len(data) / 2**20:.0f} MiB, more than the "
                                 f"{MAX_MODEL_BYTES / 2**20:.0f} MiB supported")
        try:
            metadata = onnxfile.read_metadata(data)
        except onnxfile.OnnxFileError as exc:
            raise ModelFileError(f"'{name}' is not a readable ONNX model ({exc})") from None
        try:
            backend = await OrtWebBackend.create(data, "wasm")
        except Exception as exc:  # noqa: BLE001 - onnxruntime-web's own errors
            raise ModelFileError(f"'{name}' is not a readable ONNX model "
                                 f"({str(exc).splitlines()[0][:200]})") from None
        template = segmentation_spec(None)
        side = max(TEST_SIDE, template.input_multiple)
        try:
            if len(backend.session.inputNames) != 1:
                raise ModelFileError(f"'{name}' has {len(backend.session.inputNames)} inputs; a segmentation "
                                     "model has one image input")
            channels, shape = None, None
            for c in (1, 3):
                try:
                    shape = (await backend.run(np.zeros((1, c, side, side), np.float32))).shape
                    channels = c
                    break
                except Exception:  # noqa: BLE001 - wrong channel count: try the other
                    continue
        finally:
            await backend.close()
        if channels is None:
            raise ModelFileError(f"'{name}' fails on a {side}x{side} test image with 1 or 3 channels")
        if shape != (1, 3, side, side):
            raise ModelFileError(f"'{name}' turns a {side}x{side} image into {shape}; expected "
                                 f"(1, 3, {side}, {side}): background, interior and boundary probabilities")
        model_id = f"file:{name}"
        spec = dataclasses.replace(
            template, id=model_id, name=f"{name} (from a file)", file=name, sha256="", bytes=len(data),
            channels=channels, default=False, metrics={}, latency_ms_512=0.0,
            description=f"loaded from {name}; tiling, normalization, thresholds and diameter as {template.id}.")
        spec = spec_from_metadata(spec, metadata)
        return {"ok": True, "model": _register(spec, data, {"loaded_from": name})}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)

"""Page entry point for editing the current labels, with undo and redo (Pyodide).

The page calls :func:`edit` through ``web/worker.py``; the operations are
:mod:`piximi_py.edit`'s, applied to the labels of the last segmentation
(``webstate.S.last``). Every change, a SAM object accepted and "refine all"
included (:func:`commit`), is kept as the rectangle it changed, before and after, so
undo and redo cost the size of the edit, not of the image.
"""
from __future__ import annotations

import numpy as np

from . import edit as E
from .webstate import S, error_result, intensity, table_js, typed_array

__all__ = ["edit", "commit", "OPERATIONS", "MAX_UNDO"]

#: Edits kept for undo per image.
MAX_UNDO = 50
OPERATIONS = ("delete", "merge", "split", "paint", "erase", "polygon", "undo", "redo")


class _History:
    def __init__(self, owner):
        self.owner, self.undo, self.redo = owner, [], []


def _history() -> _History:
    h = S.edit_history
    if h is None or h.owner is not S.last:  # a new segmentation starts a new history
        h = S.edit_history = _History(S.last)
    return h


def _change(before: np.ndarray, after: np.ndarray) -> dict | None:
    """The rectangle where ``after`` differs from ``before``, with both contents."""
    if before.dtype != after.dtype:
        return {"whole": (before, after)}
    diff = before != after
    if not diff.any():
        return None
    rows, cols = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    window = (slice(y0, y1 + 1), slice(x0, x1 + 1))
    return {"bbox": [x0, y0, x1, y1], "before": before[window].copy(), "after": after[window].copy()}


def _result(labels: np.ndarray, change: dict | None, whole: bool = False) -> dict:
    """The page's result for new current ``labels`` after ``change`` (None: nothing changed):
    the changed rectangle, or all of them when ``whole`` or when the dtype changed."""
    out = {"ok": True, "changed": change is not None, **measured(labels), "image_id": S.last.get("image_id"),
           "undo": len(_history().undo), "redo": len(_history().redo)}
    if whole or (change is not None and "whole" in change):
        out["labels"] = typed_array(labels)
    elif change is not None:
        x0, y0, x1, y1 = change["bbox"]
        out["patch"] = {"bbox": change["bbox"], "labels": typed_array(labels[y0:y1 + 1, x0:x1 + 1])}
    return out


def measured(labels: np.ndarray) -> dict:
    """Store new labels as the current result; their measurements as JS."""
    from .measure import link_nuclei, nucleus_columns, regionprops_table, summarize

    table = regionprops_table(labels, intensity(S.last["image"]), pixel_size=S.last.get("pixel_size"))
    if S.last.get("nuclei") is not None:  # edited cells keep their links to the nuclei
        table = nucleus_columns(table, labels, S.last["nuclei"])
        S.last["nucleus_of"] = link_nuclei(labels, S.last["nuclei"])[0]
    S.last["labels"], S.last["table"] = labels, table
    return {"count": int(len(table["label"])), "measurements": table_js(table),
            "summary": summarize(table)}


def commit(before: np.ndarray, after: np.ndarray, *, whole: bool = False) -> dict:
    """Make ``after`` the current labels and remember the change for undo; the page's result
    (``patch`` of the changed rectangle, or all ``labels`` when ``whole`` or their dtype grew)."""
    h = _history()
    change = _change(before, after)
    if change is not None:
        h.undo.append(change)
        del h.undo[:-MAX_UNDO]
        h.redo.clear()
    return _result(after, change, whole)


def _step(backward: bool) -> dict:
    h = _history()
    stack, other = (h.undo, h.redo) if backward else (h.redo, h.undo)
    if not stack:
        raise ValueError(f"nothing to {'undo' if backward else 'redo'}")
    change = stack.pop()
    other.append(change)
    if "whole" in change:
        return _result(change["whole"][0 if backward else 1], change)
    x0, y0, x1, y1 = change["bbox"]
    new = S.last["labels"].copy()
    new[y0:y1 + 1, x0:x1 + 1] = change["before" if backward else "after"]
    return _result(new, change)


def _label_on_line(labels: np.ndarray, start, end) -> int:
    """The object a line drawn across it covers most."""
    n = int(max(abs(end[0] - start[0]), abs(end[1] - start[1]))) + 1
    xs, ys = np.linspace(start[0], end[0], n), np.linspace(start[1], end[1], n)
    hits = [E.label_at(labels, x, y) for x, y in zip(xs, ys)]
    hits = [h for h in hits if h]
    if not hits:
        raise ValueError("the line crosses no object: draw it across the object to split")
    return int(np.bincount(hits).argmax())


def edit(op: str, options: dict | None = None) -> dict:
    """Apply one edit to the current labels.

    ``op`` and its ``options`` (coordinates are image pixels, ``(x, y)``):

    * ``delete``: ``labels`` (ids), or ``box`` ``[x0, y0, x1, y1]`` (objects mostly inside it);
    * ``merge``: ``labels`` (two or more ids) -> one object;
    * ``split``: ``start``, ``end`` of a line across an object (``label``: which one,
      default the object the line covers most), ``width`` (px, default 1);
    * ``paint``: ``points`` of a brush stroke, ``radius`` (px, default 3), ``label``
      (default: a new object), ``overwrite`` (default false: background only);
    * ``erase``: ``points``, ``radius``;
    * ``polygon``: ``points`` (three or more vertices) -> a new object;
    * ``undo`` / ``redo``.

    Returns ``{"ok", "changed", "count", "measurements", "summary", "undo", "redo",
    "patch" | "labels"}`` (``label``: the new object's id for ``polygon``).
    """
    options = options or {}
    try:
        if not S.last or "labels" not in S.last:
            raise ValueError("segment an image first: there are no objects to edit")
        if op not in OPERATIONS:
            raise ValueError(f"unknown edit {op!r}: use one of {', '.join(OPERATIONS)}")
        if op in ("undo", "redo"):
            return _step(op == "undo")
        labels = S.last["labels"]
        extra = {}
        if op == "delete":
            ids = options.get("labels")
            if ids is None and options.get("box") is not None:
                ids = E.objects_in_box(labels, options["box"])
            if not ids:
                raise ValueError("nothing to delete: give object ids or a box around objects")
            new = E.delete_objects(labels, ids)
        elif op == "merge":
            new = E.merge_objects(labels, options.get("labels") or [])
        elif op == "split":
            start, end = options.get("start"), options.get("end")
            if start is None or end is None:
                raise ValueError("split needs the line's start and end points")
            label = options.get("label") or _label_on_line(labels, start, end)
            new = E.split_object(labels, label, start, end, width=float(options.get("width", 1)))
        elif op in ("paint", "erase"):
            points = options.get("points")
            if not points:
                raise ValueError(f"{op} needs the brush stroke's points")
            label = 0 if op == "erase" else int(options.get("label") or int(labels.max()) + 1)
            new = E.paint(labels, points, float(options.get("radius", 3)), label,
                          overwrite=bool(options.get("overwrite", False)))
            if op == "paint":
                extra["label"] = label
        else:  # polygon
            mask = E.polygon_mask(labels.shape, options.get("points") or [])
            new, extra["label"], extra["removed"] = E.add_object(labels, mask)
        return {**commit(labels, new), **extra}
    except Exception as exc:  # noqa: BLE001
        return error_result(exc)

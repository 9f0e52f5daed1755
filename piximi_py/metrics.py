"""Instance-segmentation metrics (numpy only, so they also run in the page).

The definitions follow the 2018 Data Science Bowl: a predicted object matches a
ground-truth object when their intersection over union exceeds a threshold; at
thresholds >= 0.5 a match is necessarily unique.
"""
from __future__ import annotations

import numpy as np

__all__ = ["iou_matrix", "match_counts", "average_precision", "evaluate_instances"]

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def _relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, int]:
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        # no background pixel: keep 0 reserved anyway
        inverse = inverse + 1
        ids = np.concatenate([[0], ids])
    return inverse.reshape(labels.shape), len(ids) - 1


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Intersection over union of every true object with every predicted one.

    Parameters
    ----------
    true, pred : ndarray of int
        Label images of the same shape, 0 = background.

    Returns
    -------
    iou : ndarray of float, shape (n_true, n_pred)
    """
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: {true.shape} vs {pred.shape}")
    t, n_true = _relabel_sequential(np.asarray(true))
    p, n_pred = _relabel_sequential(np.asarray(pred))
    overlap = np.bincount(  # np.intp: bincount's index type (32 bits in the page)
        (t.ravel().astype(np.intp) * (n_pred + 1) + p.ravel()),
        minlength=(n_true + 1) * (n_pred + 1),
    ).reshape(n_true + 1, n_pred + 1)
    area_true = overlap.sum(axis=1, keepdims=True)
    area_pred = overlap.sum(axis=0, keepdims=True)
    union = area_true + area_pred - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, overlap / union, 0.0)
    return iou[1:, 1:]


def match_counts(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """True positives, false positives and false negatives at ``threshold``.

    Uses a greedy one-to-one assignment by decreasing IoU, which is optimal
    for thresholds >= 0.5 because such matches are unique.
    """
    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        return 0, n_pred, n_true
    ti, pi = np.nonzero(iou > threshold)
    order = np.argsort(-iou[ti, pi], kind="stable")
    used_t = np.zeros(n_true, bool)
    used_p = np.zeros(n_pred, bool)
    tp = 0
    for a, b in zip(ti[order], pi[order]):
        if not used_t[a] and not used_p[b]:
            used_t[a] = used_p[b] = True
            tp += 1
    return tp, n_pred - tp, n_true - tp


def average_precision(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """DSB average precision TP / (TP + FP + FN) at one IoU threshold."""
    tp, fp, fn = match_counts(iou_matrix(true, pred), threshold)
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def evaluate_instances(true: np.ndarray, pred: np.ndarray,
                       thresholds=DSB_THRESHOLDS) -> dict:
    """AP@0.5, mean AP over ``thresholds`` and F1@0.5 for one image.

    Returns
    -------
    dict with keys ``ap50``, ``map``, ``f1``, ``tp``, ``fp``, ``fn`` (the last
    three at IoU 0.5), ``n_true`` and ``n_pred``.
    """
    iou = iou_matrix(true, pred)
    aps = []
    for t in thresholds:
        tp, fp, fn = match_counts(iou, t)
        aps.append(1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn))
    tp, fp, fn = match_counts(iou, 0.5)
    f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"ap50": aps[0], "map": float(np.mean(aps)), "f1": f1,
            "tp": tp, "fp": fp, "fn": fn,
            "n_true": iou.shape[0], "n_pred": iou.shape[1]}

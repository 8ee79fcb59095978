"""Table 1 metrics: per-class F1, macro-F1 and homework-vs-none F1; for model v2 also binary
precision/recall (review output, clinical subsets) and the out-of-fold decision rule.

Decision rule (live events): a microdialogue is an event of class c when c is its top class, c is not
``none`` and p(c) >= the threshold of c. Thresholds are chosen to favour precision (F-beta with beta < 1:
a wrong nudge costs more than a late one) and, for reported figures, out of fold (``cross_fitted``):
fold k's items are decided by thresholds chosen on the other folds' out-of-fold probabilities only.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score

from homework_monitor.contract import CLASSES
from homework_monitor.stream.offline import session_metrics

__all__ = ["binary_metrics", "choose_class_thresholds", "choose_event_threshold", "classification_metrics",
           "cross_fitted", "event_labels", "homework_curve", "session_metrics"]

NONE_IDX = CLASSES.index("none")
THRESHOLD_GRID = np.round(np.arange(0.3, 0.96, 0.05), 2)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    if len(y_true) == 0:  # an empty subset (no clinical item in a fixture) scores 0, not an error
        return {**{f"f1_{c}": 0.0 for c in CLASSES}, "macro_f1": 0.0, "homework_f1": 0.0}
    per = f1_score(y_true, y_pred, labels=list(range(len(CLASSES))), average=None, zero_division=0)
    out = {f"f1_{c}": float(v) for c, v in zip(CLASSES, per)}
    out["macro_f1"] = float(per.mean())
    out["homework_f1"] = float(f1_score(y_true != NONE_IDX, y_pred != NONE_IDX, zero_division=0))
    return out


def f_beta(precision: float, recall: float, beta: float) -> float:
    b2 = beta * beta
    den = b2 * precision + recall
    return float((1 + b2) * precision * recall / den) if den > 0 else 0.0


def binary_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a yes/no decision (0 where undefined), with the counts behind them."""
    m = weighted_binary_metrics(truth, pred, np.ones(len(truth)))
    return {"precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "n": m["n"],
            "positives": int(m["positives"]), "predicted": int(m["predicted"])}


def weighted_binary_metrics(truth: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 over a population sampled by strata: each item counts ``weight`` times
    (its stratum's pool / drawn), with the estimated positives and predictions."""
    truth, pred, w = np.asarray(truth, bool), np.asarray(pred, bool), np.asarray(weight, float)
    tp, predicted, positives = float(w[truth & pred].sum()), float(w[pred].sum()), float(w[truth].sum())
    p = tp / predicted if predicted else 0.0
    r = tp / positives if positives else 0.0
    return {"precision": p, "recall": r, "f1": f_beta(p, r, 1.0), "n": int(len(truth)),
            "population": float(w.sum()), "positives": positives, "predicted": predicted}


def event_labels(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The decision rule: top class if it is not ``none`` and reaches its class threshold, else none."""
    top = probs.argmax(1)
    keep = (top != NONE_IDX) & (probs[np.arange(len(top)), top] >= np.asarray(thresholds)[top])
    return np.where(keep, top, NONE_IDX)


def fmt3(x: float) -> str:
    """A figure as the reports print it."""
    return f"{x:.3f}"


def fmt_prf(m: dict) -> str:
    """Precision / recall / F1 of a ``binary_metrics`` result, as the reports print them."""
    return f"{fmt3(m['precision'])} / {fmt3(m['recall'])} / {fmt3(m['f1'])}"


def fires(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Where the served rule raises a live event: top class not ``none`` with p ≥ ``threshold``."""
    return event_labels(probs, _same(threshold)) != NONE_IDX


def item_scores(y: np.ndarray, probs: np.ndarray, clinical: np.ndarray, threshold: float) -> dict:
    """Labelled items: 5-class and homework-vs-none at argmax, and live events at ``threshold``; all items
    and the clinical corpora's."""
    pred, event = probs.argmax(1), fires(probs, threshold)
    return {"pooled": classification_metrics(y, pred), "clinical": classification_metrics(y[clinical], pred[clinical]),
            "homework": binary_metrics(y != NONE_IDX, pred != NONE_IDX),
            "homework_clinical": binary_metrics(y[clinical] != NONE_IDX, pred[clinical] != NONE_IDX),
            "events_at_threshold": binary_metrics(y != NONE_IDX, event),
            "events_at_threshold_clinical": binary_metrics(y[clinical] != NONE_IDX, event[clinical])}


def choose_class_thresholds(probs: np.ndarray, y: np.ndarray, beta: float = 0.5,
                            grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per-class thresholds maximising each homework class's F-beta (one-vs-rest) under the rule.

    Classes are independent under the rule (an item's event class is its top class), so each is chosen
    alone; ties go to the higher threshold (precision first). ``none`` keeps 0."""
    top = probs.argmax(1)
    out = np.zeros(len(CLASSES))
    for c in range(len(CLASSES)):
        if c == NONE_IDX:
            continue
        truth = y == c
        best = (-1.0, grid[0])
        for t in grid:
            m = binary_metrics(truth, (top == c) & (probs[:, c] >= t))
            score = f_beta(m["precision"], m["recall"], beta)
            if score >= best[0]:
                best = (score, t)
        out[c] = best[1]
    return out


def choose_event_threshold(probs: np.ndarray, y: np.ndarray, beta: float = 0.5,
                           grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """One threshold for every homework class, maximising homework-vs-none F-beta (ties: higher)."""
    best = (-1.0, grid[0])
    for t in grid:
        m = binary_metrics(y != NONE_IDX, event_labels(probs, _same(t)) != NONE_IDX)
        score = f_beta(m["precision"], m["recall"], beta)
        if score >= best[0]:
            best = (score, t)
    return _same(best[1])


def _same(t: float) -> np.ndarray:
    out = np.full(len(CLASSES), float(t))
    out[NONE_IDX] = 0.0
    return out


def cross_fitted(probs: np.ndarray, y: np.ndarray, folds: np.ndarray,
                 choose: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, dict[int, list]]:
    """Event labels for every item, fold k's decided by thresholds ``choose``-n on the other folds only;
    returns them and each fold's thresholds."""
    pred = np.full(len(y), NONE_IDX)
    chosen = {}
    for k in np.unique(folds):
        test = folds == k
        thr = choose(probs[~test], y[~test])
        pred[test] = event_labels(probs[test], thr)
        chosen[int(k)] = [round(float(t), 2) for t in thr]
    return pred, chosen


def fires_curve(truth: np.ndarray, probs: np.ndarray, thresholds: Sequence[float]) -> list[dict]:
    """Live events (``fires``) against ``truth`` at each single event threshold."""
    return [{"threshold": float(t), **binary_metrics(truth, fires(probs, t))} for t in thresholds]


def paired_group_bootstrap(truth: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, groups: np.ndarray,
                           n: int = 2000, seed: int = 0, level: float = 0.90) -> dict:
    """Intervals for the difference b − a in precision and recall of two yes/no decisions on the same
    items, resampling whole groups (sessions) with replacement: the turns of one session are not
    independent, and both decisions see the same resample (paired). Resamples where either decision
    predicts nothing leave precision out (None where that is every resample)."""
    truth, a, b = np.asarray(truth, bool), np.asarray(pred_a, bool), np.asarray(pred_b, bool)
    _, g = np.unique(groups, return_inverse=True)
    per_group = np.stack([np.bincount(g, weights=x.astype(float), minlength=g.max() + 1)
                          for x in (truth, a, truth & a, b, truth & b)])  # [5, groups]
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, per_group.shape[1], per_group.shape[1]),
                                   minlength=per_group.shape[1]) for _ in range(n)])  # [n, groups]
    pos, fired_a, tp_a, fired_b, tp_b = (counts @ per_group.T).T  # each a sum per resample
    with np.errstate(invalid="ignore", divide="ignore"):
        d_precision = tp_b / fired_b - tp_a / fired_a
        d_recall = tp_b / pos - tp_a / pos
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def interval(d: np.ndarray) -> list[float] | None:  # None: undefined on every resample (never fires)
        return [float(v) for v in np.nanpercentile(d, [lo, hi])] if np.isfinite(d).any() else None
    return {"precision": interval(d_precision), "recall": interval(d_recall), "resamples": n, "level": level}


def homework_curve(probs: np.ndarray, y: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> list[dict]:
    """Homework-vs-none precision/recall/F1 at each single event threshold."""
    return [{k: v for k, v in point.items() if k in ("threshold", "precision", "recall", "f1")}
            for point in fires_curve(y != NONE_IDX, probs, grid)]

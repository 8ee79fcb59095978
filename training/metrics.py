"""Table 1 metrics: per-class F1, macro-F1 and homework-vs-none F1."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from stream.schemas import CLASSES

NONE_IDX = CLASSES.index("none")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    per = f1_score(y_true, y_pred, labels=list(range(len(CLASSES))), average=None, zero_division=0)
    out = {f"f1_{c}": float(v) for c, v in zip(CLASSES, per)}
    out["macro_f1"] = float(per.mean())
    out["homework_f1"] = float(f1_score(y_true != NONE_IDX, y_pred != NONE_IDX, zero_division=0))
    return out


def session_metrics(truth: dict[str, bool], predicted: dict[str, bool]) -> dict[str, float]:
    ids = [s for s, v in truth.items() if v is not None and s in predicted]
    t = np.array([bool(truth[s]) for s in ids], dtype=bool)
    p = np.array([bool(predicted[s]) for s in ids], dtype=bool)
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    return {"sessions": len(ids), "accuracy": float((t == p).mean()) if ids else 0.0,
            "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0}

"""Table 1 metrics: per-class F1, macro-F1 and homework-vs-none F1."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from homework_monitor.contract import CLASSES
from homework_monitor.stream.offline import session_metrics

__all__ = ["classification_metrics", "session_metrics"]

NONE_IDX = CLASSES.index("none")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    per = f1_score(y_true, y_pred, labels=list(range(len(CLASSES))), average=None, zero_division=0)
    out = {f"f1_{c}": float(v) for c, v in zip(CLASSES, per)}
    out["macro_f1"] = float(per.mean())
    out["homework_f1"] = float(f1_score(y_true != NONE_IDX, y_pred != NONE_IDX, zero_division=0))
    return out

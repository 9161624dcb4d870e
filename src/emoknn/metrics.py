"""The paper's metrics: WA (overall accuracy) and UA (mean of per-class recalls)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emoknn.errors import ConfigError


def _as_label_arrays(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ConfigError(
            f"y_true and y_pred must be 1-D and of equal length, got {y_true.shape} and "
            f"{y_pred.shape}"
        )
    if y_true.size == 0:
        raise ConfigError("cannot compute accuracy of zero predictions")
    return y_true, y_pred


def weighted_accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """WA = correct / total (every utterance weighs the same)."""
    y_true, y_pred = _as_label_arrays(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def unweighted_accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """UA = mean over the classes present in y_true of that class's recall (every class weighs
    the same, so a small class counts as much as a large one)."""
    y_true, y_pred = _as_label_arrays(y_true, y_pred)
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): rows are true classes, columns predicted."""
    y_true, y_pred = _as_label_arrays(y_true, y_pred)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(int), y_pred.astype(int)), 1)
    return matrix

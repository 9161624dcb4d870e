"""The paper's metrics: WA (overall accuracy) and UA (mean of per-class recalls); and for
dimensional emotion (arousal, valence, dominance): CCC, Pearson's r and MAE.

Constant input: CCC and Pearson's r need variance. With population moments, CCC =
2·cov(x, y) / (σx² + σy² + (μx − μy)²), so one constant input gives exactly 0 (cov = 0); when both
are constant the ratio is 0/0 or 0/d, and is defined here as 0 too (no agreement in variation can be
measured). Pearson's r of a constant input is likewise 0. Neither ever returns NaN.
"""

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


def _as_value_arrays(x: Sequence | np.ndarray, y: Sequence | np.ndarray) -> tuple:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ConfigError(f"x and y must be 1-D and of equal length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ConfigError("cannot compare zero values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("x and y must be finite (no NaN or infinite values)")
    return x, y


def ccc(x: Sequence | np.ndarray, y: Sequence | np.ndarray) -> float:
    """Concordance correlation coefficient (Lin, 1989), with population moments (ddof = 0):

        CCC = 2·ρ·σx·σy / (σx² + σy² + (μx − μy)²) = 2·cov(x, y) / (σx² + σy² + (μx − μy)²)

    1 = perfect agreement, 0 = none, −1 = perfect reversal. Penalises bias and scale errors that
    Pearson's r ignores. A constant input gives 0 (see the module docstring); never NaN.
    """
    x, y = _as_value_arrays(x, y)
    return float(ccc_columns(x[:, None], y[:, None])[0])


def ccc_columns(x: np.ndarray, y: np.ndarray, axis: int = -2) -> np.ndarray:
    """CCC of each column of x against y along `axis` (default: rows are samples, (..., N, A) →
    (..., A)); broadcasts, so a whole tuning grid is scored at once. Constant input gives 0."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mean_x, mean_y = x.mean(axis=axis, keepdims=True), y.mean(axis=axis, keepdims=True)
    dx, dy = x - mean_x, y - mean_y
    covariance = (dx * dy).mean(axis=axis)
    denominator = (
        (dx**2).mean(axis=axis)
        + (dy**2).mean(axis=axis)
        + (np.squeeze(mean_x, axis) - np.squeeze(mean_y, axis)) ** 2
    )
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, 2.0 * covariance / safe, 0.0)


def pearson_r(x: Sequence | np.ndarray, y: Sequence | np.ndarray) -> float:
    """Pearson's correlation coefficient; 0 when either input is constant."""
    x, y = _as_value_arrays(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    scale = np.sqrt((dx**2).sum() * (dy**2).sum())
    return float((dx * dy).sum() / scale) if scale > 0 else 0.0


def mean_absolute_error(x: Sequence | np.ndarray, y: Sequence | np.ndarray) -> float:
    """MAE = mean |x − y| (in the values' own scale)."""
    x, y = _as_value_arrays(x, y)
    return float(np.abs(x - y).mean())


def regression_scores(
    y_true: np.ndarray, y_pred: np.ndarray, attributes: Sequence[str]
) -> dict[str, dict[str, float]]:
    """{attribute: {ccc, pearson, mae}} for (N, A) arrays, plus "mean" over the attributes."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != len(attributes):
        raise ConfigError(
            f"expected (N, {len(attributes)}) arrays, got {y_true.shape} and {y_pred.shape}"
        )
    scores = {
        name: {
            "ccc": ccc(y_true[:, a], y_pred[:, a]),
            "pearson": pearson_r(y_true[:, a], y_pred[:, a]),
            "mae": mean_absolute_error(y_true[:, a], y_pred[:, a]),
        }
        for a, name in enumerate(attributes)
    }
    scores["mean"] = {
        metric: float(np.mean([scores[name][metric] for name in attributes]))
        for metric in ("ccc", "pearson", "mae")
    }
    return scores


ECE_BINS = 10


def expected_calibration_error(
    probabilities: np.ndarray, y_true: Sequence | np.ndarray, bins: int = ECE_BINS
) -> float:
    """Expected calibration error of class probabilities (Guo et al., 2017), with `bins`
    equal-width confidence bins over [0, 1]:

        conf_i = max_y p_i(y),   ŷ_i = argmax_y p_i(y)
        B_b    = {i : conf_i ∈ ((b − 1)/M, b/M]}  for b = 1..M (conf_i = 0 joins B_1)
        ECE    = Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)|

    acc(B_b) is the fraction of B_b with ŷ_i = y_i, conf(B_b) the mean conf_i of B_b; empty bins
    add nothing. 0 = the confidence of each bin equals its accuracy; at most 1. Ties in the argmax
    go to the first class (as `numpy.argmax`, like the predictions).

    Args:
        probabilities: (N, C) rows summing to 1.
        y_true: (N,) class indices.
        bins: M ≥ 1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true)
    if probabilities.ndim != 2 or y_true.shape != (probabilities.shape[0],):
        raise ConfigError(f"expected probabilities (N, C) and labels (N,), got "
                          f"{probabilities.shape} and {y_true.shape}")  # fmt: skip
    if y_true.size == 0:
        raise ConfigError("cannot compute the calibration error of zero predictions")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ConfigError(f"bins must be a whole number ≥ 1, got {bins!r}")
    if not np.isfinite(probabilities).all():
        raise ConfigError("probabilities must be finite")
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(np.float64)
    # bin b (0-based) holds (b/M, (b + 1)/M]; ceil(conf·M) − 1, with conf = 0 in the first bin
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)  # Σ (acc − conf)
    return float(np.abs(gap).sum() / len(y_true))

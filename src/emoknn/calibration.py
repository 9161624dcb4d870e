"""Probabilities that mean what they say: one temperature for the model, one for the interpolation.

A head trained to a low loss is overconfident on speakers it has not heard ("angry 100 %" for a
clip it gets wrong). Temperature scaling (Guo et al., 2017) fixes the scale without touching the
decision: with p the probabilities of a stage,

    p_T(y | x) = softmax(log p(y | x) / T) = p(y | x)^(1/T) / Σ_c p(c | x)^(1/T)
    T* = argmin_{T ∈ [T_MIN, T_MAX]}  −(1/n) Σ_i log p_T(y_i | x_i)          (NLL)

over labelled validation clips, never the test speaker's. For the model, log p = logits −
logsumexp(logits), so this is the usual logit temperature; for the interpolation
p = α·p_knn + (1 − α)·p_model it is the same power transform of the mixture. Dividing log p by
T > 0 keeps every class's rank, so the predicted label (UA, WA) never changes: only how sure the
probabilities say it is. T > 1 softens overconfident probabilities, T < 1 sharpens.

Which clips fit it: the same ones that chose k, α and T of the kNN (`emoknn.speaker_tuning`): the
validation speaker scored by the final model and, with `--knn-tuning speakers`, each inner fold's
training speakers scored by a head trained without them. The interpolation's temperature belongs
to the (k, α, T) it was fitted with (`fitted_for`): with other kNN settings it is not applied.

Probabilities of exactly 0 (p_knn of a label no neighbour has) are floored at PROBABILITY_FLOOR
before the log, so a wrong label at 0 costs a finite NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from emoknn.errors import ConfigError
from emoknn.knn import KnnSettings, TuningQueries, interpolate, knn_weights

T_MIN, T_MAX = 0.05, 20.0  # the temperatures searched (log scale)
PROBABILITY_FLOOR = 1e-12


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) over the last axis: same argmax, sharper (T < 1) or softer (T > 1)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"a calibration temperature must be a positive number, got {temperature}")
    p = np.asarray(probabilities, dtype=np.float64)
    if temperature == 1.0:
        return p
    scaled = np.log(np.maximum(p, PROBABILITY_FLOOR)) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """−(1/n) Σ_i log p_i(y_i), with p floored at PROBABILITY_FLOOR."""
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    return float(-np.log(np.maximum(p[np.arange(len(labels)), labels], PROBABILITY_FLOOR)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """T* of the module docstring: the temperature in [T_MIN, T_MAX] with the lowest NLL of
    `apply_temperature(probabilities, T)` on these labelled clips (bounded Brent search over
    log T; the NLL of a temperature-scaled softmax is smooth and has one minimum in log T)."""
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if p.ndim != 2 or labels.shape != (len(p),) or len(p) == 0:
        raise ConfigError(f"need probabilities (N, C) and labels (N,) of N ≥ 1 clips, got "
                          f"{p.shape} and {labels.shape}")  # fmt: skip
    log_p = np.log(np.maximum(p, PROBABILITY_FLOOR))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        scaled = log_p / math.exp(log_t)
        top = scaled.max(axis=1)
        log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float((log_norm - scaled[rows, labels]).mean())

    found = minimize_scalar(nll, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                            options={"xatol": 1e-4})  # fmt: skip
    best = float(found.x)
    # The bounded search never evaluates T = 1 itself: keep it when it is as good.
    return 1.0 if nll(0.0) <= nll(best) else math.exp(best)


@dataclass
class Calibration:
    """The two temperatures of a model folder (`calibration.json`); T = 1 changes nothing, and is
    what a folder written before calibration existed loads with."""

    model_temperature: float = 1.0
    interpolated_temperature: float = 1.0
    # The interpolation settings (KnnSettings.to_dict) the second temperature was fitted with.
    fitted_for: dict[str, Any] | None = None
    clips: int = 0  # how many labelled validation clips fitted the temperatures
    speakers: list[str] = field(default_factory=list)  # whose clips (never a test speaker)
    # NLL of those clips before → after, per stage: what the fit bought, for reports.
    nll: dict[str, list[float]] = field(default_factory=dict)

    def model(self, probabilities: np.ndarray) -> np.ndarray:
        """The model's probabilities, calibrated."""
        return apply_temperature(probabilities, self.model_temperature)

    def interpolated(self, probabilities: np.ndarray, settings: KnnSettings) -> np.ndarray:
        """Interpolated probabilities made with `settings`, calibrated when these are the
        settings the temperature was fitted with (else unchanged)."""
        if self.fitted_for is None or settings.to_dict() != self.fitted_for:
            return np.asarray(probabilities, dtype=np.float64)
        return apply_temperature(probabilities, self.interpolated_temperature)

    def to_dict(self) -> dict[str, Any]:
        return {"model_temperature": self.model_temperature,
                "interpolated_temperature": self.interpolated_temperature,
                "fitted_for": self.fitted_for, "clips": self.clips,
                "speakers": list(self.speakers), "nll": dict(self.nll)}  # fmt: skip


def part_probabilities(part: TuningQueries, settings: KnnSettings, scale: float,
                       label_names: list[str]) -> np.ndarray:  # fmt: skip
    """The interpolated probabilities (Q, C) of a part's queries with `settings`, whose T is
    relative to `scale` (the first part's, `tune_knn_pooled`): this part uses T / scale × its
    own scale, as tuning did."""
    k = min(settings.k, part.distances.shape[1])
    temperature = settings.temperature / scale * part.scale
    shares = knn_weights(part.distances[:, :k], temperature)  # (Q, k)
    p_knn = np.zeros_like(part.model_probs)
    np.add.at(p_knn, (np.arange(len(shares))[:, None], part.neighbor_labels[:, :k]), shares)
    return interpolate(p_knn, part.model_probs, settings.alpha,
                       settings.model_known(label_names))  # fmt: skip


def fit_calibration(parts: list[TuningQueries], settings: KnnSettings, label_names: list[str],
                    speakers: list[str]) -> Calibration:  # fmt: skip
    """Temperatures of the model and of the interpolation with `settings`, fitted on the tuning
    queries of `parts` (the first part's scale is the one settings.temperature is relative to)."""
    labels = np.concatenate([part.labels for part in parts])
    model = np.concatenate([part.model_probs for part in parts])
    mixed = np.concatenate([part_probabilities(part, settings, parts[0].scale, label_names)
                            for part in parts])  # fmt: skip
    model_t, mixed_t = fit_temperature(model, labels), fit_temperature(mixed, labels)
    nll = {
        "model": [negative_log_likelihood(model, labels),
                  negative_log_likelihood(apply_temperature(model, model_t), labels)],
        "interpolated": [negative_log_likelihood(mixed, labels),
                         negative_log_likelihood(apply_temperature(mixed, mixed_t), labels)],
    }  # fmt: skip
    return Calibration(model_t, mixed_t, settings.to_dict(), len(labels), sorted(speakers), nll)

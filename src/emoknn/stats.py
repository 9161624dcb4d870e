"""Paired comparisons over cross-validation folds: is a difference between two variants real?

Two variants evaluated on the same folds give one paired difference per fold, d_i = a_i − b_i
(in UA or WA). From the n differences:

- the mean difference with a 95 % t-interval: d̄ ± t_{0.975, n−1} · s_d / √n, s_d the sample
  standard deviation (ddof = 1). It assumes the fold differences are roughly normal; with 10
  folds it is the usual summary, and it is given with the test below rather than instead of it.
- a two-sided paired test of "no difference":
  * n ≥ 6 folds: the Wilcoxon signed-rank test, exact. Zero differences are dropped (Wilcoxon's
    convention, scipy's default) and tied |d_i| get mid-ranks; the p-value enumerates all 2^m sign
    assignments of the m non-zero ranks (exact also with ties, where scipy falls back to a normal
    approximation unless asked for its permutation method).
  * fewer folds: the exact sign test (binomial, p = 0.5). With n ≤ 5 no paired test can reach
    p < 0.05 (the smallest two-sided p-value is 2 / 2^n ≥ 0.0625), and the sentence says so.

Every p-value here is for one comparison on its own; they are not corrected for multiple
comparisons, which the report says.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from emoknn.errors import ConfigError

WILCOXON_MIN_FOLDS = 6  # below this, 2 / 2^n ≥ 0.0625: no test can reach p < 0.05
SIGNIFICANCE = 0.05
CONFIDENCE = 0.95
# Paired differences (fractions: 0.01 = 1 point) smaller than this are float noise, not a result:
# 0.1 + 0.2 − 0.3 = 5.6e-17. Such differences count as zero (dropped by both tests, 0 in the mean).
TOLERANCE = 1e-9
METHOD_NOTE = (
    "95 % CI: t-interval of the mean paired difference over folds. p: two-sided paired test of "
    "no difference — exact Wilcoxon signed-rank with ≥ 6 folds (zero differences dropped, ties "
    "by mid-ranks), exact sign test with fewer (which cannot reach p < 0.05 below 6 folds). "
    "Each p-value is for its comparison alone, not corrected for multiple comparisons."
)


def mean_confidence_interval(
    differences: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, low, high): d̄ ± t_{(1+c)/2, n−1} · s / √n; with one value, low = high = nan."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ConfigError(f"expected a non-empty 1-D array of differences, got shape {d.shape}")
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half_width = student_t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return mean, float(mean - half_width), float(mean + half_width)


def _rank_abs(values: np.ndarray) -> np.ndarray:
    """Ranks 1..m of |values|, ties sharing their mid-rank."""
    magnitudes = np.abs(values)
    order = np.argsort(magnitudes, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    position = 0
    while position < len(order):
        end = position
        while end + 1 < len(order) and magnitudes[order[end + 1]] == magnitudes[order[position]]:
            end += 1
        # the tied values take the mean of ranks position+1 .. end+1
        ranks[order[position : end + 1]] = (position + end) / 2 + 1
        position = end + 1
    return ranks


def wilcoxon_signed_rank(differences: np.ndarray) -> tuple[float, float]:
    """Exact two-sided Wilcoxon signed-rank test: (statistic, p-value).

    statistic = min(W+, W−), W± the sums of the ranks of |d_i| with d_i > 0 (< 0), zeros dropped.
    Under H0 each rank's sign is + or − with probability 1/2, independently, so the null
    distribution of W+ is that of Σ_j r_j·B_j, B_j ~ Bernoulli(1/2). Mid-ranks are multiples of
    1/2, so doubled ranks are integers and the distribution is counted exactly by dynamic
    programming over the ranks. p = min(1, 2·min(P(W+ ≤ w+), P(W+ ≥ w+))).
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[d != 0]
    if len(d) == 0:
        return 0.0, 1.0
    ranks = _rank_abs(d)
    doubled = np.rint(2 * ranks).astype(np.int64)
    w_plus = int(doubled[d > 0].sum())
    total = int(doubled.sum())
    counts = np.zeros(total + 1, dtype=np.float64)  # counts[s] = #sign assignments with 2·W+ = s
    counts[0] = 1.0
    for r in doubled:
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[: len(counts) - r]
        counts = counts + shifted
    probabilities = counts / counts.sum()
    lower = probabilities[: w_plus + 1].sum()
    upper = probabilities[w_plus:].sum()
    p_value = min(1.0, 2 * min(lower, upper))
    statistic = min(w_plus, total - w_plus) / 2
    return float(statistic), float(p_value)


def sign_test(differences: np.ndarray) -> tuple[float, float]:
    """Exact two-sided sign test: (number of positive differences, p-value); zeros dropped.

    With m non-zero differences, k of them positive, under H0 k ~ Binomial(m, 1/2):
    p = min(1, 2·P(K ≤ min(k, m − k))).
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[d != 0]
    m, k = len(d), int((d > 0).sum())
    if m == 0:
        return 0.0, 1.0
    tail = sum(math.comb(m, i) for i in range(min(k, m - k) + 1)) / 2**m
    return float(k), float(min(1.0, 2 * tail))


@dataclass(frozen=True)
class PairedResult:
    """One metric of one comparison; differences in fractions (0.012 = 1.2 points)."""

    differences: list[float]
    mean: float
    ci_low: float | None
    ci_high: float | None
    test: str  # "wilcoxon" or "sign"
    statistic: float
    p_value: float

    @property
    def folds(self) -> int:
        return len(self.differences)

    @property
    def significant(self) -> bool:
        return self.folds >= WILCOXON_MIN_FOLDS and self.p_value < SIGNIFICANCE


def paired_test(a: np.ndarray, b: np.ndarray) -> PairedResult:
    """Compare paired per-fold scores a_i and b_i (same folds, same order): d_i = a_i − b_i."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ConfigError(
            f"paired scores must be two 1-D arrays of one length, got {a.shape} and {b.shape}"
        )
    for name, values in (("first", a), ("second", b)):
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ConfigError(
                f"paired scores: the {name} variant's score {bad + 1} of {len(values)} is "
                f"{values[bad]} (scores must be finite numbers)"
            )
    d = a - b
    d[np.abs(d) < TOLERANCE] = 0.0  # float noise is no difference
    mean, low, high = mean_confidence_interval(d)
    if len(d) >= WILCOXON_MIN_FOLDS:
        test, (statistic, p_value) = "wilcoxon", wilcoxon_signed_rank(d)
    else:
        test, (statistic, p_value) = "sign", sign_test(d)
    finite = lambda x: None if math.isnan(x) else x  # noqa: E731  (JSON has no NaN)
    return PairedResult([float(x) for x in d], mean, finite(low), finite(high), test, statistic,
                        p_value)  # fmt: skip


def p_text(p_value: float) -> str:
    """A p-value as a table shows it: "< 0.001", "0.004", "0.63"."""
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}" if p_value < 0.01 else (
        f"{p_value:.2f}")  # fmt: skip


def format_p(p_value: float) -> str:
    """ "p < 0.001", "p = 0.004", "p = 0.63"."""
    return f"p {p_text(p_value)}" if p_value < 0.001 else f"p = {p_text(p_value)}"


def signed_points(fraction: float, decimals: int = 1) -> str:
    """A difference of fractions in signed percentage points: 0.018 → "+1.8", −0.004 → "−0.4";
    a difference that rounds to zero is "+0.0" (never "−0.0")."""
    rounded = round(100 * fraction, decimals) + 0.0  # + 0.0 turns −0.0 into 0.0
    return f"{rounded:+.{decimals}f}".replace("-", "−")


def _clause(metric: str, result: PairedResult) -> str:
    interval = (
        f"95 % CI {signed_points(result.ci_low)} to {signed_points(result.ci_high)}, "
        if result.ci_low is not None and result.ci_high is not None
        else ""
    )
    detail = f"{interval}{format_p(result.p_value)}"
    if result.significant:
        return f"{signed_points(result.mean)} {metric} points ({detail})"
    return f"no {metric} difference detectable ({signed_points(result.mean)}, {detail})"


def describe(name: str, ua: PairedResult, wa: PairedResult) -> str:
    """One plain sentence for a comparison, e.g. "CE+SCL vs CE: +1.8 UA points (95 % CI +0.4 to
    +3.2, p = 0.02); no WA difference detectable (+0.9, 95 % CI −0.3 to +2.1, p = 0.13), over 10
    folds." """
    n = ua.folds
    if n < WILCOXON_MIN_FOLDS:
        return (
            f"{name}: too few folds to tell ({n}; a paired test needs at least "
            f"{WILCOXON_MIN_FOLDS} to reach p < 0.05) — mean difference "
            f"{signed_points(ua.mean)} UA, {signed_points(wa.mean)} WA points."
        )
    if np.allclose(ua.differences, wa.differences, rtol=0, atol=1e-12):
        # balanced test sets (every class equally often) make UA and WA equal: say it once
        return f"{name}: {_clause('UA (= WA)', ua)}, over {n} folds."
    return f"{name}: {_clause('UA', ua)}; {_clause('WA', wa)}, over {n} folds."


@dataclass(frozen=True)
class Comparison:
    """Variant `a` against variant `b` on the folds both have."""

    name: str
    a: str
    b: str
    folds: list[str]
    ua: PairedResult
    wa: PairedResult
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ua": asdict(self.ua), "wa": asdict(self.wa)}


def compare(
    name: str, a: str, b: str, scores: dict[str, dict[str, dict[str, float]]]
) -> Comparison | None:
    """Compare variants a and b given scores[variant][fold] = {"ua": .., "wa": ..}; None if
    they share no fold."""
    folds = sorted(set(scores.get(a, {})) & set(scores.get(b, {})))
    if not folds:
        return None
    results = {
        metric: paired_test(
            np.array([scores[a][f][metric] for f in folds]),
            np.array([scores[b][f][metric] for f in folds]),
        )
        for metric in ("ua", "wa")
    }
    sentence = describe(name, results["ua"], results["wa"])
    return Comparison(name, a, b, folds, results["ua"], results["wa"], sentence)

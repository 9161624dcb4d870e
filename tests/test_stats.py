from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from emoknn.stats import (
    compare,
    describe,
    mean_confidence_interval,
    paired_test,
    sign_test,
    wilcoxon_signed_rank,
)


def random_differences(seed: int, n: int, ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.normal(0.01, 0.03, n)
    if ties:  # accuracies on small test sets: differences on a coarse grid, with ties and zeros
        d = np.round(d * 40) / 40
    return d


@pytest.mark.parametrize("seed", range(20))
def test_wilcoxon_matches_scipy_exact_without_ties(seed):
    d = random_differences(seed, 6 + seed % 10, ties=False)
    statistic, p_value = wilcoxon_signed_rank(d)
    expected = scipy_stats.wilcoxon(d, method="exact")
    assert statistic == pytest.approx(expected.statistic)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_wilcoxon_with_ties_and_zeros_matches_scipy_full_permutation(seed):
    d = random_differences(seed, 6 + seed % 8, ties=True)
    if not np.any(d):
        d[0] = 0.025
    statistic, p_value = wilcoxon_signed_rank(d)
    nonzero = d[d != 0]
    # n_resamples ≥ 2^m makes scipy enumerate every sign assignment: the exact distribution
    exhaustive = scipy_stats.PermutationMethod(n_resamples=10**5)
    expected = scipy_stats.wilcoxon(nonzero, method=exhaustive)
    assert statistic == pytest.approx(expected.statistic)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_wilcoxon_known_values():
    # all 10 differences positive: p = 2 / 2^10
    assert wilcoxon_signed_rank(np.arange(1, 11) / 100) == (0.0, pytest.approx(2 / 1024))
    assert wilcoxon_signed_rank(np.zeros(8)) == (0.0, 1.0)


@pytest.mark.parametrize("seed", range(15))
def test_sign_test_matches_scipy_binomtest(seed):
    d = random_differences(seed, 1 + seed, ties=True)
    positives, p_value = sign_test(d)
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        assert p_value == 1.0
        return
    expected = scipy_stats.binomtest(int((nonzero > 0).sum()), len(nonzero), 0.5).pvalue
    assert positives == (nonzero > 0).sum()
    assert p_value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_t_interval_matches_scipy_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.5, 0.8, 2 + seed), rng.uniform(0.5, 0.8, 2 + seed)
    mean, low, high = mean_confidence_interval(a - b)
    interval = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert mean == pytest.approx(np.mean(a - b))
    assert (low, high) == (pytest.approx(interval.low), pytest.approx(interval.high))


def test_one_fold_has_no_interval():
    mean, low, high = mean_confidence_interval(np.array([0.02]))
    assert mean == 0.02 and math.isnan(low) and math.isnan(high)
    result = paired_test(np.array([0.7]), np.array([0.68]))
    assert result.ci_low is None and result.test == "sign" and result.p_value == 1.0


def test_test_choice_and_sentences():
    better = np.linspace(0.70, 0.75, 10)
    worse = better - np.linspace(0.01, 0.03, 10)  # every fold +1 to +3 points
    ua, wa = paired_test(better, worse), paired_test(better, better + 0.0)
    assert ua.test == "wilcoxon" and ua.significant and ua.p_value == pytest.approx(2 / 1024)
    sentence = describe("CE+SCL vs CE", ua, wa)
    assert sentence.startswith("CE+SCL vs CE: +2.0 UA points (95 % CI +1.5 to +2.5, p = 0.002)")
    assert "no WA difference detectable (+0.0" in sentence and sentence.endswith("over 10 folds.")
    same = describe("CE+SCL vs CE", ua, ua)
    assert same.startswith("CE+SCL vs CE: +2.0 UA (= WA) points (95 % CI +1.5 to +2.5, p = 0.002)")
    assert same.endswith("), over 10 folds.") and "; " not in same
    few = paired_test(better[:2], worse[:2])
    assert few.test == "sign" and not few.significant
    assert "too few folds to tell (2;" in describe("x vs y", few, few)


def test_compare_pairs_by_fold_name():
    scores = {
        "A": {f"f{i}": {"ua": 0.7 + i / 100, "wa": 0.7} for i in range(8)},
        "B": {f"f{i}": {"ua": 0.7, "wa": 0.7} for i in range(1, 9)},
    }
    comparison = compare("A vs B", "A", "B", scores)
    assert comparison.folds == [f"f{i}" for i in range(1, 8)]
    assert comparison.ua.differences == pytest.approx([i / 100 for i in range(1, 8)])
    assert comparison.to_dict()["ua"]["test"] == "wilcoxon"
    assert compare("A vs C", "A", "C", scores) is None


def test_bad_shapes_are_config_errors():
    from emoknn.errors import ConfigError

    with pytest.raises(ConfigError, match="one length"):
        paired_test(np.array([0.7, 0.8]), np.array([0.7]))
    with pytest.raises(ConfigError, match="non-empty"):
        mean_confidence_interval(np.array([]))

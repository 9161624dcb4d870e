"""Issue #22: nothing inflated, nothing overwritten. One test (at least) per reproduced defect."""

from __future__ import annotations

import numpy as np
import pytest

from emoknn.errors import EmoknnError
from emoknn.stats import describe, paired_test

# ── statistics ───────────────────────────────────────────────────────────────────────────────────


def test_paired_test_refuses_non_finite_scores():
    with pytest.raises(EmoknnError, match="score 1 of 6 is nan"):
        paired_test(np.full(6, np.nan), np.full(6, 0.5))
    with pytest.raises(EmoknnError, match="second variant's score 3 of 6 is inf"):
        paired_test(np.full(6, 0.5), np.array([0.5, 0.5, np.inf, 0.5, 0.5, 0.5]))


def test_float_noise_is_no_difference():
    a = np.full(6, 0.1) + 0.2  # 0.30000000000000004
    b = np.full(6, 0.3)
    result = paired_test(a, b)
    assert result.mean == 0.0 and result.p_value == 1.0 and not result.significant
    sentence = describe("A vs B", result, result)
    assert "no UA (= WA) difference detectable (+0.0" in sentence

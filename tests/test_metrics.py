from __future__ import annotations

import numpy as np
import pytest

from emoknn.errors import ConfigError
from emoknn.metrics import confusion_matrix, unweighted_accuracy, weighted_accuracy


def test_wa_and_ua_by_hand():
    # Class 0: 4 of 4 right; class 1: 1 of 2 right.  WA = 5/6, UA = (1 + 0.5)/2 = 0.75.
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 0, 1, 0]
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx(0.75)
    assert unweighted_accuracy(["a", "b"], ["a", "a"]) == pytest.approx(0.5)


def test_confusion_matrix_and_errors():
    matrix = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    with pytest.raises(ConfigError, match="equal length"):
        weighted_accuracy([0, 1], [0])
    with pytest.raises(ConfigError, match="zero predictions"):
        unweighted_accuracy([], [])

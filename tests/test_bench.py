"""The benchmark scripts' own measurements, on small sizes (their figures come from bench/)."""

from __future__ import annotations

import knn_tuning  # bench/ is on pytest's pythonpath (pyproject.toml)
import pytest
import training_data

from emoknn.knn import Datastore, tune_knn


def test_bucketing_meets_the_padding_target_on_iemocap_like_lengths():
    bucketed, random = training_data.padding_waste()
    assert bucketed < 0.10 < random


def test_vectorised_tuning_finds_what_the_naive_loop_finds():
    keys, key_labels, queries, labels, model_probs = knn_tuning.synthetic_problem(600, 60, 32)
    store = Datastore(keys, key_labels, list("abcd"), [str(i) for i in range(600)], "bench")
    tuned = tune_knn(queries, labels, model_probs, store).interpolated.score
    assert tuned == pytest.approx(knn_tuning.naive_tuning(store, queries, labels, model_probs))

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


def test_interleaved_rounds_time_every_method_and_pair_ratios_within_a_round():
    import predict_throughput

    calls: list[str] = []
    methods = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = predict_throughput.interleaved_seconds(methods, rounds=4)
    assert sorted(calls) == sorted("abc" * 5)  # a warm-up round, then 4 timed rounds
    assert all(len(values) == 4 for values in times.values())
    # A slow spell doubling both sides of round 1 leaves the same-round ratio untouched.
    times = {"ours": [1.0, 2.0, 1.0], "ref": [2.0, 4.0, 2.2]}
    ratios = predict_throughput.speedups(times, lambda r: times["ref"][r])
    assert ratios["ours"] == pytest.approx(2.0) and ratios["ref"] == pytest.approx(1.0)

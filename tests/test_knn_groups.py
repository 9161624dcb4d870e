"""kNN pieces adaptation needs: group-excluding search and tuning, labels only one side knows."""

from __future__ import annotations

import numpy as np
import pytest

from emoknn.errors import EmoknnError
from emoknn.knn import (
    Datastore,
    KnnSettings,
    interpolate,
    knn_probs,
    search_other_groups,
    tune_knn,
)


def _store(keys, labels, ids, names=("a", "b", "c")) -> Datastore:
    return Datastore(keys, labels, list(names), list(ids), "f" * 64)


def test_interpolate_with_a_label_only_the_knn_knows():
    p_knn = np.array([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    p_model = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0]])  # the model cannot predict label 2
    known = np.array([True, True, False])
    alpha = 0.25
    mixed = interpolate(p_knn, p_model, alpha, known)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)
    # Row 0: s = 0.5 → p = (α·0.2 + 0.75·0.5·0.9, α·0.3 + 0.75·0.5·0.1, 0.5)
    np.testing.assert_allclose(mixed[0], [0.05 + 0.3375, 0.075 + 0.0375, 0.5])
    # Row 1: no neighbour of the new label (s = 0): the usual α·p_knn + (1 − α)·p_model.
    np.testing.assert_allclose(mixed[1], interpolate(p_knn[1], p_model[1], alpha))
    # A label only the model knows (no neighbours of it): p_knn = 0 there.
    np.testing.assert_allclose(interpolate(p_knn, p_model, alpha, np.ones(3, bool)),
                               alpha * p_knn + (1 - alpha) * p_model)  # fmt: skip
    settings = KnnSettings(3, alpha, 1.0, 0.0, "ua", model_labels=["a", "b"])
    np.testing.assert_allclose(settings.interpolate(p_knn, p_model, ["a", "b", "c"]), mixed)
    assert KnnSettings.from_dict(settings.to_dict()) == settings
    assert "model_labels" not in KnnSettings(3, alpha, 1.0, 0.0, "ua").to_dict()


def test_search_other_groups_equals_brute_force():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((60, 5)).astype(np.float32)
    groups = np.array([f"spk{i % 7}" for i in range(60)])
    store = _store(keys, rng.integers(0, 3, 60), [f"u{i}" for i in range(60)])
    distances, indices = search_other_groups(store, keys, 8, groups, groups)
    assert distances.shape == indices.shape == (60, 8)
    for q in range(60):
        assert not np.any(groups[indices[q]] == groups[q])  # never its own speaker, nor itself
        full = np.linalg.norm(keys - keys[q], axis=1)
        full[groups == groups[q]] = np.inf
        expected = np.sort(full)[:8]
        np.testing.assert_allclose(distances[q], expected, rtol=1e-4, atol=1e-5)
        assert set(indices[q]) == set(np.argsort(full, kind="stable")[:8]) or np.allclose(
            np.sort(full[indices[q]]), expected, atol=1e-5
        )  # float ties may reorder equal distances


def test_grouped_tuning_never_sees_the_query_or_its_speaker():
    # Every speaker's clips sit on one point and share one label, and speakers' points are
    # random: a query that could see its own speaker (or itself) would score 100 % with k = 1;
    # across speakers there is nothing to learn.
    rng = np.random.default_rng(1)
    speakers = np.repeat([f"s{i}" for i in range(8)], 10)
    centres = rng.standard_normal((8, 4)) * 10
    keys = (centres[np.repeat(np.arange(8), 10)] + 1e-3 * rng.standard_normal((80, 4))).astype(
        np.float32
    )
    labels = np.repeat(np.arange(8) % 3, 10)
    ids = [f"u{i}" for i in range(80)]
    store = _store(keys, labels, ids)
    flat = np.full((80, 3), 1 / 3)
    grouped = tune_knn(keys, labels, flat, store, query_ids=ids, query_groups=speakers,
                       store_groups=speakers)  # fmt: skip
    assert grouped.knn_only.score < 0.6
    # The same with each clip its own group (self-match excluded, speaker not): near-perfect.
    alone = tune_knn(keys, labels, flat, store, query_ids=ids, query_groups=ids, store_groups=ids)
    assert alone.knn_only.score == 1.0
    # Without groups, queries in the store are refused; with groups, only within their own group.
    with pytest.raises(EmoknnError, match="find itself"):
        tune_knn(keys, labels, flat, store, query_ids=ids)
    shifted = np.roll(speakers, 1)  # query groups that disagree with the store's
    with pytest.raises(EmoknnError, match="find itself"):
        tune_knn(keys, labels, flat, store, query_ids=ids, query_groups=shifted,
                 store_groups=speakers)  # fmt: skip


def test_tuning_with_a_label_the_model_does_not_know():
    rng = np.random.default_rng(2)
    keys = rng.standard_normal((90, 3)).astype(np.float32)
    labels = np.repeat([0, 1, 2], 30)
    keys[labels == 2] += 6.0  # the new label is easy for the kNN
    groups = np.array([f"g{i % 5}" for i in range(90)])
    p_model = np.zeros((90, 3))
    p_model[np.arange(90), np.where(labels == 2, 0, labels)] = 1.0  # knows 0 and 1, never 2
    store = _store(keys, labels, [f"u{i}" for i in range(90)])
    result = tune_knn(keys, labels, p_model, store, query_groups=groups, store_groups=groups,
                      model_labels=["a", "b"])  # fmt: skip
    chosen = result.interpolated
    assert chosen.model_labels == ["a", "b"]
    distances, indices = search_other_groups(store, keys, chosen.k, groups, groups)
    p_knn = knn_probs(distances, labels[indices], 3, chosen.temperature)
    predictions = chosen.interpolate(p_knn, p_model, store.label_names).argmax(1)
    recalls = [np.mean(predictions[labels == c] == c) for c in range(3)]
    assert chosen.score == pytest.approx(np.mean(recalls))
    assert recalls[2] > 0.9  # label 2 is predicted, though the model gives it 0

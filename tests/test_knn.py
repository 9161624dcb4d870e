from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emoknn.corpora import load_synthetic
from emoknn.errors import ConfigError, EmoknnError
from emoknn.folds import speaker_folds
from emoknn.inference import embed_utterances, fit_knn
from emoknn.knn import (
    DEFAULT_ALPHAS,
    Datastore,
    KnnSettings,
    TuningResult,
    interpolate,
    knn_predict_probs,
    knn_probs,
    tune_knn,
)
from emoknn.metrics import unweighted_accuracy, weighted_accuracy
from emoknn.model import EmotionModel, ModelConfig
from emoknn.model_folder import (
    fingerprint_of,
    load_datastore,
    load_knn,
    load_knn_settings,
    save_datastore,
    save_knn,
    save_knn_settings,
)


def test_knn_probs_by_hand():
    distances = np.array([[1.0, 2.0, 3.0]])
    labels = np.array([[0, 1, 0]])
    z = math.exp(-1) + math.exp(-2) + math.exp(-3)
    expected = [(math.exp(-1) + math.exp(-3)) / z, math.exp(-2) / z, 0.0]
    np.testing.assert_allclose(knn_probs(distances, labels, 3, 1.0), [expected], rtol=1e-12)
    # T = 2 halves the exponents; T = ∞ is a majority vote.
    z2 = math.exp(-0.5) + math.exp(-1) + math.exp(-1.5)
    np.testing.assert_allclose(knn_probs(distances, labels, 3, 2.0)[0, 1], math.exp(-1) / z2)
    np.testing.assert_allclose(knn_probs(distances, labels, 3, np.inf), [[2 / 3, 1 / 3, 0.0]])
    # Huge distances do not underflow to NaN.
    far = knn_probs(np.array([[1e6, 1e6 + 1]]), np.array([[0, 1]]), 2, 0.01)
    assert np.isfinite(far).all() and far.sum() == pytest.approx(1.0)


def test_knn_probs_rejects_bad_input():
    with pytest.raises(ValueError, match=r"must both be \(Q, k\)"):
        knn_probs(np.zeros((2, 3)), np.zeros((2, 2), dtype=int), 2, 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_probs(np.zeros((1, 1)), np.zeros((1, 1), dtype=int), 2, 0.0)
    with pytest.raises(ValueError, match="neighbor_labels must lie in"):
        knn_probs(np.zeros((1, 1)), np.array([[5]]), 2, 1.0)


def random_store(n=500, d=32, classes=4, seed=0, index_type="exact"):
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    return Datastore(
        keys,
        labels,
        [f"c{i}" for i in range(classes)],
        [f"u{i}" for i in range(n)],
        "fp",
        index_type,
    )


def test_search_matches_brute_force_numpy():
    store = random_store()
    queries = np.random.default_rng(1).standard_normal((20, 32)).astype(np.float32)
    distances, indices = store.search(queries, 10)
    brute = np.sqrt(((queries[:, None, :].astype(np.float64) - store.keys[None]) ** 2).sum(-1))
    for row in range(20):
        expected = np.argsort(brute[row])[:10]
        assert set(indices[row]) == set(expected)  # sets: float32 ties may reorder
        np.testing.assert_allclose(np.sort(distances[row]), brute[row][expected], rtol=1e-4)


def test_approximate_index_finds_most_neighbours():
    store = random_store(n=2000, index_type="hnsw")
    queries = np.random.default_rng(2).standard_normal((50, 32)).astype(np.float32)
    _, approximate = store.search(queries, 10)
    exact = Datastore(store.keys, store.labels, store.label_names, store.ids, "fp").search(
        queries, 10
    )[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact, strict=True)])
    assert recall > 0.9


def tuning_problem(seed=0):
    """Clustered embeddings, and a 'model' that is right 60 % of the time."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 16)) * 2
    train_labels = rng.integers(0, 4, 400)
    train = centers[train_labels] + rng.standard_normal((400, 16)) * 1.5
    val_labels = rng.integers(0, 4, 60)
    val = centers[val_labels] + rng.standard_normal((60, 16)) * 1.5
    model_probs = rng.dirichlet(np.ones(4), 60)
    right = rng.random(60) < 0.6
    model_probs[right, val_labels[right]] += 1.0
    model_probs /= model_probs.sum(1, keepdims=True)
    store = Datastore(train, train_labels, list("abcd"), [f"t{i}" for i in range(400)], "fp")
    return store, val.astype(np.float32), val_labels, model_probs


def test_vectorised_tuning_equals_a_brute_force_grid_loop():
    store, queries, labels, model_probs = tuning_problem()
    result = tune_knn(queries, labels, model_probs, store, criterion="ua")
    chosen = result.interpolated
    recomputed = knn_predict_probs(queries, model_probs, store, chosen).argmax(1)
    assert unweighted_accuracy(labels, recomputed) == pytest.approx(chosen.score)
    # No (T, k, α) setting scores better than the chosen one.
    scale = float(np.median(store.search(queries, 1)[0]))
    best_seen = -1.0
    for temperature in [f * scale for f in (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)] + [np.inf]:
        distances, indices = store.search(queries, 32)
        for k in range(1, 33):
            p_knn = knn_probs(distances[:, :k], store.labels[indices[:, :k]], 4, temperature)
            for alpha in DEFAULT_ALPHAS:
                predictions = interpolate(p_knn, model_probs, alpha).argmax(1)
                best_seen = max(best_seen, unweighted_accuracy(labels, predictions))
            if temperature == np.inf:
                knn_alone = unweighted_accuracy(labels, p_knn.argmax(1))
                assert knn_alone <= result.knn_only.score + 1e-12
    assert chosen.score == pytest.approx(best_seen)
    assert 1 <= chosen.k <= 32 and 0 < chosen.alpha < 1
    assert result.knn_only.alpha == 1.0
    wa_result = tune_knn(queries, labels, model_probs, store, criterion="wa").interpolated
    wa_predictions = knn_predict_probs(queries, model_probs, store, wa_result).argmax(1)
    assert weighted_accuracy(labels, wa_predictions) == pytest.approx(wa_result.score)


def test_tuning_refuses_queries_that_are_in_the_datastore():
    store, queries, labels, model_probs = tuning_problem()
    with pytest.raises(EmoknnError, match="a query would find itself"):
        tune_knn(
            queries,
            labels,
            model_probs,
            store,
            query_ids=["v0", "t3"] + [f"v{i}" for i in range(2, 60)],
        )


def test_alpha_zero_reproduces_the_model_exactly():
    store, queries, _, model_probs = tuning_problem()
    settings = KnnSettings(k=5, alpha=0.0, temperature=1.0, score=0.0, criterion="ua")
    np.testing.assert_array_equal(
        knn_predict_probs(queries, model_probs, store, settings), model_probs
    )


def test_datastore_save_load_round_trip_and_fingerprint_check(tmp_path):
    store = random_store(n=50)
    store.fingerprint = "f" * 64
    save_datastore(tmp_path, store)
    loaded = load_datastore(tmp_path, fingerprint="f" * 64)
    np.testing.assert_array_equal(loaded.keys, store.keys)
    np.testing.assert_array_equal(loaded.labels, store.labels)
    assert loaded.ids == store.ids and loaded.label_names == store.label_names
    with pytest.raises(EmoknnError, match="built by a different model"):
        load_datastore(tmp_path, fingerprint="a" * 64)
    with pytest.raises(EmoknnError, match="datastore not found"):
        load_datastore(tmp_path / "missing")
    loaded.add(np.zeros((2, 32), dtype=np.float32), np.array([1, 2]), ["new1", "new2"])
    assert len(loaded) == 52 and loaded.search(np.zeros((1, 32)), 1)[1][0, 0] in (50, 51)
    with pytest.raises(ConfigError, match="ids already in the datastore"):
        loaded.add(np.zeros((1, 32), dtype=np.float32), np.array([0]), ["new1"])
    with pytest.raises(ConfigError, match="k must lie in"):
        loaded.search(np.zeros((1, 32)), 100)
    settings = TuningResult(
        KnnSettings(3, 0.4, np.inf, 0.5, "ua"), KnnSettings(7, 1.0, 2.0, 0.4, "ua")
    )
    save_knn_settings(tmp_path, settings)
    assert load_knn_settings(tmp_path) == settings


def test_fit_knn_on_a_model_end_to_end(small_synthetic_corpus, tmp_path):
    fold = speaker_folds(load_synthetic(small_synthetic_corpus))[0]
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(encoder="tiny")).eval()
    train = embed_utterances(model, fold.train, max_seconds=1.0)
    val = embed_utterances(model, fold.val, max_seconds=1.0)
    assert train.embeddings.shape == (len(fold.train), 64)
    np.testing.assert_allclose(train.probs.sum(1), 1.0, rtol=1e-5)
    # Evaluation has no randomness: embedding twice gives identical numbers.
    np.testing.assert_array_equal(
        embed_utterances(model, fold.val, max_seconds=1.0).embeddings, val.embeddings
    )
    store, tuning = fit_knn(model, train, val)
    assert len(store) == len(fold.train) + len(fold.val)
    save_knn(tmp_path, store, tuning)
    loaded_store, loaded_tuning = load_knn(tmp_path, fingerprint_of(model), model.labels)
    assert loaded_tuning == tuning and len(loaded_store) == len(store)
    torch.manual_seed(1)
    other = EmotionModel(ModelConfig(encoder="tiny"))
    with pytest.raises(EmoknnError, match="built by a different model"):
        load_knn(tmp_path, fingerprint_of(other), other.labels)

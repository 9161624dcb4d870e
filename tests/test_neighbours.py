"""The neighbours behind a prediction: the datastore entries p_knn was computed from."""

from __future__ import annotations

import numpy as np
import pytest

from emoknn.errors import ConfigError, ModelFolderError
from emoknn.knn import (
    MAX_NEIGHBOURS,
    Datastore,
    KnnSettings,
    knn_probs,
    store_knn_probs,
    store_knn_search,
)
from emoknn.model_folder import load_datastore, save_datastore


def tied_store(seed: int = 0, n: int = 300, d: int = 16) -> Datastore:
    """Random keys, a third of them repeated exactly (so distances tie), with sources recorded."""
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(n, d)).astype(np.float32)
    keys[n - n // 3 :] = keys[: n // 3]  # exact copies: ties at every distance
    labels = rng.integers(0, 4, n)
    ids = [f"clip{i:03d}" for i in range(n)]
    sources = [f"/data/clip{i:03d}.wav" if i % 2 else "" for i in range(n)]
    return Datastore(keys, labels, ["angry", "happy", "neutral", "sad"], ids, "f" * 64,
                     sources=sources, speakers=[f"spk{i % 5}" for i in range(n)])  # fmt: skip


def brute_force(store: Datastore, query: np.ndarray) -> np.ndarray:
    """Euclidean distance of `query` to every entry, in float64."""
    return np.linalg.norm(store.keys.astype(np.float64) - query.astype(np.float64), axis=1)


def assert_nearest(found_ids: list[str], found_distances: list[float], truth: np.ndarray,
                   store: Datastore, count: int) -> None:  # fmt: skip
    """The entries found are the `count` nearest, allowing any order among equal distances."""
    ranked = np.sort(truth)
    np.testing.assert_allclose(found_distances, ranked[:count], rtol=1e-4, atol=1e-4)
    cutoff, tolerance = ranked[count - 1], 1e-4 * (1 + ranked[count - 1])
    certain = {store.ids[i] for i in np.flatnonzero(truth < cutoff - tolerance)}
    allowed = {store.ids[i] for i in np.flatnonzero(truth <= cutoff + tolerance)}
    assert certain <= set(found_ids) <= allowed
    assert len(set(found_ids)) == count
    assert found_distances == sorted(found_distances)  # nearest first


@pytest.mark.parametrize("count", [1, 5, 12, MAX_NEIGHBOURS])
def test_neighbours_equal_a_brute_force_search(count):
    store = tied_store()
    rng = np.random.default_rng(1)
    # Queries: fresh points, and stored keys themselves (distance 0, tied with their copy).
    queries = np.concatenate([rng.normal(size=(6, 16)), store.keys[[0, 5, 250]]]).astype(np.float32)
    settings = KnnSettings(k=8, alpha=0.5, temperature=0.7, score=0.0, criterion="ua")
    search = store_knn_search(queries, store, settings, neighbours=count)
    for row, query in enumerate(queries):
        found = search.neighbours(row, count, store)
        assert len(found) == count
        assert_nearest([n.id for n in found], [n.distance for n in found],
                       brute_force(store, query), store, count)  # fmt: skip
        for neighbour in found:
            index = store.ids.index(neighbour.id)
            assert neighbour.label == store.label_names[store.labels[index]]
            assert neighbour.source == (store.sources[index] or None)


@pytest.mark.parametrize("temperature", [0.3, 2.0, np.inf])
def test_weights_sum_with_the_other_entries_to_p_knn(temperature):
    store = tied_store(seed=2)
    queries = np.random.default_rng(3).normal(size=(10, 16)).astype(np.float32)
    settings = KnnSettings(k=10, alpha=0.5, temperature=temperature, score=0.0, criterion="ua")
    expected = store_knn_probs(queries, store, settings)
    # Before this search existed p_knn was knn_probs over the k nearest: it still is.
    distances, indices = store.search(queries, settings.k)
    np.testing.assert_allclose(
        expected, knn_probs(distances, store.labels[indices], 4, temperature), atol=1e-12
    )
    for count in (3, 10, 20):  # fewer than k, k, more than k
        search = store_knn_search(queries, store, settings, neighbours=count)
        np.testing.assert_allclose(search.p_knn, expected, atol=1e-12)  # asking changes nothing
        for row in range(len(queries)):
            shown = search.neighbours(row, count, store)
            # The other entries: the rest of the k nearest (brute force), with their shares.
            truth = brute_force(store, queries[row])
            order = np.argsort(truth, kind="stable")
            shown_ids = {n.id for n in shown}
            others = [i for i in order[: settings.k] if store.ids[i] not in shown_ids]
            shares = np.exp(-(truth[order[: settings.k]] - truth[order[0]]) / temperature) \
                if np.isfinite(temperature) else np.ones(settings.k)
            share_of = dict(zip(order[: settings.k].tolist(), (shares / shares.sum()).tolist(),
                                strict=True))  # fmt: skip
            total = np.zeros(4)
            for neighbour in shown:
                total[store.label_names.index(neighbour.label)] += neighbour.weight
            for index in others:
                total[store.labels[index]] += share_of[index]
            np.testing.assert_allclose(total, expected[row], atol=1e-5)
            weights = [n.weight for n in shown]
            assert all(w == 0.0 for w in weights[settings.k :])  # beyond k: no share
            assert all(w > 0.0 for w in weights[: settings.k])


def test_neighbour_count_is_checked():
    store = tied_store()
    settings = KnnSettings(k=4, alpha=0.5, temperature=1.0, score=0.0, criterion="ua")
    query = store.keys[:1]
    for bad in (-1, MAX_NEIGHBOURS + 1, 2.5, True):
        with pytest.raises(ConfigError, match="neighbours must"):
            store_knn_search(query, store, settings, neighbours=bad)
    # More neighbours than entries: all of them.
    small = store.subset(list(range(6)))
    search = store_knn_search(query, small, settings, neighbours=10)
    assert len(search.neighbours(0, 10, small)) == 6


def test_sources_and_speakers_round_trip_and_old_files_still_load(tmp_path):
    store = tied_store()
    save_datastore(tmp_path, store)
    loaded = load_datastore(tmp_path)
    assert loaded.sources == store.sources and loaded.speakers == store.speakers
    plain = Datastore(store.keys, store.labels, store.label_names, store.ids, store.fingerprint)
    save_datastore(tmp_path, plain)  # nothing recorded: the arrays are left out
    with np.load(tmp_path / "datastore.npz") as stored:
        assert "sources" not in stored.files
    assert load_datastore(tmp_path).sources == [""] * len(store)
    plain.add(store.keys[:2], store.labels[:2], ["new1", "new2"], ["/a.wav", "/b.wav"])
    assert plain.sources[-3:] == ["", "/a.wav", "/b.wav"] and plain.speakers[-1] == ""
    arrays = dict(np.load(tmp_path / "datastore.npz"))
    arrays["sources"] = np.array(["x"] * 3)
    np.savez(tmp_path / "datastore.npz", **arrays)
    with pytest.raises(ModelFolderError, match=r"datastore.npz: sources must be 300 strings"):
        load_datastore(tmp_path)

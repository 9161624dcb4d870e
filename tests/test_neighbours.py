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
            shares = (
                np.exp(-(truth[order[: settings.k]] - truth[order[0]]) / temperature)
                if np.isfinite(temperature)
                else np.ones(settings.k)
            )
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


# ── through prediction ──────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def recognizer(trained_run):
    from emoknn.predict import EmotionRecognizer

    return EmotionRecognizer.load(trained_run, device="cpu")


def by_label(neighbours, names) -> np.ndarray:
    total = np.zeros(len(names))
    for neighbour in neighbours:
        total[names.index(neighbour.label)] += neighbour.weight
    return total


def test_prediction_neighbours_are_the_nearest_entries(recognizer, small_synthetic_corpus):
    from emoknn.audio import load_audio
    from emoknn.corpora import load_synthetic

    store, settings = recognizer.store, recognizer.knn_settings
    clips = [load_audio(u.path) for u in load_synthetic(small_synthetic_corpus)[:4]]
    _, embeddings = recognizer.forward_clips(clips)
    results = recognizer.predict(clips, neighbours=settings.k)
    for embedding, result in zip(embeddings, results, strict=True):
        assert_nearest([n.id for n in result.neighbours], [n.distance for n in result.neighbours],
                       brute_force(store, embedding), store, settings.k)  # fmt: skip
        # N = k: the shares are all of p_knn.
        np.testing.assert_allclose(by_label(result.neighbours, store.label_names),
                                   list(result.knn_probabilities.values()), atol=1e-6)  # fmt: skip
        assert all(n.source and n.source.endswith(".wav") for n in result.neighbours)
    # Not asked: nothing listed, and the same probabilities.
    plain = recognizer.predict(clips)
    assert all(p.neighbours == [] for p in plain)
    assert [p.probabilities for p in plain] == [p.probabilities for p in results]
    assert "neighbours" in results[0].to_dict() and results[0].to_dict()["neighbours"][0]["id"]


def test_long_inputs_have_neighbours_per_segment_and_for_the_whole(
    recognizer, small_synthetic_corpus
):
    from emoknn.audio import load_audio
    from emoknn.corpora import load_synthetic

    store, settings = recognizer.store, recognizer.knn_settings
    long = np.concatenate([load_audio(u.path) for u in load_synthetic(small_synthetic_corpus)[:6]])
    result = recognizer.predict(long, window_seconds=1.0, neighbours=3)[0]
    assert len(result.segments) >= 3 and len(result.neighbours) == 3
    segment_clips = [long[round(s.start_s * 16000) : round(s.end_s * 16000)]
                     for s in result.segments]  # fmt: skip
    _, embeddings = recognizer.forward_clips(segment_clips)
    for segment, embedding in zip(result.segments, embeddings, strict=True):
        assert_nearest([n.id for n in segment.neighbours],
                       [n.distance for n in segment.neighbours],
                       brute_force(store, embedding), store, 3)  # fmt: skip
    # The whole: the 3 entries nearest to any segment, at that distance.
    closest = np.min([brute_force(store, e) for e in embeddings], axis=0)
    assert_nearest([n.id for n in result.neighbours], [n.distance for n in result.neighbours],
                   closest, store, 3)  # fmt: skip
    # Asking for every entry any segment used: the shares add up to the whole's p_knn.
    everything = recognizer.predict(long, window_seconds=1.0, neighbours=MAX_NEIGHBOURS)[0]
    width = min(max(settings.k, MAX_NEIGHBOURS), len(store))
    assert len(everything.neighbours) <= len(result.segments) * width
    np.testing.assert_allclose(by_label(everything.neighbours, store.label_names),
                               list(everything.knn_probabilities.values()), atol=1e-5)  # fmt: skip


def test_neighbours_need_a_datastore(trained_run):
    from emoknn.predict import EmotionRecognizer

    model_only = EmotionRecognizer.load(trained_run, device="cpu", use_knn=False)
    with pytest.raises(ConfigError, match="neighbours: this model has no kNN datastore"):
        model_only.predict(np.zeros(16000, dtype=np.float32) + 0.1, neighbours=3)
    assert model_only.predict(np.random.default_rng(0).normal(0, 0.1, 16000))[0].neighbours == []


def test_predict_command_lists_neighbours(trained_run, small_synthetic_corpus):
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from emoknn.cli import app
    from emoknn.corpora import load_synthetic

    runner = CliRunner()
    clip = str(load_synthetic(small_synthetic_corpus)[0].path)
    base = ["predict", clip, "--model", str(trained_run)]
    result = runner.invoke(app, [*base, "--neighbours", "3", "--format", "json"])
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.output)
    assert [set(n) for n in prediction["neighbours"]] == [
        {"id", "label", "distance", "weight", "source"}
    ] * 3
    distances = [n["distance"] for n in prediction["neighbours"]]
    assert distances == sorted(distances)
    result = runner.invoke(app, [*base, "--neighbours", "2", "--format", "csv"])
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0][-10:-5] == ["neighbour1_id", "neighbour1_label", "neighbour1_distance",
                               "neighbour1_weight", "neighbour1_source"]  # fmt: skip
    assert rows[1][rows[0].index("neighbour2_id")] == prediction["neighbours"][1]["id"]
    plain = list(csv.reader(io.StringIO(runner.invoke(app, [*base, "--format", "csv"]).output)))
    assert plain[0][-1] == "no_speech"  # not asked: the columns as before
    result = runner.invoke(app, [*base, "--neighbours", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and prediction["neighbours"][0]["id"] in result.output
    assert "kNN weight" in result.output
    result = runner.invoke(app, [*base, "--neighbours", "2", "--no-knn"])
    assert result.exit_code == 1 and "no kNN datastore" in str(result.exception)
    assert (
        "--serve-neighbour-audio"
        in runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    )

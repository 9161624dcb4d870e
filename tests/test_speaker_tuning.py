"""k, α, T chosen over several validation speakers (`emoknn.speaker_tuning`): α = 0 is an
answer, the pooled tuner agrees with the one-speaker one, and the test speaker is never seen."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import emoknn.inference as inference_module
import emoknn.speaker_tuning as speaker_tuning
from emoknn.config import make_config
from emoknn.corpora import load_synthetic
from emoknn.errors import ConfigError
from emoknn.experiments import crossval
from emoknn.folds import speaker_folds
from emoknn.knn import DEFAULT_ALPHAS, Datastore, tune_knn, tune_knn_pooled, tuning_queries
from emoknn.speaker_tuning import ALPHAS_WITH_OFF, check_knn_tuning, inner_groups


def _clusters(rng, count, classes=4, spread=0.3):
    labels = rng.integers(classes, size=count)
    centres = np.eye(classes, 8) * 3
    return centres[labels] + rng.normal(scale=spread, size=(count, 8)), labels


def test_alpha_zero_wins_when_the_knn_cannot_help():
    rng = np.random.default_rng(0)
    keys, _ = _clusters(rng, 200)
    store = Datastore(keys, rng.integers(4, size=200), list("abcd"), [f"s{i}" for i in range(200)],
                      "f")  # labels unrelated to the keys: the kNN only adds noise  # fmt: skip
    queries, labels = _clusters(rng, 60)
    model = np.full((60, 4), 0.1)
    model[np.arange(60), labels] = 0.7  # the model is always right
    part = tuning_queries(queries, labels, model, store)
    off = tune_knn_pooled([part], 4, alphas=ALPHAS_WITH_OFF).interpolated
    assert off.alpha == 0.0 and off.k == 1 and off.score == 1.0
    paper = tune_knn_pooled([part], 4, alphas=DEFAULT_ALPHAS).interpolated
    assert paper.alpha > 0.0  # the paper's grid has no α = 0


def test_one_part_tunes_as_tune_knn_and_parts_pool_their_queries():
    rng = np.random.default_rng(1)
    keys, key_labels = _clusters(rng, 150, spread=1.0)
    store = Datastore(keys, key_labels, list("abcd"), [f"s{i}" for i in range(150)], "f")
    queries, labels = _clusters(rng, 80, spread=1.0)
    model = rng.dirichlet(np.ones(4), size=80)
    single = tune_knn(queries, labels, model, store)
    part = tuning_queries(queries, labels, model, store)
    assert tune_knn_pooled([part], 4) == single
    halves = [tuning_queries(queries[s], labels[s], model[s], store)
              for s in (slice(0, 40), slice(40, 80))]  # fmt: skip
    pooled = tune_knn_pooled(halves, 4).interpolated
    # same neighbours, nearly the same scale: the pooled score is the whole set's UA
    assert pooled.score == pytest.approx(single.interpolated.score, abs=0.05)


def test_speaker_tuning_needs_a_frozen_encoder_and_two_training_speakers():
    assert check_knn_tuning("speakers", frozen=True) == "speakers"
    assert check_knn_tuning("validation", frozen=False) == "validation"
    with pytest.raises(ConfigError, match="frozen encoder"):
        check_knn_tuning("speakers", frozen=False)
    with pytest.raises(ConfigError, match="knn tuning must be one of"):
        check_knn_tuning("test", frozen=True)
    utterances = load_synthetic_small()
    one_speaker = [u for u in utterances if u.speaker == utterances[0].speaker]
    with pytest.raises(ConfigError, match="at least 2 training speakers"):
        inner_groups(one_speaker)


def load_synthetic_small():
    from emoknn.corpora.utterance import Utterance

    return [Utterance(f"u{i}", f"/x/{i}.wav", "angry", f"spk{i % 3}", "s") for i in range(6)]


# ── the test speaker is never seen by the tuning ─────────────────────────────────────────────────


def _run_fold(utterances, fold, out):
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=6,
                         feature_cache=str(out.parent / "cache"))  # fmt: skip
    crossval(utterances, [fold], config, out, with_baseline=False, with_probe=False,
             knn_tuning="speakers")  # fmt: skip
    run = out / "scl" / fold.name
    return json.loads((run / "knn.json").read_text()), json.loads(
        (run / "calibration.json").read_text()
    )


def test_the_test_speaker_never_reaches_the_tuning(small_synthetic_corpus, tmp_path, monkeypatch):
    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    test_ids = {u.id for u in fold.test}
    seen: list[str] = []

    def spy_queries(embeddings, labels, probs, store, query_ids=None, *args, **kwargs):
        seen.extend(store.ids)
        seen.extend(query_ids or [])
        assert query_ids is not None  # every tuning part names its queries
        return tuning_queries(embeddings, labels, probs, store, query_ids, *args, **kwargs)

    real_features = speaker_tuning.fold_features

    def spy_features(cache, train, val, *args, **kwargs):
        seen.extend(u.id for u in train + val)
        return real_features(cache, train, val, *args, **kwargs)

    monkeypatch.setattr(speaker_tuning, "tuning_queries", spy_queries)
    monkeypatch.setattr(inference_module, "tuning_queries", spy_queries)
    monkeypatch.setattr(speaker_tuning, "fold_features", spy_features)
    knn, calibration = _run_fold(utterances, fold, tmp_path / "seen")
    assert seen and not test_ids & set(seen)
    speakers = {u.speaker for u in fold.train + fold.val}
    assert set(calibration["speakers"]) == speakers  # inner folds and validation, no test speaker
    assert fold.test_speaker not in calibration["speakers"]

    # Black box: other labels for the test speaker's clips change nothing the tuning chose.
    relabelled_test = [
        dataclasses.replace(u, label=fold.test[(i + 1) % len(fold.test)].label)
        for i, u in enumerate(fold.test)
    ]
    assert [u.label for u in relabelled_test] != [u.label for u in fold.test]
    relabelled = dataclasses.replace(fold, test=relabelled_test)
    others = [u for u in utterances if u.id not in test_ids] + relabelled_test
    again_knn, again_calibration = _run_fold(others, relabelled, tmp_path / "relabelled")
    assert again_knn == knn
    assert again_calibration == calibration


def test_a_crossval_keeps_its_knn_tuning(small_synthetic_corpus, tmp_path):
    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=2,
                         feature_cache=str(tmp_path / "cache"))  # fmt: skip
    crossval(utterances, [fold], config, tmp_path / "cv", with_baseline=False, with_probe=False)
    experiment = json.loads((tmp_path / "cv" / "experiment.json").read_text())
    assert experiment["knn_tuning"] == "speakers"  # the frozen encoder's default
    with pytest.raises(ConfigError, match="knn_tuning 'speakers' → 'validation'"):
        crossval(utterances, [fold], config, tmp_path / "cv", with_baseline=False,
                 with_probe=False, knn_tuning="validation")  # fmt: skip

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

import emoknn.baseline as baseline
from emoknn.audio import load_audio
from emoknn.corpora import load_synthetic
from emoknn.errors import AudioError, ConfigError
from emoknn.experiments import paper_comparisons


def test_features_are_the_88_egemaps_functionals_finite_and_deterministic(
    small_synthetic_corpus,
):
    utterances = load_synthetic(small_synthetic_corpus)[:3]
    vectors = [baseline.utterance_features(load_audio(u.path)) for u in utterances]
    assert {v.shape for v in vectors} == {(88,)}
    assert all(np.isfinite(v).all() for v in vectors)
    assert not np.allclose(vectors[0], vectors[1])  # they measure the clip
    again = baseline.utterance_features(load_audio(utterances[0].path))
    np.testing.assert_array_equal(again, vectors[0])
    silence = baseline.utterance_features(np.zeros(16000, dtype=np.float32))
    assert silence.shape == (88,) and np.isfinite(silence).all()


def test_a_clip_too_short_for_opensmile_is_one_line_naming_the_file(tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, np.sin(np.arange(640) / 5).astype(np.float32) * 0.3, 16000)  # 40 ms
    with pytest.raises(AudioError, match=r"short\.wav: 0\.040 s is too short for openSMILE's "
                       r"eGeMAPSv02 functionals") as caught:
        baseline.utterance_features(load_audio(short), source=str(short))
    assert "\n" not in str(caught.value)
    enough = np.sin(np.arange(1600) / 5).astype(np.float32) * 0.3  # 100 ms: measured
    assert np.isfinite(baseline.utterance_features(enough)).all()


def test_compare_is_the_larger_option_and_unknown_sets_are_refused():
    clip = (0.3 * np.sin(2 * np.pi * 180 * np.arange(8000) / 16000)).astype(np.float32)
    assert baseline.utterance_features(clip, feature_set="ComParE_2016").shape == (6373,)
    assert baseline.label("ComParE_2016") == "Baseline (ComParE + LR)"
    assert baseline.label() == baseline.LABEL == "Baseline (eGeMAPS + LR)"
    with pytest.raises(ConfigError, match="'IS09': expected one of eGeMAPSv02, ComParE_2016"):
        baseline.utterance_features(clip, feature_set="IS09")


def test_feature_cache_is_reused_and_stale_rows_are_recomputed(
    small_synthetic_corpus, tmp_path, monkeypatch
):
    utterances = load_synthetic(small_synthetic_corpus)[:4]
    cache = tmp_path / "features.npz"
    computed = []
    real = baseline.utterance_features
    monkeypatch.setattr(
        baseline, "utterance_features",
        lambda w, **kw: computed.append((len(w), kw["feature_set"])) or real(w, **kw),
    )
    first = baseline.cached_features(utterances, cache)
    assert len(computed) == 4 and cache.is_file()
    second = baseline.cached_features(utterances[:2], cache)
    assert len(computed) == 4  # every row from the cache
    np.testing.assert_array_equal(second[utterances[1].id], first[utterances[1].id])
    stat = os.stat(utterances[0].path)
    os.utime(utterances[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        baseline.cached_features(utterances, cache)
    finally:
        os.utime(utterances[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len(computed) == 5  # only the touched file was recomputed
    other = baseline.cached_features(utterances[:1], cache, "ComParE_2016")
    assert computed[-1][1] == "ComParE_2016" and other[utterances[0].id].shape == (6373,)


def test_classifier_picks_c_on_validation_and_learns():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (4, 10))
    make = lambda n: (  # noqa: E731
        np.concatenate([centers[c] + rng.normal(0, 1, (n, 10)) for c in range(4)]),
        np.repeat(np.arange(4), n),
    )
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = make(20), make(10), make(10)
    model = baseline.FeatureBaseline().fit(x_train, y_train, x_val, y_val)
    assert model.c_ in baseline.C_GRID
    assert (model.predict(x_test) == y_test).mean() > 0.9
    with pytest.raises(RuntimeError, match="call fit"):
        baseline.FeatureBaseline().predict(x_test)


def _records(trainings: dict[str, float], folds: int = 8) -> list[dict]:
    """Fake fold records: each training's model scores its offset above 0.6 on every fold."""
    labels = {"ce": "CE", "scl": "CE+SCL", "baseline": "Baseline (features + LR)"}
    records = []
    for training, offset in trainings.items():
        label = labels.get(training, training)
        inferences = ("model",) if training == "baseline" else ("model", "knn", "interpolated")
        for fold in range(folds):
            for i, inference in enumerate(inferences):
                variant = {"model": label, "knn": f"{label} kNN only",
                           "interpolated": f"{label} + kNN"}[inference]  # fmt: skip
                ua = 0.6 + offset + 0.01 * i + 0.001 * fold
                records.append({"variant": variant, "training": training, "inference": inference,
                                "fold": f"fold{fold:02d}", "ua": ua, "wa": ua})  # fmt: skip
    return records


def test_paper_comparisons_cover_every_table_that_ran():
    records = _records({"baseline": 0.0, "ce": 0.02, "scl": 0.03, "scl-noise": 0.025,
                        "scl-pitch": 0.03, "scl-l0.2": 0.01})  # fmt: skip
    comparisons = paper_comparisons(records)
    names = [c.name for c in comparisons]
    assert names == [
        "CE+SCL vs CE", "CE + kNN vs CE", "CE+SCL + kNN vs CE+SCL", "CE+SCL + kNN vs CE",
        "scl-noise vs CE+SCL", "scl-pitch vs CE+SCL", "scl-l0.2 vs CE+SCL",
        "best learned variant (CE+SCL + kNN) vs Baseline (features + LR)",
    ]  # fmt: skip
    first = comparisons[0]
    assert first.ua.differences == pytest.approx([0.01] * 8)
    assert first.ua.test == "wilcoxon" and first.ua.p_value == pytest.approx(2 / 2**8)
    assert first.sentence.startswith("CE+SCL vs CE: +1.0 UA (= WA) points (")
    assert "no UA (= WA) difference detectable (+0.0" in comparisons[5].sentence  # pitch = mixed
    assert paper_comparisons(_records({"ce": 0.0})) != []  # CE + kNN vs CE alone
    assert [c.name for c in paper_comparisons(_records({"baseline": 0.0}))] == []


def test_crossval_refuses_an_unknown_feature_set_before_any_work(small_synthetic_corpus, tmp_path):
    from typer.testing import CliRunner

    from emoknn.cli import app

    out = tmp_path / "cv"
    result = CliRunner().invoke(app, ["crossval", "--corpus", str(small_synthetic_corpus),
                                      "--out", str(out), "--preset", "tiny",
                                      "--baseline-features", "IS09"])  # fmt: skip
    assert result.exit_code != 0
    assert str(result.exception) == (
        "--baseline-features must be one of eGeMAPSv02, ComParE_2016; got 'IS09'"
    )
    assert not out.exists()

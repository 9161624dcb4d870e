"""The encoder probe (emoknn.probe): its choices, that the test speaker never reaches them, and its
row in cross-validations, reports and the demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emoknn import probe
from emoknn.cli import app
from emoknn.corpora import label_names, load_synthetic
from emoknn.experiments import paper_comparisons
from emoknn.folds import speaker_folds

runner = CliRunner()


def _layered(n_per_class: int, informative: int, rng: np.random.Generator, layers: int = 3):
    """(N, layers, 8) features where only layer `informative` carries the class, and labels."""
    labels = np.repeat(np.arange(4), n_per_class)
    x = rng.normal(0.0, 1.0, (len(labels), layers, 8))
    x[:, informative, :4] += 3.0 * np.eye(4)[labels]
    return x.astype(np.float32), labels


def test_probe_picks_the_informative_layer_on_validation_and_learns():
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        _layered(n, informative=1, rng=rng) for n in (20, 10, 10)
    )
    fitted = probe.EncoderProbe().fit(x_train, y_train, x_val, y_val)
    assert fitted.layer_ == 1 and fitted.c_ in probe.C_GRID
    assert fitted.scores_.shape == (3, len(probe.C_GRID))
    assert fitted.val_ua_ == fitted.scores_.max() == fitted.scores_[1].max()
    assert (fitted.predict(x_test) == y_test).mean() > 0.9
    again = probe.EncoderProbe().fit(x_train, y_train, x_val, y_val)  # deterministic
    np.testing.assert_array_equal(again.classifier_.coef_, fitted.classifier_.coef_)
    with pytest.raises(RuntimeError, match="call fit"):
        probe.EncoderProbe().predict(x_test)
    with pytest.raises(ValueError, match="x_train: expected features"):
        probe.EncoderProbe().fit(x_train[:, 0], y_train, x_val, y_val)


def test_ties_go_to_the_earlier_layer_then_the_smaller_c():
    rng = np.random.default_rng(1)
    x_train, y_train = _layered(20, informative=0, rng=rng)
    x_val, y_val = _layered(10, informative=0, rng=rng)
    same = np.repeat(x_train[:, :1], 3, axis=1), np.repeat(x_val[:, :1], 3, axis=1)
    fitted = probe.EncoderProbe(c_grid=(10.0, 1.0)).fit(same[0], y_train, same[1], y_val)
    assert fitted.layer_ == 0  # three identical layers: the first
    assert np.all(fitted.scores_ == fitted.scores_[:1])
    assert fitted.scores_[0, 0] == fitted.scores_[0, 1]  # well separated: both C reach it
    assert fitted.c_ == 1.0  # the smaller C of the tie, whatever order the grid was given in


def _fold_with_features(small_synthetic_corpus):
    """Fold 0 of the small corpus and fixed random pooled layers (4 layers × 6) per utterance,
    with a class signal in layer 2 and a per-speaker offset."""
    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    labels = label_names(utterances)
    rng = np.random.default_rng(0)
    speakers = sorted({u.speaker for u in utterances})
    offsets = {s: rng.normal(0, 1, (4, 6)) for s in speakers}
    rows = {}
    for u in utterances:
        x = rng.normal(0, 1, (4, 6)) + offsets[u.speaker]
        x[2, labels.index(u.label)] += 2.5
        rows[u.id] = x.astype(np.float32)
    return fold, labels, rows


def test_test_speaker_never_reaches_the_statistics_or_the_choice(small_synthetic_corpus):
    """A shift planted on the test speaker's features only changes nothing the probe learns: not
    the standardisation statistics, not the layer or C, not the classifier; and the statistics
    are exactly those of the training + validation clips of the chosen layer."""
    fold, labels, rows = _fold_with_features(small_synthetic_corpus)
    test_ids = {u.id for u in fold.test}
    requested: list[set[str]] = []

    def clean(group):
        requested.append({u.id for u in group})
        return np.stack([rows[u.id] for u in group])

    def shifted(group):  # the test speaker far away, in every layer
        return np.stack([rows[u.id] + (100.0 if u.id in test_ids else 0.0) for u in group])

    a = probe.fit_fold(fold.train, fold.val, fold.test, labels, clean)
    b = probe.fit_fold(fold.train, fold.val, fold.test, labels, shifted)
    assert (a.probe.layer_, a.probe.c_) == (b.probe.layer_, b.probe.c_)
    np.testing.assert_array_equal(a.probe.scores_, b.probe.scores_)
    np.testing.assert_array_equal(a.probe.scaler_.mean_, b.probe.scaler_.mean_)
    np.testing.assert_array_equal(a.probe.scaler_.scale_, b.probe.scaler_.scale_)
    np.testing.assert_array_equal(a.probe.classifier_.coef_, b.probe.classifier_.coef_)
    # Direct computation on the training + validation clips of the chosen layer.
    seen = np.stack([rows[u.id][a.probe.layer_] for u in fold.train + fold.val]).astype(np.float64)
    np.testing.assert_allclose(a.probe.scaler_.mean_, seen.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(a.probe.scaler_.scale_, seen.std(axis=0), rtol=1e-12)
    # The choice is made on the validation speaker alone: the same scores from a fit on train
    # and validation features only.
    y = lambda us: np.array([labels.index(u.label) for u in us])  # noqa: E731
    direct = probe.EncoderProbe().fit(clean(fold.train), y(fold.train), clean(fold.val),
                                      y(fold.val))  # fmt: skip
    np.testing.assert_array_equal(direct.scores_, a.probe.scores_)
    assert a.probe.layer_ == 2  # where the class signal is
    # The test speaker's clips were only ever read on their own (to be predicted).
    assert all(ids <= test_ids or not ids & test_ids for ids in requested)


def test_best_learned_variant_is_compared_with_the_probe_and_the_baseline():
    records = []
    for fold in range(8):
        for training, label, offset in (("ce", "CE", 0.02), ("baseline", "Baseline (features + LR)",
                                        0.0), ("probe", "Encoder probe (LR)", 0.05)):  # fmt: skip
            ua = 0.6 + offset + 0.001 * fold
            records.append({"variant": label, "training": training, "inference": "model",
                            "fold": f"fold{fold:02d}", "ua": ua, "wa": ua})  # fmt: skip
    names = [c.name for c in paper_comparisons(records)]
    # The probe is not a learned variant: CE is the best one even though the probe is higher.
    assert names == ["best learned variant (CE) vs Baseline (features + LR)",
                     "best learned variant (CE) vs Encoder probe (LR)"]  # fmt: skip
    below = paper_comparisons(records)[1]
    assert below.ua.mean == pytest.approx(-0.03) and below.ua.significant


def test_the_demo_shows_the_probe_row_and_says_where_the_heads_stand(tmp_path, monkeypatch):
    from emoknn import demo

    small = {"num_sessions": 3, "utterances_per_class": 2, "min_seconds": 0.5, "max_seconds": 0.8}
    monkeypatch.setattr(demo, "CORPUS_SETTINGS", small)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--encoder", "tiny",
                                 "--folds", "0", "--epochs", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "Encoder probe (LR)" in output and "(layer " in output
    results = json.loads((tmp_path / "demo" / "crossval" / "results.json").read_text())
    [row] = [r for r in results["records"] if r["training"] == "probe"]
    assert row["inference"] == "model" and row["fold"] == "fold00-Syn01F"
    assert 0 <= row["layer"] <= 2 and row["c"] in probe.C_GRID
    report = (tmp_path / "demo" / "crossval" / "report.md").read_text()
    assert "| Encoder probe (LR) |" in report and "the layer and C chosen" in report
    assert f"| fold00-Syn01F | Syn01F / Syn01M | {row['layer']} | {row['c']:g} | " in report
    assert len(row["val_ua_by_layer"]) == 3 and row["val_ua"] == max(row["val_ua_by_layer"])
    assert "Validation UA % of each layer (its best C), mean over folds: layer 0 " in report
    assert "the encoder probe (Encoder probe (LR) UA" in output
    assert "the classical baseline (Baseline (eGeMAPS + LR) UA" in output


def test_a_probe_fold_result_must_say_what_it_chose(tmp_path):
    from emoknn.errors import FileFormatError
    from emoknn.experiments import read_fold_result

    result = {"training": "probe", "label": probe.LABEL, "fold": "fold00-A", "test_speaker": "A",
              "val_speaker": "B", "num_test": 4, "layer": 2, "c": 0.1,
              "scores": {"model": {"ua": 0.5, "wa": 0.5}}}  # fmt: skip
    path = tmp_path / "fold_result.json"
    path.write_text(json.dumps(result))
    assert read_fold_result(path)["layer"] == 2
    for key, bad, message in (("layer", "2", "'layer' must be a layer index"),
                              ("layer", -1, "'layer' must be a layer index"),
                              ("c", 0, "'c' must be a positive number"),
                              ("c", True, "'c' must be a positive number")):  # fmt: skip
        path.write_text(json.dumps({**result, key: bad}))
        with pytest.raises(FileFormatError, match=message):
            read_fold_result(path)


def test_probe_and_baseline_fit_on_one_blas_thread_and_restore_the_pools(monkeypatch):
    # A BLAS thread per core made the probe's small fits 8× slower (emoknn.threads).
    from threadpoolctl import threadpool_info, threadpool_limits

    from emoknn.baseline import FeatureBaseline

    seen: list[int] = []
    real = probe.EncoderProbe._classifier

    class Spy:
        def __init__(self, c: float) -> None:
            self.inner = real(c)

        def fit(self, x, y):
            seen.append(max(pool["num_threads"] for pool in threadpool_info()))
            self.inner.fit(x, y)
            return self

        def predict(self, x):
            seen.append(max(pool["num_threads"] for pool in threadpool_info()))
            return self.inner.predict(x)

    monkeypatch.setattr(probe.EncoderProbe, "_classifier", staticmethod(Spy))
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_val, y_val) = (_layered(n, 0, rng) for n in (10, 5))
    with threadpool_limits(limits=2):  # what a 2-core machine starts with
        fitted = probe.EncoderProbe(c_grid=(1.0,)).fit(x_train, y_train, x_val, y_val)
        fitted.predict(x_val)
        baseline_threads = []
        monkeypatch.setattr(FeatureBaseline, "_pipeline", staticmethod(
            lambda c: baseline_threads.append(max(p["num_threads"] for p in threadpool_info()))
            or Spy(1.0)))  # fmt: skip
        FeatureBaseline(c_grid=(1.0,)).fit(x_train[:, 0], y_train, x_val[:, 0], y_val)
        after = max(pool["num_threads"] for pool in threadpool_info())
    assert seen and set(seen) == {1} and set(baseline_threads) == {1}
    assert after == 2  # the limit is lifted on the way out

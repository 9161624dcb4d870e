"""Probabilities that mean what they say: the expected calibration error, temperature scaling,
and a fitted temperature carried by the model folder to `predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emoknn.calibration import (
    Calibration,
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from emoknn.config import make_config
from emoknn.corpora import load_synthetic
from emoknn.errors import ConfigError, ModelFolderError
from emoknn.experiments import crossval
from emoknn.folds import speaker_folds
from emoknn.knn import KnnSettings
from emoknn.metrics import expected_calibration_error
from emoknn.model_folder import CALIBRATION_FILE, load_calibration
from emoknn.predict import EmotionRecognizer

# ── ECE on hand-made cases ───────────────────────────────────────────────────────────────────────


def test_ece_is_zero_when_each_bins_confidence_is_its_accuracy():
    # 10 clips at confidence 0.8, 8 of them right: the one bin (0.7, 0.8] has acc = conf = 0.8.
    probabilities = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_certain_but_half_wrong_predictions_is_one_half():
    probabilities = np.tile([1.0, 0.0, 0.0], (4, 1))
    assert expected_calibration_error(probabilities, np.array([0, 0, 1, 2])) == pytest.approx(0.5)


def test_ece_weighs_each_bin_by_its_share_of_the_clips():
    # bin (0.9, 1.0]: 2 clips at 0.95, 1 right → |0.5 − 0.95| = 0.45, weight 2/5
    # bin (0.5, 0.6]: 3 clips at 0.6, 3 right  → |1.0 − 0.6| = 0.40, weight 3/5
    probabilities = np.array([[0.95, 0.05], [0.05, 0.95], [0.6, 0.4], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1, 0])
    expected = 2 / 5 * 0.45 + 3 / 5 * 0.40
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)


def test_ece_bins_are_closed_on_the_right():
    # 0.5 falls in (0.4, 0.5] with 0.45 (one bin: mean conf 0.475, acc 1/2 → 0.025); were 0.5 in
    # (0.5, 0.6] the two bins would give |0 − 0.45|/2 + |1 − 0.5|/2 = 0.475.
    probabilities = np.array([[0.5, 0.5, 0.0], [0.45, 0.30, 0.25]])
    labels = np.array([0, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.025)
    assert expected_calibration_error(probabilities, labels, bins=1) == pytest.approx(0.025)


def test_ece_refuses_bad_input_in_one_line():
    with pytest.raises(ConfigError, match="probabilities"):
        expected_calibration_error(np.ones(3), np.zeros(3))
    with pytest.raises(ConfigError, match="zero predictions"):
        expected_calibration_error(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ConfigError, match="bins"):
        expected_calibration_error(np.ones((2, 2)) / 2, np.zeros(2), bins=0)


# ── temperature scaling ──────────────────────────────────────────────────────────────────────────


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_a_fitted_temperature_undoes_overconfidence_and_keeps_the_argmax():
    rng = np.random.default_rng(0)
    labels = rng.integers(4, size=2000)
    logits = rng.normal(size=(2000, 4))
    logits[np.arange(2000), labels] += 1.5  # calibrated by construction: labels ~ softmax(logits)
    truth = _softmax(logits)
    labels = np.array([rng.choice(4, p=p) for p in truth])
    overconfident = _softmax(3.0 * logits)
    temperature = fit_temperature(overconfident, labels)
    assert 2.5 < temperature < 3.5
    calibrated = apply_temperature(overconfident, temperature)
    assert negative_log_likelihood(calibrated, labels) < negative_log_likelihood(
        overconfident, labels
    )
    assert expected_calibration_error(calibrated, labels) < expected_calibration_error(
        overconfident, labels
    )
    assert (calibrated.argmax(axis=1) == overconfident.argmax(axis=1)).all()
    assert np.allclose(calibrated.sum(axis=1), 1.0)


def test_temperature_one_changes_nothing_and_a_bad_one_is_refused():
    p = np.array([[0.7, 0.2, 0.1]])
    assert np.array_equal(apply_temperature(p, 1.0), p)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="temperature"):
            apply_temperature(p, bad)


def test_interpolation_temperature_applies_only_to_the_settings_it_was_fitted_with():
    settings = KnnSettings(5, 0.3, 0.2, 0.8, "ua")
    calibration = Calibration(2.0, 3.0, settings.to_dict())
    p = np.array([[0.9, 0.1]])
    assert calibration.interpolated(p, settings)[0, 0] < 0.9
    other = KnnSettings(6, 0.3, 0.2, 0.8, "ua")
    assert np.array_equal(calibration.interpolated(p, other), p)


# ── a tiny run: the temperatures in the model folder, and what predict shows ─────────────────────


@pytest.fixture(scope="module")
def calibrated_run(small_synthetic_corpus, tmp_path_factory):
    """Fold 0 of a frozen tiny cross-validation (kNN tuned over speakers, temperatures fitted)."""
    out = tmp_path_factory.mktemp("calibrated")
    utterances = load_synthetic(small_synthetic_corpus)
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=12,
                         feature_cache=str(out / "cache"))  # fmt: skip
    results = crossval(utterances, speaker_folds(utterances)[:1], config, out / "cv",
                       with_baseline=False, with_probe=False)  # fmt: skip
    return out / "cv" / "scl" / results[-1]["fold"], results


def test_a_fitted_temperature_lowers_the_validation_nll(calibrated_run):
    run, results = calibrated_run
    stored = json.loads((run / CALIBRATION_FILE).read_text())
    for stage in ("model", "interpolated"):
        before, after = stored["nll"][stage]
        assert after <= before + 1e-12
    assert stored["clips"] > 0 and stored["speakers"]
    scores = results[-1]["scores"]
    for inference in ("model", "knn", "interpolated"):
        assert 0.0 <= scores[inference]["ece"] <= 1.0
        assert 0.0 <= scores[inference]["ece_raw"] <= 1.0
    assert results[-1]["calibration"]["model_temperature"] == stored["model_temperature"]


def test_predict_shows_calibrated_probabilities_with_the_same_labels(
    calibrated_run, small_synthetic_corpus
):
    run, _ = calibrated_run
    clips = sorted(small_synthetic_corpus.rglob("*.wav"))[:12]
    recognizer = EmotionRecognizer.load(run, device="cpu")
    calibration = load_calibration(run)
    assert recognizer.calibration == calibration
    shown = recognizer.score([_load(c) for c in clips])
    recognizer.calibration = Calibration()  # what a folder without calibration.json loads with
    raw = recognizer.score([_load(c) for c in clips])
    assert (shown["final"].argmax(1) == raw["final"].argmax(1)).all()
    assert (shown["model"].argmax(1) == raw["model"].argmax(1)).all()
    expected = apply_temperature(raw["model"], calibration.model_temperature)
    assert np.allclose(shown["model"], expected)
    assert calibration.fitted_for == recognizer.knn_settings.to_dict()  # knn.json's settings
    mixed = apply_temperature(raw["final"], calibration.interpolated_temperature)
    assert np.allclose(shown["final"], mixed)


def _load(path):
    from emoknn.audio import load_audio

    return load_audio(path)[:8000]


def test_a_folder_without_calibration_loads_with_temperature_one(calibrated_run, tmp_path):
    import shutil

    run, _ = calibrated_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copytree(run.parent.parent / "encoders", tmp_path / "encoders")
    (copy / CALIBRATION_FILE).unlink()
    assert load_calibration(copy) == Calibration()
    assert EmotionRecognizer.load(copy, device="cpu").calibration == Calibration()
    (copy / CALIBRATION_FILE).write_text(json.dumps({"model_temperature": -1,
                                                     "interpolated_temperature": 1,
                                                     "fitted_for": None}))  # fmt: skip
    with pytest.raises(ModelFolderError, match=r"calibration\.json: model_temperature"):
        load_calibration(copy)

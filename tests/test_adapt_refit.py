"""`emoknn adapt`'s head refit: a new linear head on the source corpus + the user's clips, scored
beside zero-shot and the kNN on held-out folds, and shipped as a plain model folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import emoknn.adapt as adapt_module
import emoknn.refit as refit_module
from emoknn.adapt import adapt_model, choose_remedy, load_labelled_clips, load_source
from emoknn.cli import app
from emoknn.corpora import generate_synthetic_corpus
from emoknn.errors import ConfigError
from emoknn.model import EmotionModel, ModelConfig
from emoknn.predict import EmotionRecognizer
from emoknn.refit import (
    RefitSettings,
    fit_linear_head,
    pooled_utterances,
    refit_model,
    sample_weights,
)


@pytest.fixture(scope="module")
def shifted_corpus(tmp_path_factory) -> Path:
    """A second synthetic corpus: other voices (seed 1) than the one `trained_run` learnt."""
    root = tmp_path_factory.mktemp("shifted")
    generate_synthetic_corpus(root, seed=1, num_sessions=3, utterances_per_class=3,
                              min_seconds=0.5, max_seconds=1.0)  # fmt: skip
    return root


def test_sample_weights_balance_classes_within_each_domain_and_share_the_total():
    labels = np.array([0, 0, 0, 1, 2, 2])
    is_target = np.array([False, False, False, False, True, True])
    weights = sample_weights(labels, is_target, 0.25)
    assert weights.sum() == pytest.approx(len(labels))
    assert weights[is_target].sum() == pytest.approx(0.25 * len(labels))
    # Within the source, the one clip of class 1 weighs as much as the three of class 0.
    assert weights[3] == pytest.approx(weights[:3].sum())
    # Without source clips the user's clips carry everything (plain balanced weights).
    alone = sample_weights(np.array([0, 0, 1]), np.ones(3, bool), 0.25)
    assert alone.tolist() == pytest.approx([0.75, 0.75, 1.5])


def test_a_refitted_head_is_an_emotion_model_head_computing_it_exactly():
    torch.manual_seed(0)
    source = EmotionModel(ModelConfig(encoder="tiny", labels=["a", "b"])).eval()
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(40, source.num_layers + 1, source.pooled_size)) * 3 + 1
    labels = np.repeat([0, 1, 2], [14, 13, 13])  # a third class the source model lacks
    head = fit_linear_head(pooled, labels, 4, np.zeros(40, bool), RefitSettings((1, 2), 1.0))
    model = refit_model(source, head, ["a", "b", "c", "d"])  # "d": no clip, probability 0
    output = model.head(torch.from_numpy(pooled).float())
    probs = torch.softmax(output.logits, dim=1).numpy()
    np.testing.assert_allclose(probs, head.probs(pooled), atol=1e-5)
    np.testing.assert_allclose(output.embeddings.numpy(), head.embed(pooled), atol=1e-4)
    assert probs[:, 3].max() == 0.0 and model.labels == ["a", "b", "c", "d"]
    assert model.encoder is source.encoder  # the same encoder: only the head is new


def test_choose_remedy_keeps_the_best_and_prefers_zero_shot_on_ties():
    summary = {name: {"ua_mean": ua} for name, ua in
               (("model", 0.5), ("knn", 0.9), ("interpolated", 0.6), ("refit", 0.7),
                ("refit_knn", 0.7))}  # fmt: skip
    # "knn" (the kNN alone) is a figure, not a candidate; refit wins the tie with refit+kNN.
    assert choose_remedy(summary, "best", "ua", True) == "refit"
    tied = {name: {"ua_mean": 0.5} for name in ("model", "interpolated", "refit")}
    assert choose_remedy(tied, "best", "ua", True) == "model"
    # A model that lacks one of your labels is no candidate alone.
    assert choose_remedy(tied, "best", "ua", False) == "interpolated"
    assert choose_remedy(summary, "knn", "ua", True) == "interpolated"


@pytest.fixture(scope="module")
def refitted(trained_run, shifted_corpus, tmp_path_factory) -> Path:
    """The tiny trained run adapted to the shifted corpus, shipping the head refit + kNN."""
    out = tmp_path_factory.mktemp("refitted") / "model"
    adapt_model(load_source(trained_run), shifted_corpus / "manifest.csv", out, device="cpu",
                max_folds=3, remedy="refit+knn")  # fmt: skip
    return out


def test_the_refit_folder_reports_every_remedy_beside_zero_shot(refitted):
    report = json.loads((refitted / "adapt.json").read_text())
    remedy = report["remedy"]
    assert remedy["chosen"] == "refit+knn" and remedy["inference"] == "refit_knn"
    assert set(remedy["candidates"]) == {"zero-shot", "knn", "refit", "refit+knn"}
    assert remedy["zero_shot"] == report["summary"]["model"]["ua_mean"]
    gain = report["summary"]["refit_knn"]["ua_mean"] - report["summary"]["model"]["ua_mean"]
    assert remedy["gain_over_zero_shot"] == pytest.approx(gain)
    assert remedy["comparison"]["a"] == "refit_knn" and remedy["comparison"]["b"] == "model"
    refit = report["refit"]
    # The run's training + validation clips (fold 0 of the seed-0 corpus: 5 speakers × 12).
    assert refit["source_clips"] == 60 and refit["source_fold"]
    assert "Remedy shipped: **refit+knn**" in (refitted / "README.md").read_text()
    assert report["model_labels"] == report["labels"]  # the refitted head knows every label


def test_a_refit_folder_round_trips_through_predict_export_and_pack(refitted, shifted_corpus,
                                                                    tmp_path):  # fmt: skip
    from emoknn.export import OnnxEmotionRecognizer, export_onnx
    from emoknn.model_folder import pack_model

    clips = [u.path for u in load_labelled_clips(shifted_corpus / "manifest.csv")[0][:6]]
    expected = EmotionRecognizer.load(refitted, device="cpu").predict(clips)
    pack_model(refitted, tmp_path / "packed")
    packed = EmotionRecognizer.load(tmp_path / "packed", device="cpu").predict(clips)
    export_onnx(refitted, tmp_path / "onnx")
    exported = OnnxEmotionRecognizer.load(tmp_path / "onnx").predict(clips)
    for want, got_packed, got_onnx in zip(expected, packed, exported, strict=True):
        assert got_packed.probabilities == pytest.approx(want.probabilities, abs=1e-6)
        assert got_onnx.probabilities == pytest.approx(want.probabilities, abs=1e-4)
        assert got_onnx.label == want.label


def test_no_held_out_clip_reaches_the_refit_its_statistics_or_the_layer_choice(
    trained_run, shifted_corpus, tmp_path, monkeypatch
):
    """Every fit the refit makes is spied on, tagged with the held-out fold being scored: the
    clips of that fold are never among its rows (so neither in its weights, its standardisation
    statistics nor the layer choice made on inner folds of the other clips), and the source-side
    layer choice sees source clips only. The kNN side is checked in test_adapt.py."""
    source = load_source(trained_run)
    clips, _ = load_labelled_clips(shifted_corpus / "manifest.csv")
    user = pooled_utterances(source.model, clips, source.max_seconds).reshape(len(clips), -1)
    calls, scoring = [], {"held_out": None}

    def spy(pooled, labels, num_classes, is_target, settings):
        calls.append((np.asarray(pooled).reshape(len(pooled), -1), np.asarray(is_target),
                      scoring["held_out"], settings.layers))  # fmt: skip
        return fit_linear_head(pooled, labels, num_classes, is_target, settings)

    original = adapt_module._refit_probabilities

    def scored(plan, pooled, labels, rest, test, ids, *args):
        scoring["held_out"] = {ids[i] for i in np.flatnonzero(test)}
        try:
            return original(plan, pooled, labels, rest, test, ids, *args)
        finally:
            scoring["held_out"] = None

    monkeypatch.setattr(adapt_module, "fit_linear_head", spy)
    monkeypatch.setattr(refit_module, "fit_linear_head", spy)
    monkeypatch.setattr(adapt_module, "_refit_probabilities", scored)
    result = adapt_model(source, shifted_corpus / "manifest.csv", tmp_path / "out", device="cpu",
                         max_folds=3)  # fmt: skip

    def clips_in(rows: np.ndarray) -> set[str]:
        """The user's clips whose pooled features are among `rows`."""
        distance = np.abs(rows[:, None, :] - user[None, :, :]).max(axis=2)  # (rows, clips)
        return {clips[j].id for j in np.flatnonzero((distance < 1e-5).any(axis=0))}

    source_side = [rows for rows, target, _, _ in calls if not target.any()]
    assert source_side and all(not clips_in(rows) for rows in source_side)
    everyone = {u.id for u in clips}
    folds = result.per_fold
    assert len(folds) == 3
    for record in folds:
        held_out = set(record["ids"])
        fits = [(rows, target, layers) for rows, target, tag, layers in calls
                if tag == held_out]  # fmt: skip
        # 6 speakers in 3 folds: 4 left, in 3 inner folds, on which every layer is tried.
        candidates = source.model.num_layers + 1
        assert len(fits) == candidates * 3 + 1
        for rows, target, _ in fits:
            assert not clips_in(rows[target]) & held_out
            assert not clips_in(rows[~target])  # the source rows are the source corpus's
        rows, target, layers = fits[-1]  # the fold's refit: every other clip, the chosen layers
        assert clips_in(rows[target]) == everyone - held_out
        assert list(layers) == record["refit_layers"]
    # After the folds: the shipped layers are chosen on the held-out folds of every clip.
    shipped = [rows for rows, target, tag, _ in calls if tag is None and target.any()]
    assert shipped and clips_in(shipped[-1]) <= everyone
    report = json.loads((tmp_path / "out" / "adapt.json").read_text())["refit"]
    assert report["your_layer_scores"] and "your clips" in report["layer_choice"]
    assert len(report["your_layer_scores"]) == source.model.num_layers + 1


def test_the_layer_choice_on_your_folds_finds_the_layer_that_separates_your_classes():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(40, 3, 4))
    source_labels = np.arange(40) % 2
    labels = np.arange(24) % 2
    pooled = rng.normal(size=(24, 3, 4))
    pooled[:, 2, 0] += 4.0 * labels  # only layer 2 tells your classes apart
    folds = np.arange(24) % 3
    layers, scores = refit_module.choose_layers_on_folds(
        source, source_labels, pooled, labels, folds, 2, RefitSettings((0,), 0.1))
    assert layers == (2,) and set(scores) == {"0", "1", "2"}
    assert scores["2"] > max(scores["0"], scores["1"]) + 0.2
    # Folds that cannot be scored (one label outside each): no choice.
    assert refit_module.choose_layers_on_folds(
        source, source_labels, pooled, np.zeros(24, int), folds, 2,
        RefitSettings((0,), 0.1)) == (None, {})


def test_cli_adapt_names_the_shipped_remedy(trained_run, shifted_corpus, tmp_path):
    result = CliRunner().invoke(app, [
        "adapt", "--model", str(trained_run), "--data", str(shifted_corpus / "manifest.csv"),
        "--out", str(tmp_path / "out"), "--folds", "3", "--remedy", "refit",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Shipped: refit" in result.output and "head refit:" in result.output
    settings = json.loads((tmp_path / "out" / "knn.json").read_text())["interpolated"]
    assert settings["alpha"] == 0.0  # the refit alone: the datastore only shows neighbours
    bad = CliRunner().invoke(app, [
        "adapt", "--model", str(trained_run), "--data", str(shifted_corpus / "manifest.csv"),
        "--out", str(tmp_path / "never"), "--remedy", "magic",
    ])  # fmt: skip
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
    assert "--remedy must be one of" in str(bad.exception)
    assert not (tmp_path / "never").exists()


def test_a_model_that_records_no_corpus_refits_on_your_clips_alone(tmp_path, shifted_corpus):
    from tiny_hf import save_tiny_classifier

    folder = save_tiny_classifier("wav2vec2", tmp_path / "hf")
    source = load_source(folder)
    with pytest.raises(ConfigError, match="not a training run"):
        adapt_model(source, shifted_corpus / "manifest.csv", tmp_path / "never", device="cpu",
                    source_corpus=shifted_corpus)  # fmt: skip
    assert not (tmp_path / "never").exists()
    mapping = {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}
    result = adapt_model(source, shifted_corpus / "manifest.csv", tmp_path / "out", mapping,
                         device="cpu", max_folds=3, remedy="refit")  # fmt: skip
    assert result.report["refit"]["source_clips"] == 0
    EmotionRecognizer.load(tmp_path / "out", device="cpu")

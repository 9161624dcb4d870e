"""`emoknn adapt`: a trained or published model adapted to one's own clips with kNN."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import emoknn.adapt as adapt_module
from emoknn.adapt import (
    adapt_model,
    assign_folds,
    load_labelled_clips,
    load_source,
    parse_label_map,
    resolve_label_map,
)
from emoknn.audio import load_audio
from emoknn.cli import app
from emoknn.corpora import load_synthetic
from emoknn.errors import ConfigError, CorpusError, EmoknnError
from emoknn.knn import search_other_groups
from emoknn.model_folder import load_datastore, load_knn_settings
from emoknn.predict import EmotionRecognizer
from tiny_hf import hf_logits, save_tiny_classifier

HF_MAP = {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny wav2vec2 classifier saved as Hugging Face saves one (labels neu, hap, ang, sad)."""
    return save_tiny_classifier("wav2vec2", tmp_path_factory.mktemp("hf") / "classifier")


@pytest.fixture(scope="module")
def source(hf_folder):
    return load_source(hf_folder)


def write_manifest(path: Path, utterances, rename=None, speakers=True, drop=()) -> Path:
    """A manifest of `utterances` (labels renamed, some dropped, speakers kept or not)."""
    rename = rename or {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        for u in utterances:
            if u.label not in drop:
                writer.writerow(
                    [u.path, rename.get(u.label, u.label), u.speaker if speakers else ""]
                )
    return path


@pytest.fixture(scope="module")
def adapted(source, small_synthetic_corpus, tmp_path_factory) -> Path:
    """The tiny classifier adapted to the synthetic corpus (speakers given, labels renamed)."""
    out = tmp_path_factory.mktemp("adapted") / "model"
    adapt_model(source, small_synthetic_corpus / "manifest.csv", out, HF_MAP, device="cpu",
                licence="cc-by-4.0", remedy="knn")  # fmt: skip
    return out


def test_adapted_folder_predicts_as_the_source_model(adapted, hf_folder, small_synthetic_corpus):
    for name in ("model.safetensors", "model.json", "datastore.npz", "knn.json", "adapt.json",
                 "README.md"):  # fmt: skip
        assert (adapted / name).is_file(), name
    report = json.loads((adapted / "adapt.json").read_text())
    assert report["labels"] == ["angry", "happy", "neutral", "sad"]
    assert report["protocol"]["grouping"] == "speaker" and report["protocol"]["folds"] == 6
    assert len(report["per_fold"]) == 6 and len(report["comparisons"]) == 3
    assert "cc-by-4.0" in (adapted / "README.md").read_text()
    recognizer = EmotionRecognizer.load(adapted, device="cpu")
    assert recognizer.labels == ["angry", "happy", "neutral", "sad"]
    clip = load_synthetic(small_synthetic_corpus)[0].path
    result = recognizer.predict(clip)[0]
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    # The model part is the published classifier, its labels renamed: HF's own probabilities.
    expected = torch.softmax(hf_logits(hf_folder, load_audio(clip)), 0).numpy()
    hf_names = ["neu", "hap", "ang", "sad"]
    for hf_name, p in zip(hf_names, expected, strict=True):
        assert result.model_probabilities[HF_MAP[hf_name]] == pytest.approx(p, abs=1e-5)
    store = load_datastore(adapted)
    assert len(store) == 72 and store.label_names == recognizer.labels


def test_adapted_folder_serves_and_exports(adapted, small_synthetic_corpus, tmp_path):
    from fastapi.testclient import TestClient

    from emoknn.export import OnnxEmotionRecognizer, export_onnx
    from emoknn.serve import create_app

    clip = load_synthetic(small_synthetic_corpus)[3].path
    recognizer = EmotionRecognizer.load(adapted, device="cpu")
    expected = recognizer.predict(clip)[0]
    client = TestClient(create_app(recognizer, model_name="adapted"))
    served = client.post("/predict", files={"file": ("c.wav", clip.read_bytes(), "audio/wav")})
    assert served.status_code == 200
    assert served.json()["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    export_onnx(adapted, tmp_path / "onnx")
    onnx = OnnxEmotionRecognizer.load(tmp_path / "onnx").predict(clip)[0]
    assert onnx.label == expected.label
    assert onnx.probabilities == pytest.approx(expected.probabilities, abs=1e-4)


def test_tuning_never_sees_the_query_or_its_speaker(source, small_synthetic_corpus, tmp_path,
                                                     monkeypatch):  # fmt: skip
    speaker_of = {u.id: u.speaker for u in load_synthetic(small_synthetic_corpus)}
    calls = []
    real_tune = adapt_module.tune_knn

    def spy(embeddings, labels, probs, store, **kwargs):
        calls.append((embeddings, store, kwargs))
        return real_tune(embeddings, labels, probs, store, **kwargs)

    monkeypatch.setattr(adapt_module, "tune_knn", spy)
    adapt_model(source, small_synthetic_corpus / "manifest.csv", tmp_path / "out", HF_MAP,
                device="cpu")  # fmt: skip
    # 6 held-out folds × (the kNN remedy, the head refit's kNN), then the final tuning on every
    # clip: every one of them is checked below.
    assert len(calls) == 2 * 6 + 1
    for embeddings, store, kwargs in calls:
        query_ids = kwargs["query_ids"]
        # Tuning groups are the speakers: a query only ever sees other speakers' clips.
        assert list(kwargs["query_groups"]) == [speaker_of[i] for i in query_ids]
        _, indices = search_other_groups(store, embeddings, 32, kwargs["query_groups"],
                                                 kwargs["store_groups"])  # fmt: skip
        neighbour_speakers = np.array([speaker_of[store.ids[j]] for j in indices.ravel()])
        query_speakers = np.repeat([speaker_of[i] for i in query_ids], indices.shape[1])
        assert not np.any(neighbour_speakers == query_speakers)
        # Held-out clips (and so their speakers) are in neither the store nor the queries.
        held_out = set(speaker_of) - set(store.ids)
        assert held_out.isdisjoint(query_ids)
        assert {speaker_of[i] for i in held_out}.isdisjoint(speaker_of[i] for i in store.ids)
    assert len(calls[-1][1]) == 72  # the shipped datastore: every clip


def test_four_labels_adapted_to_three(source, hf_folder, small_synthetic_corpus, tmp_path):
    utterances = load_synthetic(small_synthetic_corpus)
    manifest = write_manifest(tmp_path / "three.csv", utterances, speakers=False, drop=("sad",))
    result = adapt_model(source, manifest, tmp_path / "out", {"ang": "angry", "hap": "happy",
                         "neu": "neutral"}, device="cpu", remedy="knn")  # fmt: skip
    assert result.labels == result.model_labels == ["angry", "happy", "neutral"]
    assert result.grouping == "stratified"
    assert load_knn_settings(tmp_path / "out").interpolated.model_labels is None
    clip = utterances[0].path
    prediction = EmotionRecognizer.load(tmp_path / "out", device="cpu").predict(clip)[0]
    assert set(prediction.probabilities) == {"angry", "happy", "neutral"}
    # The model's probabilities renormalised over the three labels kept (sad dropped).
    p = torch.softmax(hf_logits(hf_folder, load_audio(clip)), 0).numpy()  # neu, hap, ang, sad
    kept = {"neutral": p[0], "happy": p[1], "angry": p[2]}
    for name, value in kept.items():
        expected = value / (p[0] + p[1] + p[2])
        assert prediction.model_probabilities[name] == pytest.approx(expected, abs=1e-5)


def test_a_label_the_model_does_not_know(source, small_synthetic_corpus, tmp_path):
    utterances = load_synthetic(small_synthetic_corpus)
    manifest = write_manifest(tmp_path / "new.csv", utterances, rename={"sad": "calm"})
    mapping = parse_label_map("ang=angry,hap=happy,neu=neutral,sad=")
    result = adapt_model(source, manifest, tmp_path / "out", mapping, device="cpu", remedy="knn")
    assert result.labels == ["angry", "calm", "happy", "neutral"]
    assert result.model_labels == ["angry", "happy", "neutral"]
    settings = load_knn_settings(tmp_path / "out").interpolated
    assert settings.model_labels == ["angry", "happy", "neutral"]
    recognizer = EmotionRecognizer.load(tmp_path / "out", device="cpu")
    for prediction in recognizer.predict([u.path for u in utterances[:12]]):
        assert prediction.model_probabilities["calm"] == 0.0
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        # α = 1 for the new label: the kNN alone serves it.
        assert prediction.probabilities["calm"] == pytest.approx(
            prediction.knn_probabilities["calm"], abs=1e-9
        )
    calm = [u.path for u in utterances if u.label == "sad"]
    predicted = [p.label for p in recognizer.predict(calm)]
    assert "calm" in predicted  # the new label is reachable


def test_keep_the_source_models_datastore(trained_run, small_synthetic_corpus, tmp_path):
    source = load_source(trained_run)
    assert source.store is not None
    manifest = write_manifest(tmp_path / "m.csv", load_synthetic(small_synthetic_corpus),
                              speakers=True)  # fmt: skip
    result = adapt_model(source, manifest, tmp_path / "out", keep_datastore=True, device="cpu",
                         remedy="knn")
    store = load_datastore(tmp_path / "out")
    original = [i for i in store.ids if i.startswith("original/")]
    # The run was trained on these very clips: its entries that are one of them are dropped
    # (tests/test_reliability.py), so that no clip is scored against itself.
    dropped = result.report["original_entries_dropped"]
    assert len(original) + dropped == len(source.store) and len(store) == 72 + len(original)
    assert result.report["kept_original_datastore"] is True
    EmotionRecognizer.load(tmp_path / "out", device="cpu")  # fingerprint and labels agree


def test_clips_from_a_folder_per_label(small_synthetic_corpus, tmp_path):
    for u in load_synthetic(small_synthetic_corpus):
        (tmp_path / u.label).mkdir(exist_ok=True)
        shutil.copy(u.path, tmp_path / u.label / u.path.name)
    clips, has_speakers = load_labelled_clips(tmp_path)
    assert len(clips) == 72 and not has_speakers
    assert {c.label for c in clips} == {"angry", "happy", "neutral", "sad"}
    labels = np.array([["angry", "happy", "neutral", "sad"].index(c.label) for c in clips])
    folds = assign_folds(labels, None)
    assert folds.max() + 1 == 10  # 18 clips per label: MAX_FOLDS
    for fold in range(folds.max() + 1):  # stratified: every label in every fold
        assert set(labels[folds == fold]) == {0, 1, 2, 3}
    np.testing.assert_array_equal(folds, assign_folds(labels, None))  # deterministic


def test_speaker_folds_keep_a_speaker_together():
    speakers = [f"s{i % 4}" for i in range(40)]
    labels = np.arange(40) % 3
    folds = assign_folds(labels, speakers)
    for speaker in set(speakers):
        assert len({f for f, s in zip(folds, speakers, strict=True) if s == speaker}) == 1
    with pytest.raises(ConfigError, match="at least 3 speakers"):
        assign_folds(labels, ["a", "b"] * 20)
    with pytest.raises(ConfigError, match="at least 3 clips of every label"):
        assign_folds(np.array([0, 0, 0, 1, 1]), None)


def test_bad_input_is_refused_before_anything_is_written(source, small_synthetic_corpus, tmp_path):
    manifest = small_synthetic_corpus / "manifest.csv"
    with pytest.raises(ConfigError, match="does not have"):
        resolve_label_map(["neu", "hap"], ["angry"], {"fear": "angry"})
    with pytest.raises(ConfigError, match="none of your clips"):
        resolve_label_map(["neu", "hap"], ["angry"], {"neu": "calm"})
    with pytest.raises(ConfigError, match="MODEL_LABEL=YOUR_LABEL"):
        parse_label_map("neu:neutral")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        adapt_model(source, manifest, tmp_path / "full", HF_MAP, device="cpu")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    partial = manifest.parent / "partial.csv"  # beside it: its paths are relative to the CSV
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:3]
    rows[2]["speaker"] = ""  # the third clip names no speaker, the others do
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(CorpusError, match="no speaker"):
        load_labelled_clips(partial)
    with pytest.raises(ConfigError, match="no datastore to keep"):
        adapt_model(source, manifest, tmp_path / "new", HF_MAP, keep_datastore=True)
    assert not (tmp_path / "new").exists()
    with pytest.raises(EmoknnError, match="neither an emoknn model folder"):
        load_source(tmp_path / "full")


def test_cli_adapt(hf_folder, small_synthetic_corpus, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["adapt", "--model", str(hf_folder), "--data",
                                 str(small_synthetic_corpus / "manifest.csv"), "--out", str(out),
                                 "--label-map", "ang=angry,hap=happy,neu=neutral", "--folds", "3",
                                 "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model + kNN" in result.output and "3 speaker-grouped folds" in result.output
    result = runner.invoke(app, ["predict", str(load_synthetic(small_synthetic_corpus)[0].path),
                                 "--model", str(out), "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)[0]["probabilities"]) == {"angry", "happy", "neutral",
                                                                   "sad"}  # fmt: skip

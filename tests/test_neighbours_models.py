"""Neighbours work the same for every kind of model: adapted Hugging Face classifiers and
frozen-encoder runs (fine-tuned runs: tests/test_neighbours.py; ONNX exports: tests/test_export.py,
which shares this file's check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emoknn.audio import load_audio
from emoknn.cli import app
from emoknn.corpora import load_synthetic
from emoknn.model_info import describe_model
from emoknn.predict import load_recognizer

runner = CliRunner()


@pytest.fixture(scope="module")
def adapted(small_synthetic_corpus, tmp_path_factory) -> Path:
    from emoknn.adapt import adapt_model, load_source
    from tiny_hf import save_tiny_classifier

    folder = save_tiny_classifier("wav2vec2", tmp_path_factory.mktemp("hf-n") / "classifier")
    out = tmp_path_factory.mktemp("adapted-n") / "model"
    adapt_model(load_source(folder), small_synthetic_corpus / "manifest.csv", out,
                {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"},
                device="cpu")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def frozen_run(small_synthetic_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frozen-n") / "run"
    result = runner.invoke(app, [
        "train", "--corpus", str(small_synthetic_corpus), "--fold", "0", "--out", str(out),
        "--preset", "frozen", "--encoder", "tiny", "--max-seconds", "1.0", "--epochs", "1",
        "--cache-views", "1", "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def check_neighbours(recognizer, clips) -> None:
    """Neighbours equal a brute-force search; with N = k their shares are all of p_knn."""
    store, k = recognizer.store, recognizer.knn_settings.k
    _, embeddings = recognizer.forward_clips(clips)
    for embedding, result in zip(embeddings, recognizer.predict(clips, neighbours=k), strict=True):
        truth = np.linalg.norm(store.keys.astype(np.float64) - embedding, axis=1)
        ranked = np.sort(truth)
        found = [n.distance for n in result.neighbours]
        np.testing.assert_allclose(found, ranked[:k], rtol=1e-4, atol=1e-4)
        cutoff = ranked[k - 1] * (1 - 1e-4) - 1e-4
        certain = {store.ids[i] for i in np.flatnonzero(truth < cutoff)}
        assert certain <= {n.id for n in result.neighbours}
        shares = np.zeros(len(store.label_names))
        for n in result.neighbours:
            shares[store.label_names.index(n.label)] += n.weight
        np.testing.assert_allclose(shares, list(result.knn_probabilities.values()), atol=1e-5)
        assert all(n.source for n in result.neighbours)  # every kind records where clips came from


@pytest.fixture(scope="module")
def clips(small_synthetic_corpus):
    return [load_audio(u.path) for u in load_synthetic(small_synthetic_corpus)[:3]]


def test_adapted_model(adapted, clips):
    check_neighbours(load_recognizer(adapted, device="cpu"), clips)
    assert describe_model(adapted)["kind"] == "adapted"


def test_frozen_run(frozen_run, clips):
    check_neighbours(load_recognizer(frozen_run, device="cpu"), clips)
    info = describe_model(frozen_run)
    assert info["training"] == "frozen encoder (only the head was trained)"

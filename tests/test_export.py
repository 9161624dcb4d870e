from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emoknn.cli import app
from emoknn.corpora import load_synthetic
from emoknn.errors import EmoknnError
from emoknn.export import OnnxEmotionRecognizer, export_onnx
from emoknn.predict import EmotionRecognizer, load_recognizer

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    meta = export_onnx(trained_run, out, quantize=True)
    return out, meta


def test_onnx_matches_pytorch_with_the_knn_step_on_top(
    exported, trained_run, small_synthetic_corpus
):
    out, meta = exported
    assert meta["parity_max_abs_logit_difference"] < 1e-4
    clips = [u.path for u in load_synthetic(small_synthetic_corpus)[:8]]
    torch_results = EmotionRecognizer.load(trained_run, device="cpu").predict(clips)
    onnx_results = OnnxEmotionRecognizer.load(out).predict(clips)
    for expected, got in zip(torch_results, onnx_results, strict=True):
        assert got.knn_probabilities is not None
        assert got.probabilities == pytest.approx(expected.probabilities, abs=1e-4)
        assert got.model_probabilities == pytest.approx(expected.model_probabilities, abs=1e-4)
        assert got.label == expected.label


def test_int8_model_runs_and_its_difference_is_measured(exported, small_synthetic_corpus):
    out, meta = exported
    int8 = meta["int8"]
    assert 0.0 <= int8["prediction_agreement"] <= 1.0 and int8["clips"] > 0
    assert int8["size_mb"] < int8["fp32_size_mb"]
    clip = load_synthetic(small_synthetic_corpus)[0].path
    result = OnnxEmotionRecognizer.load(out, quantized=True).predict(clip)[0]
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    stored = json.loads((out / "export.json").read_text())
    assert stored["labels"] == ["angry", "happy", "neutral", "sad"]


def test_int8_probability_difference_is_per_clip(exported, trained_run):
    from scipy.special import softmax

    from emoknn.export import _reference_clips
    from emoknn.onnx_runtime import onnx_session

    out, meta = exported
    clips = _reference_clips(trained_run, meta["max_seconds"])
    fp32, int8 = (onnx_session(out / name) for name in ("model.onnx", "model.int8.onnx"))
    logits = [np.array([s.run(None, {"waveform": c[None]})[1][0] for c in clips])
              for s in (fp32, int8)]  # fmt: skip
    # Each clip's probabilities sum to one: softmax over its own C logits, not the whole matrix.
    expected = np.abs(softmax(logits[0], axis=1) - softmax(logits[1], axis=1)).max()
    assert meta["int8"]["max_abs_probability_difference"] == pytest.approx(expected, rel=1e-4)


def test_a_failed_or_smaller_export_never_leaves_a_mix(exported, trained_run, tmp_path,
                                                       monkeypatch):  # fmt: skip
    import shutil

    import emoknn.export

    out = tmp_path / "onnx"
    shutil.copytree(exported[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(emoknn.export, "PARITY_TOLERANCE", -1.0)  # every export now fails
    with pytest.raises(EmoknnError, match="differs from PyTorch"):
        export_onnx(trained_run, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export, intact
    monkeypatch.undo()
    export_onnx(trained_run, out, quantize=False)  # the int8 model of the old export must go
    assert not (out / "model.int8.onnx").exists()
    with pytest.raises(EmoknnError, match="no int8 model"):
        OnnxEmotionRecognizer.load(out, quantized=True)


def test_export_errors(tmp_path, trained_run):
    with pytest.raises(EmoknnError, match="not a trained model folder"):
        export_onnx(tmp_path)
    with pytest.raises(EmoknnError, match="not an emoknn ONNX export"):
        OnnxEmotionRecognizer.load(tmp_path)
    result = runner.invoke(app, ["export", "--model", str(trained_run), "--format", "tflite"])
    assert result.exit_code != 0


def test_export_cli(trained_run, tmp_path):
    result = runner.invoke(app, ["export", "--model", str(trained_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ONNX vs PyTorch max |Δ logit|" in result.output
    assert (tmp_path / "model.onnx").is_file() and not (tmp_path / "model.int8.onnx").exists()
    with pytest.raises(EmoknnError, match="export with --quantize"):
        OnnxEmotionRecognizer.load(tmp_path, quantized=True)


def test_predict_and_serve_load_export_folders(exported, trained_run, small_synthetic_corpus):
    out, _ = exported
    assert isinstance(load_recognizer(out), OnnxEmotionRecognizer)
    assert not isinstance(load_recognizer(trained_run, device="cpu"), OnnxEmotionRecognizer)
    with pytest.raises(EmoknnError, match="int8 needs an ONNX export folder"):
        load_recognizer(trained_run, device="cpu", int8=True)
    with pytest.raises(EmoknnError, match="runs in fp32"):
        load_recognizer(out, precision="bf16")
    with pytest.raises(EmoknnError, match="runs on the CPU"):
        load_recognizer(out, device="cuda")
    clip = str(load_synthetic(small_synthetic_corpus)[0].path)
    expected = OnnxEmotionRecognizer.load(out, quantized=True).predict(clip)[0]
    result = runner.invoke(app, ["predict", clip, "--model", str(out), "--int8",
                                 "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)[0]
    assert got["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)


def test_an_export_lists_the_same_neighbours(exported, small_synthetic_corpus):
    from emoknn.audio import load_audio
    from emoknn.model_info import describe_model
    from test_neighbours_models import check_neighbours

    out, _ = exported
    recognizer = load_recognizer(out)
    assert isinstance(recognizer, OnnxEmotionRecognizer)
    clips = [load_audio(u.path) for u in load_synthetic(small_synthetic_corpus)[:3]]
    check_neighbours(recognizer, clips)  # brute force, shares, sources carried by the export
    info = describe_model(out)
    assert info["kind"] == "export" and info["training"] == "fine-tuned encoder"

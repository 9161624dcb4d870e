from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import emoknn.predict as predict_module
from emoknn.audio import load_audio, stream_audio
from emoknn.cli import app
from emoknn.corpora import load_synthetic
from emoknn.errors import AudioError, EmoknnError
from emoknn.predict import EmotionRecognizer
from emoknn.segments import voice_segments, window_segments

runner = CliRunner()


@pytest.fixture(scope="module")
def recognizer(trained_run) -> EmotionRecognizer:
    return EmotionRecognizer.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def clips(small_synthetic_corpus):
    return [u.path for u in load_synthetic(small_synthetic_corpus)[:10]]


def test_predict_paths_and_arrays(recognizer, clips):
    results = recognizer.predict(clips[:3])
    assert [r.source for r in results] == [str(p) for p in clips[:3]]
    for result in results:
        assert result.label in recognizer.labels
        for probabilities in (result.probabilities, result.model_probabilities,
                              result.knn_probabilities):  # fmt: skip
            assert set(probabilities) == set(recognizer.labels)
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert result.label == max(result.probabilities, key=result.probabilities.get)
        assert result.segments == []
    samples = load_audio(clips[0])
    from_array = recognizer.predict(samples)[0]
    assert from_array.probabilities == pytest.approx(results[0].probabilities, abs=1e-6)
    # (array, rate) pairs are resampled: the same clip at 8 kHz gives a valid prediction.
    resampled = recognizer.predict((samples[::2].copy(), 8000))[0]
    assert sum(resampled.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_batch_equals_single(recognizer, clips):
    batched = recognizer.predict(clips, batch_size=8)
    for path, result in zip(clips, batched, strict=True):
        alone = recognizer.predict([path], batch_size=1)[0]
        assert alone.probabilities == pytest.approx(result.probabilities, abs=1e-5)
        assert alone.model_probabilities == pytest.approx(result.model_probabilities, abs=1e-5)


def long_file(tmp_path, clips, seconds=5.0):
    samples = np.concatenate([load_audio(p) for p in clips])
    samples = samples[: int(seconds * 16000)]
    path = tmp_path / "long.wav"
    sf.write(path, samples, 16000)
    return path, samples


def test_long_file_is_split_into_windows_and_summarised(recognizer, clips, tmp_path, monkeypatch):
    path, samples = long_file(tmp_path, clips, seconds=4.6)
    # The long path streams the file: load_audio must not be used for it.
    monkeypatch.setattr(predict_module, "load_audio", lambda *_: pytest.fail("loaded whole file"))
    result = recognizer.predict(path)[0]
    assert [(s.start_s, s.end_s) for s in result.segments] == [
        (0.0, 1.0),
        (1.0, 2.0),
        (2.0, 3.0),
        (3.0, 4.0),
        (4.0, 4.6),
    ]  # 1 s windows (max_seconds)
    assert result.duration_s == pytest.approx(4.6, abs=1e-3)
    weights = np.array([s.end_s - s.start_s for s in result.segments])
    expected = (
        sum(
            w * np.array(list(s.probabilities.values()))
            for w, s in zip(weights, result.segments, strict=True)
        )
        / weights.sum()
    )
    np.testing.assert_allclose(list(result.probabilities.values()), expected, atol=1e-6)
    from_array = recognizer.predict(samples)[0]  # a long array: the same windows
    assert [s.start_s for s in from_array.segments] == [s.start_s for s in result.segments]
    assert from_array.probabilities == pytest.approx(result.probabilities, abs=1e-5)
    overlapping = recognizer.predict(path, window_seconds=2.0, hop_seconds=1.0)[0]
    assert [s.start_s for s in overlapping.segments] == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(EmoknnError, match="hop_seconds must be a finite number in"):
        recognizer.predict(path, window_seconds=1.0, hop_seconds=2.0)


def test_voice_activity_segmentation(recognizer, clips, tmp_path):
    speech = load_audio(clips[0])[:12000]  # 0.75 s
    silence = np.zeros(16000, dtype=np.float32)
    samples = np.concatenate([silence, speech, silence, speech, silence])
    path = tmp_path / "pauses.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    result = recognizer.predict(path, segmentation="vad")[0]
    assert len(result.segments) == 2
    assert result.segments[0].start_s == pytest.approx(1.0, abs=0.06)
    assert result.segments[1].start_s == pytest.approx(2.75, abs=0.06)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(48000, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no speech found"):
        recognizer.predict(silent, segmentation="vad")


def test_streaming_reader_yields_bounded_blocks(clips, tmp_path):
    path, samples = long_file(tmp_path, clips, seconds=5.0)
    blocks = list(stream_audio(path, block_seconds=1.0))
    assert len(blocks) == 5 and max(len(b) for b in blocks) == 16000
    np.testing.assert_allclose(np.concatenate(blocks), samples, atol=1e-4)
    sf.write(tmp_path / "at44k.wav", np.sin(np.arange(44100 * 3) / 10).astype(np.float32), 44100)
    total = sum(len(b) for b in stream_audio(tmp_path / "at44k.wav", block_seconds=1.0))
    assert abs(total - 48000) <= 2  # streaming resampling keeps the duration


def test_segmenters_on_blocks():
    ones = np.ones(16000 * 3, dtype=np.float32) * 0.1
    blocks = [ones[i : i + 5000] for i in range(0, len(ones), 5000)]
    assert [(s, len(x)) for s, x in window_segments(iter(blocks), 16000, 16000)] == [
        (0, 16000),
        (16000, 16000),
        (32000, 16000),
    ]
    assert list(voice_segments(iter([np.zeros(32000, dtype=np.float32)]), 16000, 16000)) == []


def test_predict_files_reports_bad_files_in_order(recognizer, clips, tmp_path):
    (tmp_path / "notes.wav").write_text("not audio")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    inputs = [clips[0], tmp_path / "notes.wav", tmp_path / "empty.wav", clips[1]]
    results = list(recognizer.predict_files(inputs))
    assert [type(r).__name__ for r in results] == ["Prediction", "AudioError", "AudioError",
                                                   "Prediction"]  # fmt: skip
    assert "notes.wav: cannot decode audio" in str(results[1])
    assert "empty.wav" in str(results[2])


def test_bad_model_folders(trained_run, tmp_path):
    with pytest.raises(EmoknnError, match="model folder not found"):
        EmotionRecognizer.load(tmp_path / "nowhere")
    with pytest.raises(EmoknnError, match="not a trained model folder"):
        EmotionRecognizer.load(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    (copy / "datastore.npz").unlink()
    with pytest.raises(EmoknnError, match="no kNN datastore"):
        EmotionRecognizer.load(copy)
    without_knn = EmotionRecognizer.load(copy, use_knn=False)
    assert without_knn.store is None


def test_cli_formats_and_exit_codes(trained_run, clips, tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    result = runner.invoke(app, ["predict", str(clips[0]), str(tmp_path / "bad.wav"),
                                 "--model", str(trained_run), "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload) == 1 and payload[0]["label"] in ("angry", "happy", "neutral", "sad")
    assert "bad.wav: cannot decode audio" in result.stderr
    result = runner.invoke(app, ["predict", str(clips[0].parent), "--model", str(trained_run),
                                 "--format", "csv", "--no-knn"])  # fmt: skip
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "source,start_s,end_s,label,angry,happy,neutral,sad,no_speech"
    assert len(lines) == 1 + 12  # one speaker's 12 clips
    result = runner.invoke(app, ["predict", str(clips[0]), "--model", str(trained_run)])
    assert result.exit_code == 0 and "model + kNN" in result.stdout
    result = runner.invoke(app, ["predict", str(tmp_path / "bad.wav"), "--model", str(trained_run)])
    assert result.exit_code != 0
    result = runner.invoke(app, ["predict", str(clips[0]), "--model", str(trained_run),
                                 "--format", "xml"])  # fmt: skip
    assert result.exit_code != 0


def test_bf16_precision_stays_close_to_fp32(trained_run, recognizer, clips):
    fast = EmotionRecognizer.load(trained_run, device="cpu", precision="bf16")
    exact = recognizer.predict(clips)
    for expected, got in zip(exact, fast.predict(clips), strict=True):
        assert sum(got.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert got.model_probabilities == pytest.approx(expected.model_probabilities, abs=0.02)
        assert got.probabilities == pytest.approx(expected.probabilities, abs=0.05)
    with pytest.raises(EmoknnError, match="precision must be one of"):
        EmotionRecognizer.load(trained_run, device="cpu", precision="fp16")
    result = runner.invoke(app, ["predict", str(clips[0]), "--model", str(trained_run),
                                 "--precision", "int4"])  # fmt: skip
    assert result.exit_code == 1 and "precision must be one of" in str(result.exception)


def test_pool_flushes_mid_file_give_the_same_result(recognizer, clips, tmp_path):
    # 1 s windows: batch_size=1 makes the pool hold 8 windows, so this 9.7 s file (10 windows)
    # and the short clips around it are scored across several flushes.
    samples = np.concatenate([load_audio(p) for p in clips + clips])[: int(9.7 * 16000)]
    path = tmp_path / "long.wav"
    sf.write(path, samples, 16000)
    inputs = [clips[0], path, clips[1]]
    flushed = recognizer.predict(inputs, batch_size=1)
    whole = recognizer.predict(inputs, batch_size=32)
    for a, b in zip(flushed, whole, strict=True):
        assert a.source == b.source
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
        assert [s.start_s for s in a.segments] == [s.start_s for s in b.segments]
    assert len(flushed[1].segments) == 10

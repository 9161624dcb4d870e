from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from emoknn.audio import (
    MIN_SAMPLES,
    center_crop,
    load_audio,
    max_samples,
    pad_to,
    prepare_samples,
    random_crop,
)
from emoknn.errors import AudioError


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_duration_frequency_and_level(tmp_path, rate):
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, tone(1000.0, 1.0, rate), rate, subtype="FLOAT")
    samples = load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.shape[0] == 16000  # exactly 1 s at 16 kHz
    assert dominant_frequency(samples, 16000) == pytest.approx(1000.0, abs=2.0)
    middle = samples[2000:-2000]  # away from filter edge effects
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_16khz_wav_is_read_unchanged(tmp_path):
    samples = tone(440.0, 0.5, 16000)
    sf.write(tmp_path / "a.wav", samples, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav"), samples)


def test_channels_are_averaged(tmp_path):
    left = tone(440.0, 0.5, 16000)
    right = np.full_like(left, 0.25)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "stereo.wav"), (left + right) / 2, atol=1e-7)
    # A mono signal copied to 4 channels comes back unchanged (averaged, not summed).
    sf.write(tmp_path / "quad.wav", np.tile(left[:, None], (1, 4)), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "quad.wav"), left, atol=1e-7)


@pytest.mark.parametrize(("suffix", "fmt"), [(".flac", "FLAC"), (".ogg", "OGG")])
def test_other_containers(tmp_path, suffix, fmt):
    path = tmp_path / f"clip{suffix}"
    sf.write(path, tone(300.0, 0.5, 22050), 22050, format=fmt)
    samples = load_audio(path)
    assert samples.shape == (8000,)
    assert dominant_frequency(samples, 16000) == pytest.approx(300.0, abs=3.0)


def test_integer_arrays_are_scaled_to_unit_range():
    pcm = np.array([0, 16384, -32768, 32767] * 200, dtype=np.int16)
    samples = prepare_samples(pcm, 16000)
    np.testing.assert_allclose(samples[:4], [0.0, 0.5, -1.0, 32767 / 32768])


# Every bad input raises AudioError naming the file and the problem.
def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_text_file_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n")
    with pytest.raises(AudioError, match=r"notes\.wav: cannot decode audio"):
        load_audio(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, tone(440.0, 1.0, 16000), 16000, format="FLAC")
    path.write_bytes(path.read_bytes()[:30])  # header cut in the middle
    with pytest.raises(AudioError, match=r"cut\.flac: cannot decode audio"):
        load_audio(path)


def test_zero_samples(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: audio has no samples"):
        load_audio(path)


def test_too_short_for_the_encoder(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, tone(440.0, 0.02, 16000), 16000)  # 20 ms < 25 ms receptive field
    with pytest.raises(AudioError, match=r"blip\.wav: audio is 20\.0 ms long"):
        load_audio(path)
    sf.write(path, np.zeros(MIN_SAMPLES, dtype=np.float32) + 0.1, 16000)
    assert load_audio(path).shape == (MIN_SAMPLES,)  # exactly 25 ms is enough


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad):
    samples = tone(440.0, 0.5, 16000)
    samples[100] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: audio contains NaN or infinite samples"):
        load_audio(path)


def test_crops_and_padding():
    samples = np.arange(100, dtype=np.float32)
    np.testing.assert_array_equal(center_crop(samples, 10), np.arange(45, 55))
    assert center_crop(samples, 200) is samples
    crops = {int(random_crop(samples, 10, np.random.default_rng(seed))[0]) for seed in range(20)}
    assert len(crops) > 5 and all(0 <= c <= 90 for c in crops)
    first = random_crop(samples, 10, np.random.default_rng(3))
    np.testing.assert_array_equal(first, random_crop(samples, 10, np.random.default_rng(3)))
    assert pad_to(samples[:5], 8).tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    assert max_samples(7.5) == 120_000
    with pytest.raises(AudioError, match="max_seconds must be positive"):
        max_samples(0)


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_mp3(tmp_path):
    path = tmp_path / "clip.mp3"
    sf.write(path, tone(440.0, 1.0, 44100), 44100, format="MP3")
    samples = load_audio(path)
    assert abs(samples.shape[0] - 16000) < 1200  # MP3 frames pad the ends a little
    assert dominant_frequency(samples, 16000) == pytest.approx(440.0, abs=3.0)

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from emoknn.augment import (
    AUGMENTATION_NAMES,
    AddNoise,
    ChangeVolume,
    Mixed,
    NoAugmentation,
    PitchShift,
    Reverberate,
    limit_peak,
    make_augmentation,
)
from emoknn.errors import AudioError, ConfigError

RATE = 16000


def harmonic_tone(f0: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    return (amplitude * tone / np.abs(tone).max()).astype(np.float32)


@pytest.fixture(scope="module")
def small_reverb() -> Reverberate:
    return Reverberate(min_rt60_s=0.3, max_rt60_s=0.5, bank_size=3)


def test_gain_of_minus_6_db_scales_by_0_5012():
    samples = harmonic_tone(200.0)
    out = ChangeVolume(min_gain_db=-6.0, max_gain_db=-6.0)(samples, np.random.default_rng(0))
    np.testing.assert_allclose(out, samples * 0.5011872, rtol=1e-6)


def test_loud_gain_is_limited_by_scaling_not_clipping():
    samples = harmonic_tone(200.0, amplitude=0.8)
    out = ChangeVolume(min_gain_db=12.0, max_gain_db=12.0)(samples, np.random.default_rng(0))
    assert np.abs(out).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(out, samples / 0.8, rtol=1e-5)  # shape kept, only rescaled
    np.testing.assert_array_equal(limit_peak(samples), samples)


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_noise_at_10_db_snr_measures_10_db(color):
    samples = harmonic_tone(150.0, seconds=2.0, amplitude=0.2)
    augment = AddNoise(min_snr_db=10.0, max_snr_db=10.0, colors=[color])
    out = augment(samples, np.random.default_rng(1))
    noise = out.astype(np.float64) - samples
    snr = 10 * np.log10(np.sum(samples.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr == pytest.approx(10.0, abs=0.5)


def test_noise_colors_have_their_spectral_slopes():
    rng = np.random.default_rng(0)
    silence_free = harmonic_tone(150.0, seconds=4.0, amplitude=0.01)
    slopes = {}
    for color in ("white", "pink", "brown"):
        noise = AddNoise(0.0, 0.0, colors=[color])(silence_free, rng) - silence_free
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(len(noise), 1 / RATE)
        low = power[(freqs > 1000) & (freqs < 1500)].mean()
        high = power[(freqs > 4000) & (freqs < 6000)].mean()
        slopes[color] = 10 * np.log10(high / low)
    assert abs(slopes["white"]) < 1.5  # flat
    assert slopes["brown"] < slopes["pink"] < -3  # falling, brown fastest


def test_pitch_up_12_semitones_doubles_f0():
    samples = harmonic_tone(200.0)
    out = PitchShift(min_semitones=12.0, max_semitones=12.0)(samples, np.random.default_rng(0))
    f0 = librosa.yin(out[2000:-2000], fmin=100, fmax=800, sr=RATE)
    assert np.median(f0) == pytest.approx(400.0, rel=0.03)
    assert out.shape == samples.shape  # duration kept


def tail_energy(samples: np.ndarray) -> float:
    return float(np.sum(samples[int(0.25 * RATE) : int(0.6 * RATE)].astype(np.float64) ** 2))


def test_reverb_lengthens_the_energy_decay(small_reverb):
    burst = np.zeros(RATE, dtype=np.float32)
    burst[:1600] = harmonic_tone(300.0, seconds=0.1)  # 100 ms tone, then silence
    out = small_reverb(burst, np.random.default_rng(0))
    assert tail_energy(burst) == 0.0
    assert tail_energy(out) > 1e-4 * np.sum(out.astype(np.float64) ** 2)
    # The reverberated burst still starts on time (RIR aligned at its direct path).
    assert np.argmax(np.abs(out[:1600])) < 1600


def test_reverb_from_a_folder_of_rirs(tmp_path):
    decay = np.exp(-np.arange(4000) / 800.0) * np.random.default_rng(0).standard_normal(4000)
    sf.write(tmp_path / "hall.wav", decay.astype(np.float32), 8000)  # resampled on load
    augment = Reverberate(rir_dir=tmp_path)
    assert len(augment.rirs) == 1
    assert np.sum(augment.rirs[0] ** 2) == pytest.approx(1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio files"):
        Reverberate(rir_dir=tmp_path / "empty")


@pytest.mark.parametrize("name", AUGMENTATION_NAMES)
def test_dtype_length_and_seeding(name, small_reverb, monkeypatch):
    augment = make_augmentation(name)
    samples = harmonic_tone(180.0, seconds=0.75)
    out = augment(samples, np.random.default_rng(7))
    assert out.dtype == np.float32 and out.shape == samples.shape
    assert np.abs(out).max() <= 1.0
    np.testing.assert_array_equal(out, augment(samples, np.random.default_rng(7)))
    if name != "none":
        assert not np.array_equal(out, augment(samples, np.random.default_rng(8)))


def test_mixed_applies_random_subsets_in_random_order():
    class Tag:
        def __init__(self, name, log):
            self.name, self.log = name, log

        def __call__(self, samples, rng):
            self.log.append(self.name)
            return samples

    log: list[str] = []
    mixed = Mixed([Tag("a", log), Tag("b", log), Tag("c", log)])
    seen = set()
    for seed in range(40):
        log.clear()
        mixed(np.zeros(400, dtype=np.float32), np.random.default_rng(seed))
        assert 1 <= len(log) <= 3 and len(set(log)) == len(log)
        seen.add(tuple(log))
    assert len(seen) > 6  # several subsets and orders occur


def test_none_is_identity_and_does_not_alias():
    samples = harmonic_tone(100.0)
    out = NoAugmentation()(samples, np.random.default_rng(0))
    np.testing.assert_array_equal(out, samples)
    assert out is not samples


def test_bad_parameters_name_the_parameter():
    with pytest.raises(ConfigError, match=r"min_snr_db \(30\) must be ≤ max_snr_db \(10\)"):
        AddNoise(min_snr_db=30, max_snr_db=10)
    with pytest.raises(ConfigError, match="colors must be a non-empty subset"):
        AddNoise(colors=["purple"])
    with pytest.raises(ConfigError, match=r"min_gain_db \(6\) must be ≤ max_gain_db \(-6\)"):
        ChangeVolume(min_gain_db=6, max_gain_db=-6)
    with pytest.raises(ConfigError, match="must lie within ±24"):
        PitchShift(min_semitones=-30, max_semitones=0)
    with pytest.raises(ConfigError, match="min_rt60_s/max_rt60_s must lie in"):
        Reverberate(min_rt60_s=0.01, max_rt60_s=0.5)
    with pytest.raises(ConfigError, match="bank_size must be ≥ 1"):
        Reverberate(bank_size=0)
    with pytest.raises(ConfigError, match=r"rir_dir .*: not a directory"):
        Reverberate(rir_dir="/no/such/folder")
    with pytest.raises(ConfigError, match="unknown augmentation 'echo'"):
        make_augmentation("echo")
    with pytest.raises(AudioError, match="1-D mono"):
        ChangeVolume()(np.zeros((2, 400), dtype=np.float32), np.random.default_rng(0))

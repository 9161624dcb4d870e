"""Augmented views for the contrastive loss: noise, volume, reverberation, pitch, mixed, none.

Each training utterance gets one augmented view; SupCon treats the original and its view as
positives, so an augmentation must change the signal but keep the emotion.

Conventions (audiomentations' good habits, without its global random state):
- Every augmentation is called as `augmentation(samples, rng)` with an explicit
  `numpy.random.Generator`; nothing reads global random state, so a seed fixes the output.
- Parameters carry their unit in the name (`min_snr_db`, `max_gain_db`, `min_semitones`,
  `min_rt60_s`) and are validated in the constructor with a message naming the parameter.
- float32 in → float32 out, same length out as in.
- Peaks: an output whose peak would exceed 1.0 is scaled down as a whole to a peak of 1.0
  (never hard-clipped, so the waveform's shape is kept); outputs within ±1.0 are untouched, so a
  −6 dB gain scales by exactly 10^(−6/20) = 0.5012.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from emoknn.audio import SAMPLE_RATE, load_audio
from emoknn.errors import AudioError, ConfigError
from emoknn.files import atomic_path

AUGMENTATION_NAMES = ("none", "noise", "volume", "reverb", "pitch", "mixed")

# Spectral slope of each noise colour: power ∝ 1 / f^β.
NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def limit_peak(samples: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Scale the whole clip down so that max |x| ≤ `peak`; leave it alone if it already is."""
    current = float(np.max(np.abs(samples))) if samples.size else 0.0
    if current > peak:
        samples = samples * (peak / current)
    return samples.astype(np.float32, copy=False)


def _check_range(low: float, high: float, low_name: str, high_name: str) -> None:
    if not np.isfinite(low) or not np.isfinite(high):
        raise ConfigError(f"{low_name} and {high_name} must be finite, got {low} and {high}")
    if low > high:
        raise ConfigError(f"{low_name} ({low}) must be ≤ {high_name} ({high})")


def _check_input(samples: np.ndarray) -> np.ndarray:
    if samples.ndim != 1:
        raise AudioError(f"augmentations take 1-D mono samples, got shape {samples.shape}")
    return np.asarray(samples, dtype=np.float32)


class Augmentation(ABC):
    """A random transformation of mono 16 kHz float32 audio."""

    name: str = "augmentation"

    def __call__(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        samples = _check_input(samples)
        augmented = self.apply(samples, rng)
        assert augmented.shape == samples.shape, (self.name, augmented.shape, samples.shape)
        return limit_peak(augmented)

    @abstractmethod
    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transform `samples` (1-D float32); the caller checks length and limits the peak."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class NoAugmentation(Augmentation):
    """The identity: the 'view' is the original (SupCon then only pulls same-class utterances)."""

    name = "none"

    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return samples.copy()


class AddNoise(Augmentation):
    """Add white, pink or brown noise at an SNR drawn uniformly from [min_snr_db, max_snr_db].

    SNR = 10·log10(Σ signal² / Σ noise²), measured over the whole clip.
    """

    name = "noise"

    def __init__(
        self,
        min_snr_db: float = 5.0,
        max_snr_db: float = 25.0,
        colors: Sequence[str] = ("white", "pink", "brown"),
    ) -> None:
        _check_range(min_snr_db, max_snr_db, "min_snr_db", "max_snr_db")
        unknown = [c for c in colors if c not in NOISE_COLORS]
        if not colors or unknown:
            raise ConfigError(
                f"colors must be a non-empty subset of {sorted(NOISE_COLORS)}, got {list(colors)}"
            )
        self.min_snr_db, self.max_snr_db, self.colors = min_snr_db, max_snr_db, tuple(colors)

    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        signal_power = float(np.mean(samples.astype(np.float64) ** 2))
        if signal_power == 0.0:
            return samples.copy()  # SNR is undefined for digital silence
        snr_db = rng.uniform(self.min_snr_db, self.max_snr_db)
        color = self.colors[int(rng.integers(len(self.colors)))]
        noise = colored_noise(samples.shape[0], NOISE_COLORS[color], rng)
        noise *= np.sqrt(signal_power / (10 ** (snr_db / 10)) / np.mean(noise**2))
        return (samples + noise).astype(np.float32)


def colored_noise(num_samples: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ 1/f^β (β=0 white, 1 pink, 2 brown), float64."""
    white = rng.standard_normal(num_samples)
    if beta == 0.0:
        return white
    spectrum = np.fft.rfft(white)
    frequencies = np.fft.rfftfreq(num_samples)
    frequencies[0] = frequencies[1] if num_samples > 1 else 1.0  # no infinite DC gain
    spectrum *= frequencies ** (-beta / 2)  # amplitude ∝ f^(-β/2) → power ∝ f^(-β)
    return np.fft.irfft(spectrum, n=num_samples)


class ChangeVolume(Augmentation):
    """Multiply by a gain drawn uniformly in dB from [min_gain_db, max_gain_db]: x · 10^(g/20)."""

    name = "volume"

    def __init__(self, min_gain_db: float = -10.0, max_gain_db: float = 10.0) -> None:
        _check_range(min_gain_db, max_gain_db, "min_gain_db", "max_gain_db")
        self.min_gain_db, self.max_gain_db = min_gain_db, max_gain_db

    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        gain_db = rng.uniform(self.min_gain_db, self.max_gain_db)
        return (samples * np.float32(10 ** (gain_db / 20))).astype(np.float32)


class PitchShift(Augmentation):
    """Shift pitch by a random number of semitones, keeping duration (librosa: phase-vocoder time
    stretch by 2^(-s/12), then soxr resampling back to the original length)."""

    name = "pitch"

    def __init__(self, min_semitones: float = -3.0, max_semitones: float = 3.0) -> None:
        _check_range(min_semitones, max_semitones, "min_semitones", "max_semitones")
        if max(abs(min_semitones), abs(max_semitones)) > 24:
            raise ConfigError(
                f"min_semitones/max_semitones must lie within ±24, got {min_semitones}, "
                f"{max_semitones}"
            )
        self.min_semitones, self.max_semitones = min_semitones, max_semitones

    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import librosa  # imported here: it is slow to import and only this transform needs it

        semitones = rng.uniform(self.min_semitones, self.max_semitones)
        shifted = librosa.effects.pitch_shift(
            samples, sr=SAMPLE_RATE, n_steps=semitones, res_type="soxr_hq"
        )
        return np.asarray(shifted[: samples.shape[0]], dtype=np.float32)


class Reverberate(Augmentation):
    """Convolve with a room impulse response (RIR) drawn from a bank.

    The bank is either a folder of the user's RIR recordings (`rir_dir`: any audio files
    `load_audio` reads) or `bank_size` rooms simulated with pyroomacoustics (image-source method in
    shoebox rooms of random size, RT60 uniform in [min_rt60_s, max_rt60_s], random source and
    microphone positions), generated once per setting and cached under `$EMOKNN_CACHE` (default
    `~/.cache/emoknn`).

    Each RIR starts at its direct-path peak (so the view is not delayed) and has unit energy; the
    reverberant output is scaled to the input's RMS, so loudness stays and only the room changes.
    """

    name = "reverb"

    def __init__(
        self,
        rir_dir: str | os.PathLike | None = None,
        min_rt60_s: float = 0.2,
        max_rt60_s: float = 0.9,
        bank_size: int = 32,
        bank_seed: int = 0,
    ) -> None:
        _check_range(min_rt60_s, max_rt60_s, "min_rt60_s", "max_rt60_s")
        if min_rt60_s <= 0.05 or max_rt60_s > 3.0:
            raise ConfigError(
                f"min_rt60_s/max_rt60_s must lie in (0.05, 3.0] s, got {min_rt60_s}, {max_rt60_s}"
            )
        if bank_size < 1:
            raise ConfigError(f"bank_size must be ≥ 1, got {bank_size}")
        self.rir_dir = None if rir_dir is None else Path(rir_dir)
        self.min_rt60_s, self.max_rt60_s = min_rt60_s, max_rt60_s
        self.bank_size, self.bank_seed = bank_size, bank_seed
        if self.rir_dir is not None:
            self._rirs = load_rir_folder(self.rir_dir)
        else:
            self._rirs = simulated_rir_bank(min_rt60_s, max_rt60_s, bank_size, bank_seed)

    @property
    def rirs(self) -> list[np.ndarray]:
        return self._rirs

    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rir = self._rirs[int(rng.integers(len(self._rirs)))]
        wet = fftconvolve(samples.astype(np.float64), rir)[: samples.shape[0]]
        dry_rms = np.sqrt(np.mean(samples.astype(np.float64) ** 2))
        wet_rms = np.sqrt(np.mean(wet**2))
        if wet_rms > 0:
            wet *= dry_rms / wet_rms
        return wet.astype(np.float32)


def _prepare_rir(rir: np.ndarray) -> np.ndarray:
    """Start at the direct-path peak and normalise to unit energy."""
    rir = np.asarray(rir, dtype=np.float64)
    rir = rir[int(np.argmax(np.abs(rir))) :]
    return rir / np.sqrt(np.sum(rir**2))


def load_rir_folder(folder: Path) -> list[np.ndarray]:
    if not folder.is_dir():
        raise ConfigError(f"rir_dir {folder}: not a directory")
    suffixes = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)
    if not paths:
        raise ConfigError(f"rir_dir {folder}: no audio files (wav, flac, ogg, mp3, aiff) found")
    return [_prepare_rir(load_audio(path)) for path in paths]


def _cache_dir() -> Path:
    return Path(os.environ.get("EMOKNN_CACHE", Path.home() / ".cache" / "emoknn"))


def simulated_rir_bank(
    min_rt60_s: float, max_rt60_s: float, bank_size: int, seed: int
) -> list[np.ndarray]:
    """`bank_size` shoebox-room RIRs from pyroomacoustics, cached on disk by their settings."""
    settings = {"min_rt60_s": min_rt60_s, "max_rt60_s": max_rt60_s, "bank_size": bank_size,
                "seed": seed, "sample_rate": SAMPLE_RATE, "version": 1}  # fmt: skip
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = _cache_dir() / "rirs" / f"{key}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as stored:
                return [stored[f"rir{i}"] for i in range(bank_size)]
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file is regenerated below
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    for _ in range(bank_size):
        rt60 = rng.uniform(min_rt60_s, max_rt60_s)
        while True:
            dims = rng.uniform([3.0, 3.0, 2.5], [10.0, 8.0, 4.0])
            try:  # a small room cannot reach a long RT60: draw another
                absorption, max_order = pra.inverse_sabine(rt60, dims)
                break
            except ValueError:
                continue
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption),
                           max_order=min(max_order, 80))  # fmt: skip
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rirs.append(_prepare_rir(room.rir[0][0]))
    # Atomic: concurrent builders (loader workers) never read half a file.
    with atomic_path(cache_file) as temporary, temporary.open("wb") as handle:
        np.savez(handle, **{f"rir{i}": rir for i, rir in enumerate(rirs)})
    return rirs


class Mixed(Augmentation):
    """Apply a random non-empty subset of `augmentations` in random order (the paper's best)."""

    name = "mixed"

    def __init__(self, augmentations: Sequence[Augmentation]) -> None:
        if not augmentations:
            raise ConfigError("Mixed needs at least one augmentation")
        self.augmentations = list(augmentations)

    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        count = int(rng.integers(1, len(self.augmentations) + 1))
        order = rng.permutation(len(self.augmentations))[:count]
        for index in order:
            samples = self.augmentations[int(index)](samples, rng)
        return samples


def make_augmentation(name: str, rir_dir: str | os.PathLike | None = None) -> Augmentation:
    """The augmentation called `name` (one of AUGMENTATION_NAMES) with its default settings."""
    if name == "none":
        return NoAugmentation()
    if name == "noise":
        return AddNoise()
    if name == "volume":
        return ChangeVolume()
    if name == "reverb":
        return Reverberate(rir_dir=rir_dir)
    if name == "pitch":
        return PitchShift()
    if name == "mixed":
        return Mixed([AddNoise(), ChangeVolume(), Reverberate(rir_dir=rir_dir), PitchShift()])
    raise ConfigError(
        f"unknown augmentation {name!r}; expected one of {', '.join(AUGMENTATION_NAMES)}"
    )

"""A synthetic corpus, generated in pure numpy, that exercises the whole pipeline offline.

THIS IS NOT EMOTIONAL SPEECH. It is a source–filter buzz (a harmonic glottal source shaped by
vowel formants, with syllable rhythm) whose prosody depends on a class label. Results on it say
that the pipeline runs and learns something; they say nothing about recognising human emotion.

What differs between the four classes (means below; each utterance draws around them with
spreads chosen so that the distributions overlap, happy vs neutral the most, as in real data):
pitch level and range, speaking rate, loudness, spectral tilt (bright vs dull) and breathiness.
Speakers differ in base pitch, vocal-tract length (formant scale), tilt and breathiness, so a
model must separate speaker from emotion. Each session has one female and one male speaker, the
layout the IEMOCAP folds expect.

Everything is deterministic given `seed`: the same call writes byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from emoknn.audio import SAMPLE_RATE
from emoknn.checks import check_int, check_number
from emoknn.corpora.manifest import load_manifest, write_manifest
from emoknn.corpora.utterance import FOUR_CLASSES, Utterance, as_path
from emoknn.errors import CorpusError
from emoknn.files import check_writable_folder

MARKER_FILE = "SYNTHETIC_CORPUS.txt"
MANIFEST_FILE = "manifest.csv"
HONESTY_NOTE = (
    "Synthetic data: generated buzz with emotion-dependent prosody. It exercises the pipeline; "
    "it is not emotional speech, and results on it say nothing about real SER accuracy."
)


@dataclass(frozen=True)
class EmotionProsody:
    """Mean prosody of one class, and how much an utterance varies around it."""

    pitch_semitones: float  # shift of the mean F0 from the speaker's base
    pitch_range_semitones: float  # peak-to-peak F0 movement across the utterance
    syllables_per_second: float
    loudness_db: float  # relative to the speaker's normal level
    tilt_db_per_octave: float  # harmonic roll-off: higher (less negative) = brighter, tenser
    breathiness: float  # aspiration noise relative to the voiced part


PROSODY: dict[str, EmotionProsody] = {
    "angry": EmotionProsody(3.0, 6.0, 5.4, 6.0, -7.0, 0.02),
    "happy": EmotionProsody(1.5, 5.0, 4.8, 2.0, -9.5, 0.04),
    "neutral": EmotionProsody(0.0, 3.5, 4.4, 0.0, -10.5, 0.04),
    "sad": EmotionProsody(-2.0, 2.0, 3.4, -4.0, -13.0, 0.09),
}
# Per-utterance spread (standard deviation) of each prosody feature. Large enough that any single
# feature misclassifies often; together they carry the class.
SPREAD = EmotionProsody(1.6, 1.5, 0.6, 2.5, 1.5, 0.02)

# Vowel formants F1, F2, F3 (Hz) of an adult male vocal tract; speakers scale them.
VOWEL_FORMANTS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])


@dataclass(frozen=True)
class SyntheticSpeaker:
    id: str
    session: str
    base_f0_hz: float
    formant_scale: float  # shorter vocal tract → higher formants
    tilt_offset_db: float
    breathiness_offset: float


def _make_speakers(num_sessions: int, rng: np.random.Generator) -> list[SyntheticSpeaker]:
    speakers = []
    for s in range(1, num_sessions + 1):
        session = f"Syn{s:02d}"
        for gender in "FM":
            female = gender == "F"
            speakers.append(
                SyntheticSpeaker(
                    id=session + gender,
                    session=session,
                    base_f0_hz=float(rng.normal(205 if female else 115, 18 if female else 12)),
                    formant_scale=float(rng.normal(1.17 if female else 1.0, 0.04)),
                    tilt_offset_db=float(rng.normal(0, 1.5)),
                    breathiness_offset=float(rng.uniform(0.0, 0.04 if female else 0.02)),
                )
            )
    return speakers


def _resonance_gain(freqs: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Magnitude of a cascade of 2nd-order resonances at `freqs`.

    |H(f)| = Π_j 1 / sqrt((1 - (f/F_j)²)² + (f·B_j / F_j²)²), normalised to 1 at f = 0.
    freqs (..., K), formants (..., 3) broadcast against each other.
    """
    gain = np.ones_like(freqs)
    for j in range(formants.shape[-1]):
        ratio = freqs / formants[..., j : j + 1]
        damping = freqs * bandwidths[j] / formants[..., j : j + 1] ** 2
        gain = gain / np.sqrt((1 - ratio**2) ** 2 + damping**2)
    return gain


def synthesize_utterance(
    speaker: SyntheticSpeaker,
    label: str,
    duration_s: float,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """One synthetic utterance (float32, peak ≤ 0.99) of `speaker` with the prosody of `label`."""
    return synthesize_with_prosody(speaker, label, duration_s, rng, sample_rate)[0]


def synthesize_with_prosody(
    speaker: SyntheticSpeaker,
    label: str,
    duration_s: float,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, EmotionProsody]:
    """`synthesize_utterance`, and the prosody drawn for it (before the speaker's tilt and
    breathiness offsets): what `prosody_attributes` rates."""
    mean, spread = PROSODY[label], SPREAD
    pitch = rng.normal(mean.pitch_semitones, spread.pitch_semitones)
    pitch_range = max(0.5, rng.normal(mean.pitch_range_semitones, spread.pitch_range_semitones))
    rate = max(1.5, rng.normal(mean.syllables_per_second, spread.syllables_per_second))
    loudness_db = rng.normal(mean.loudness_db, spread.loudness_db)
    emotion_tilt = rng.normal(mean.tilt_db_per_octave, spread.tilt_db_per_octave)
    tilt = emotion_tilt + speaker.tilt_offset_db
    emotion_breathiness = rng.normal(mean.breathiness, spread.breathiness)
    breathiness = max(0.0, emotion_breathiness + speaker.breathiness_offset)
    drawn = EmotionProsody(pitch, pitch_range, rate, loudness_db, emotion_tilt, emotion_breathiness)

    num_samples = round(duration_s * sample_rate)
    hop = 80  # control parameters move on a 5 ms grid, then are interpolated to samples
    num_frames = num_samples // hop + 2
    frame_times = np.arange(num_frames) * hop / sample_rate

    # Syllables: onsets at jittered intervals of 1/rate; each gets a vowel and a pitch accent.
    num_syllables = max(1, round(duration_s * rate))
    intervals = rng.uniform(0.7, 1.3, num_syllables) / rate
    onsets = np.concatenate([[0.05], 0.05 + np.cumsum(intervals)[:-1]])
    onsets = onsets * (duration_s - 0.1) / max(onsets[-1] + intervals[-1], 1e-6)
    syllable_of_frame = np.clip(np.searchsorted(onsets, frame_times, side="right") - 1, 0, None)
    position_in_syllable = (frame_times - onsets[syllable_of_frame]) / intervals[syllable_of_frame]

    # Voicing envelope: a raised-cosine nucleus over the first ~70 % of each syllable.
    voiced_fraction = rng.uniform(0.55, 0.8, num_syllables)[syllable_of_frame]
    phase = np.clip(position_in_syllable / voiced_fraction, 0, 1)
    envelope = np.sin(np.pi * phase) ** 0.7

    # F0 contour (semitones around the speaker's base): declination + per-syllable accents.
    accents = rng.uniform(-1, 1, num_syllables)[syllable_of_frame]
    declination = np.linspace(0.5, -0.5, num_frames)
    contour = 0.5 * declination + 0.5 * accents * np.sin(np.pi * phase)
    f0 = speaker.base_f0_hz * 2 ** ((pitch + pitch_range * contour) / 12)  # (frames,)

    # Formants per frame: the syllable's vowel, scaled by the speaker's vocal-tract length.
    vowels = rng.integers(0, len(VOWEL_FORMANTS), num_syllables)[syllable_of_frame]
    formants = VOWEL_FORMANTS[vowels] * speaker.formant_scale  # (frames, 3)

    # Harmonic source: amplitude of harmonic k = tilt^(log2 k) · formant gain at k·f0.
    num_harmonics = 40
    harmonic_numbers = np.arange(1, num_harmonics + 1)  # (K,)
    harmonic_freqs = f0[:, None] * harmonic_numbers[None, :]  # (frames, K)
    amplitudes = 10 ** (tilt * np.log2(harmonic_numbers) / 20)[None, :]
    amplitudes = amplitudes * _resonance_gain(harmonic_freqs, formants, FORMANT_BANDWIDTHS)
    amplitudes[harmonic_freqs > 0.45 * sample_rate] = 0.0  # no aliasing
    amplitudes *= envelope[:, None]

    sample_times = np.arange(num_samples) / sample_rate
    f0_samples = np.interp(sample_times, frame_times, f0)
    phase_samples = 2 * np.pi * np.cumsum(f0_samples) / sample_rate  # (T,)
    voiced = np.zeros(num_samples)
    for k in range(num_harmonics):
        amplitude_k = np.interp(sample_times, frame_times, amplitudes[:, k])
        if amplitude_k.max() > 0:
            voiced += amplitude_k * np.sin(harmonic_numbers[k] * phase_samples)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-9

    # Aspiration: noise following the voicing envelope, brighter than the voice.
    aspiration = rng.standard_normal(num_samples) * np.interp(sample_times, frame_times, envelope)
    signal = voiced + breathiness * 3.0 * aspiration

    # Loudness relative to a nominal -26 dBFS level; a room-noise floor 40 dB below it.
    signal *= 0.05 * 10 ** (loudness_db / 20) / (np.sqrt(np.mean(signal**2)) + 1e-9)
    signal += rng.standard_normal(num_samples) * 0.05 * 10 ** (-40 / 20)
    peak = np.abs(signal).max()
    if peak > 0.99:
        signal *= 0.99 / peak
    return signal.astype(np.float32), drawn


# Dimensional ratings of a synthetic utterance, on IEMOCAP's 1-5 scale, computed from the prosody
# drawn for it (no extra randomness: the audio is what it always was). With N = PROSODY["neutral"],
# S = SPREAD and clip to [1, 5]:
#   arousal   = 3 + 0.25·[(loudness − N)/S + (rate − N)/S + (pitch − N)/S]      (loud, fast, high)
#   valence   = VALENCE[label] + 0.4·(pitch_range − M)/S − 0.4·(breathiness − M)/S   (M: the
#               label's own mean: the class sets valence, lively and clear voices raise it)
#   dominance = 3 + 0.3·[(loudness − N)/S + (tilt − N)/S]                      (loud, bright)
# so angry is high arousal / low valence / high dominance and sad low / low / low, as in the
# circumplex. Like the labels, these are rules of the generator, not human ratings.
VALENCE: dict[str, float] = {"angry": 1.8, "happy": 4.2, "neutral": 3.0, "sad": 2.0}


def prosody_attributes(label: str, drawn: EmotionProsody) -> dict[str, float]:
    """Arousal, valence and dominance (1-5) of an utterance drawn with `drawn` (see above)."""
    neutral, spread, own = PROSODY["neutral"], SPREAD, PROSODY[label]

    def z(name: str, centre: EmotionProsody = neutral) -> float:
        return (getattr(drawn, name) - getattr(centre, name)) / getattr(spread, name)

    arousal = 3 + 0.25 * (z("loudness_db") + z("syllables_per_second") + z("pitch_semitones"))
    valence = VALENCE[label] + 0.4 * z("pitch_range_semitones", own) - 0.4 * z("breathiness", own)
    dominance = 3 + 0.3 * (z("loudness_db") + z("tilt_db_per_octave"))
    clip = lambda x: round(float(np.clip(x, 1.0, 5.0)), 4)  # noqa: E731
    return {"arousal": clip(arousal), "valence": clip(valence), "dominance": clip(dominance)}


@dataclass(frozen=True)
class SyntheticSettings:
    seed: int = 0
    num_sessions: int = 5
    utterances_per_class: int = 10  # per speaker
    min_seconds: float = 1.0
    max_seconds: float = 3.0
    sample_rate: int = SAMPLE_RATE


def generate_synthetic_corpus(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_sessions: int = 5,
    utterances_per_class: int = 10,
    min_seconds: float = 1.0,
    max_seconds: float = 3.0,
) -> list[Utterance]:
    """Write a synthetic corpus to `out_dir` and return its utterances.

    Layout: `wav/<speaker>/<id>.wav`, `manifest.csv` (path,label,speaker,session, and the
    dimensional ratings arousal,valence,dominance of `prosody_attributes`), and
    `SYNTHETIC_CORPUS.txt` with the settings and a note that the data is not emotional speech.
    With the defaults: 5 sessions × 2 speakers × 4 classes × 10 = 400 clips of 1–3 s.
    """
    check_int(seed, "seed", 0, 2**32 - 1)
    check_int(num_sessions, "num_sessions", 1)
    check_int(utterances_per_class, "utterances_per_class", 1)
    check_number(min_seconds, "min_seconds", 0.1)
    check_number(max_seconds, "max_seconds", min_seconds)
    settings = SyntheticSettings(seed, num_sessions, utterances_per_class, min_seconds, max_seconds)
    out_dir = as_path(out_dir, "synthetic corpus folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise CorpusError(f"{out_dir}: is a file; expected a new or empty folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        what = "a synthetic corpus" if is_synthetic_corpus(out_dir) else "not a synthetic corpus"
        raise CorpusError(
            f"{out_dir}: folder exists and is not empty ({what}); choose a new folder, or delete "
            "this one first, so nothing is overwritten or left stale"
        )
    check_writable_folder(out_dir, "the corpus folder")
    # Written beside, then renamed into place: an interrupted run leaves no half corpus.
    staging = out_dir.parent / f".{out_dir.name}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_synthetic_corpus(staging, settings)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_synthetic(out_dir)


def _write_synthetic_corpus(out_dir: Path, settings: SyntheticSettings) -> None:
    rng = np.random.default_rng(settings.seed)
    speakers = _make_speakers(settings.num_sessions, rng)
    utterances = []
    for speaker in speakers:
        (out_dir / "wav" / speaker.id).mkdir(parents=True, exist_ok=True)
        for label in FOUR_CLASSES:
            for index in range(settings.utterances_per_class):
                utterance_id = f"{speaker.id}_{label}_{index:03d}"
                duration = float(rng.uniform(settings.min_seconds, settings.max_seconds))
                samples, drawn = synthesize_with_prosody(speaker, label, duration, rng)
                path = out_dir / "wav" / speaker.id / f"{utterance_id}.wav"
                sf.write(str(path), samples, SAMPLE_RATE, subtype="PCM_16")
                utterances.append(
                    Utterance(utterance_id, path, label, speaker.id, speaker.session,
                              **prosody_attributes(label, drawn))
                )  # fmt: skip
    write_manifest(utterances, out_dir / MANIFEST_FILE)
    description = {
        "note": HONESTY_NOTE,
        "settings": asdict(settings),
        "classes": {label: asdict(p) for label, p in PROSODY.items()},
        "spread": asdict(SPREAD),
        "speakers": [asdict(s) for s in speakers],
    }
    (out_dir / MARKER_FILE).write_text(
        HONESTY_NOTE + "\n\n" + json.dumps(description, indent=2) + "\n", encoding="utf-8"
    )


def is_synthetic_corpus(root: str | os.PathLike) -> bool:
    return (Path(root) / MARKER_FILE).is_file()


def load_synthetic(root: str | os.PathLike) -> list[Utterance]:
    """Read a corpus written by `generate_synthetic_corpus`."""
    root = as_path(root, "synthetic corpus root")
    if not is_synthetic_corpus(root):
        raise CorpusError(
            f"{root}: not a synthetic corpus (no {MARKER_FILE}); create one with "
            "`emoknn corpus synth DIR`"
        )
    return load_manifest(root / MANIFEST_FILE)

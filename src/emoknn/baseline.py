"""A classical baseline: hand-crafted utterance features and a logistic regression.

Every cross-validation runs it on the same folds, so each table shows what a simple, well-known
method reaches on that corpus. The features are the usual prosodic and spectral statistics of SER
before self-supervised encoders (in the spirit of the eGeMAPS / IS09 sets, smaller), computed with
librosa on 25 ms frames every 10 ms at 16 kHz:

- pitch: YIN F0 (60–500 Hz) on frames within 30 dB of the loudest frame, in semitones re 100 Hz:
  mean, std, 5th and 95th percentiles; the fraction of such (voiced) frames;
- energy: frame RMS in dB: mean, std, 5th and 95th percentiles;
- spectral shape: centroid, bandwidth, 85 % roll-off (all in log Hz), flatness, zero-crossing
  rate: mean and std of each;
- MFCC 1–20: mean and std, and the std of their deltas;
- log duration.

The classifier: standardisation, then multinomial logistic regression with balanced class
weights (UA weighs each class equally); its inverse regularisation C is chosen on the validation
speaker by UA (ties to the smaller C), then it is refitted on training + validation speakers —
the utterances the learned models' kNN datastore holds. Everything is deterministic.

For dimensional tasks the same features feed a ridge regression (`FeatureRidge`): standardised
features and targets, one linear output per attribute, its penalty chosen on the validation
speaker by the mean CCC over attributes (ties to the smaller penalty), then refitted on training +
validation speakers.

Features are computed once per utterance and cached (`features.npz` in the cross-validation's
`baseline/` folder), keyed by utterance id, path, size and modification time, so every fold and
every resumed run reuses them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emoknn.audio import SAMPLE_RATE, load_audio
from emoknn.corpora.utterance import Utterance
from emoknn.metrics import ccc_columns, unweighted_accuracy
from emoknn.threads import single_threaded_blas

NAME = "baseline"  # the `training` of its records
LABEL = "Baseline (features + LR)"  # its row in tables
DESCRIPTION = (
    "hand-crafted utterance statistics (pitch, energy, spectral shape, 20 MFCCs and their deltas; "
    "librosa) → standardisation → logistic regression (balanced class weights, C chosen on the "
    "validation speaker)"
)
FEATURES_VERSION = 1  # bump when the features change: cached rows of another version are redone
C_GRID = (0.01, 0.1, 1.0, 10.0)
RIDGE_LABEL = "Baseline (features + ridge)"  # its row in dimensional tables
RIDGE_DESCRIPTION = (
    "the same hand-crafted statistics → standardisation → ridge regression, one output per "
    "attribute (penalty chosen on the validation speaker by mean CCC)"
)
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
FRAME = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
N_MFCC = 20


def _stats(x: np.ndarray, percentiles: bool = False) -> list[float]:
    if len(x) == 0:
        return [0.0] * (4 if percentiles else 2)
    values = [float(np.mean(x)), float(np.std(x))]
    if percentiles:
        values += [float(np.percentile(x, 5)), float(np.percentile(x, 95))]
    return values


def utterance_features(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The baseline's feature vector (float64, fixed length) of one mono utterance."""
    import librosa

    y = np.asarray(waveform, dtype=np.float32)
    if len(y) < 2048:  # YIN needs a 1024-sample frame; pad very short clips with silence
        y = np.pad(y, (0, 2048 - len(y)))
    spectrum = np.abs(librosa.stft(y, n_fft=512, hop_length=HOP, win_length=FRAME)) ** 2
    rms = librosa.feature.rms(S=np.sqrt(spectrum), frame_length=512)[0]
    rms_db = 20 * np.log10(np.maximum(rms, 1e-5))
    f0 = librosa.yin(y, fmin=60, fmax=500, sr=sample_rate, frame_length=1024, hop_length=HOP)
    frames = min(len(f0), len(rms_db))
    voiced = rms_db[:frames] > rms_db.max() - 30  # loud frames: where a pitch is meaningful
    semitones = 12 * np.log2(f0[:frames][voiced] / 100.0)
    log_hz = lambda x: np.log(np.maximum(x, 1.0))  # noqa: E731
    shape = [
        log_hz(librosa.feature.spectral_centroid(S=spectrum, sr=sample_rate)[0]),
        log_hz(librosa.feature.spectral_bandwidth(S=spectrum, sr=sample_rate)[0]),
        log_hz(librosa.feature.spectral_rolloff(S=spectrum, sr=sample_rate, roll_percent=0.85)[0]),
        librosa.feature.spectral_flatness(S=spectrum)[0],
        librosa.feature.zero_crossing_rate(y, frame_length=FRAME, hop_length=HOP)[0],
    ]
    mel = librosa.feature.melspectrogram(S=spectrum, sr=sample_rate, n_mels=40)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)  # (20, frames)
    deltas = librosa.feature.delta(mfcc, width=min(9, mfcc.shape[1] - (mfcc.shape[1] + 1) % 2))
    values = [*_stats(semitones, percentiles=True), float(voiced.mean())]
    values += _stats(rms_db, percentiles=True)
    for feature in shape:
        values += _stats(feature)
    values += mfcc.mean(axis=1).tolist() + mfcc.std(axis=1).tolist() + deltas.std(axis=1).tolist()
    values.append(float(np.log(len(waveform) / sample_rate)))
    return np.array(values, dtype=np.float64)


def _identity(utterance: Utterance) -> tuple[str, str, int, int]:
    stat = Path(utterance.path).stat()
    return utterance.id, str(Path(utterance.path).resolve()), stat.st_size, stat.st_mtime_ns


def cached_features(
    utterances: Sequence[Utterance], cache_file: str | os.PathLike
) -> dict[str, np.ndarray]:
    """Features of each utterance (by id), computing only those not already in `cache_file`.

    A cached row is reused only if the utterance's id, resolved path, size and mtime and the
    features version all match; the cache is rewritten atomically with every current row.
    """
    from emoknn.files import atomic_path

    cache_file = Path(cache_file)
    cached: dict[tuple[str, str, int, int], np.ndarray] = {}
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as stored:
            if int(stored["version"]) == FEATURES_VERSION:
                columns = [stored[name].tolist() for name in ("ids", "paths", "sizes", "mtimes")]
                for i, key in enumerate(zip(*columns, strict=True)):
                    cached[key] = stored["features"][i]
    identities = [_identity(u) for u in utterances]
    missing = [(key, u) for key, u in zip(identities, utterances, strict=True) if key not in cached]
    for key, utterance in missing:
        cached[key] = utterance_features(load_audio(utterance.path))
    if missing or not cache_file.is_file():
        keys = sorted(set(identities) | set(cached))  # keep rows of other folds' utterances too
        with atomic_path(cache_file) as temporary, temporary.open("wb") as handle:
            np.savez(
                handle,
                version=np.array(FEATURES_VERSION),
                ids=np.array([k[0] for k in keys]),
                paths=np.array([k[1] for k in keys]),
                sizes=np.array([k[2] for k in keys], dtype=np.int64),
                mtimes=np.array([k[3] for k in keys], dtype=np.int64),
                features=np.stack([cached[k] for k in keys]),
            )
    return {key[0]: cached[key] for key in identities}


@single_threaded_blas()  # small fits: one BLAS thread (emoknn.threads)
def choose_and_refit(
    make: Callable[[float], Any],
    grid: Sequence[float],
    score: Callable[[np.ndarray, np.ndarray], float],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
) -> tuple[float, float, Any]:
    """The grid value whose pipeline `make(value)`, fitted on train, scores best on validation
    (`score(truth, predicted)`; ties: the earlier value), that score, and its pipeline refitted on
    train + validation."""
    scores = [score(y_val, make(value).fit(x_train, y_train).predict(x_val)) for value in grid]
    best = int(np.argmax(scores))  # the first of ties
    pipeline = make(grid[best]).fit(
        np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    )
    return grid[best], float(scores[best]), pipeline


class FeatureBaseline:
    """Standardisation + logistic regression, C picked on a validation set (scikit-learn style:
    `fit` returns self, learned state ends in `_`)."""

    def __init__(self, c_grid: Sequence[float] = C_GRID) -> None:
        self.c_grid = tuple(c_grid)

    @staticmethod
    def _pipeline(c: float):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=c, class_weight="balanced", max_iter=5000),
        )

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
    ) -> FeatureBaseline:
        """Pick C by validation UA (ties to the smaller C), then refit on train + validation."""
        self.c_, self.val_ua_, self.pipeline_ = choose_and_refit(
            self._pipeline, self.c_grid, unweighted_accuracy, x_train, y_train, x_val, y_val
        )
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "pipeline_"):
            raise RuntimeError("FeatureBaseline is not fitted: call fit(...) first")
        return self.pipeline_.predict(x)


class FeatureRidge:
    """Standardisation + ridge regression of the attributes (N, A), the penalty picked on a
    validation set by mean CCC (scikit-learn style: `fit` returns self, learned state ends in `_`).
    """

    def __init__(self, alphas: Sequence[float] = RIDGE_ALPHAS) -> None:
        self.alphas = tuple(alphas)

    @staticmethod
    def _pipeline(alpha: float):
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return TransformedTargetRegressor(
            regressor=make_pipeline(StandardScaler(), Ridge(alpha=alpha)),
            transformer=StandardScaler(),
        )

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
    ) -> FeatureRidge:
        """Pick the penalty by validation mean CCC (ties: the smaller); refit on train + val."""

        def mean_ccc(truth: np.ndarray, predicted: np.ndarray) -> float:
            return float(ccc_columns(predicted.reshape(truth.shape), truth).mean())

        self.alpha_, self.val_ccc_, self.pipeline_ = choose_and_refit(
            self._pipeline, self.alphas, mean_ccc, x_train, y_train, x_val, y_val
        )
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "pipeline_"):
            raise RuntimeError("FeatureRidge is not fitted: call fit(...) first")
        return np.asarray(self.pipeline_.predict(x)).reshape(len(x), -1)

"""The classical baseline: openSMILE's standard functionals and a logistic regression.

Every cross-validation runs it on the same folds, so each table shows what the field's standard
classical method reaches on that corpus: the eGeMAPSv02 functionals (Eyben et al. 2016, the
extended Geneva Minimalistic Acoustic Parameter Set: 88 utterance statistics of pitch, loudness,
jitter/shimmer, formants, spectral slope and MFCCs 1–4) computed by openSMILE's own C++ extractor
through the `opensmile` package, so the row can be set beside published results. ComParE_2016
(6,373 functionals) is the larger option (`feature_set`, `emoknn crossval --baseline-features`).
Audio is read as everywhere else (`load_audio`: mono, 16 kHz) before openSMILE sees it.

The classifier: standardisation, then multinomial logistic regression with balanced class
weights (UA weighs each class equally); its inverse regularisation C is chosen on the validation
speaker by UA (ties to the smaller C), then it is refitted on training + validation speakers —
the utterances the learned models' kNN datastore holds. Everything is deterministic.

For dimensional tasks the same features feed a ridge regression (`FeatureRidge`): standardised
features and targets, one linear output per attribute, its penalty chosen on the validation
speaker by the mean CCC over attributes (ties to the smaller penalty), then refitted on training +
validation speakers.

Features are computed once per utterance and cached (`features-<set>.npz` in the
cross-validation's `baseline/` folder), keyed by utterance id, path, size and modification time,
so every fold and every resumed run reuses them.

A clip too short for openSMILE (below about 60 ms it returns no finite value) is refused with one
line naming the file: a row of NaN would silently poison the standardisation of every fold.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from emoknn.audio import SAMPLE_RATE, load_audio
from emoknn.corpora.utterance import Utterance
from emoknn.errors import AudioError, ConfigError
from emoknn.metrics import ccc_columns, unweighted_accuracy
from emoknn.threads import single_threaded_blas

NAME = "baseline"  # the `training` of its records
# openSMILE feature sets the baseline offers: name → number of functionals.
FEATURE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373}
DEFAULT_FEATURES = "eGeMAPSv02"
LABEL = "Baseline (eGeMAPS + LR)"  # its row in tables, with the default feature set
DESCRIPTION = (
    "openSMILE eGeMAPSv02 functionals (88) → standardisation → logistic regression (balanced "
    "class weights, C chosen on the validation speaker)"
)
FEATURES_VERSION = 2  # bump when the features change: cached rows of another version are redone
C_GRID = (0.01, 0.1, 1.0, 10.0)
RIDGE_LABEL = "Baseline (eGeMAPS + ridge)"  # its row in dimensional tables
RIDGE_DESCRIPTION = (
    "the same openSMILE functionals → standardisation → ridge regression, one output per "
    "attribute (penalty chosen on the validation speaker by mean CCC)"
)
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
MIN_SECONDS = 0.06  # openSMILE's functionals are NaN below this length (measured: 960 samples)


def check_feature_set(feature_set: str) -> str:
    """`feature_set` if the baseline offers it, else a ConfigError naming the choices."""
    if feature_set not in FEATURE_SETS:
        raise ConfigError(
            f"baseline feature set {feature_set!r}: expected one of {', '.join(FEATURE_SETS)}"
        )
    return feature_set


def label(feature_set: str = DEFAULT_FEATURES) -> str:
    """The baseline's row name in tables: `Baseline (eGeMAPS + LR)`, `Baseline (ComParE + LR)`."""
    return f"Baseline ({feature_set.removesuffix('v02').split('_')[0]} + LR)"


def description(feature_set: str = DEFAULT_FEATURES) -> str:
    """What the baseline is, in one phrase, for reports."""
    return DESCRIPTION.replace("eGeMAPSv02 functionals (88)",
                               f"{feature_set} functionals ({FEATURE_SETS[feature_set]})")


@cache
def _extractor(feature_set: str):
    """One openSMILE extractor per feature set and process (building one reads its config)."""
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set],
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def utterance_features(
    waveform: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    feature_set: str = DEFAULT_FEATURES,
    source: str = "the clip",
) -> np.ndarray:
    """The openSMILE functionals (float64, `FEATURE_SETS[feature_set]` values) of one mono
    utterance. Raises AudioError naming `source` when the clip is too short to measure."""
    check_feature_set(feature_set)
    signal = np.asarray(waveform, dtype=np.float32)
    with warnings.catch_warnings():  # "Segment too short, filling with NaN": checked below
        warnings.simplefilter("ignore", UserWarning)
        frame = _extractor(feature_set).process_signal(signal, sample_rate)
    values = frame.to_numpy(dtype=np.float64).reshape(-1)
    if not np.isfinite(values).all():
        raise AudioError(
            f"{source}: {len(signal) / sample_rate:.3f} s is too short for openSMILE's "
            f"{feature_set} functionals (they need at least {MIN_SECONDS:g} s)"
        )
    return values


def _identity(utterance: Utterance) -> tuple[str, str, int, int]:
    stat = Path(utterance.path).stat()
    return utterance.id, str(Path(utterance.path).resolve()), stat.st_size, stat.st_mtime_ns


def cached_features(
    utterances: Sequence[Utterance],
    cache_file: str | os.PathLike,
    feature_set: str = DEFAULT_FEATURES,
) -> dict[str, np.ndarray]:
    """Features of each utterance (by id), computing only those not already in `cache_file`.

    A cached row is reused only if the utterance's id, resolved path, size and mtime, the feature
    set and the features version all match; the cache is rewritten atomically with every current
    row.
    """
    from emoknn.files import atomic_path

    cache_file = Path(cache_file)
    cached: dict[tuple[str, str, int, int], np.ndarray] = {}
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as stored:
            same_set = "feature_set" in stored and str(stored["feature_set"]) == feature_set
            if int(stored["version"]) == FEATURES_VERSION and same_set:
                columns = [stored[name].tolist() for name in ("ids", "paths", "sizes", "mtimes")]
                for i, key in enumerate(zip(*columns, strict=True)):
                    cached[key] = stored["features"][i]
    identities = [_identity(u) for u in utterances]
    missing = [(key, u) for key, u in zip(identities, utterances, strict=True) if key not in cached]
    for key, utterance in missing:
        cached[key] = utterance_features(load_audio(utterance.path), feature_set=feature_set,
                                         source=str(utterance.path))
    if missing or not cache_file.is_file():
        keys = sorted(set(identities) | set(cached))  # keep rows of other folds' utterances too
        with atomic_path(cache_file) as temporary, temporary.open("wb") as handle:
            np.savez(
                handle,
                version=np.array(FEATURES_VERSION),
                feature_set=np.array(feature_set),
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

"""The encoder probe: a logistic regression on one layer of the encoder, a bar for the heads.

Every cross-validation (frozen and fine-tuning presets alike), the demo and the report run it
beside the classical baseline, so each table shows what the simplest use of the same encoder
reaches on the same folds — a learned head that does not beat it does not earn its place.

Per fold, from the feature cache's originals (`emoknn.features`: the masked mean over real frames
of every hidden state of the centred crop, (L + 1, H) per utterance; no augmented views):

    for each layer l = 0 … L and each C in C_GRID:
        standardise layer l with the training speakers' mean and std      (StandardScaler)
        balanced multinomial logistic regression, inverse regularisation C, on the training speakers
        UA on the validation speaker
    choose (l, C) with the highest validation UA; ties go to the earlier layer, then the smaller C
    refit on training + validation speakers (standardisation statistics of those utterances too)
    predict the test speaker

The refit on training + validation is the classical baseline's choice (`emoknn.baseline`): the
utterances the learned models' kNN datastore holds. The test speaker's clips are never part of a
statistic or a choice. Everything is deterministic (lbfgs, no random state). On cached features it
costs seconds: whisper-base (7 layers × 512) on 320 utterances, 24 s of CPU for all 10 folds
(`bench/probe_speed.py`); the cost grows with utterances × layers × width.

With a fine-tuning preset the probe reads the pretrained, un-tuned encoder (for `tiny`, the
random initialisation training starts from): its originals are cached once per cross-validation
(`prepare_features`), in the same feature cache a frozen run would use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoknn.corpora.utterance import Utterance
from emoknn.metrics import unweighted_accuracy
from emoknn.threads import single_threaded_blas

if TYPE_CHECKING:
    from emoknn.config import TrainConfig

NAME = "probe"  # the `training` of its records
LABEL = "Encoder probe (LR)"  # its row in tables
DESCRIPTION = (
    "the pooled output of one layer of the same encoder (pretrained, never fine-tuned) → "
    "standardisation → logistic regression (balanced class weights); the layer and C chosen on "
    "the validation speaker, then refitted on training + validation speakers"
)
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
MAX_ITER = 2000

FeaturesOf = Callable[[Sequence[Utterance]], np.ndarray]  # utterances → (N, L + 1, H)


class EncoderProbe:
    """Per-layer standardisation + logistic regression, the layer and C picked on a validation set
    (scikit-learn style: `fit` returns self, learned state ends in `_`)."""

    def __init__(self, c_grid: Sequence[float] = C_GRID) -> None:
        if not c_grid or any(c <= 0 for c in c_grid):
            raise ValueError(f"c_grid must hold positive values, got {tuple(c_grid)}")
        self.c_grid = tuple(sorted(c_grid))

    @staticmethod
    def _classifier(c: float):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER)

    @staticmethod
    def _check(x: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"{name}: expected features (N, L + 1, H) with one label per row, got "
                f"{x.shape} and {len(y)} labels"
            )
        return x

    @single_threaded_blas()  # 8.6× faster than a BLAS thread per core (emoknn.threads)
    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
    ) -> EncoderProbe:
        """Pick (layer, C) by validation UA (ties: earlier layer, then smaller C), then refit
        standardisation and classifier on train + validation.

        x_*: (N, L + 1, H) pooled layers; y_*: (N,) class ids.
        """
        from sklearn.preprocessing import StandardScaler

        x_train = self._check(x_train, y_train, "x_train")
        x_val = self._check(x_val, y_val, "x_val")
        if x_train.shape[1:] != x_val.shape[1:]:
            raise ValueError(f"x_train {x_train.shape} and x_val {x_val.shape} differ in shape")
        scores = np.zeros((x_train.shape[1], len(self.c_grid)))  # (L + 1, |C|) validation UA
        for layer in range(x_train.shape[1]):
            scaler = StandardScaler().fit(x_train[:, layer].astype(np.float64))
            train = scaler.transform(x_train[:, layer].astype(np.float64))  # (N, H)
            val = scaler.transform(x_val[:, layer].astype(np.float64))
            for j, c in enumerate(self.c_grid):
                predicted = self._classifier(c).fit(train, y_train).predict(val)
                scores[layer, j] = unweighted_accuracy(y_val, predicted)
        # argmax of the flattened (layer, C) grid: the first maximum, i.e. the earliest layer,
        # then the smallest C (the grid is sorted), of ties.
        layer, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        self.scores_ = scores
        self.layer_ = int(layer)
        self.c_ = float(self.c_grid[j])
        self.val_ua_ = float(scores[layer, j])
        x = np.concatenate([x_train[:, self.layer_], x_val[:, self.layer_]]).astype(np.float64)
        self.scaler_ = StandardScaler().fit(x)
        self.classifier_ = self._classifier(self.c_).fit(
            self.scaler_.transform(x), np.concatenate([y_train, y_val])
        )
        return self

    @single_threaded_blas()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class ids of pooled layers x (N, L + 1, H)."""
        if not hasattr(self, "classifier_"):
            raise RuntimeError("EncoderProbe is not fitted: call fit(...) first")
        chosen = np.asarray(x)[:, self.layer_].astype(np.float64)
        return self.classifier_.predict(self.scaler_.transform(chosen))


@dataclass
class ProbeFold:
    """A probe fitted on one fold and its test-speaker predictions."""

    probe: EncoderProbe
    truth: np.ndarray  # (N_test,) class ids
    predicted: np.ndarray  # (N_test,)
    seconds: float  # fitting and predicting (features already cached)


def fit_fold(
    train: Sequence[Utterance],
    val: Sequence[Utterance],
    test: Sequence[Utterance],
    labels: Sequence[str],
    features_of: FeaturesOf,
) -> ProbeFold:
    """Fit the probe on a fold's training and validation speakers; predict its test speaker.

    `features_of` reads each group's pooled layers separately, so nothing about the test
    speaker can reach the fit."""
    start = time.perf_counter()
    index = {label: i for i, label in enumerate(labels)}
    y = lambda us: np.array([index[u.label] for u in us])  # noqa: E731
    probe = EncoderProbe().fit(features_of(train), y(train), features_of(val), y(val))
    predicted = probe.predict(features_of(test))
    return ProbeFold(probe, y(test), predicted, time.perf_counter() - start)


def prepare_features(
    utterances: Sequence[Utterance],
    config: TrainConfig,
    labels: Sequence[str],
    cache_root: str | os.PathLike,
    log: Callable[[str], None] | None = None,
) -> FeaturesOf:
    """The pretrained (un-tuned) encoder's pooled layers of `utterances`, from the feature cache
    under `cache_root` (filling what is missing), for a fine-tuning cross-validation's probe.

    The encoder is built exactly as training starts from it (`config.seed` for a random `tiny`
    one) and released once its originals are read; the returned function looks rows up by
    utterance id."""
    from emoknn.features import FeatureCache
    from emoknn.frozen import build_frozen_model

    say = log or (lambda message: None)
    start = time.perf_counter()
    model = build_frozen_model(config, list(labels))
    cache = FeatureCache(Path(cache_root), model, config.max_seconds)
    stats = cache.fill(list(utterances), None)
    rows = cache.gather(cache.original_keys(list(utterances)))  # (N, L + 1, H) float32
    say(f"Encoder probe: pretrained {config.encoder} features of {len(utterances)} utterances "
        f"from {cache.folder} ({stats.computed} computed) in "
        f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    del model, cache
    position = {u.id: i for i, u in enumerate(utterances)}

    def features_of(group: Sequence[Utterance]) -> np.ndarray:
        return rows[[position[u.id] for u in group]]

    return features_of

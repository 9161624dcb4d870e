"""Dimensional targets of utterances: which attributes a split is rated on, as arrays, and the
training statistics that standardise them.

A model of task "dimensional" or "both" predicts the attributes (of arousal, valence, dominance,
in that order) that every training and validation utterance is rated on; its regression head is
trained on z = (y − μ) / σ with μ, σ the mean and the population standard deviation (ddof = 0)
of the *training* split, so no validation or test value shapes the targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError
from emoknn.model import ATTRIBUTES


def rated_attributes(utterances: Sequence[Utterance], task: str = "dimensional") -> list[str]:
    """The attributes every utterance is rated on, in ATTRIBUTES order; an error naming an
    unrated utterance when there is none."""
    rated = [name for name in ATTRIBUTES if all(getattr(u, name) is not None for u in utterances)]
    if not rated:
        unrated = next(
            (u for u in utterances if all(getattr(u, n) is None for n in ATTRIBUTES)), None
        )
        example = f" (e.g. {unrated.id} has none)" if unrated is not None else ""
        raise ConfigError(
            f"task {task!r} needs arousal, valence or dominance ratings on every utterance; no "
            f"attribute is rated on all {len(utterances)}{example}. Use --task categorical, or "
            "a corpus with ratings (IEMOCAP, MSP-Podcast, synthetic, a manifest with the columns)"
        )
    return rated


def attribute_matrix(utterances: Sequence[Utterance], attributes: Sequence[str]) -> np.ndarray:
    """(N, A) float64 ratings; an error naming the first utterance that lacks one."""
    rows = []
    for utterance in utterances:
        row = [getattr(utterance, name) for name in attributes]
        if any(value is None for value in row):
            missing = [n for n, v in zip(attributes, row, strict=True) if v is None]
            raise ConfigError(
                f"utterance {utterance.id}: no {', '.join(missing)} rating; the model predicts "
                f"{', '.join(attributes)}"
            )
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(attributes))


def attribute_statistics(
    train: Sequence[Utterance], attributes: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Mean and population standard deviation of each attribute over the training split."""
    values = attribute_matrix(train, attributes)
    mean, std = values.mean(axis=0), values.std(axis=0)
    flat = [name for name, s in zip(attributes, std, strict=True) if not s > 0]
    if flat:
        raise ConfigError(
            f"the training split's {', '.join(flat)} ratings are all equal: nothing to regress"
        )
    return mean.tolist(), std.tolist()

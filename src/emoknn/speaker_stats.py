"""Speaker (or domain) statistics from unlabelled clips: what a speaker-normalised model needs.

A model trained with `--speaker-norm` (frozen encoder only) saw every speaker's pooled encoder
features (L + 1, P per clip: every layer's mean over frames, `EmotionModel.pooled_layers`)
standardised with that speaker's own clips. To predict, it needs the same for the speaker it
hears, from that speaker's clips alone, labels never read:

    mean  = (1/N) Σ_i f_i                       over the N clips named for the statistics
    scale = max(sqrt((1/N) Σ_i (f_i − mean)²), 1e-6)       per (layer, value), population std
    f     ← (f − mean) / scale                  for every clip predicted with them

f_i is the centred crop of clip i (the crop the model was trained on, as the feature cache
stores originals). The same formula (`feature_statistics`) serves training (`emoknn.frozen`) and
prediction. A *speaker* statistic comes from one speaker's clips; a *domain* statistic from a
folder of the user's recordings (many speakers, one setting): a coarser normalisation for when
speakers are unknown. Either is unlabelled target audio, and every output says so
(`SpeakerStatistics.describe`).

Statistics are tied to the encoder features they were computed with (`features_key`: the encoder
weights, crop length, pooling, waveform normalisation and padding): an enrolment file made with
another encoder is refused, not applied. Enrolment files are written and read by
`emoknn.model_folder` (`save_enrolment`, `load_enrolment`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from emoknn.errors import SpeakerNormError

MIN_CLIPS = 10  # the fewest clips a model trained with --speaker-norm accepts statistics from
MIN_SCALE = 1e-6  # a value constant over the clips is left centred, not blown up
KINDS = ("speaker", "domain")


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per (layer, value) of pooled features (N, L + 1, P), accumulated in float64
    (module docstring), returned as float32."""
    values = np.asarray(features, dtype=np.float64)
    mean = values.mean(axis=0)
    scale = np.maximum(values.std(axis=0), MIN_SCALE)
    return mean.astype(np.float32), scale.astype(np.float32)


def features_key(
    encoder_fingerprint: str, crop_samples: int, pooling: str, normalize_waveforms: bool,
    pad_to_seconds: float, shape: tuple[int, int],
) -> str:  # fmt: skip
    """What pooled features depend on, hashed: statistics made under another key do not apply."""
    identity = {
        "encoder_sha256": encoder_fingerprint,
        "crop_samples": int(crop_samples),
        "pooling": pooling,
        "normalize_waveforms": bool(normalize_waveforms),
        "pad_to_seconds": float(pad_to_seconds),
        "shape": [int(n) for n in shape],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SpeakerStatistics:
    """Mean and scale of one speaker's (or domain's) pooled features, and what they came from."""

    name: str  # the speaker (or domain) the clips are of
    kind: str  # "speaker" or "domain"
    clips: int  # how many unlabelled clips the statistics come from
    mean: np.ndarray  # (L + 1, P) float32
    scale: np.ndarray  # (L + 1, P) float32, every value ≥ MIN_SCALE
    features_key: str  # `features_key` of the features they were computed from

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpeakerNormError(f"statistics kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpeakerNormError(f"statistics need the name of a {self.kind}, got {self.name!r}")
        shape = np.shape(self.mean)
        if len(shape) != 2 or np.shape(self.scale) != shape:
            raise SpeakerNormError(
                f"statistics of {self.kind} {self.name!r}: mean and scale must both be "
                f"(layers, values), got {shape} and {np.shape(self.scale)}"
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.scale).all()):
            raise SpeakerNormError(f"statistics of {self.kind} {self.name!r}: not finite")
        if not (np.asarray(self.scale) > 0).all():
            raise SpeakerNormError(f"statistics of {self.kind} {self.name!r}: a scale ≤ 0")

    @classmethod
    def from_features(
        cls, features: np.ndarray, name: str, kind: str, key: str, min_clips: int
    ) -> SpeakerStatistics:
        """Statistics of pooled features (N, L + 1, P) of the N clips named for them; refused in
        one line below `min_clips` clips."""
        check_clip_count(len(features), name, kind, min_clips)
        mean, scale = feature_statistics(features)
        return cls(name, kind, len(features), mean, scale, key)

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Pooled features (…, L + 1, P) standardised with these statistics, float32."""
        return ((np.asarray(features, dtype=np.float32) - self.mean) / self.scale).astype(
            np.float32
        )

    def describe(self) -> str:
        """The sentence every output carries: these statistics are unlabelled target audio."""
        clips = f"{self.clips} unlabelled clip{'' if self.clips == 1 else 's'}"
        return f"normalised with {clips} of {self.kind} {self.name}"

    def summary(self) -> dict[str, Any]:
        """What a prediction records about the statistics it used (JSON-ready)."""
        return {"kind": self.kind, "name": self.name, "clips": self.clips,
                "unlabelled_target_audio": True, "note": self.describe()}  # fmt: skip

    def check_key(self, key: str, source: str) -> None:
        """Refuse statistics of other encoder features than `key` (`source` names them)."""
        if key != self.features_key:
            raise SpeakerNormError(
                f"{source}: the statistics of {self.kind} {self.name!r} were computed with other "
                "encoder features (another encoder, crop length or pooling) than this model's; "
                "enrol the clips again with this model"
            )


def check_clip_count(count: int, name: str, kind: str, min_clips: int, where: str = "") -> None:
    """One line naming the speaker (or domain) when it has fewer than `min_clips` clips."""
    if count < min_clips:
        raise SpeakerNormError(
            f"{where}{kind} {name!r} has {count} clip{'' if count == 1 else 's'}; this model needs "
            f"at least {min_clips} unlabelled clips of a {kind} to normalise with"
        )


def normalized_by_group(features: np.ndarray, groups: list[str]) -> np.ndarray:
    """Features (N, L + 1, P), each row standardised with the statistics of the rows of its own
    group (its speaker): what training does with `--speaker-norm`, for a datastore of the
    training speakers. Every group needs at least 2 rows."""
    out = np.empty(np.shape(features), dtype=np.float32)
    names = np.array(groups)
    for group in sorted(set(groups)):
        rows = np.flatnonzero(names == group)
        check_clip_count(len(rows), group, "speaker", 2)
        mean, scale = feature_statistics(features[rows])
        out[rows] = (np.asarray(features[rows], dtype=np.float32) - mean) / scale
    return out

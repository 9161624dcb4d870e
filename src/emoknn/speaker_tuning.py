"""k, α and T chosen over several validation speakers, not one (`--knn-tuning speakers`).

The paper tunes the kNN stage on the fold's one validation speaker (`--knn-tuning validation`):
k ∈ [1..32], α ∈ (0, 1) and T maximising UA of that speaker's ~50 clips against a datastore of
the training speakers. On real speech that choice did not carry to the test speaker (whisper-base
frozen: CE+SCL + kNN −0.5 UA below CE+SCL on EmoDB and RAVDESS). `speakers` asks more speakers:

    parts = [ validation speaker, final model, against the training speakers' datastore ]
          + for each inner fold g = 1..G over the training speakers (G = INNER_FOLDS, speakers
            dealt round-robin in sorted order):
              a head trained, as the fold's own, on the other training speakers (early stopping on
              the validation speaker); the held-out speakers' clips scored by that head, against
              a datastore of its embeddings of the other training speakers and the validation
              speaker
    (k, α, T) = argmax UA over the clips of all parts together (`emoknn.knn.tune_knn_pooled`),
                α ∈ [0, 1): α = 0 (interpolation off) is an answer, and wins every tie

Why inner heads rather than the final model on its own training clips: a head is fitted to its
training clips (measured on EmoDB, whisper-base frozen: accuracy 1.00 and mean top probability
0.98 on them, against 0.87 and 0.87 on held-out speakers), so their probabilities say nothing of
how the model errs on a new speaker, and the tuning turned the kNN on where it hurt. An inner
head's probabilities on the speakers it never saw are out-of-fold, like the test speaker's.

The test speaker is never an input here: the inner folds are built from the fold's training and
validation utterances alone. Frozen encoders only: a head trains in seconds on cached features;
fine-tuning G more models per fold is not affordable, so a fine-tuned run tunes on its validation
speaker (`validation`). The same queries fit the temperatures of `emoknn.calibration`.
"""

from __future__ import annotations

import numpy as np
import torch

from emoknn.config import TrainConfig, task_attributes
from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError
from emoknn.features import FeatureCache
from emoknn.frozen import (
    SpeakerStats,
    build_frozen_model,
    fit_head,
    fold_features,
    pooled_originals,
    view_spec,
)
from emoknn.knn import DEFAULT_ALPHAS, Datastore, TuningQueries, tuning_queries
from emoknn.model import EmotionModel

KNN_TUNINGS = ("speakers", "validation")  # ours (default of the frozen preset), the paper's
INNER_FOLDS = 4
# α ∈ [0, 1) for `speakers`: the paper's grid and α = 0, the model alone.
ALPHAS_WITH_OFF = (0.0, *DEFAULT_ALPHAS)


def check_knn_tuning(knn_tuning: str, frozen: bool) -> str:
    """A valid `--knn-tuning` for a run whose encoder is (or is not) frozen."""
    if knn_tuning not in KNN_TUNINGS:
        raise ConfigError(f"knn tuning must be one of {', '.join(KNN_TUNINGS)}, got "
                          f"{knn_tuning!r}", setting="knn_tuning")  # fmt: skip
    if knn_tuning == "speakers" and not frozen:
        raise ConfigError(
            "--knn-tuning speakers trains a head per inner fold, which needs a frozen encoder "
            "(--preset frozen); a fine-tuned run tunes on its validation speaker "
            "(--knn-tuning validation)",
            setting="knn_tuning",
        )
    return knn_tuning


def default_knn_tuning(frozen: bool) -> str:
    """`speakers` for a frozen encoder, the paper's `validation` otherwise."""
    return "speakers" if frozen else "validation"


def alphas_for(knn_tuning: str) -> tuple[float, ...]:
    """The α grid of a tuning: the paper's (0, 1), or [0, 1) for `speakers`."""
    return ALPHAS_WITH_OFF if knn_tuning == "speakers" else DEFAULT_ALPHAS


def inner_groups(train: list[Utterance], count: int = INNER_FOLDS) -> list[list[str]]:
    """The training speakers dealt round-robin (sorted) into min(count, speakers) groups."""
    speakers = sorted({u.speaker for u in train})
    if len(speakers) < 2:
        raise ConfigError(
            f"--knn-tuning speakers needs at least 2 training speakers for its inner folds, got "
            f"{len(speakers)}; use --knn-tuning validation",
            setting="knn_tuning",
        )
    groups = min(count, len(speakers))
    return [speakers[g::groups] for g in range(groups)]


@torch.inference_mode()
def _head_outputs(model: EmotionModel, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (N, D) and softmax probabilities (N, C) of the head on pooled features."""
    output = model.head(torch.as_tensor(pooled, dtype=torch.float32))
    return output.embeddings.float().numpy(), torch.softmax(output.logits.float(), 1).numpy()


def out_of_fold_queries(
    config: TrainConfig,
    train: list[Utterance],
    val: list[Utterance],
    labels: list[str],
    cache: FeatureCache,
    encoder: torch.nn.Module,
    speaker_stats: SpeakerStats | None = None,
    inner_folds: int = INNER_FOLDS,
) -> list[TuningQueries]:
    """One part per inner fold (module docstring): each held-out group of training speakers
    scored by a head trained without them. Only `train` and `val` are read."""
    if not config.freeze_encoder:
        raise ConfigError("out-of-fold kNN tuning trains heads on cached features: it needs a "
                          "frozen encoder", setting="knn_tuning")  # fmt: skip
    label_to_id = {label: i for i, label in enumerate(labels)}
    parts = []
    for held in inner_groups(train, inner_folds):
        held_out = set(held)
        inner_train = [u for u in train if u.speaker not in held_out]
        queries = [u for u in train if u.speaker in held_out]
        model = build_frozen_model(config, labels, encoder,
                                   task_attributes(config, inner_train, val))  # fmt: skip
        data = fold_features(cache, inner_train, val, labels, view_spec(config), speaker_stats,
                             model.config)  # fmt: skip
        fit_head(model, data, config)
        stored = inner_train + val
        keys, _ = _head_outputs(model, pooled_originals(cache, stored, speaker_stats))
        store = Datastore(keys, [label_to_id[u.label] for u in stored], labels,
                          [u.id for u in stored], "inner fold")  # fmt: skip
        embeddings, probs = _head_outputs(model, pooled_originals(cache, queries, speaker_stats))
        parts.append(tuning_queries(embeddings, [label_to_id[u.label] for u in queries], probs,
                                    store, [u.id for u in queries]))  # fmt: skip
    return parts

"""From a trained model to a fitted kNN stage: embeddings, datastore, tuned (k, α, T).

`fit_run_knn` writes a run folder's `datastore.npz` (train + validation embeddings and labels,
with the model fingerprint) and `knn.json` (interpolation (k, α, T) and kNN-only (k, T)), through
`emoknn.model_folder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from emoknn.audio import SAMPLE_RATE, max_samples
from emoknn.corpora.utterance import Utterance
from emoknn.data import BucketBatchSampler, EvaluationAudio, collate_evaluation, utterance_lengths
from emoknn.errors import ModelFolderError
from emoknn.features import FeatureCache
from emoknn.knn import Datastore, TuningResult, tune_knn
from emoknn.model import EmotionModel
from emoknn.model_folder import fingerprint_of, load_model, read_run_config, save_knn


@dataclass
class Embedded:
    """Per-utterance outputs of a model, in the order of the utterances given."""

    ids: list[str]
    embeddings: np.ndarray  # (N, D) float32
    probs: np.ndarray  # (N, C) softmax of the classifier
    labels: np.ndarray  # (N,) class ids, −1 where unknown


@torch.inference_mode()
def embed_utterances(
    model: EmotionModel,
    utterances: list[Utterance],
    max_seconds: float = 7.5,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> Embedded:
    """Embed utterances in evaluation mode: centred crop, no augmentation, length-sorted batches."""
    model = model.eval().to(device)
    label_to_id = {label: i for i, label in enumerate(model.labels)}
    known = {u.label for u in utterances} <= set(label_to_id)
    max_length = max_samples(max_seconds)
    dataset = EvaluationAudio(utterances, label_to_id if known else None, max_length)
    lengths = utterance_lengths(utterances, max_length, SAMPLE_RATE)
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_evaluation,
                        num_workers=num_workers)  # fmt: skip
    count = len(utterances)
    embeddings = np.zeros((count, model.embedding_size), dtype=np.float32)
    probs = np.zeros((count, len(model.labels)), dtype=np.float32)
    labels = np.full(count, -1, dtype=np.int64)
    for batch in loader:
        batch = batch.to(device)
        output = model(batch.waveforms, batch.lengths)
        rows = batch.indices.cpu().numpy()
        embeddings[rows] = output.embeddings.float().cpu().numpy()
        probs[rows] = torch.softmax(output.logits.float(), dim=1).cpu().numpy()
        labels[rows] = batch.labels.cpu().numpy()
    return Embedded([u.id for u in utterances], embeddings, probs, labels)


@torch.inference_mode()
def embed_pooled(
    model: EmotionModel, utterances: list[Utterance], pooled: np.ndarray | torch.Tensor
) -> Embedded:
    """`embed_utterances` from pooled encoder features (N, L + 1, H) (a frozen encoder's cache):
    the model's head alone, in evaluation mode."""
    model = model.eval()
    label_to_id = {label: i for i, label in enumerate(model.labels)}
    known = {u.label for u in utterances} <= set(label_to_id)
    output = model.head(torch.as_tensor(pooled, dtype=torch.float32))
    labels = [label_to_id[u.label] if known else -1 for u in utterances]
    return Embedded(
        [u.id for u in utterances],
        output.embeddings.float().numpy(),
        torch.softmax(output.logits.float(), dim=1).numpy(),
        np.array(labels, dtype=np.int64),
    )


def fit_knn(
    model: EmotionModel,
    train: Embedded,
    val: Embedded,
    criterion: str = "ua",
    index_type: str = "exact",
) -> tuple[Datastore, TuningResult]:
    """Tune k, α, T on `val` against a train-only datastore, then return the train + val store.

    The validation utterances are kept out of the tuning datastore, so no query finds itself.
    """
    fingerprint = fingerprint_of(model)
    tuning_store = Datastore(train.embeddings, train.labels, model.labels, train.ids, fingerprint,
                             index_type)  # fmt: skip
    tuning = tune_knn(val.embeddings, val.labels, val.probs, tuning_store, query_ids=val.ids,
                      criterion=criterion)  # fmt: skip
    full_store = Datastore(
        np.concatenate([train.embeddings, val.embeddings]),
        np.concatenate([train.labels, val.labels]),
        model.labels,
        train.ids + val.ids,
        fingerprint,
        index_type,
    )
    return full_store, tuning


def feature_cache_of(run_dir: str | os.PathLike) -> Path | None:
    """The feature cache folder of a frozen-encoder run; None for a fine-tuned one."""
    try:
        config = read_run_config(run_dir)["train_config"]
    except ModelFolderError:
        return None
    if not config.get("freeze_encoder") or not config.get("feature_cache"):
        return None
    return Path(config["feature_cache"])


def best_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def fit_run_knn(
    run_dir: str | os.PathLike,
    train: list[Utterance],
    val: list[Utterance],
    max_seconds: float,
    criterion: str = "ua",
    index_type: str = "exact",
    device: str | None = None,
) -> tuple[Datastore, TuningResult]:
    """Fit and save the kNN stage of a trained run (its model file) for its fold."""
    device = device or best_device()
    model = load_model(run_dir, device=device)
    cache_root = feature_cache_of(run_dir)
    if cache_root is not None:  # a frozen encoder: its cached features give the same embeddings
        cache = FeatureCache(cache_root, model.cpu(), max_seconds)
        train_embedded = embed_pooled(model, train, cache.originals(train))
        val_embedded = embed_pooled(model, val, cache.originals(val))
    else:
        train_embedded = embed_utterances(model, train, max_seconds, device=device)
        val_embedded = embed_utterances(model, val, max_seconds, device=device)
    store, tuning = fit_knn(model, train_embedded, val_embedded, criterion, index_type)
    save_knn(run_dir, store, tuning)
    return store, tuning

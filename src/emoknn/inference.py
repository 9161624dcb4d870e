"""From a trained model to a fitted kNN stage: embeddings, datastore, tuned (k, α, T).

`fit_run_knn` writes a run folder's `datastore.npz` (train + validation embeddings and labels,
with the model fingerprint) and `knn.json` (interpolation (k, α, T) and kNN-only (k, T)), through
`emoknn.model_folder`. For a model with a regression head, the datastore also holds each entry's
attribute values, and knn.json the regression stage's (k, α, T), tuned for the mean CCC.
`fold_of_run` rebuilds the fold a run trained on from its corpus (the model-folder format itself
never reads a corpus).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from emoknn.attributes import attribute_matrix
from emoknn.audio import SAMPLE_RATE, max_samples
from emoknn.calibration import Calibration, fit_calibration
from emoknn.config import TrainConfig
from emoknn.corpora import load_corpus, recorded_label_map
from emoknn.corpora.utterance import Utterance
from emoknn.data import BucketBatchSampler, EvaluationAudio, collate_evaluation, utterance_lengths
from emoknn.errors import ConfigError, EmoknnError, ModelFolderError, SpeakerNormError
from emoknn.features import FeatureCache
from emoknn.files import check_writable_folder
from emoknn.folds import Fold, speaker_folds
from emoknn.knn import (
    DEFAULT_ALPHAS,
    Datastore,
    TuningQueries,
    TuningResult,
    tune_knn_pooled,
    tune_knn_regression,
    tuning_queries,
)
from emoknn.model import EmotionModel
from emoknn.model_folder import (
    DATASTORE_FILE,
    RUN_CONFIG_FILE,
    fingerprint_of,
    ids_digest,
    load_datastore,
    load_model,
    read_model_meta,
    read_run_config,
    save_calibration,
    save_datastore,
    save_knn,
)
from emoknn.speaker_stats import normalized_by_group
from emoknn.speaker_tuning import (
    alphas_for,
    check_knn_tuning,
    default_knn_tuning,
    out_of_fold_queries,
)


@dataclass
class Embedded:
    """Per-utterance outputs of a model, in the order of the utterances given."""

    ids: list[str]
    embeddings: np.ndarray  # (N, D) float32
    probs: np.ndarray  # (N, C) softmax of the classifier
    labels: np.ndarray  # (N,) class ids, −1 where unknown
    # A dimensional model's predicted attributes (N, A), corpus scale; None otherwise.
    attributes: np.ndarray | None = None
    # The utterances' own ratings of the model's attributes (N, A), when every one is rated.
    targets: np.ndarray | None = None


def _targets(model: EmotionModel, utterances: list[Utterance]) -> np.ndarray | None:
    """The ratings of the model's attributes, (N, A); None for a categorical model or when some
    utterance lacks a rating."""
    if model.attributes is None:
        return None
    if any(getattr(u, a) is None for u in utterances for a in model.attributes):
        return None
    return attribute_matrix(utterances, model.attributes)


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
    attributes = None if model.attributes is None else np.zeros((count, len(model.attributes)))
    for batch in loader:
        batch = batch.to(device)
        output = model(batch.waveforms, batch.lengths)
        rows = batch.indices.cpu().numpy()
        embeddings[rows] = output.embeddings.float().cpu().numpy()
        probs[rows] = torch.softmax(output.logits.float(), dim=1).cpu().numpy()
        labels[rows] = batch.labels.cpu().numpy()
        if attributes is not None:
            attributes[rows] = output.attributes.float().cpu().numpy()
    return Embedded([u.id for u in utterances], embeddings, probs, labels, attributes,
                    _targets(model, utterances))  # fmt: skip


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
        None if output.attributes is None else output.attributes.double().numpy(),
        _targets(model, utterances),
    )


@dataclass
class FittedKnn:
    """A fitted kNN stage: the train + validation datastore, the tuned settings, and the
    temperatures of the model's and the interpolation's probabilities."""

    store: Datastore
    tuning: TuningResult
    calibration: Calibration


def fit_knn(
    model: EmotionModel,
    train: Embedded,
    val: Embedded,
    criterion: str = "ua",
    index_type: str = "exact",
) -> tuple[Datastore, TuningResult]:
    """`fit_knn_stage` on the validation speaker alone (the paper's tuning), without the
    calibration: (store, tuning)."""
    fitted = fit_knn_stage(model, train, val, criterion, index_type)
    return fitted.store, fitted.tuning


def fit_knn_stage(
    model: EmotionModel,
    train: Embedded,
    val: Embedded,
    criterion: str = "ua",
    index_type: str = "exact",
    extra_queries: Sequence[TuningQueries] = (),
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    speakers: Sequence[str] = (),
) -> FittedKnn:
    """Tune k, α, T on `val` against a train-only datastore, and on `extra_queries` (more
    validation speakers, each against a datastore without them: `emoknn.speaker_tuning`), then
    return the train + val store, the settings, and temperatures fitted on the same queries
    (`emoknn.calibration`; `speakers`: whose clips those are, recorded with them).

    The validation utterances are kept out of the tuning datastore, so no query finds itself.
    A model with a regression head also gets its regression stage tuned the same way (for the
    mean CCC, on the validation speaker), and the stores hold the attribute values.
    """
    fingerprint = fingerprint_of(model)
    attributes = model.attributes
    if attributes is not None and (train.targets is None or val.targets is None):
        raise ConfigError(
            f"the model predicts {', '.join(attributes)}: every training and validation "
            "utterance needs those ratings for its datastore"
        )
    tuning_store = Datastore(train.embeddings, train.labels, model.labels, train.ids, fingerprint,
                             index_type, values=train.targets, attributes=attributes)  # fmt: skip
    parts = [tuning_queries(val.embeddings, val.labels, val.probs, tuning_store, val.ids),
             *extra_queries]  # fmt: skip
    tuning = tune_knn_pooled(parts, len(model.labels), criterion, alphas)
    calibration = Calibration()
    if model.predicts_classes:
        calibration = fit_calibration(parts, tuning.interpolated, model.labels, list(speakers))
    if attributes is not None:
        tuning.regression = tune_knn_regression(val.embeddings, val.targets, val.attributes,
                                                tuning_store, query_ids=val.ids)  # fmt: skip
    full_store = Datastore(
        np.concatenate([train.embeddings, val.embeddings]),
        np.concatenate([train.labels, val.labels]),
        model.labels,
        train.ids + val.ids,
        fingerprint,
        index_type,
        values=None if attributes is None else np.concatenate([train.targets, val.targets]),
        attributes=attributes,
    )
    return FittedKnn(full_store, tuning, calibration)


def feature_cache_of(run_dir: str | os.PathLike) -> Path | None:
    """The feature cache folder of a frozen-encoder run; None for a fine-tuned one."""
    try:
        config = read_run_config(run_dir)["train_config"]
    except ModelFolderError:
        return None
    if not config.get("freeze_encoder") or not config.get("feature_cache"):
        return None
    return Path(config["feature_cache"])


def fold_of_run(folder: str | os.PathLike, corpus: str | os.PathLike | None = None) -> Fold:
    """The fold a run was trained on: its corpus (or `corpus`, if moved) split as it was then.

    Refuses a corpus whose split of that fold holds other utterances than the run trained on.
    """
    folder = Path(folder)
    info = read_run_config(folder)
    path = folder / RUN_CONFIG_FILE
    if "fold" not in info or "corpus" not in info:
        raise ModelFolderError(f"{path}: does not say which corpus and fold the run trained on")
    utterances = load_corpus(corpus or Path(info["corpus"]), info.get("kind", "auto"),
                             label_map=recorded_label_map(info, path))  # fmt: skip
    folds = {f.name: f for f in speaker_folds(utterances, info.get("scheme", "speaker"))}
    source = corpus or info["corpus"]
    if info["fold"] not in folds:
        raise ModelFolderError(
            f"{source}: has no fold {info['fold']} (the fold {folder} trained on); is it the "
            "corpus the run was trained on?"
        )
    fold = folds[info["fold"]]
    expected = {"train_ids_sha256": fold.train, "val_ids_sha256": fold.val}
    for key, split in expected.items():
        if key in info and ids_digest([u.id for u in split]) != info[key]:
            raise ModelFolderError(
                f"{source}: fold {fold.name} holds other {key.split('_')[0]} utterances than "
                f"{folder} was trained on; give the corpus it was trained on (--corpus)"
            )
    if sorted({u.label for u in utterances}) != sorted(info["labels"]):
        raise ModelFolderError(f"{source}: its labels differ from those {folder} was trained on")
    return fold


def cache_precision_of(run_dir: str | os.PathLike) -> str:
    """The precision a frozen-encoder run's feature cache was filled in (fp32 before it was a
    setting)."""
    return read_run_config(run_dir)["train_config"].get("cache_precision", "fp32")


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
    discard_added: bool = False,
    knn_tuning: str | None = None,
) -> tuple[Datastore, TuningResult]:
    """Fit and save the kNN stage of a trained run (its model file) for its fold: datastore.npz,
    knn.json and calibration.json.

    `knn_tuning` (`emoknn.speaker_tuning`): "speakers" (out-of-fold over the training speakers;
    frozen runs only) or "validation" (the paper's); None picks "speakers" for a frozen run.

    Utterances added to the run's datastore (`add_to_datastore`) are kept: their embeddings stay
    valid while the model is the same. If the model changed since they were added, they would be
    lost, so this refuses unless `discard_added`.
    """
    check_writable_folder(run_dir, "the run folder")
    cache_root = feature_cache_of(run_dir)
    knn_tuning = check_knn_tuning(knn_tuning or default_knn_tuning(cache_root is not None),
                                  cache_root is not None)  # fmt: skip
    device = device or best_device()
    model = load_model(run_dir, device=device)
    fingerprint = fingerprint_of(model)
    base_ids = {u.id for u in train} | {u.id for u in val}
    added = _added_entries(Path(run_dir), base_ids)
    if added is not None and added.fingerprint != fingerprint and not discard_added:
        raise ConfigError(
            f"{Path(run_dir) / DATASTORE_FILE}: holds {len(added)} added utterance(s) embedded by "
            "an earlier model, which a rebuild would drop; rebuild with --discard-added (and "
            "add them again with `emoknn datastore add`)"
        )
    extra: list[TuningQueries] = []
    if cache_root is not None:  # a frozen encoder: its cached features give the same embeddings
        cache = FeatureCache(cache_root, model.cpu(), max_seconds, cache_precision_of(run_dir))
        train_pooled, val_pooled = cache.originals(train), cache.originals(val)
        if model.config.speaker_norm:  # as in training: each speaker by its own clips' statistics
            pooled = normalized_by_group(np.concatenate([train_pooled, val_pooled]),
                                         [u.speaker for u in train + val])  # fmt: skip
            train_pooled, val_pooled = pooled[: len(train)], pooled[len(train) :]
        train_embedded = embed_pooled(model, train, train_pooled)
        val_embedded = embed_pooled(model, val, val_pooled)
        # The inner heads read raw cached features; a speaker-normalised model keeps the
        # validation speaker's tuning rather than tune on features it never sees.
        if knn_tuning == "speakers" and model.predicts_classes and not model.config.speaker_norm:
            config = TrainConfig(**read_run_config(run_dir)["train_config"])
            extra = out_of_fold_queries(config, train, val, model.labels, cache, model.encoder)
    else:
        train_embedded = embed_utterances(model, train, max_seconds, device=device)
        val_embedded = embed_utterances(model, val, max_seconds, device=device)
    speakers = sorted({u.speaker for u in (train + val if extra else val)})
    fitted = fit_knn_stage(model, train_embedded, val_embedded, criterion, index_type, extra,
                           alphas_for(knn_tuning), speakers)  # fmt: skip
    store, tuning = fitted.store, fitted.tuning
    record_origins(store, train + val)
    if added is not None and added.fingerprint == fingerprint:
        store.add(
            added.keys, added.labels, added.ids, added.sources, added.speakers, values=added.values
        )
    save_knn(run_dir, store, tuning)
    save_calibration(run_dir, fitted.calibration)
    return store, tuning


def _added_entries(run_dir: Path, base_ids: set[str]) -> Datastore | None:
    """The entries of the run's datastore that are not its train + validation utterances (None
    if there are none, or no readable datastore: then there is nothing to keep)."""
    if not (run_dir / DATASTORE_FILE).is_file():
        return None
    try:
        store = load_datastore(run_dir)
    except ModelFolderError:
        return None  # unreadable: the rebuild replaces it
    rows = [i for i, id_ in enumerate(store.ids) if id_ not in base_ids]
    if not rows:
        return None
    return store.subset(rows)


def record_origins(store: Datastore, utterances: list[Utterance], speakers: bool = True) -> None:
    """Record in `store` the source file (absolute) and, with `speakers`, the speaker of each
    entry that is one of `utterances` (matched by id): prediction shows where a neighbour came
    from, `emoknn datastore inspect` counts speakers."""
    by_id = {u.id: u for u in utterances}
    for row, id_ in enumerate(store.ids):
        utterance = by_id.get(id_)
        if utterance is not None:
            store.sources[row] = str(Path(utterance.path).resolve())
            if speakers:
                store.speakers[row] = str(utterance.speaker or "")


def add_to_datastore(
    run_dir: str | os.PathLike, utterances: list[Utterance], device: str | None = None
) -> Datastore:
    """Embed labelled utterances with the run's model and add them to its datastore.

    Refused, before anything is written: labels the model does not know, an utterance given twice
    or already in the datastore (same id, or the same audio: an identical embedding), and the
    run's test speaker's own utterances (same file or same bytes), which would leak the test set
    into the datastore.
    """
    run_dir = Path(run_dir)
    meta = read_model_meta(run_dir)
    check_writable_folder(run_dir, "the run folder")
    unknown = sorted({u.label for u in utterances} - set(meta.labels))
    if unknown:
        raise ConfigError(f"labels {unknown} are not among the model's classes {meta.labels}")
    store = load_datastore(run_dir, meta.fingerprint, meta.labels)
    # A datastore with attribute values needs each new clip's ratings of those attributes.
    values = None if store.values is None else attribute_matrix(utterances, store.attributes)
    ids = [u.id for u in utterances]
    paths = [Path(u.path).resolve() for u in utterances]
    for seen in (ids, paths):
        repeated = sorted({str(x) for x in seen if seen.count(x) > 1})
        if repeated:
            raise ConfigError(f"{repeated[0]}: given twice; each utterance may be added once")
    clash = sorted(set(ids) & set(store.ids))
    if clash:
        raise ConfigError(f"{clash[0]}: already in the datastore")
    _refuse_test_speaker(run_dir, utterances)
    if meta.model_config.get("speaker_norm"):
        raise SpeakerNormError(
            f"{run_dir}: trained with speaker normalisation; clips added to its datastore would "
            "need their speakers' statistics, which `datastore add` does not take"
        )
    device = device or best_device()
    model = load_model(run_dir, device=device)
    embedded = embed_utterances(model, utterances, meta.max_seconds, device=device)
    _refuse_same_audio(embedded, store)
    store.add(embedded.embeddings, embedded.labels, ids, [str(p) for p in paths],
              [str(u.speaker or "") for u in utterances], values=values)  # fmt: skip
    save_datastore(run_dir, store)
    _count_added_clips(run_dir, len(utterances), len(store))
    return store


ADAPTED_REPORT = "adapt.json"  # emoknn.adapt.ADAPT_REPORT_FILE (adapt imports this module)


def _count_added_clips(folder: Path, added: int, entries: int) -> None:
    """An adapted folder's adapt.json and model card count clips added after adaptation, which
    the held-out figures do not cover (the card says so)."""
    import json

    from emoknn.card import model_card
    from emoknn.files import write_json_atomic, write_text_atomic

    path = folder / ADAPTED_REPORT
    if not path.is_file():
        return
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        report["added_clips"] = int(report.get("added_clips", 0)) + added
        report["datastore_entries"] = entries
        card = model_card(report)
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a report this version wrote: leave it (and the card) as they are
    write_json_atomic(report, path)
    write_text_atomic(folder / "README.md", card)


def _refuse_test_speaker(run_dir: Path, utterances: list[Utterance]) -> None:
    """Refuse files of the run's test speaker (when the run's corpus can be found)."""
    import hashlib

    try:
        fold = fold_of_run(run_dir)
    except EmoknnError:
        return  # a shared model without its corpus: there is no test set here to protect

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    test_paths = {Path(u.path).resolve() for u in fold.test}
    sizes = {p.stat().st_size for p in test_paths if p.is_file()}
    added = [Path(u.path).resolve() for u in utterances]
    candidates = [p for p in added if p.is_file() and p.stat().st_size in sizes]
    test_digests = (
        {digest(p) for p in test_paths if p.is_file() and p.stat().st_size in
         {c.stat().st_size for c in candidates}} if candidates else set()
    )  # fmt: skip
    for path in added:
        if path in test_paths or (path in candidates and digest(path) in test_digests):
            raise ConfigError(
                f"{path}: is an utterance of the run's test speaker {fold.test_speaker}; adding it "
                "would put the test set into the datastore"
            )


def _refuse_same_audio(embedded: Embedded, store: Datastore) -> None:
    """Identical audio gives an identical embedding (evaluation is deterministic): refuse a new
    embedding equal to a stored one or to another new one."""
    keys = embedded.embeddings
    tolerance = 1e-5 * (1.0 + float(np.abs(store.keys).max()))
    distances, indices = store.search(keys, 1)
    for row, (distance, index) in enumerate(zip(distances[:, 0], indices[:, 0], strict=True)):
        if distance <= tolerance:
            raise ConfigError(
                f"{embedded.ids[row]}: the same audio is already in the datastore (as "
                f"{store.ids[index]})"
            )
    if len(keys) > 1:
        gaps = np.linalg.norm(keys[:, None] - keys[None], axis=-1) + np.eye(len(keys)) * np.inf
        first, second = np.unravel_index(np.argmin(gaps), gaps.shape)
        if gaps[first, second] <= tolerance:
            raise ConfigError(
                f"{embedded.ids[second]}: the same audio as {embedded.ids[first]} is given twice"
            )

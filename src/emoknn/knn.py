"""Inference with a k-nearest-neighbour model over a datastore of training embeddings.

    p_knn(y|x) = Σ_{i∈kNN(x), y_i=y} exp(−d_i/T) / Σ_{i∈kNN(x)} exp(−d_i/T)      (Euclidean d_i)
    p(y|x)     = α·p_knn(y|x) + (1 − α)·p_model(y|x)

The datastore (K, V) holds the embeddings and labels of the training + validation utterances,
computed by the trained model in evaluation mode (no augmentation, centred crop). It records the
fingerprint of the model that made it, and refuses to be used with another.

A label only the kNN side knows (adaptation to a label the model was never trained on:
`emoknn.adapt`) is served by the kNN alone. With `s` = p_knn's mass on such labels:

    p(y|x) = p_knn(y|x)                                      y unknown to the model (α = 1)
    p(y|x) = α·p_knn(y|x) + (1 − α)·(1 − s)·p_model(y|x)     y known to the model

i.e. the kNN decides how much mass goes to labels the model cannot know, and the known labels
share the rest as usual; the rows still sum to 1, and with s = 0 this is the formula above. A label
only the model knows has no neighbours, so p_knn = 0 there and it gets (1 − α)·(1 − s)·p_model.

Per fold, k ∈ [1..32], α and T are tuned on the validation speaker with the validation utterances
kept out of the datastore (no query can find itself); the test speaker is then evaluated against
the full train + validation datastore. Tuning asks the index once, for the 32 nearest neighbours of
every validation utterance, and scores the whole (T, k, α) grid from that one answer with array
operations.

Dimensional emotion (arousal, valence, dominance): a datastore built by a model with a regression
head also stores each entry's attribute values y_i (A,), and the kNN prediction is their
similarity-weighted mean, interpolated with the model's regression output:

    ŷ_knn(x) = Σ_{i∈kNN(x)} w_i·y_i / Σ_{i∈kNN(x)} w_i,   w_i = exp(−d_i/T)
    ŷ(x)     = α·ŷ_knn(x) + (1 − α)·ŷ_model(x)

k, α and T are tuned on the validation speaker for the mean CCC over attributes
(`tune_knn_regression`), with the same search, grid and no-leak checks as the categorical case.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from emoknn.errors import ConfigError, EmoknnError
from emoknn.metrics import ccc_columns

INDEX_TYPES = ("exact", "hnsw")  # exact search, or approximate HNSW for large stores
CRITERIA = ("ua", "wa")  # what k, α, T are tuned to maximise on the validation speaker
REGRESSION_CRITERION = "ccc"  # the regression stage is tuned for the mean CCC over attributes

MAX_K = 32
DEFAULT_ALPHAS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2).tolist())  # α ∈ (0, 1)
# T is searched relative to the typical nearest-neighbour distance (embedding scales differ
# between encoders), plus T = ∞ (a plain majority vote among the k neighbours).
TEMPERATURE_FACTORS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def knn_probs(
    distances: np.ndarray, neighbor_labels: np.ndarray, num_classes: int, temperature: float
) -> np.ndarray:
    """p_knn for each query: softmax of −d/T over its k neighbours, summed per label.

    Args:
        distances: (Q, k) Euclidean (not squared) distances to the neighbours.
        neighbor_labels: (Q, k) integer labels of the neighbours.
        num_classes: C.
        temperature: T > 0; `np.inf` gives every neighbour the same weight (majority vote).

    Returns:
        (Q, C) float64 array whose rows sum to 1.
    """
    distances = np.asarray(distances, dtype=np.float64)
    neighbor_labels = np.asarray(neighbor_labels)
    if distances.ndim != 2 or distances.shape != neighbor_labels.shape:
        raise ConfigError(
            f"distances and neighbor_labels must both be (Q, k), got {distances.shape} and "
            f"{neighbor_labels.shape}"
        )
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if neighbor_labels.size and (neighbor_labels.min() < 0 or neighbor_labels.max() >= num_classes):
        raise ConfigError(f"neighbor_labels must lie in [0, {num_classes}), got values outside")
    weights = knn_weights(distances, temperature)  # (Q, k)
    probabilities = np.zeros((distances.shape[0], num_classes))
    np.add.at(probabilities, (np.arange(distances.shape[0])[:, None], neighbor_labels), weights)
    return probabilities


def knn_weights(distances: np.ndarray, temperature: float) -> np.ndarray:
    """Each neighbour's share of p_knn: softmax of −d/T over a query's k neighbours, (Q, k) rows
    summing to 1 (`np.inf`: equal shares). p_knn(y) is the sum of the shares of label y."""
    weights = _unnormalised_weights(np.asarray(distances, dtype=np.float64), temperature)
    return weights / weights.sum(axis=1, keepdims=True)


def _unnormalised_weights(distances: np.ndarray, temperature: float) -> np.ndarray:
    """exp(−(d_i − d_min)/T) per row, (Q, k) (`np.inf`: ones). Subtracting each row's smallest
    distance keeps every ratio w_i / w_j (so the normalised weights) and avoids underflow."""
    if np.isinf(temperature):
        return np.ones_like(distances)
    return np.exp(-(distances - distances.min(axis=1, keepdims=True)) / temperature)


def _temperature_grid(distances: np.ndarray, temperature_factors) -> list[float]:
    """The T candidates of tuning: each factor × the median nearest-neighbour distance (1 when
    that is 0), and ∞ (majority vote / plain mean)."""
    nearest = float(np.median(distances[:, 0]))
    scale = nearest if nearest > 0 else 1.0
    return [factor * scale for factor in temperature_factors] + [np.inf]


def interpolate(
    p_knn: np.ndarray, p_model: np.ndarray, alpha: float, model_known: np.ndarray | None = None
) -> np.ndarray:
    """p = α·p_knn + (1 − α)·p_model over (..., C) arrays.

    With `model_known` (C,) bool, labels the model cannot predict are served by the kNN alone:
    p = p_knn on them and α·p_knn + (1 − α)·(1 − s)·p_model on the others, where
    s = Σ_{y unknown} p_knn(y) (see the module docstring).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
    p_knn, p_model = np.asarray(p_knn), np.asarray(p_model)
    if model_known is None or np.all(model_known):
        return alpha * p_knn + (1.0 - alpha) * p_model
    model_known = np.asarray(model_known, dtype=bool)
    unknown_mass = np.where(model_known, 0.0, p_knn).sum(axis=-1, keepdims=True)  # s (..., 1)
    known = alpha * p_knn + (1.0 - alpha) * (1.0 - unknown_mass) * p_model
    return np.where(model_known, known, p_knn)


def model_fingerprint(state_dict: dict) -> str:
    """SHA-256 over a model's parameter names, shapes and values: identifies exact weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# module → (signature of its tensors, fingerprint): see `module_fingerprint`.
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def module_fingerprint(module: Any) -> str:
    """`model_fingerprint(module.state_dict())`, computed once per module and process.

    The cached value is reused while every tensor of the module is the same object in memory,
    unmodified: the signature is each tensor's name, storage address, shape and version counter
    (torch bumps a tensor's version on every in-place change, optimiser steps included).
    """
    state = module.state_dict()
    signature = tuple(
        (name, tensor.data_ptr(), tuple(tensor.shape), tensor._version)
        for name, tensor in sorted(state.items())
    )
    cached = _FINGERPRINTS.get(module)
    if cached is not None and cached[0] == signature:
        return cached[1]
    fingerprint = model_fingerprint(state)
    _FINGERPRINTS[module] = (signature, fingerprint)
    return fingerprint


class Datastore:
    """Embeddings (keys) and labels (values) with an exact or approximate Euclidean index.

    `search` returns `(distances, indices)` like faiss, with distances Euclidean (faiss's L2
    indexes return squared distances; they are converted here).

    `sources` and `speakers` (one string per entry, "" where unknown) record where each entry's
    audio came from and who spoke it, when the builder knew: prediction shows the source of a
    neighbour, `emoknn datastore inspect` counts speakers.
    """

    def __init__(
        self,
        keys: np.ndarray,
        labels: np.ndarray,
        label_names: list[str],
        ids: list[str],
        fingerprint: str,
        index_type: str = "exact",
        sources: list[str] | None = None,
        speakers: list[str] | None = None,
        values: np.ndarray | None = None,
        attributes: list[str] | None = None,
    ) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        if keys.ndim != 2 or labels.shape != (keys.shape[0],) or len(ids) != keys.shape[0]:
            raise ConfigError(
                f"datastore needs keys (N, D), labels (N,) and N ids; got {keys.shape}, "
                f"{labels.shape}, {len(ids)}"
            )
        if index_type not in INDEX_TYPES:
            raise ConfigError(f"index_type must be 'exact' or 'hnsw', got {index_type!r}")
        if not np.isfinite(keys).all():
            raise ConfigError("datastore keys contain NaN or infinite values")
        self.keys, self.labels, self.label_names = keys, labels, list(label_names)
        self.ids, self.fingerprint, self.index_type = list(ids), fingerprint, index_type
        self.sources = _entry_strings(sources, len(ids), "sources")
        self.speakers = _entry_strings(speakers, len(ids), "speakers")
        if (values is None) != (attributes is None):
            raise ConfigError("give both attribute values and attribute names, or neither")
        if values is not None:
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (keys.shape[0], len(attributes)) or not np.isfinite(values).all():
                raise ConfigError(
                    f"attribute values must be finite and ({keys.shape[0]}, {len(attributes)}), "
                    f"got {values.shape}"
                )
        # Attribute values (N, A) of a dimensional model's datastore, and their names; else None.
        self.values, self.attributes = values, None if attributes is None else list(attributes)
        self._index = self._build_index()

    def _build_index(self) -> faiss.Index:
        dimension = self.keys.shape[1]
        if self.index_type == "exact":
            index = faiss.IndexFlatL2(dimension)
        else:  # graph index: sub-linear search, approximate neighbours, no training needed
            index = faiss.IndexHNSWFlat(dimension, 32)
            index.hnsw.efSearch = 128
        if len(self.keys):
            index.add(self.keys)
        return index

    def __len__(self) -> int:
        return self.keys.shape[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest keys of each query: (Q, k) Euclidean distances and (Q, k) indices."""
        if not 1 <= k <= len(self):
            raise ConfigError(f"k must lie in [1, {len(self)}] (the datastore size), got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.keys.shape[1]:
            raise ConfigError(
                f"queries must be (Q, {self.keys.shape[1]}), got {queries.shape}: was this "
                "datastore built by another model?"
            )
        squared, indices = self._index.search(queries, k)
        return np.sqrt(np.maximum(squared, 0.0)), indices

    def add(
        self,
        keys: np.ndarray,
        labels: np.ndarray,
        ids: list[str],
        sources: list[str] | None = None,
        speakers: list[str] | None = None,
        values: np.ndarray | None = None,
    ) -> None:
        """Add labelled embeddings (of the same model) without retraining anything; a store with
        attribute values needs the new entries' values (n, A)."""
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        if keys.ndim != 2 or keys.shape[1] != self.keys.shape[1] or len(ids) != len(keys):
            raise ConfigError(f"new keys must be (n, {self.keys.shape[1]}) with n ids")
        if self.values is not None:
            if values is None:
                raise ConfigError(
                    f"this datastore stores attributes ({', '.join(self.attributes)}): new "
                    "entries need their values"
                )
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (len(keys), self.values.shape[1]) or not np.isfinite(values).all():
                raise ConfigError(
                    f"new attribute values must be finite and ({len(keys)}, "
                    f"{self.values.shape[1]}), got {values.shape}"
                )
        clash = set(ids) & set(self.ids)
        if clash:
            raise ConfigError(f"ids already in the datastore: {sorted(clash)[:5]}")
        new_sources = _entry_strings(sources, len(ids), "sources")
        new_speakers = _entry_strings(speakers, len(ids), "speakers")
        self.keys = np.concatenate([self.keys, keys])
        self.labels = np.concatenate([self.labels, np.asarray(labels, dtype=np.int64)])
        self.ids += list(ids)
        self.sources += new_sources
        self.speakers += new_speakers
        if self.values is not None:
            self.values = np.concatenate([self.values, values])
        self._index.add(keys)

    def subset(self, rows: list[int] | np.ndarray) -> Datastore:
        """The entries at `rows` (in that order), as a datastore of their own."""
        rows = np.asarray(rows, dtype=np.int64)
        pick = rows.tolist()
        return Datastore(self.keys[rows], self.labels[rows], self.label_names,
                         [self.ids[i] for i in pick], self.fingerprint, self.index_type,
                         [self.sources[i] for i in pick], [self.speakers[i] for i in pick],
                         values=None if self.values is None else self.values[rows],
                         attributes=self.attributes)  # fmt: skip


def _entry_strings(values: list[str] | None, count: int, name: str) -> list[str]:
    """One string per datastore entry ("" where unknown)."""
    if values is None:
        return [""] * count
    values = ["" if value is None else str(value) for value in values]
    if len(values) != count:
        raise ConfigError(f"datastore {name}: need one per entry ({count}), got {len(values)}")
    return values


@dataclass
class KnnSettings:
    """Tuned kNN settings. temperature may be inf (majority vote); stored as the string "inf"."""

    k: int
    alpha: float
    temperature: float
    score: float  # the tuning criterion on the validation speaker
    criterion: str
    # Labels the model can predict, where that is not all of the datastore's labels (an adapted
    # model given new labels): the others are served by the kNN alone (`interpolate`).
    model_labels: list[str] | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["temperature"] = "inf" if np.isinf(self.temperature) else float(self.temperature)
        if self.model_labels is None:
            del data["model_labels"]
        return data

    def model_known(self, label_names: list[str]) -> np.ndarray | None:
        """(C,) bool: which of `label_names` the model can predict; None when it knows all."""
        if self.model_labels is None:
            return None
        return np.array([name in self.model_labels for name in label_names])

    def interpolate(
        self, p_knn: np.ndarray, p_model: np.ndarray, label_names: list[str]
    ) -> np.ndarray:
        """`interpolate` with these settings' α, for probabilities over `label_names`."""
        return interpolate(p_knn, p_model, self.alpha, self.model_known(label_names))

    @classmethod
    def from_dict(cls, data: dict) -> KnnSettings:
        return cls(**{**data, "temperature": float(data["temperature"])})


@dataclass
class TuningResult:
    interpolated: KnnSettings  # best α ∈ (0, 1), k, T
    knn_only: KnnSettings  # α = 1: best k, T for the kNN model alone
    # A dimensional model's regression stage (criterion "ccc", score = mean CCC), else None.
    regression: TuningResult | None = None

    def to_dict(self) -> dict:
        data = {"interpolated": self.interpolated.to_dict(), "knn_only": self.knn_only.to_dict()}
        if self.regression is not None:
            data["regression"] = self.regression.to_dict()
        return data


def _grid_scores(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple:
    """WA and UA of predictions (..., Q) against labels (Q,), over any leading grid axes."""
    correct = predictions == labels  # (..., Q)
    wa = correct.mean(axis=-1)
    recalls = [
        correct[..., labels == c].mean(axis=-1) for c in range(num_classes) if (labels == c).any()
    ]
    return wa, np.mean(recalls, axis=0)


def tune_knn(
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    query_model_probs: np.ndarray,
    store: Datastore,
    query_ids: list[str] | None = None,
    criterion: str = "ua",
    max_k: int = MAX_K,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    temperature_factors: tuple[float, ...] = TEMPERATURE_FACTORS,
    query_groups: np.ndarray | list[str] | None = None,
    store_groups: np.ndarray | list[str] | None = None,
    model_labels: list[str] | None = None,
) -> TuningResult:
    """Choose k ∈ [1..max_k], α and T maximising UA (or WA) of the queries (validation speaker).

    `store` must not contain the queries: pass `query_ids` and it is checked. Cross-validation
    over one set of clips (`emoknn.adapt`) passes `query_groups` and `store_groups` instead (a
    speaker, or a fold): each query then only ever sees neighbours of other groups, and a query
    may be in the store only within its own group (checked), so it never finds itself or its
    speaker. `model_labels`: the labels the model can predict, when not all (see `interpolate`).

    One search for the max_k nearest neighbours; then for every T, the cumulative sums over
    neighbour rank give p_knn for every k at once, and every α is scored on top. Ties go to the
    first in grid order (T ascending, k ascending, α ascending), so the choice is deterministic.
    """
    queries = tuning_queries(query_embeddings, query_labels, query_model_probs, store, query_ids,
                             max_k, query_groups, store_groups)  # fmt: skip
    return tune_knn_pooled([queries], len(store.label_names), criterion, alphas,
                           temperature_factors, model_labels, store.label_names)  # fmt: skip


@dataclass
class TuningQueries:
    """Labelled tuning queries with their nearest neighbours in a datastore that keeps them out
    (`tuning_queries`): everything `tune_knn_pooled` scores, with no index left to ask."""

    distances: np.ndarray  # (Q, K) Euclidean, nearest first
    neighbor_labels: np.ndarray  # (Q, K) the neighbours' labels
    labels: np.ndarray  # (Q,) the queries' true labels
    model_probs: np.ndarray  # (Q, C) the model's probabilities for them

    @property
    def scale(self) -> float:
        """The median nearest-neighbour distance (1 when it is 0): T is searched relative to it."""
        nearest = float(np.median(self.distances[:, 0])) if len(self.distances) else 0.0
        return nearest if nearest > 0 else 1.0


def tuning_queries(
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    query_model_probs: np.ndarray,
    store: Datastore,
    query_ids: list[str] | None = None,
    max_k: int = MAX_K,
    query_groups: np.ndarray | list[str] | None = None,
    store_groups: np.ndarray | list[str] | None = None,
) -> TuningQueries:
    """The max_k nearest neighbours of each query in `store`, with the no-leak checks of
    `tune_knn` (`query_ids` not in the store, or `query_groups`/`store_groups` keeping each query
    away from its own group)."""
    if (query_groups is None) != (store_groups is None):
        raise ConfigError("give both query_groups and store_groups, or neither")
    if query_ids is not None:
        _check_no_self_match(query_ids, store, query_groups, store_groups)
    if query_groups is None:
        distances, indices = store.search(query_embeddings, min(max_k, len(store)))  # (Q, K)
    else:
        distances, indices = search_other_groups(
            store, query_embeddings, max_k, query_groups, store_groups
        )  # (Q, K)
    probs = np.asarray(query_model_probs, dtype=np.float64)
    labels = np.asarray(query_labels)
    if probs.shape != (len(labels), len(store.label_names)):
        raise ConfigError(f"query model probabilities must be ({len(labels)}, "
                          f"{len(store.label_names)}), got {probs.shape}")  # fmt: skip
    return TuningQueries(distances, store.labels[indices], labels, probs)


def tune_knn_pooled(
    parts: list[TuningQueries],
    num_classes: int,
    criterion: str = "ua",
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    temperature_factors: tuple[float, ...] = TEMPERATURE_FACTORS,
    model_labels: list[str] | None = None,
    label_names: list[str] | None = None,
) -> TuningResult:
    """`tune_knn` over several sets of tuning queries at once: the (T, k, α) maximising UA (or WA)
    of all their queries together, e.g. several validation speakers, each against a datastore
    that does not hold it, possibly each with its own model (`emoknn.speaker_tuning`).

    T is searched as a factor of each part's median nearest-neighbour distance (embedding scales
    differ between models), and stored as that factor × the first part's scale: the first part
    should be the final model's own queries. k goes up to the smallest K of the parts.
    `model_labels` (with `label_names`, the datastore's labels): see `interpolate`.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion must be 'ua' or 'wa', got {criterion!r}")
    if not parts or any(len(part.labels) == 0 for part in parts):
        raise ConfigError("kNN tuning needs at least one query")
    k_max = min(part.distances.shape[1] for part in parts)
    names = label_names if label_names is not None else list(range(num_classes))
    model_known = None if model_labels is None else np.array(
        [name in model_labels for name in names]
    )  # fmt: skip
    labels = np.concatenate([part.labels for part in parts])
    alpha_grid = np.asarray(alphas, dtype=np.float64)[:, None, None, None]  # (A, 1, 1, 1)
    factors = [*temperature_factors, np.inf]

    best_interpolated: tuple | None = None
    best_knn_only: tuple | None = None
    for factor in factors:
        knn_predictions, mixed_predictions = [], []
        for part in parts:
            p_knn = _p_knn_by_k(part, factor * part.scale, k_max, num_classes)  # (1, K, Q, C)
            p_model = part.model_probs[None, None]  # (1, 1, Q, C)
            knn_predictions.append(p_knn[0].argmax(axis=-1))  # (K, Q)
            mixed = interpolate_grid(p_knn, p_model, alpha_grid, model_known)  # (A, K, Q, C)
            mixed_predictions.append(mixed.argmax(axis=-1))  # (A, K, Q)
        knn_wa, knn_ua = _grid_scores(np.concatenate(knn_predictions, axis=-1), labels,
                                      num_classes)  # (K,)  # fmt: skip
        wa, ua = _grid_scores(np.concatenate(mixed_predictions, axis=-1), labels,
                              num_classes)  # (A, K)  # fmt: skip
        temperature = factor * parts[0].scale

        primary, secondary = (ua, wa) if criterion == "ua" else (wa, ua)
        knn_primary, knn_secondary = (knn_ua, knn_wa) if criterion == "ua" else (knn_wa, knn_ua)
        # Best by the criterion, then the other metric; on ties the smallest k, then smallest α
        # (the (K, A) transpose flattens k-major).
        k, a = np.unravel_index(_first_best(primary.T, secondary.T), primary.T.shape)
        candidate = (primary[a, k], secondary[a, k], int(k) + 1, float(alphas[a]), temperature)
        if best_interpolated is None or candidate[:2] > best_interpolated[:2]:
            best_interpolated = candidate
        kk = _first_best(knn_primary[None], knn_secondary[None])
        knn_candidate = (knn_primary[kk], knn_secondary[kk], int(kk) + 1, 1.0, temperature)
        if best_knn_only is None or knn_candidate[:2] > best_knn_only[:2]:
            best_knn_only = knn_candidate

    def settings(best: tuple) -> KnnSettings:
        score, _, k, alpha, temperature = best
        known = None if model_labels is None else list(model_labels)
        return KnnSettings(k, alpha, float(temperature), float(score), criterion, known)

    return TuningResult(settings(best_interpolated), settings(best_knn_only))


def _p_knn_by_k(part: TuningQueries, temperature: float, k_max: int, num_classes: int
                ) -> np.ndarray:  # fmt: skip
    """p_knn of a part's queries for every k = 1..k_max at once, (1, K, Q, C): cumulative sums of
    the neighbours' weights over rank."""
    distances = part.distances[:, :k_max]
    one_hot = np.eye(num_classes)[part.neighbor_labels[:, :k_max]]  # (Q, K, C)
    weights = _unnormalised_weights(distances, temperature)  # (Q, K)
    numerators = np.cumsum(weights[:, :, None] * one_hot, axis=1)  # (Q, K, C): first k summed
    p_knn = numerators / numerators.sum(axis=2, keepdims=True)  # (Q, K, C) for k = 1..K
    return p_knn.transpose(1, 0, 2)[None]


def interpolate_grid(
    p_knn: np.ndarray, p_model: np.ndarray, alphas: np.ndarray, model_known: np.ndarray | None
) -> np.ndarray:
    """`interpolate` for a whole grid of α at once: alphas (A, 1, 1, 1), p_knn (1, K, Q, C),
    p_model (1, 1, Q, C) → (A, K, Q, C)."""
    if model_known is None or np.all(model_known):
        return alphas * p_knn + (1.0 - alphas) * p_model
    unknown_mass = np.where(model_known, 0.0, p_knn).sum(axis=-1, keepdims=True)  # s (1, K, Q, 1)
    known = alphas * p_knn + (1.0 - alphas) * (1.0 - unknown_mass) * p_model
    return np.where(model_known, known, p_knn)


def _check_no_self_match(query_ids, store: Datastore, query_groups, store_groups) -> None:
    """Refuse a query that is in the store, unless groups keep it out of its own neighbours."""
    overlap = set(query_ids) & set(store.ids)
    if not overlap:
        return
    if query_groups is not None:
        group_of = dict(zip(store.ids, np.asarray(store_groups).tolist(), strict=True))
        own = [q for q, g in zip(query_ids, np.asarray(query_groups).tolist(), strict=True)
               if q in overlap and group_of[q] == g]  # fmt: skip
        if len(own) == len(overlap):
            return
        overlap -= set(own)
    raise EmoknnError(
        f"{len(overlap)} tuning queries are in the datastore, e.g. {sorted(overlap)[:3]}: a "
        "query would find itself; build the tuning datastore from training data only"
    )


def search_other_groups(
    store: Datastore,
    queries: np.ndarray,
    k: int,
    query_groups: np.ndarray | list[str],
    store_groups: np.ndarray | list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest keys of each query among store entries of *other* groups: (Q, k) Euclidean
    distances and indices, nearest first. k is capped so every query has k such entries.

    Searches k + (the largest number of entries a query's group has in the store) neighbours, then
    drops the query's own group and keeps the first k: exact with the exact index.
    """
    query_groups, store_groups = np.asarray(query_groups), np.asarray(store_groups)
    if len(store_groups) != len(store) or len(query_groups) != len(queries):
        raise ConfigError("need one group per query and one per datastore entry")
    names, counts = np.unique(store_groups, return_counts=True)
    in_store = dict(zip(names.tolist(), counts.tolist(), strict=True))
    own = np.array([in_store.get(g, 0) for g in query_groups.tolist()])  # (Q,)
    available = int((len(store) - own).min()) if len(own) else len(store)
    if available < 1:
        raise ConfigError("a query's group holds the whole datastore: no other group to search")
    k = min(k, available)
    wide = min(len(store), k + int(own.max(initial=0)))
    distances, indices = store.search(queries, wide)  # (Q, wide), nearest first
    other = store_groups[indices] != query_groups[:, None]  # (Q, wide)
    # Stable sort puts the other-group neighbours first, still nearest first; keep k of them.
    order = np.argsort(~other, axis=1, kind="stable")[:, :k]  # (Q, k)
    return np.take_along_axis(distances, order, 1), np.take_along_axis(indices, order, 1)


def _first_best(primary: np.ndarray, secondary: np.ndarray) -> int:
    """Flat index of the best (primary, then secondary) entry; the first one on ties."""
    flat_primary, flat_secondary = primary.ravel(), secondary.ravel()
    top = flat_primary == flat_primary.max()
    candidates = np.flatnonzero(top & (flat_secondary == flat_secondary[top].max()))
    return int(candidates[0])


def store_knn_probs(embeddings: np.ndarray, store: Datastore, settings: KnnSettings) -> np.ndarray:
    """p_knn (Q, C) of queries against `store` with the k and T of `settings` (k is capped at the
    datastore's size)."""
    return store_knn_search(embeddings, store, settings).p_knn


# The most neighbours a prediction may list (beyond the tuned k they carry no weight).
MAX_NEIGHBOURS = MAX_K


@dataclass
class Neighbour:
    """One datastore entry near a query: why a prediction leans the way it does."""

    id: str
    label: str
    distance: float  # Euclidean, in the model's embedding space
    # Its share of p_knn (the shares of one label sum to that label's p_knn); 0 for an entry
    # beyond the k neighbours the kNN uses.
    weight: float
    source: str | None = None  # the entry's audio file, where the datastore recorded one


@dataclass
class KnnSearch:
    """p_knn of queries and the neighbours behind it, from one index search.

    `distances`, `indices`, `weights` are (Q, m), nearest first, m = max(k, neighbours asked)
    capped at the datastore's size; `weights` is 0 past the k the kNN uses.
    """

    p_knn: np.ndarray  # (Q, C)
    distances: np.ndarray
    indices: np.ndarray
    weights: np.ndarray

    def neighbours(self, row: int, count: int, store: Datastore) -> list[Neighbour]:
        """The `count` nearest entries of query `row`, nearest first."""
        return [
            Neighbour(store.ids[index], store.label_names[store.labels[index]],
                      float(distance), float(weight), store.sources[index] or None)
            for distance, index, weight in zip(self.distances[row, :count],
                                               self.indices[row, :count].tolist(),
                                               self.weights[row, :count], strict=True)
        ]  # fmt: skip


def check_neighbours(count: int) -> int:
    """A neighbour count for prediction: 0 (none) to MAX_NEIGHBOURS."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ConfigError(f"neighbours must be a whole number, got {count!r}")
    if not 0 <= count <= MAX_NEIGHBOURS:
        raise ConfigError(f"neighbours must lie in [0, {MAX_NEIGHBOURS}], got {count}")
    return int(count)


def store_knn_search(
    embeddings: np.ndarray, store: Datastore, settings: KnnSettings, neighbours: int = 0
) -> KnnSearch:
    """p_knn (Q, C) of queries against `store` with the k and T of `settings` (k capped at the
    datastore's size), and the `neighbours` nearest entries of each query from the same search:
    asking for up to k neighbours costs nothing more than p_knn itself."""
    k = min(settings.k, len(store))
    width = min(max(k, check_neighbours(neighbours)), len(store))
    distances, indices = store.search(embeddings, width)
    shares = knn_weights(distances[:, :k], settings.temperature)  # (Q, k)
    weights = np.zeros_like(distances, dtype=np.float64)
    weights[:, :k] = shares
    num_classes = len(store.label_names)
    p_knn = np.zeros((distances.shape[0], num_classes))
    np.add.at(p_knn, (np.arange(distances.shape[0])[:, None], store.labels[indices[:, :k]]), shares)
    return KnnSearch(p_knn, distances, indices, weights)


def knn_predict_probs(
    embeddings: np.ndarray, model_probs: np.ndarray, store: Datastore, settings: KnnSettings
) -> np.ndarray:
    """Interpolated probabilities (Q, C) of queries against `store` with tuned `settings`."""
    p_knn = store_knn_probs(embeddings, store, settings)
    return settings.interpolate(p_knn, model_probs, store.label_names)


# ── kNN regression (dimensional emotion) ────────────────────────────────────────────────────────


def knn_regress(distances: np.ndarray, neighbor_values: np.ndarray, temperature: float
                ) -> np.ndarray:  # fmt: skip
    """ŷ_knn for each query: the mean of its neighbours' attribute values weighted by
    w_i = exp(−d_i/T) (`np.inf`: equal weights).

    Args:
        distances: (Q, k) Euclidean distances.
        neighbor_values: (Q, k, A) attribute values of the neighbours.
        temperature: T > 0.

    Returns:
        (Q, A) float64.
    """
    distances = np.asarray(distances, dtype=np.float64)
    neighbor_values = np.asarray(neighbor_values, dtype=np.float64)
    if neighbor_values.ndim != 3 or neighbor_values.shape[:2] != distances.shape:
        raise ConfigError(
            f"distances must be (Q, k) and neighbor_values (Q, k, A), got {distances.shape} and "
            f"{neighbor_values.shape}"
        )
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    weights = knn_weights(distances, temperature)  # (Q, k), rows summing to 1
    return np.einsum("qk,qka->qa", weights, neighbor_values)


def tune_knn_regression(
    query_embeddings: np.ndarray,
    query_values: np.ndarray,
    query_model_values: np.ndarray,
    store: Datastore,
    query_ids: list[str] | None = None,
    max_k: int = MAX_K,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    temperature_factors: tuple[float, ...] = TEMPERATURE_FACTORS,
    query_groups: np.ndarray | list[str] | None = None,
    store_groups: np.ndarray | list[str] | None = None,
) -> TuningResult:
    """Choose k ∈ [1..max_k], α and T maximising the mean CCC over attributes of
    ŷ = α·ŷ_knn + (1 − α)·ŷ_model on the queries (the validation speaker), and k, T of the kNN
    alone (α = 1). The same guarantees as `tune_knn`: `store` must not hold the queries (checked
    with `query_ids`), or `query_groups`/`store_groups` keep every query away from its own group.

    One search for the max_k nearest neighbours; per T, cumulative sums over neighbour rank give
    ŷ_knn for every k at once, and the whole (α, k) grid is scored with array operations. Ties go
    to the first in grid order (T ascending, k ascending, α ascending).
    """
    if store.values is None:
        raise ConfigError("this datastore holds no attribute values: it was built by a model "
                          "without a regression head")  # fmt: skip
    if (query_groups is None) != (store_groups is None):
        raise ConfigError("give both query_groups and store_groups, or neither")
    if query_ids is not None:
        _check_no_self_match(query_ids, store, query_groups, store_groups)
    truth = np.asarray(query_values, dtype=np.float64)  # (Q, A)
    model_values = np.asarray(query_model_values, dtype=np.float64)  # (Q, A)
    if truth.shape != model_values.shape or truth.shape[1:] != store.values.shape[1:]:
        raise ConfigError(
            f"query values and model values must both be (Q, {store.values.shape[1]}), got "
            f"{truth.shape} and {model_values.shape}"
        )
    if query_groups is None:
        distances, indices = store.search(query_embeddings, min(max_k, len(store)))  # (Q, K)
    else:
        distances, indices = search_other_groups(
            store, query_embeddings, max_k, query_groups, store_groups
        )  # (Q, K)
    neighbor_values = store.values[indices]  # (Q, K, A)
    temperatures = _temperature_grid(distances, temperature_factors)
    alpha_grid = np.asarray(alphas, dtype=np.float64)[:, None, None, None]  # (A_α, 1, 1, 1)

    best_interpolated: tuple | None = None
    best_knn_only: tuple | None = None
    for temperature in temperatures:
        weights = _unnormalised_weights(distances, temperature)  # (Q, K)
        numerators = np.cumsum(weights[:, :, None] * neighbor_values, axis=1)  # (Q, K, A)
        y_knn = numerators / np.cumsum(weights, axis=1)[:, :, None]  # (Q, K, A), k = 1..K
        y_knn = y_knn.transpose(1, 0, 2)  # (K, Q, A)
        knn_score = ccc_columns(y_knn, truth[None]).mean(axis=-1)  # (K,)
        mixed = alpha_grid * y_knn[None] + (1.0 - alpha_grid) * model_values[None, None]
        score = ccc_columns(mixed, truth[None, None]).mean(axis=-1)  # (A_α, K)
        # k-major flattening, so ties go to the smallest k, then the smallest α.
        k, a = np.unravel_index(_first_best(score.T, np.zeros_like(score.T)), score.T.shape)
        candidate = (score[a, k], int(k) + 1, float(alphas[a]), temperature)
        if best_interpolated is None or candidate[0] > best_interpolated[0]:
            best_interpolated = candidate
        kk = int(np.argmax(knn_score))  # the first maximum: the smallest k
        if best_knn_only is None or knn_score[kk] > best_knn_only[0]:
            best_knn_only = (knn_score[kk], kk + 1, 1.0, temperature)

    def settings(best: tuple) -> KnnSettings:
        score, k, alpha, temperature = best
        return KnnSettings(k, alpha, float(temperature), float(score), REGRESSION_CRITERION)

    return TuningResult(settings(best_interpolated), settings(best_knn_only))


def store_knn_values(embeddings: np.ndarray, store: Datastore, settings: KnnSettings
                     ) -> np.ndarray:  # fmt: skip
    """ŷ_knn (Q, A) of queries against `store` with the k and T of `settings`."""
    if store.values is None:
        raise ConfigError("this datastore holds no attribute values")
    distances, indices = store.search(embeddings, min(settings.k, len(store)))
    return knn_regress(distances, store.values[indices], settings.temperature)


def knn_predict_values(embeddings: np.ndarray, model_values: np.ndarray, store: Datastore,
                       settings: KnnSettings) -> np.ndarray:  # fmt: skip
    """Interpolated attributes ŷ = α·ŷ_knn + (1 − α)·ŷ_model (Q, A) with tuned `settings`."""
    y_knn = store_knn_values(embeddings, store, settings)
    return settings.alpha * y_knn + (1.0 - settings.alpha) * np.asarray(model_values)

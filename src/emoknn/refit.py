"""Head refit: a new linear head on the encoder's pooled layers, fitted on the source corpus's
training clips and a user's labelled clips (`emoknn adapt`'s better remedy across corpora).

A model trained on one corpus and used on another meets features its head never saw: across
corpora the head, not the encoder, is what fails (EmoDB → RAVDESS, whisper-base frozen: 45 UA
zero-shot; a logistic regression refitted with 10 RAVDESS clips per class ≈ 69). The refit:

    x_l   = pooled layer l of a clip (the feature cache's originals: masked mean over frames)
    z     = mean over l ∈ S of (x_l − μ_l) / σ_l        μ, σ: mean and std per (layer, value)
                                                        over the rows fitted (source + yours)
    p(y)  = softmax(W z + b)                            multinomial logistic regression

fitted with sample weights w_i = (class-balanced weight of i within its own domain) × (the
domain's share: the user's clips together weigh `target_share` of the total when there are
source clips, else everything). S (one layer, or a few averaged) and the inverse regularisation
C are settings (`RefitSettings`); the defaults were chosen with `bench/adaptation.py`.

It is an `EmotionModel` head like any other (`refit_model`): `standardize` holds μ, σ;
`layer_weighting` selects S (logit 0 on the layers of S, −10⁴ elsewhere: softmax gives exactly
1/|S| and 0); no projection; the classifier holds W and b; the embedding (what a datastore
stores) is z. So an adapted folder with a refitted head is a plain model folder: weights in
safetensors, nothing to run on loading, and predict, serve, export and pack treat it as any other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError
from emoknn.model import EmotionModel, ModelConfig
from emoknn.model_folder import read_run_config
from emoknn.threads import single_threaded_blas

MAX_ITER = 1000
OFF_LAYER_LOGIT = -1.0e4  # a layer weight whose softmax share is exactly 0 (exp underflows)


@dataclass(frozen=True)
class RefitSettings:
    """What the refit fits: the pooled layers averaged (`layers`, after standardisation), the
    inverse regularisation `c`, and the total weight share of the user's clips."""

    layers: tuple[int, ...] = (2, 3, 4)
    c: float = 0.1
    target_share: float = 0.5

    def __post_init__(self) -> None:
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise ConfigError(f"refit layers must be distinct layer indices, got {self.layers}")
        if not self.c > 0:
            raise ConfigError(f"refit C must be > 0, got {self.c}")
        if not 0.0 < self.target_share <= 1.0:
            raise ConfigError(f"refit target share must lie in (0, 1], got {self.target_share}")

    def to_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}


def sample_weights(labels: np.ndarray, is_target: np.ndarray, target_share: float) -> np.ndarray:
    """w_i = balanced weight of i's class within its domain × its domain's share of the total.

    Within a domain d of n_d clips over K_d classes, a clip of class c (n_dc clips) gets
    n_d / (K_d · n_dc) (scikit-learn's "balanced"); the source's weights are then scaled to sum to
    (1 − share)·N and the target's to share·N (N = all clips), so C means the same at every n."""
    labels, is_target = np.asarray(labels), np.asarray(is_target, dtype=bool)
    weights = np.zeros(len(labels))
    domains = [(is_target, target_share if (~is_target).any() else 1.0),
               (~is_target, 1.0 - target_share if is_target.any() else 1.0)]  # fmt: skip
    for members, share in domains:
        if not members.any():
            continue
        classes, counts = np.unique(labels[members], return_counts=True)
        balanced = members.sum() / (len(classes) * counts)  # (K_d,)
        weights[members] = balanced[np.searchsorted(classes, labels[members])]
        weights[members] *= share * len(labels) / weights[members].sum()
    return weights


@dataclass
class LinearHead:
    """A fitted refit: standardisation (L + 1, H), the layers averaged, and W (C, H), b (C,)."""

    mean: np.ndarray
    scale: np.ndarray
    layers: tuple[int, ...]
    weight: np.ndarray
    bias: np.ndarray

    def embed(self, pooled: np.ndarray) -> np.ndarray:
        """z of pooled layers (N, L + 1, H) → (N, H)."""
        return embed_layers(pooled, self.mean, self.scale, self.layers)

    def probs(self, pooled: np.ndarray) -> np.ndarray:
        """softmax(W z + b), (N, C)."""
        logits = self.embed(pooled) @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def embed_layers(pooled: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                 layers: Sequence[int]) -> np.ndarray:  # fmt: skip
    """mean over l ∈ layers of (x_l − μ_l) / σ_l, for pooled (N, L + 1, H) → (N, H)."""
    chosen = list(layers)
    standardised = (np.asarray(pooled, dtype=np.float64)[:, chosen] - mean[chosen]) / scale[chosen]
    return standardised.mean(axis=1)


@single_threaded_blas()
def fit_linear_head(
    pooled: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    is_target: np.ndarray,
    settings: RefitSettings,
) -> LinearHead:
    """Fit the refit on pooled layers (N, L + 1, H) with class ids `labels` (N,) in
    [0, num_classes); `is_target` (N,) marks the user's clips (the rest are source clips).
    Classes with no clip get logit −∞ in effect (a large negative bias)."""
    from sklearn.linear_model import LogisticRegression

    pooled = np.asarray(pooled, dtype=np.float64)
    labels = np.asarray(labels)
    if pooled.ndim != 3 or len(pooled) != len(labels) or len(labels) == 0:
        raise ConfigError(f"refit: expected pooled layers (N, L + 1, H) and N labels, got "
                          f"{pooled.shape} and {len(labels)}")  # fmt: skip
    if max(settings.layers) >= pooled.shape[1]:
        raise ConfigError(f"refit layers {list(settings.layers)}: the encoder has layers 0 to "
                          f"{pooled.shape[1] - 1}")  # fmt: skip
    present = np.unique(labels)
    if len(present) < 2:
        raise ConfigError("refit: clips of at least 2 classes are needed")
    mean = pooled.mean(axis=0)
    scale = np.maximum(pooled.std(axis=0), 1e-6)
    z = embed_layers(pooled, mean, scale, settings.layers)
    classifier = LogisticRegression(C=settings.c, max_iter=MAX_ITER)
    classifier.fit(z, labels, sample_weight=sample_weights(labels, is_target,
                                                           settings.target_share))
    weight = np.zeros((num_classes, z.shape[1]))
    bias = np.full(num_classes, -1.0e4)  # a class with no clip: probability 0
    if len(present) == 2:  # scikit-learn's binary form: one row, for the second class
        coef = np.concatenate([-classifier.coef_ / 2, classifier.coef_ / 2])
        intercept = np.concatenate([-classifier.intercept_ / 2, classifier.intercept_ / 2])
    else:
        coef, intercept = classifier.coef_, classifier.intercept_
    weight[present], bias[present] = coef, intercept
    return LinearHead(mean, scale, tuple(settings.layers), weight, bias)


def refit_model(source: EmotionModel, head: LinearHead, labels: list[str]) -> EmotionModel:
    """An `EmotionModel` around `source`'s encoder whose head computes `head` exactly (see the
    module docstring): same encoder and front end, answering in `labels`."""
    config = source.config
    if head.mean.shape != (source.num_layers + 1, source.pooled_size):
        raise ConfigError(f"refit statistics {head.mean.shape} do not fit the encoder's pooled "
                          f"layers {(source.num_layers + 1, source.pooled_size)}")  # fmt: skip
    new_config = ModelConfig(
        encoder=config.encoder, labels=list(labels), encoder_config=config.encoder_config,
        freeze_feature_encoder=config.freeze_feature_encoder, layer_weighting=True,
        normalize_waveforms=config.normalize_waveforms, head_dropout=0.0, projection_size=0,
        normalize_layers=False, pad_to_seconds=config.pad_to_seconds, pooling=config.pooling,
        standardize=True,
    )  # fmt: skip
    model = EmotionModel(new_config, encoder=source.encoder)
    logits = torch.full((source.num_layers + 1,), OFF_LAYER_LOGIT)
    logits[list(head.layers)] = 0.0
    with torch.no_grad():
        model.layer_weights.copy_(logits)
        model.set_standardization(torch.from_numpy(head.mean).float(),
                                  torch.from_numpy(head.scale).float())  # fmt: skip
        model.classifier.weight.copy_(torch.from_numpy(head.weight).float())
        model.classifier.bias.copy_(torch.from_numpy(head.bias).float())
    for parameter in model.parameters():
        parameter.requires_grad = False
    return model.eval()


# ── the features a refit reads ───────────────────────────────────────────────────────────────────


@torch.inference_mode()
def pooled_utterances(model: EmotionModel, utterances: list[Utterance], max_seconds: float,
                      batch_size: int = 16, device: str | torch.device = "cpu"
                      ) -> np.ndarray:  # fmt: skip
    """Every clip's pooled layers (N, L + 1, P), float32, as `emoknn.inference.embed_utterances`
    reads clips (evaluation mode, centred crop at `max_seconds`, length-sorted batches): what the
    model's head, and a refitted one, consume. `model.head` of these gives what its forward does."""
    from torch.utils.data import DataLoader

    from emoknn.audio import SAMPLE_RATE, max_samples
    from emoknn.data import (
        BucketBatchSampler,
        EvaluationAudio,
        collate_evaluation,
        utterance_lengths,
    )

    model = model.eval().to(device)
    max_length = max_samples(max_seconds)
    dataset = EvaluationAudio(utterances, None, max_length)
    sampler = BucketBatchSampler(utterance_lengths(utterances, max_length, SAMPLE_RATE),
                                 batch_size, shuffle=False)  # fmt: skip
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_evaluation)
    pooled = np.zeros((len(utterances), model.num_layers + 1, model.pooled_size), np.float32)
    for batch in loader:
        batch = batch.to(device)
        rows = batch.indices.cpu().numpy()
        pooled[rows] = model.pooled_layers(batch.waveforms, batch.lengths).float().cpu().numpy()
    return pooled


@dataclass
class SourceClips:
    """The source model's training clips for a refit: pooled layers and labels, and the split
    the layers are chosen on (the run's training speakers, and its validation speakers)."""

    pooled: np.ndarray  # (M, L + 1, P)
    labels: list[str]  # (M,) the model's own label names
    is_validation: np.ndarray  # (M,) bool
    corpus: str
    fold: str


def source_clips(folder: str | os.PathLike, model: EmotionModel, max_seconds: float,
                 corpus: str | os.PathLike | None = None, batch_size: int = 16,
                 device: str | torch.device = "cpu") -> SourceClips | None:  # fmt: skip
    """The training + validation clips of the run in `folder`, from the corpus its run config
    names (or `corpus`, if it moved): a frozen run's from its feature cache (filled where
    missing), any other's encoded now. None when nothing says what it was trained on (an adapted,
    imported or exported model, a run without a recorded corpus and fold) or the recorded corpus
    is gone and `corpus` is not given."""
    from emoknn.features import FeatureCache
    from emoknn.inference import cache_precision_of, feature_cache_of, fold_of_run
    from emoknn.model_folder import RUN_CONFIG_FILE

    folder = Path(folder)
    if not (folder / RUN_CONFIG_FILE).is_file():
        return None
    info = read_run_config(folder)
    if corpus is None and ("fold" not in info or "corpus" not in info
                           or not Path(info["corpus"]).exists()):  # fmt: skip
        # No recorded corpus and fold (a run trained on a split given by hand), or the corpus
        # moved and nobody said where: the refit uses your clips alone, and adapt.json says so.
        return None
    fold = fold_of_run(folder, corpus)
    utterances = fold.train + fold.val
    cache_root = feature_cache_of(folder)
    if cache_root is not None:
        cache = FeatureCache(cache_root, model.cpu(), max_seconds, cache_precision_of(folder))
        pooled = cache.originals(utterances)
    else:
        pooled = pooled_utterances(model, utterances, max_seconds, batch_size, device)
    is_validation = np.array([False] * len(fold.train) + [True] * len(fold.val))
    return SourceClips(pooled, [u.label for u in utterances], is_validation,
                       str(corpus or info["corpus"]), fold.name)  # fmt: skip


def layer_candidates(num_entries: int) -> list[tuple[int, ...]]:
    """The layer sets a refit may read: each single hidden-state entry. (Runs of three adjacent
    layers averaged transferred worse across corpora: bench/adaptation.py, docs/adaptation.md.)"""
    return [(layer,) for layer in range(num_entries)]


def choose_layers(
    pooled: np.ndarray, labels: np.ndarray, is_validation: np.ndarray, num_classes: int, c: float
) -> tuple[tuple[int, ...], dict[str, float]]:
    """The layer set (`layer_candidates`) whose refit on the source's training speakers scores
    the best UA on its validation speakers (ties: the first listed). The user's clips play no
    part: the choice is made once, before any of their folds."""
    from emoknn.metrics import unweighted_accuracy

    train, val = ~is_validation, is_validation
    scores = {}
    for layers in layer_candidates(pooled.shape[1]):
        source_only = np.zeros(int(train.sum()), bool)
        head = fit_linear_head(pooled[train], labels[train], num_classes, source_only,
                               RefitSettings(layers, c))  # fmt: skip
        predicted = head.probs(pooled[val]).argmax(axis=1)
        scores["+".join(map(str, layers))] = unweighted_accuracy(labels[val], predicted)
    best = max(scores, key=lambda key: scores[key])  # the first maximum
    return tuple(int(layer) for layer in best.split("+")), scores


def choose_layers_on_folds(
    source_pooled: np.ndarray, source_labels: np.ndarray, pooled: np.ndarray,
    labels: np.ndarray, folds: np.ndarray, num_classes: int, settings: RefitSettings,
) -> tuple[tuple[int, ...] | None, dict[str, float]]:  # fmt: skip
    """The layer set (`layer_candidates`) whose refit transfers best to YOUR clips: for each
    candidate and each fold f of `folds` (a fold index per clip of `pooled`), a head fitted on
    the source clips + your clips outside f scores UA on f; the best mean over folds wins
    (ties: the first listed). The clips given are the only target clips that reach the choice:
    adapt passes the clips outside its held-out fold (folds made among them), so no held-out
    clip influences the layers it is scored with. None when fewer than 2 folds can be scored
    (each needs clips of 2 or more labels outside it)."""
    from emoknn.metrics import unweighted_accuracy

    usable = [f for f in np.unique(folds) if len(np.unique(labels[folds != f])) >= 2]
    if len(usable) < 2:
        return None, {}
    scores = {}
    for layers in layer_candidates(pooled.shape[1]):
        per_fold = []
        for fold in usable:
            test, rest = folds == fold, folds != fold
            rows = np.concatenate([source_pooled, pooled[rest]])
            is_target = np.r_[np.zeros(len(source_labels), bool), np.ones(int(rest.sum()), bool)]
            head = fit_linear_head(rows, np.concatenate([source_labels, labels[rest]]),
                                   num_classes, is_target, replace(settings, layers=layers))
            per_fold.append(unweighted_accuracy(labels[test], head.probs(pooled[test]).argmax(1)))
        scores["+".join(map(str, layers))] = float(np.mean(per_fold))
    best = max(scores, key=lambda key: scores[key])  # the first maximum
    return tuple(int(layer) for layer in best.split("+")), scores

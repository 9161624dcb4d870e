"""Frozen-encoder training: the head alone, on cached encoder features, in seconds on a CPU.

With `--preset frozen` (or `--freeze-encoder` with any preset) the encoder's weights never change,
so its pooled per-layer outputs are computed once per (utterance, view) and cached on disk
(`emoknn.features`); every epoch, fold, λ and τ afterwards costs only the head. The loop
(`fit_head`), for epoch e:

    rng = default_rng([seed, e]); torch seeded from (seed, e)      (dropout)
    each training utterance i gets one of its K cached views, v_i ~ uniform{0..K−1} from rng
    for each mini-batch B of originals, in an order shuffled by rng:
        rows = [pooled originals of B; pooled view v_i of each i in B]     (2|B|, L+1, P)
               (K = 0, `cache_views=0`: the originals of B alone)
        output = model.head(rows)                                   embeddings, logits
        L = (1 − λ)·CE + λ·SupCon over the 2|B| rows               (emoknn.losses.combined_loss)
          (dimensional tasks: `emoknn.losses.task_loss`, on standardised attribute targets)
    validation on the validation speaker's originals: CE loss, UA, WA (dimensional tasks: the
        regression loss over the whole validation set, + CE for "both"; mean CCC as val_ccc)
    ReduceLROnPlateau on the validation loss; early stopping on `monitor`

The same loss code as fine-tuning, and the same run folder (model.safetensors + model.json,
train_config.json, logs/attempt0/metrics.csv; no Lightning checkpoints: nothing to resume), but
head-only: model.safetensors holds the best epoch's head (every tensor but the encoder's, a few
hundred KB) and model.json a reference to the encoder, whose weights go once into an encoder store
shared by the runs of an output folder (`encoders/<fingerprint>/` beside the run, or OUT/encoders/
for a cross-validation; `emoknn.model_folder`). `fit_knn`, `crossval`, reports, `predict`,
`serve`, `export` and `datastore add` work on a frozen run as on any other (loading resolves the
encoder); `emoknn pack` makes a self-contained copy. At prediction time the encoder runs live, and
the cached originals give the same embeddings (float32, to float rounding; see `emoknn.features`).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emoknn.attributes import attribute_matrix
from emoknn.augment import make_augmentation
from emoknn.config import (
    MONITORS,
    TrainConfig,
    TrainResult,
    check_fold_run,
    epoch_seed,
    model_config_for,
    task_attributes,
)
from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError
from emoknn.features import FeatureCache, ViewSpec, default_cache_dir
from emoknn.files import atomic_path
from emoknn.losses import combined_loss, regression_loss, task_loss
from emoknn.metrics import ccc_columns, unweighted_accuracy, weighted_accuracy
from emoknn.model import EmotionModel, ModelConfig, load_encoder
from emoknn.model_folder import (
    MODEL_FILE,
    default_encoder_store,
    save_model,
    write_encoder_store,
    write_run_config,
)
from emoknn.speaker_stats import feature_statistics


@dataclass
class FoldFeatures:
    """A fold's cached features in memory: what `fit_head` trains on."""

    train: torch.Tensor  # (N, L + 1, H) float32, originals
    train_views: torch.Tensor  # (K, N, L + 1, H) float16 (or float32), augmented views
    train_labels: torch.Tensor  # (N,) class ids
    val: torch.Tensor  # (M, L + 1, H) float32, originals of the validation speaker
    val_labels: torch.Tensor  # (M,)
    # Standardised attribute targets (N, A) and (M, A) of a dimensional model; else None.
    train_targets: torch.Tensor | None = None
    val_targets: torch.Tensor | None = None


def view_spec(config: TrainConfig) -> ViewSpec:
    """The augmented views a training config asks for."""
    augmentation = make_augmentation(config.augment, rir_dir=config.rir_dir)
    return ViewSpec(augmentation, config.seed, config.cache_views)


SpeakerStats = dict[str, tuple[np.ndarray, np.ndarray]]  # speaker → (mean, scale), (L + 1, P)


def check_speaker_norm(utterances: list[Utterance]) -> dict[str, list[Utterance]]:
    """The utterances by speaker, if every speaker has at least 2 clips (else ConfigError)."""
    groups: dict[str, list[Utterance]] = {}
    for utterance in utterances:
        groups.setdefault(utterance.speaker, []).append(utterance)
    few = sorted(speaker for speaker, group in groups.items() if len(group) < 2)
    if few:
        raise ConfigError(
            f"speaker_norm needs at least 2 clips of every speaker to standardise with; speaker "
            f"{few[0]!r} has 1" + (f" (and {len(few) - 1} more)" if len(few) > 1 else ""),
            setting="speaker_norm",
        )
    return groups


def speaker_statistics(cache: FeatureCache, utterances: list[Utterance]) -> SpeakerStats:
    """`--speaker-norm`: each speaker's mean and scale per (layer, value) over that speaker's own
    cached originals, labels unused (transductive: a test speaker's unlabelled clips count too).

    Raises:
        ConfigError: a speaker has a single clip (no spread to standardise with).
    """
    groups = check_speaker_norm(utterances)
    stats = {}
    for speaker, group in groups.items():
        # The formula prediction uses too (emoknn.speaker_stats).
        stats[speaker] = feature_statistics(cache.originals(group))
    return stats


def speaker_normalized(
    features: np.ndarray, utterances: list[Utterance], stats: SpeakerStats | None
) -> np.ndarray:
    """Features (…, N, L + 1, P) of `utterances`, each row standardised with its speaker's
    statistics (`speaker_statistics`); unchanged when `stats` is None."""
    if stats is None:
        return features
    missing = sorted({u.speaker for u in utterances} - set(stats))
    if missing:
        raise ConfigError(f"speaker_norm: no statistics for speaker {missing[0]!r}")
    mean = np.stack([stats[u.speaker][0] for u in utterances])  # (N, L + 1, P)
    scale = np.stack([stats[u.speaker][1] for u in utterances])
    return ((features.astype(np.float32) - mean) / scale).astype(features.dtype)


def pooled_originals(
    cache: FeatureCache, utterances: list[Utterance], stats: SpeakerStats | None = None
) -> np.ndarray:
    """Cached originals (N, L + 1, P) of `utterances`, speaker-normalised when `stats` is given."""
    return speaker_normalized(cache.originals(utterances), utterances, stats)


def fold_features(
    cache: FeatureCache,
    train: list[Utterance],
    val: list[Utterance],
    labels: list[str],
    spec: ViewSpec,
    speaker_stats: SpeakerStats | None = None,
    model_config: ModelConfig | None = None,
) -> FoldFeatures:
    """Read (filling what is missing) the originals and views of `train`, originals of `val`;
    with `speaker_stats` (`--speaker-norm`), every row standardised with its speaker's; with a
    dimensional `model_config`, their attribute targets standardised as it says."""
    label_to_id = {label: i for i, label in enumerate(labels)}
    targets = {}
    if model_config is not None and model_config.attributes is not None:
        mean = np.array(model_config.attribute_mean)
        std = np.array(model_config.attribute_std)
        for name, utterances in (("train_targets", train), ("val_targets", val)):
            values = (attribute_matrix(utterances, model_config.attributes) - mean) / std
            targets[name] = torch.tensor(values, dtype=torch.float32)
    views = speaker_normalized(cache.views(train, spec), train, speaker_stats)
    return FoldFeatures(
        **targets,
        train=torch.from_numpy(pooled_originals(cache, train, speaker_stats)),
        train_views=torch.from_numpy(views),
        train_labels=torch.tensor([label_to_id[u.label] for u in train]),
        val=torch.from_numpy(pooled_originals(cache, val, speaker_stats)),
        val_labels=torch.tensor([label_to_id[u.label] for u in val]),
    )


def head_parameters(model: EmotionModel) -> list[torch.nn.Parameter]:
    """Everything but the encoder: layer weights, projection, classifier."""
    return [p for name, p in model.named_parameters() if not name.startswith("encoder.")]


def _head_state(model: EmotionModel) -> dict[str, torch.Tensor]:
    return {
        name: tensor.detach().clone()
        for name, tensor in model.state_dict().items()
        if not name.startswith("encoder.")
    }


def _make_optimizer(model: EmotionModel, config: TrainConfig):
    """The head's optimiser; the layer weights get `layer_lr_scale` × the learning rate (and no
    weight decay: it would pull them to the uniform mix)."""
    layers = [model.layer_weights] if model.layer_weights is not None else []
    rest = [p for p in head_parameters(model) if all(p is not q for q in layers)]
    groups = [{"params": rest}]
    if layers:
        groups.append({"params": layers, "lr": config.learning_rate * config.layer_lr_scale,
                       "weight_decay": 0.0})  # fmt: skip
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.learning_rate, momentum=config.momentum,
            weight_decay=config.weight_decay,
        )  # fmt: skip
    return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)


def best_layer(data: FoldFeatures, num_classes: int) -> int:
    """The layer a ridge classifier (per-layer standardisation with training statistics, one-hot
    targets, ridge α = number of training rows) scores best on the validation speaker by UA;
    ties go to the earlier layer. Closed form, milliseconds per layer."""
    train, val = data.train.double(), data.val.double()
    targets = F.one_hot(data.train_labels, num_classes).double()
    targets = targets - targets.mean(dim=0)
    val_labels = data.val_labels.numpy()
    scores = []
    for layer in range(train.shape[1]):
        mean = train[:, layer].mean(dim=0)
        scale = train[:, layer].std(dim=0, unbiased=False).clamp(min=1e-6)
        x, v = (train[:, layer] - mean) / scale, (val[:, layer] - mean) / scale
        gram = x.T @ x + len(x) * torch.eye(x.shape[1], dtype=x.dtype)
        weights = torch.linalg.solve(gram, x.T @ targets)
        predicted = (v @ weights).argmax(dim=1).numpy()
        scores.append(unweighted_accuracy(val_labels, predicted))
    return int(np.argmax(scores))


INIT_WEIGHT = 0.75  # softmax share of the best layer at the start (`layer_init="best"`)


def standardization(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale per (layer, value) of the training split's pooled originals (N, L + 1, P):
    what `EmotionModel.head` standardises with. Only training utterances: the validation and
    test speakers never inform them."""
    mean = train.mean(dim=0)
    scale = train.std(dim=0, unbiased=False).clamp(min=1e-6)
    return mean, scale


@dataclass
class HeadFit:
    """What `fit_head` did: one row per epoch, and the epoch kept."""

    history: list[dict[str, float]]
    best_epoch: int
    best_score: float


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: a head's operations are too small to gain from more, and on a
    busy CPU the threads' synchronisation made each step 20-40x slower (5 ms → 100-200 ms)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit_head(model: EmotionModel, data: FoldFeatures, config: TrainConfig) -> HeadFit:
    """Train the head of `model` on cached features (the loop in the module docstring) and leave
    the best epoch's head in `model`, in evaluation mode."""
    with one_thread():
        return _fit_head(model, data, config)


def _fit_head(model: EmotionModel, data: FoldFeatures, config: TrainConfig) -> HeadFit:
    if len(data.val_labels) == 0:
        raise ConfigError("the validation split is empty: the frozen head stops early on it")
    for parameter in model.encoder.parameters():
        parameter.requires_grad = False
    if model.config.standardize:
        model.set_standardization(*standardization(data.train))
    if config.layer_init == "best" and model.layer_weights is not None:
        layers = model.layer_weights.numel()
        # logit gap g with e^g / (e^g + layers − 1) = INIT_WEIGHT
        gap = float(np.log(INIT_WEIGHT * (layers - 1) / (1 - INIT_WEIGHT)))
        with torch.no_grad():
            model.layer_weights.zero_()
            model.layer_weights[best_layer(data, len(model.config.labels))] = gap
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
    )
    mode = MONITORS[config.monitor]
    count, num_views = len(data.train_labels), data.train_views.shape[0]
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = None, -1, _head_state(model)
    bad_epochs = 0
    for epoch in range(config.max_epochs):
        torch.manual_seed(epoch_seed(config.seed, epoch))
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(count)
        chosen_view = torch.from_numpy(rng.integers(max(num_views, 1), size=count))
        model.train()
        totals = np.zeros(4)
        for start in range(0, count, config.batch_size):
            rows = torch.from_numpy(order[start : start + config.batch_size])
            if num_views:
                views = data.train_views[chosen_view[rows], rows].float()  # (n, L + 1, P)
                inputs = torch.cat([data.train[rows], views])  # (2n, L + 1, P): originals, views
                labels = data.train_labels[rows].repeat(2)  # (2n,)
            else:  # no cached views (cache_views = 0): the originals alone
                inputs, labels = data.train[rows], data.train_labels[rows]
            output = model.head(inputs)
            if config.task == "categorical":
                loss = combined_loss(output.logits, output.embeddings, labels,
                                     config.contrastive_weight, config.temperature)  # fmt: skip
                parts = (loss.total, loss.cross_entropy, torch.zeros(()), loss.contrastive)
            else:
                targets = data.train_targets[rows]  # (n, A)
                if num_views:  # (2n, A): a view keeps its original's values
                    targets = targets.repeat(2, 1)
                loss = task_loss(config.task, output.logits, output.embeddings, labels,
                                 output.standardized_attributes, targets,
                                 config.contrastive_weight, config.temperature,
                                 config.regression_loss)  # fmt: skip
                parts = (loss.total, loss.cross_entropy, loss.regression, loss.contrastive)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            totals += np.array([float(part.detach()) for part in parts]) * len(rows)
        model.eval()
        with torch.no_grad():
            output = model.head(data.val)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": totals[0] / count,
            "train_ce": totals[1] / count,
            "train_scl": totals[3] / count,
            **_validation_scores(output, data, config),
        }
        if config.task != "categorical":
            row["train_regression"] = totals[2] / count
        val_loss = row["val_loss"]
        history.append(row)
        scheduler.step(val_loss)
        score = row[config.monitor]
        if best_score is None or (score < best_score if mode == "min" else score > best_score):
            best_score, best_epoch, best_state, bad_epochs = score, epoch, _head_state(model), 0
        else:
            bad_epochs += 1
            if config.early_stopping_patience and bad_epochs >= config.early_stopping_patience:
                break
    model.load_state_dict(best_state, strict=False)
    model.eval()
    return HeadFit(history, best_epoch, float(best_score))


def _validation_scores(output, data: FoldFeatures, config: TrainConfig) -> dict[str, float]:
    """val_loss (CE; regression loss over the whole set for dimensional tasks, + CE for "both"),
    val_ua and val_wa (when the model predicts classes), val_ccc (mean CCC, dimensional tasks)."""
    scores: dict[str, float] = {}
    val_loss = 0.0
    if config.task != "dimensional":
        val_loss = float(F.cross_entropy(output.logits, data.val_labels))
        predictions = output.logits.argmax(dim=1).numpy()
        val_labels = data.val_labels.numpy()
        scores["val_ua"] = unweighted_accuracy(val_labels, predictions)
        scores["val_wa"] = weighted_accuracy(val_labels, predictions)
    if config.task != "categorical":
        predicted, targets = output.standardized_attributes, data.val_targets
        val_loss += float(regression_loss(predicted, targets, config.regression_loss))
        scores["val_ccc"] = float(ccc_columns(predicted.numpy(), targets.numpy()).mean())
    return {"val_loss": val_loss, **scores}


@dataclass
class FrozenResult(TrainResult):
    """A frozen run: `TrainResult` plus the trained model, still in memory."""

    model: EmotionModel | None = None
    fit: HeadFit | None = None


def build_frozen_model(
    config: TrainConfig,
    labels: list[str],
    encoder: torch.nn.Module | None = None,
    task_fields: dict[str, Any] | None = None,
) -> EmotionModel:
    """The model with its head initialised from `config.seed`, around `encoder` if given (one
    encoder serves every run of a cross-validation), else the one `config.encoder` names;
    `task_fields`: a dimensional model's attributes (`emoknn.train.task_attributes`)."""
    model_config = model_config_for(config, labels, task_fields)
    if encoder is None:
        torch.manual_seed(config.seed)  # an encoder built from a config (tiny) starts random
        encoder = load_encoder(model_config)
    torch.manual_seed(config.seed)  # the head's initialisation, whatever loading the encoder did
    model = EmotionModel(model_config, encoder=encoder)
    limit = model.max_input_seconds
    if limit is not None and config.max_seconds > limit:
        raise ConfigError(
            f"max_seconds {config.max_seconds:g} is longer than the encoder takes at once "
            f"({limit:g} s for {config.encoder}); crop to at most {limit:g} s"
        )
    for parameter in model.encoder.parameters():
        parameter.requires_grad = False
    return model.eval()


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train_frozen_fold(
    config: TrainConfig,
    train: list[Utterance],
    val: list[Utterance],
    labels: list[str],
    run_dir: str | os.PathLike,
    resume: bool = False,
    extra_info: dict[str, Any] | None = None,
    cache: FeatureCache | None = None,
    encoder: torch.nn.Module | None = None,
    log: Callable[[str], None] | None = None,
    speaker_stats: SpeakerStats | None = None,
    encoder_store: str | os.PathLike | None = None,
) -> FrozenResult:
    """Train the head on `train`, validating on `val`, and write a head-only run folder to
    `run_dir`, its encoder in the store `encoder_store` (default: `encoders` beside `run_dir`).

    The feature cache is `cache`, else the folder `config.feature_cache`, else `emoknn-features`
    beside `run_dir`; entries it lacks are computed first. A resumed run (`resume=True`) trains
    the head again from the start: it takes seconds and gives the same weights.

    With `config.speaker_norm`, features are standardised per speaker (`speaker_statistics`) with
    `speaker_stats` (a cross-validation passes those of every speaker, test speaker included),
    else with statistics of the `train` and `val` speakers' own clips. Such a model records it
    (`ModelConfig.speaker_norm`) and predicts only with a speaker's statistics
    (`emoknn.speaker_stats`).
    """
    if not config.freeze_encoder:
        raise ConfigError("train_frozen_fold needs freeze_encoder=True (use train_fold otherwise)")
    run_dir = Path(run_dir)
    model_file = run_dir / MODEL_FILE  # the run's result: a frozen run has no checkpoints
    info = check_fold_run(config, train, val, labels, run_dir, resume, model_file, extra_info)
    model = build_frozen_model(config, labels, encoder, task_attributes(config, train, val))
    if cache is None:
        root = Path(config.feature_cache) if config.feature_cache else default_cache_dir(run_dir)
        cache = FeatureCache(root, model, config.max_seconds, config.cache_precision)
    # The run records where its features are, so its kNN stage can be fitted from them.
    config = TrainConfig(**{**asdict(config), "feature_cache": str(cache.root.resolve())})
    if config.speaker_norm and speaker_stats is None:
        check_speaker_norm(train + val)  # before any work
    spec = view_spec(config)
    start = time.perf_counter()
    filled = cache.fill(train + val, None)
    if config.speaker_norm and speaker_stats is None:
        speaker_stats = speaker_statistics(cache, train + val)  # refuses before writing
    elif not config.speaker_norm:
        speaker_stats = None
    filled_views = cache.fill(train, spec, originals=False)
    if log is not None and filled.computed + filled_views.computed:
        log(f"feature cache {cache.folder}: computed {filled.computed + filled_views.computed} "
            f"entries in {time.perf_counter() - start:.0f} s "
            f"({cache.size_bytes() / 2**20:.1f} MB)")  # fmt: skip
    data = fold_features(cache, train, val, labels, spec, speaker_stats, model.config)

    write_run_config(run_dir, asdict(config), labels, info)
    fit = fit_head(model, data, config)
    _write_history(run_dir / "logs" / "attempt0" / "metrics.csv", fit.history)
    store = encoder_store if encoder_store is not None else default_encoder_store(run_dir)
    reference = write_encoder_store(store, model)  # once per encoder and store
    save_model(run_dir, model, config.max_seconds, encoder=reference)
    return FrozenResult(
        run_dir=run_dir,
        best_checkpoint=model_file,  # the head of the best epoch is the whole result
        last_checkpoint=model_file,
        best_score=fit.best_score,
        epochs=len(fit.history),
        model=model,
        fit=fit,
    )

"""Speaker-independent cross-validation and the paper's ablations.

For every selected fold and every training of the chosen tables:

    train (CE + λ·SupCon on augmented views) → fit kNN (tune k, α, T on the validation speaker)
    → evaluate the test speaker three ways: model alone (α = 0), kNN alone (α = 1), interpolated

Each (training, fold) writes into `OUT/<training>/<fold>/`: the run (checkpoints, datastore,
knn.json), `predictions.csv` (one row per test utterance: true label and the three predictions),
`test_embeddings.npz`, and last `fold_result.json`, whose presence marks the fold as done: an
interrupted cross-validation continues where it stopped (a half-trained fold resumes from its last
checkpoint). Folds can run as separate jobs (`--folds 3,4`) and `emoknn report` merges them.

Dimensional tasks (`TrainConfig.task` "dimensional" or "both"): the fold result also holds
`dimensional`, the CCC, Pearson r and MAE of each attribute (and their mean over attributes) for
the model alone, the kNN regression alone and their interpolation, with the tuned k, α, T; the
test speaker's predicted attributes go to `attribute_predictions.csv`. A "dimensional" model's
classifier is never trained, so its fold result has no class scores (`scores` is empty).

Every fold also runs the classical baseline (`emoknn.baseline`) into `OUT/baseline/<fold>/` and the
encoder probe (`emoknn.probe`: logistic regression on one cached layer of the same, un-tuned
encoder) into `OUT/probe/<fold>/`, the same way, so each table shows what hand-crafted features
and the simplest use of the encoder reach on the same folds; and the results carry the paired
comparisons of `emoknn.stats` (`paper_comparisons`), the best learned variant against both.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from emoknn import __version__, baseline, probe
from emoknn.attributes import attribute_matrix, rated_attributes
from emoknn.calibration import Calibration
from emoknn.config import TrainConfig
from emoknn.corpora.utterance import Utterance, label_names
from emoknn.errors import ConfigError, EmoknnError, FileFormatError
from emoknn.features import FeatureCache, default_cache_dir
from emoknn.files import atomic_path, read_json_object, write_json_atomic
from emoknn.folds import Fold
from emoknn.frozen import (
    SpeakerStats,
    build_frozen_model,
    check_speaker_norm,
    pooled_originals,
    speaker_statistics,
    train_frozen_fold,
    view_spec,
)
from emoknn.inference import Embedded, embed_pooled, embed_utterances, fit_knn_stage, fit_run_knn
from emoknn.knn import Datastore, TuningResult, knn_predict_probs, knn_predict_values
from emoknn.metrics import (
    expected_calibration_error,
    regression_scores,
    unweighted_accuracy,
    weighted_accuracy,
)
from emoknn.model_folder import (
    CALIBRATION_FILE,
    ENCODER_STORE_DIR,
    has_model,
    ids_digest,
    load_calibration,
    load_knn,
    load_model,
    read_model_meta,
    save_calibration,
    save_knn,
)
from emoknn.partial import (
    PartialContext,
    choose_cut,
    embed_frames,
    fill_frames,
    load_context,
    train_partial_fold,
)
from emoknn.speaker_tuning import (
    alphas_for,
    check_knn_tuning,
    default_knn_tuning,
    out_of_fold_queries,
)
from emoknn.stats import Comparison, compare, paired_test
from emoknn.train import train_fold

INFERENCES = ("model", "knn", "interpolated")  # α = 0, α = 1, tuned α
FOLD_RESULT_FILE = "fold_result.json"
EXPERIMENT_FILE = "experiment.json"
PREDICTIONS_FILE = "predictions.csv"
ATTRIBUTE_PREDICTIONS_FILE = "attribute_predictions.csv"


@dataclass(frozen=True)
class TrainingSpec:
    """One model to train per fold: a name for folders, a label for tables, λ and augmentation."""

    name: str
    label: str
    contrastive_weight: float
    augment: str


CE = TrainingSpec("ce", "CE", 0.0, "mixed")
CE_SCL = TrainingSpec("scl", "CE+SCL", 0.1, "mixed")
TABLES = ("main", "augment", "lambda")
LAMBDA_SWEEP = (0.05, 0.2, 0.3, 0.5)


def trainings_for(tables: Iterable[str]) -> list[TrainingSpec]:
    """Trainings needed for the tables: `main` (Tables 1 and 3: CE, CE+SCL, each ± kNN),
    `augment` (Table 2: SCL with each augmentation), `lambda` (SCL weight sweep).

    CE-only models see the same augmented batches as CE+SCL ones (λ = 0 just drops the
    contrastive term), so the comparison isolates the loss.
    """
    tables = list(tables)
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ConfigError(f"unknown table(s) {sorted(unknown)}; expected some of {TABLES}")
    specs = [CE, CE_SCL]
    if "augment" in tables:
        specs += [
            TrainingSpec(f"scl-{name}", f"CE+SCL ({name})", 0.1, name)
            for name in ("noise", "volume", "reverb", "pitch")
        ]
    if "lambda" in tables:
        specs += [
            TrainingSpec(f"scl-l{weight:g}", f"CE+SCL (λ={weight:g})", weight, "mixed")
            for weight in LAMBDA_SWEEP
        ]
    return specs


def variant_name(training_label: str, inference: str) -> str:
    return {"model": training_label, "knn": f"{training_label} kNN only",
            "interpolated": f"{training_label} + kNN"}[inference]  # fmt: skip


def evaluate_test_speaker(
    run_dir: Path, fold: Fold, max_seconds: float, device: str | None = None
) -> dict[str, Any]:
    """Predict the fold's test speaker three ways; write predictions.csv and embeddings.

    Returns the class scores by inference (empty for a "dimensional" model), and for a model
    with a regression head also `"dimensional"` (`score_test_attributes`)."""
    from emoknn.inference import best_device

    device = device or best_device()
    meta = read_model_meta(run_dir)
    model = load_model(run_dir, device=device)
    store, tuning = load_knn(run_dir, meta.fingerprint, meta.labels)
    test = embed_utterances(model, fold.test, max_seconds, device=device)
    return _score_fold(run_dir, fold, model, store, tuning, test, load_calibration(run_dir))


def _score_fold(run_dir: Path, fold: Fold, model: Any, store: Datastore, tuning: TuningResult,
                test: Embedded, calibration: Calibration | None = None
                ) -> dict[str, Any]:  # fmt: skip
    """Class scores (unless the model is "dimensional") and attribute scores (when it has a
    regression head) of the test speaker."""
    scores: dict[str, Any] = {}
    if model.predicts_classes:
        scores = score_test_speaker(run_dir, fold, model.labels, store, tuning, test, calibration)
    else:
        _write_test_embeddings(run_dir, test, model.labels)
    if model.attributes is not None:
        scores["dimensional"] = score_test_attributes(run_dir, fold, store, tuning, test)
    return scores


def _write_test_embeddings(run_dir: Path, test: Embedded, labels: list[str]) -> None:
    with atomic_path(run_dir / "test_embeddings.npz") as temporary, temporary.open("wb") as handle:
        np.savez(handle, embeddings=test.embeddings, labels=test.labels,
                 label_names=np.array(labels))  # fmt: skip


def score_test_attributes(
    run_dir: Path, fold: Fold, store: Datastore, tuning: TuningResult, test: Embedded
) -> dict[str, Any]:
    """CCC, Pearson r and MAE per attribute (and their mean) of the test speaker's predicted
    attributes three ways (model alone, kNN regression alone, interpolated); writes
    attribute_predictions.csv (the ratings and the three predictions of each attribute)."""
    if tuning.regression is None or test.attributes is None or store.values is None:
        raise ConfigError(f"{run_dir}: the model has a regression head but no regression kNN")
    if test.targets is None:
        raise ConfigError(
            f"fold {fold.name}: every test utterance needs {', '.join(store.attributes)} ratings"
        )
    settings = {"model": None, "knn": tuning.regression.knn_only,
                "interpolated": tuning.regression.interpolated}  # fmt: skip
    predicted = {
        name: test.attributes if chosen is None
        else knn_predict_values(test.embeddings, test.attributes, store, chosen)
        for name, chosen in settings.items()
    }  # fmt: skip
    attributes = store.attributes
    with (
        atomic_path(run_dir / ATTRIBUTE_PREDICTIONS_FILE) as temporary,
        temporary.open("w", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["id", "speaker", *(f"{a}_{what}" for a in attributes
                                            for what in ("true", *INFERENCES))])  # fmt: skip
        for row, utterance in enumerate(fold.test):
            cells = []
            for column in range(len(attributes)):
                cells.append(f"{test.targets[row, column]:.6g}")
                cells += [f"{predicted[name][row, column]:.6g}" for name in INFERENCES]
            writer.writerow([utterance.id, utterance.speaker, *cells])
    result: dict[str, Any] = {"attributes": list(attributes)}
    for name, chosen in settings.items():
        result[name] = {
            **regression_scores(test.targets, predicted[name], attributes),
            "k": None if chosen is None else chosen.k,
            "alpha": 0.0 if chosen is None else chosen.alpha,
            "temperature": None if chosen is None else chosen.to_dict()["temperature"],
        }
    return result


def score_test_speaker(
    run_dir: Path,
    fold: Fold,
    labels: list[str],
    store: Datastore,
    tuning: TuningResult,
    test: Embedded,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Scores of the test speaker's embedded utterances three ways; write predictions.csv and
    test_embeddings.npz.

    Each inference's scores: WA, UA, the kNN settings, and the expected calibration error of the
    probabilities as `predict` shows them (`ece`: the model's and the interpolation's
    temperature-scaled with `calibration`, `emoknn.calibration`) and before that (`ece_raw`)."""
    calibration = calibration or Calibration()
    probabilities = {
        "model": test.probs,
        "knn": knn_predict_probs(test.embeddings, test.probs, store, tuning.knn_only),
        "interpolated": knn_predict_probs(test.embeddings, test.probs, store, tuning.interpolated),
    }
    shown = {
        "model": calibration.model(probabilities["model"]),
        "knn": probabilities["knn"],
        "interpolated": calibration.interpolated(probabilities["interpolated"],
                                                 tuning.interpolated),
    }  # fmt: skip
    predictions = {name: p.argmax(axis=1) for name, p in probabilities.items()}
    with (
        atomic_path(run_dir / PREDICTIONS_FILE) as temporary,
        temporary.open("w", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["id", "speaker", "label", *INFERENCES])
        for row, utterance in enumerate(fold.test):
            writer.writerow([utterance.id, utterance.speaker, utterance.label,
                             *(labels[predictions[name][row]] for name in INFERENCES)])  # fmt: skip
    _write_test_embeddings(run_dir, test, labels)
    settings = {"model": None, "knn": tuning.knn_only, "interpolated": tuning.interpolated}
    scores = {}
    for name in INFERENCES:
        chosen = settings[name]
        scores[name] = {
            "wa": weighted_accuracy(test.labels, predictions[name]),
            "ua": unweighted_accuracy(test.labels, predictions[name]),
            "k": None if chosen is None else chosen.k,
            "alpha": 0.0 if chosen is None else chosen.alpha,
            "temperature": None if chosen is None else chosen.to_dict()["temperature"],
            "ece": expected_calibration_error(shown[name], test.labels),
            "ece_raw": expected_calibration_error(probabilities[name], test.labels),
        }
    return scores


@dataclass
class FrozenContext:
    """What every frozen run of a cross-validation shares: one encoder and one feature cache."""

    cache: FeatureCache
    encoder: Any  # torch.nn.Module
    speaker_stats: SpeakerStats | None = None  # --speaker-norm: every speaker's, test included


def _fold_fields(fold: Fold) -> dict[str, Any]:
    """What every fold result records about its fold (learned variants and baseline alike)."""
    return {"fold": fold.name, "test_speaker": fold.test_speaker,
            "val_speaker": fold.val_speaker, "num_train": len(fold.train),
            "num_val": len(fold.val), "num_test": len(fold.test)}  # fmt: skip


def run_fold(
    spec: TrainingSpec,
    fold: Fold,
    labels: list[str],
    base_config: TrainConfig,
    out_dir: Path,
    extra_info: dict[str, Any],
    criterion: str = "ua",
    frozen: FrozenContext | PartialContext | None = None,
    knn_tuning: str = "validation",
) -> dict[str, Any] | None:
    """Train, fit kNN and evaluate one (training, fold); skip it if already finished.

    `knn_tuning`: how k, α, T are chosen (`emoknn.speaker_tuning`: "speakers" for a frozen
    encoder, or the paper's "validation").

    Returns None in the non-first processes of a DDP run (they only help train). A frozen-encoder
    config trains the head on cached features and takes every embedding from the cache
    (`frozen`, made by `prepare_frozen`).
    """
    run_dir = out_dir / spec.name / fold.name
    result_file = run_dir / FOLD_RESULT_FILE
    if result_file.is_file():
        return read_fold_result(result_file)
    config = TrainConfig(**{**vars(base_config), "contrastive_weight": spec.contrastive_weight,
                            "augment": spec.augment})  # fmt: skip
    info = {**extra_info, "fold": fold.name, "test_speaker": fold.test_speaker,
            "val_speaker": fold.val_speaker, "training": spec.name}  # fmt: skip
    if config.tune_layers:
        if not isinstance(frozen, PartialContext):
            raise ConfigError("a partial fine-tuning cross-validation needs load_context's context")
        scores = _partial_fold(config, fold, labels, run_dir, info, criterion, frozen)
    elif config.freeze_encoder:
        if frozen is None:
            raise ConfigError("a frozen-encoder cross-validation needs prepare_frozen's context")
        scores = _frozen_fold(config, fold, labels, run_dir, info, criterion, frozen, knn_tuning)
    else:
        resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
        trained = train_fold(config, fold.train, fold.val, labels, run_dir, resume=resume,
                             extra_info=info)  # fmt: skip
        if not trained.is_global_zero:
            return None  # under DDP, the first process alone fits kNN, evaluates and writes
        fit_run_knn(
            run_dir, fold.train, fold.val, config.max_seconds, criterion, knn_tuning=knn_tuning
        )
        scores = evaluate_test_speaker(run_dir, fold, config.max_seconds)
    dimensional = scores.pop("dimensional", None)
    partial = scores.pop("partial", None)  # the cut, the frames' entry, epochs, seconds
    result = {
        "training": spec.name,
        "label": spec.label,
        "contrastive_weight": spec.contrastive_weight,
        "augment": spec.augment,
        "task": config.task,
        **_fold_fields(fold),
        "knn_tuning": knn_tuning,
        "calibration": _calibration_fields(run_dir),
        "scores": scores,
        **({} if dimensional is None else {"dimensional": dimensional}),
        **({} if partial is None else {"partial": partial}),
    }
    write_json_atomic(result, result_file)
    return result


def _frozen_fold(
    config: TrainConfig,
    fold: Fold,
    labels: list[str],
    run_dir: Path,
    info: dict[str, Any],
    criterion: str,
    frozen: FrozenContext,
    knn_tuning: str = "validation",
) -> dict[str, Any]:
    """The frozen path of `run_fold`: the model stays in memory, every embedding is the head on
    cached features (equal to the live encoder's to float rounding). With `knn_tuning`
    "speakers", k, α, T and the temperatures are fitted over inner folds of the training speakers
    too (`emoknn.speaker_tuning`; the test speaker is not given to it)."""
    cache = frozen.cache
    resume = has_model(run_dir)
    # run_dir is OUT/<training>/<fold>: every fold of every training shares OUT/encoders/.
    stats = frozen.speaker_stats
    encoders = run_dir.parent.parent / ENCODER_STORE_DIR
    trained = train_frozen_fold(config, fold.train, fold.val, labels, run_dir, resume=resume,
                                extra_info=info, cache=cache, encoder=frozen.encoder,
                                speaker_stats=stats, encoder_store=encoders)  # fmt: skip
    model = trained.model
    assert model is not None
    train = embed_pooled(model, fold.train, pooled_originals(cache, fold.train, stats))
    val = embed_pooled(model, fold.val, pooled_originals(cache, fold.val, stats))
    extra = []
    if knn_tuning == "speakers" and model.predicts_classes:  # no classes: nothing to tune
        extra = out_of_fold_queries(config, fold.train, fold.val, labels, cache, frozen.encoder,
                                    stats)  # fmt: skip
    speakers = sorted({u.speaker for u in (fold.train + fold.val if extra else fold.val)})
    fitted = fit_knn_stage(model, train, val, criterion, "exact", extra, alphas_for(knn_tuning),
                           speakers)  # fmt: skip
    save_knn(run_dir, fitted.store, fitted.tuning)
    save_calibration(run_dir, fitted.calibration)
    test = embed_pooled(model, fold.test, pooled_originals(cache, fold.test, stats))
    return _score_fold(run_dir, fold, model, fitted.store, fitted.tuning, test, fitted.calibration)


def _calibration_fields(run_dir: Path) -> dict[str, Any]:
    """What a fold result records of its run's calibration: the two temperatures and the
    validation clips' NLL before → after (`emoknn.calibration`)."""
    if not (run_dir / CALIBRATION_FILE).is_file():
        return {}
    calibration = load_calibration(run_dir)
    return {"model_temperature": calibration.model_temperature,
            "interpolated_temperature": calibration.interpolated_temperature,
            "clips": calibration.clips, "speakers": calibration.speakers,
            "nll": calibration.nll}  # fmt: skip


def _partial_fold(config: TrainConfig, fold: Fold, labels: list[str], run_dir: Path,
                  info: dict[str, Any], criterion: str, context: PartialContext
                  ) -> dict[str, Any]:  # fmt: skip
    """The partial fine-tuning path of `run_fold` (`emoknn.partial`): every embedding (kNN
    datastore, validation, test speaker) is the tuned model's top on cached lower-layer frames."""
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    store = run_dir.parent.parent / ENCODER_STORE_DIR  # OUT/encoders, shared by every fold
    trained = train_partial_fold(config, fold.train, fold.val, labels, run_dir, context,
                                 resume=resume, extra_info=info, encoder_store=store)  # fmt: skip
    model, entry, cache = trained.model, trained.entry, context.frames
    assert model is not None

    def embedded(utterances: list[Utterance]) -> Embedded:
        return embed_frames(model, utterances, cache.gather(cache.keys(utterances, entry)), entry)

    # The paper's tuning on the validation speaker: inner heads over the training speakers
    # would each need their own fine-tuning (`emoknn.speaker_tuning` refuses it).
    fitted = fit_knn_stage(model, embedded(fold.train), embedded(fold.val), criterion,
                           speakers=sorted({u.speaker for u in fold.val}))  # fmt: skip
    save_knn(run_dir, fitted.store, fitted.tuning)
    save_calibration(run_dir, fitted.calibration)
    scores = _score_fold(run_dir, fold, model, fitted.store, fitted.tuning, embedded(fold.test),
                         fitted.calibration)  # fmt: skip
    scores["partial"] = {"cut_layer": trained.cut, "frame_entry": entry,
                         "epochs": trained.epochs, "seconds": trained.seconds}  # fmt: skip
    return scores


def prepare_partial(folds: list[Fold], labels: list[str], base_config: TrainConfig,
                    out_dir: Path, log: Callable[[str], None] | None = None
                    ) -> tuple[TrainConfig, PartialContext]:  # fmt: skip
    """Load the pretrained encoder once; fill the frame cache of every fold's lower layers (the
    test speakers' originals too: they are scored from the same frames) before any training."""
    root = Path(base_config.feature_cache or default_cache_dir(out_dir)).resolve()
    config = TrainConfig(**{**vars(base_config), "feature_cache": str(root)})
    context = load_context(config, labels, root)
    everyone = list({u.id: u for f in folds for u in f.train + f.val + f.test}.values())
    context.features.fill(everyone, None)  # pooled originals: the probe and the cut's choice
    entries = sorted({choose_cut(config, context, f.train, f.val, labels) - config.tune_layers
                      for f in folds})  # fmt: skip
    trained_on = list({u.id: u for f in folds for u in f.train}.values())
    say = log or (lambda message: None)
    say(f"Partial fine-tuning: frames of hidden-state entries {entries} (top "
        f"{config.tune_layers} layers tuned)")  # fmt: skip
    fill_frames(context, config, entries, everyone, trained_on, say)
    return config, context


def prepare_frozen(
    folds: list[Fold],
    labels: list[str],
    base_config: TrainConfig,
    tables: Iterable[str],
    out_dir: Path,
    log: Callable[[str], None] | None = None,
) -> tuple[TrainConfig, FrozenContext]:
    """Load the encoder once and fill the feature cache for every fold and training at once:
    originals of every utterance, K views of every training utterance for each augmentation the
    tables use. Returns the config with the cache folder resolved, and the shared context."""
    root = Path(base_config.feature_cache or default_cache_dir(out_dir)).resolve()
    config = TrainConfig(**{**vars(base_config), "feature_cache": str(root)})
    model = build_frozen_model(config, labels)
    cache = FeatureCache(root, model, config.max_seconds, config.cache_precision)
    everyone = list({u.id: u for f in folds for u in f.train + f.val + f.test}.values())
    trained_on = list({u.id: u for f in folds for u in f.train}.values())
    augmentations = sorted({spec.augment for spec in trainings_for(tables)})
    specs = [view_spec(TrainConfig(**{**vars(config), "augment": name})) for name in augmentations]
    total = len(everyone) + len(trained_on) * config.cache_views * len(specs)
    if config.speaker_norm:
        check_speaker_norm(everyone)  # before the fill
    say = log or (lambda message: None)
    say(f"Feature cache: {cache.folder} (originals of {len(everyone)} utterances, "
        f"{config.cache_views} views of {len(trained_on)} for {', '.join(augmentations)}: "
        f"{total} entries)")  # fmt: skip
    start = time.perf_counter()
    computed = cache.fill(everyone, None, progress=_progress_printer(log, "originals")).computed
    for name, spec in zip(augmentations, specs, strict=True):
        progress = _progress_printer(log, f"{name} views")
        computed += cache.fill(trained_on, spec, originals=False, progress=progress).computed
    seconds = time.perf_counter() - start
    say(f"Feature cache: {computed} of {total} entries computed in {seconds:.0f} s; "
        f"{cache.size_bytes() / 2**20:.1f} MB on disk")  # fmt: skip
    stats = None
    if config.speaker_norm:  # each speaker's own clips, the test speakers' unlabelled ones too
        stats = speaker_statistics(cache, everyone)
        say(f"Speaker normalisation (transductive): statistics of {len(stats)} speakers")
    return config, FrozenContext(cache, model.encoder, stats)


def _progress_printer(
    log: Callable[[str], None] | None, what: str
) -> Callable[[int, int], None] | None:
    """Report a fill at most every 10 % (and at its end)."""
    if log is None:
        return None
    reported = [-1]

    def progress(done: int, total: int) -> None:
        tenth = 10 * done // total
        if tenth > reported[0]:
            reported[0] = tenth
            log(f"  {what}: {done}/{total}")

    return progress


def is_helper_process() -> bool:
    """True in the non-first processes of a DDP run (Lightning sets these variables)."""
    return bool(int(os.environ.get("LOCAL_RANK", "0")) or int(os.environ.get("NODE_RANK", "0")))


def _write_model_predictions(
    run_dir: Path, test: list[Utterance], labels: list[str], predicted: np.ndarray
) -> None:
    """predictions.csv of a single-inference row (baseline, probe): the model's column only."""
    with (
        atomic_path(run_dir / PREDICTIONS_FILE) as temporary,
        temporary.open("w", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["id", "speaker", "label", "model"])
        for utterance, label_id in zip(test, predicted, strict=True):
            writer.writerow([utterance.id, utterance.speaker, utterance.label, labels[label_id]])


def _model_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    return {"model": {
        "wa": weighted_accuracy(truth, predicted), "ua": unweighted_accuracy(truth, predicted),
        "k": None, "alpha": 0.0, "temperature": None,
    }}  # fmt: skip


def run_baseline_fold(fold: Fold, labels: list[str], out_dir: Path, task: str = "categorical",
                      feature_set: str = baseline.DEFAULT_FEATURES) -> dict[str, Any]:  # fmt: skip
    """Fit and evaluate the classical baseline on one fold; skip it if already finished with the
    same feature set (a fold finished with other features, or before openSMILE, is redone).

    Features come from the cross-validation's cache (`OUT/baseline/features-<set>.npz`): computed
    once per utterance, reused by every fold and every resumed run. The logistic regression runs
    for the categorical tasks, the ridge regression (`dimensional` part) for the dimensional ones.
    """
    run_dir = out_dir / baseline.NAME / fold.name
    result_file = run_dir / FOLD_RESULT_FILE
    if result_file.is_file():
        finished = read_fold_result(result_file)
        if finished.get("features") == feature_set:
            return finished
    features = baseline.cached_features(
        [*fold.train, *fold.val, *fold.test],
        out_dir / baseline.NAME / f"features-{feature_set}.npz",
        feature_set,
    )
    x = lambda us: np.stack([features[u.id] for u in us])  # noqa: E731
    result: dict[str, Any] = {
        "training": baseline.NAME,
        "label": baseline.label(feature_set),
        "description": baseline.description(feature_set),
        "features": feature_set,
        "task": task,
        **_fold_fields(fold),
        "scores": {},
    }
    if task != "categorical":
        result["dimensional"] = _ridge_fold(fold, x, run_dir)
        result["ridge_description"] = baseline.RIDGE_DESCRIPTION
    if task != "dimensional":
        index = {label: i for i, label in enumerate(labels)}
        y = lambda us: np.array([index[u.label] for u in us])  # noqa: E731
        model = baseline.FeatureBaseline().fit(x(fold.train), y(fold.train), x(fold.val),
                                               y(fold.val))  # fmt: skip
        truth, predicted = y(fold.test), model.predict(x(fold.test))
        _write_model_predictions(run_dir, fold.test, labels, predicted)
        result["c"] = model.c_
        result["scores"] = _model_scores(truth, predicted)
    write_json_atomic(result, result_file)
    return result


def probe_done(fold: Fold, out_dir: Path) -> bool:
    return (out_dir / probe.NAME / fold.name / FOLD_RESULT_FILE).is_file()


def run_probe_fold(
    fold: Fold,
    labels: list[str],
    out_dir: Path,
    features_of: probe.FeaturesOf | None,
    encoder: str,
) -> dict[str, Any]:
    """Fit and evaluate the encoder probe (`emoknn.probe`) on one fold; skip it if already
    finished. `features_of` gives the cached pooled layers of the (pretrained, un-tuned) encoder;
    it is only called when the fold is not finished yet."""
    run_dir = out_dir / probe.NAME / fold.name
    result_file = run_dir / FOLD_RESULT_FILE
    if result_file.is_file():
        return read_fold_result(result_file)
    if features_of is None:
        raise ConfigError("the encoder probe needs the encoder's cached features")
    fitted = probe.fit_fold(fold.train, fold.val, fold.test, labels, features_of)
    _write_model_predictions(run_dir, fold.test, labels, fitted.predicted)
    result = {
        "training": probe.NAME,
        "label": probe.LABEL,
        "description": probe.DESCRIPTION,
        "encoder": encoder,
        "layer": fitted.probe.layer_,
        "c": fitted.probe.c_,
        "val_ua": fitted.probe.val_ua_,
        "val_ua_by_layer": [float(x) for x in fitted.probe.scores_.max(axis=1)],
        "seconds": round(fitted.seconds, 3),
        **_fold_fields(fold),
        "scores": _model_scores(fitted.truth, fitted.predicted),
    }
    write_json_atomic(result, result_file)
    return result


def _ridge_fold(fold: Fold, x: Callable, run_dir: Path) -> dict[str, Any]:
    """The ridge baseline's attribute scores on the fold's test speaker (model inference only)."""
    attributes = rated_attributes(fold.train + fold.val + fold.test, "dimensional")
    y = lambda us: attribute_matrix(us, attributes)  # noqa: E731
    ridge = baseline.FeatureRidge().fit(x(fold.train), y(fold.train), x(fold.val), y(fold.val))
    truth, predicted = y(fold.test), ridge.predict(x(fold.test))
    with (
        atomic_path(run_dir / ATTRIBUTE_PREDICTIONS_FILE) as temporary,
        temporary.open("w", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["id", "speaker", *(f"{a}_{w}" for a in attributes
                                            for w in ("true", "model"))])  # fmt: skip
        for row, utterance in enumerate(fold.test):
            cells = [f"{v:.6g}" for a in range(len(attributes))
                     for v in (truth[row, a], predicted[row, a])]  # fmt: skip
            writer.writerow([utterance.id, utterance.speaker, *cells])
    scores = {**regression_scores(truth, predicted, attributes), "k": None, "alpha": 0.0,
              "temperature": None, "ridge_alpha": ridge.alpha_}  # fmt: skip
    return {"attributes": attributes, "model": scores}


def crossval(
    utterances: list[Utterance],
    folds: list[Fold],
    base_config: TrainConfig,
    out_dir: str | os.PathLike,
    tables: Iterable[str] = ("main",),
    corpus_info: dict[str, Any] | None = None,
    on_fold_done: Callable[[dict[str, Any]], None] | None = None,
    criterion: str = "ua",
    with_baseline: bool = True,
    log: Callable[[str], None] | None = None,
    with_probe: bool = True,
    knn_tuning: str | None = None,
    baseline_features: str = baseline.DEFAULT_FEATURES,
) -> list[dict[str, Any]]:
    """Run every (training, fold) not yet finished in `out_dir`, and on each fold first the
    classical baseline (unless `with_baseline` is False) and the encoder probe (unless
    `with_probe` is False, or the task is "dimensional": the probe is a classifier); return all
    fold results.

    Everything is checked before anything is written: the tables and criterion, and, when
    `out_dir` already holds a cross-validation, that it was run with the same settings on the
    same corpus (its finished folds are reused, so other settings would be reported over them).
    With a frozen-encoder config, one feature-cache fill serves every fold and training (`log`
    hears where the cache is, its progress and size). The encoder probe reads the same cache; with
    a fine-tuning config it reads the pretrained encoder's originals, cached in the same place
    (`--feature-cache`, else beside `out_dir`), filled only when a fold's probe is not finished —
    so resuming a cross-validation from before the probe existed adds its rows. The baseline uses
    openSMILE's `baseline_features` (`emoknn.baseline.FEATURE_SETS`).

    `knn_tuning` (`emoknn.speaker_tuning`): "speakers" (the default with a frozen encoder) or the
    paper's "validation" (the default when fine-tuning).
    """
    out_dir = Path(out_dir)
    baseline.check_feature_set(baseline_features)
    tables = list(tables)
    specs = trainings_for(tables)
    if criterion not in ("ua", "wa"):
        raise ConfigError(f"criterion must be 'ua' or 'wa', got {criterion!r}")
    frozen_encoder = base_config.freeze_encoder
    knn_tuning = check_knn_tuning(knn_tuning or default_knn_tuning(frozen_encoder), frozen_encoder)
    labels = label_names(utterances)
    experiment = {
        "corpus": dict(corpus_info or {}), "labels": labels, "tables": tables,
        "criterion": criterion, "knn_tuning": knn_tuning, "folds": [f.name for f in folds],
        "corpus_ids_sha256": ids_digest([u.id for u in utterances]),
        "train_config": vars(base_config), "emoknn_version": __version__,
    }  # fmt: skip
    experiment_file = out_dir / EXPERIMENT_FILE
    if experiment_file.is_file():
        stored = read_json_object(experiment_file)
        _check_same_experiment(out_dir, stored, experiment)
        # More tables or folds may be added to an experiment: the record keeps them all.
        experiment["tables"] = _union(stored.get("tables"), tables)
        experiment["folds"] = _union(stored.get("folds"), experiment["folds"])
    elif out_dir.is_dir() and list(out_dir.glob(f"*/*/{FOLD_RESULT_FILE}")):
        raise ConfigError(
            f"{out_dir}: holds finished folds but no {EXPERIMENT_FILE} saying with which settings; "
            "choose another --out"
        )
    frozen = None
    if base_config.freeze_encoder and not is_helper_process():
        base_config, frozen = prepare_frozen(folds, labels, base_config, tables, out_dir, log)
        experiment["train_config"] = vars(base_config)  # with the cache folder resolved
    elif base_config.tune_layers and not is_helper_process():
        base_config, frozen = prepare_partial(folds, labels, base_config, out_dir, log)
        experiment["train_config"] = vars(base_config)
    probe_features: probe.FeaturesOf | None = None
    # The probe is a classifier: a dimensional model (no classes) has nothing to compare it with.
    with_probe = with_probe and not is_helper_process() and base_config.task != "dimensional"
    if with_probe and isinstance(frozen, PartialContext):
        probe_features = frozen.features.originals
    elif with_probe and frozen is not None:
        probe_features = frozen.cache.originals
    elif with_probe and not all(probe_done(fold, out_dir) for fold in folds):
        everyone = list({u.id: u for f in folds for u in f.train + f.val + f.test}.values())
        root = base_config.feature_cache or default_cache_dir(out_dir)
        probe_features = probe.prepare_features(everyone, base_config, labels, root, log)
    write_json_atomic(experiment, experiment_file)
    info = experiment["corpus"]
    results = []
    for fold in folds:
        if with_baseline and not is_helper_process():
            results.append(run_baseline_fold(fold, labels, out_dir, base_config.task,
                                             baseline_features))
            if on_fold_done is not None:
                on_fold_done(results[-1])
        if with_probe:
            results.append(
                run_probe_fold(fold, labels, out_dir, probe_features, base_config.encoder)
            )
            if on_fold_done is not None:
                on_fold_done(results[-1])
        for spec in specs:
            result = run_fold(
                spec, fold, labels, base_config, out_dir, info, criterion, frozen, knn_tuning
            )
            if result is None:
                continue
            results.append(result)
            if on_fold_done is not None:
                on_fold_done(result)
    return results


# Settings that change how a run executes, not what it computes (the feature cache's folder may
# move: its entries are keyed by everything that changes a value).
RUNTIME_SETTINGS = ("num_workers", "progress_bar", "preset_name", "preload_audio", "tensorboard",
                    "accelerator", "devices", "num_nodes", "strategy",
                    "feature_cache")  # fmt: skip


def _union(stored: Any, new: list[str]) -> list[str]:
    previous = [x for x in stored if isinstance(x, str)] if isinstance(stored, list) else []
    return previous + [x for x in new if x not in previous]


def _check_same_experiment(out_dir: Path, stored: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to continue a cross-validation with settings other than those it was run with."""
    differences = []
    old_config = stored.get("train_config")
    if not isinstance(old_config, dict):
        raise FileFormatError(f"{out_dir / EXPERIMENT_FILE}: 'train_config' must be an object")
    for key, value in new["train_config"].items():
        if key not in RUNTIME_SETTINGS and old_config.get(key) != value:
            differences.append(f"{key} {old_config.get(key)!r} → {value!r}")
    for key in ("criterion", "labels"):
        if key in stored and stored[key] != new[key]:
            differences.append(f"{key} {stored[key]!r} → {new[key]!r}")
    # Cross-validations from before `knn_tuning` existed tuned on the validation speaker.
    if stored.get("knn_tuning", "validation") != new["knn_tuning"]:
        differences.append(f"knn_tuning {stored.get('knn_tuning', 'validation')!r} → "
                           f"{new['knn_tuning']!r}")  # fmt: skip
    old_corpus = stored.get("corpus") if isinstance(stored.get("corpus"), dict) else {}
    if old_corpus.get("scheme", new["corpus"].get("scheme")) != new["corpus"].get("scheme"):
        differences.append(f"scheme {old_corpus.get('scheme')!r} → {new['corpus'].get('scheme')!r}")
    if differences:
        raise ConfigError(
            f"{out_dir}: holds a cross-validation with other settings ({'; '.join(differences)}); "
            "its finished folds would be reported under the new ones. Use the original settings "
            "to continue it, or another --out"
        )
    digest = stored.get("corpus_ids_sha256")
    if digest is not None and digest != new["corpus_ids_sha256"]:
        raise ConfigError(
            f"{out_dir}: holds a cross-validation of other corpus utterances (of "
            f"{old_corpus.get('corpus', '?')}); give that corpus, or another --out"
        )


def read_fold_result(path: Path) -> dict[str, Any]:
    """A fold_result.json, checked: the fields reports use, scores in [0, 1]."""
    result = read_json_object(path)
    for key in ("training", "label", "fold", "test_speaker", "val_speaker"):
        if not isinstance(result.get(key), str):
            raise FileFormatError(f"{path}: {key!r} must be a string")
    if not isinstance(result.get("num_test"), int) or isinstance(result.get("num_test"), bool):
        raise FileFormatError(f"{path}: 'num_test' must be an integer")
    if result["training"] == probe.NAME:  # reports and logs show what the probe chose
        layer, c = result.get("layer"), result.get("c")
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise FileFormatError(f"{path}: 'layer' must be a layer index (an integer ≥ 0)")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
            raise FileFormatError(f"{path}: 'c' must be a positive number")
    scores = result.get("scores")
    dimensional = result.get("dimensional")
    if dimensional is not None:
        _check_dimensional(dimensional, path)
    if not isinstance(scores, dict) or ("model" not in scores and dimensional is None):
        raise FileFormatError(f"{path}: 'scores' must hold at least the model's scores")
    for inference in (i for i in INFERENCES if i in scores):  # the baseline has the model's only
        score = scores[inference]
        if not isinstance(score, dict):
            raise FileFormatError(f"{path}: scores.{inference} must be a JSON object")
        for metric in ("wa", "ua"):
            value = score.get(metric)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0.0 <= value <= 1.0)
            ):
                raise FileFormatError(f"{path}: scores.{inference}.{metric} must lie in [0, 1]")
    return result


def _check_dimensional(dimensional: Any, path: Path) -> None:
    """The `dimensional` part of a fold result: attribute names, and per inference a CCC and a
    Pearson r in [−1, 1] and an MAE ≥ 0 for each attribute and their mean."""
    attributes = dimensional.get("attributes") if isinstance(dimensional, dict) else None
    if not isinstance(attributes, list) or not attributes:
        raise FileFormatError(f"{path}: dimensional.attributes must be a list of names")
    if "model" not in dimensional:
        raise FileFormatError(f"{path}: dimensional.model is missing")
    for inference in (i for i in INFERENCES if i in dimensional):  # the baseline: model only
        scores = dimensional.get(inference)
        if not isinstance(scores, dict):
            raise FileFormatError(f"{path}: dimensional.{inference} must be a JSON object")
        for name in [*attributes, "mean"]:
            values = scores.get(name)
            if not isinstance(values, dict):
                raise FileFormatError(f"{path}: dimensional.{inference}.{name} is missing")
            for metric, low, high in (("ccc", -1, 1), ("pearson", -1, 1), ("mae", 0, np.inf)):
                value = values.get(metric)
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not (low - 1e-9 <= value <= high + 1e-9)
                ):
                    raise FileFormatError(
                        f"{path}: dimensional.{inference}.{name}.{metric} must lie in "
                        f"[{low}, {high}]"
                    )


def collect_fold_results(run_dirs: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every fold_result.json under the given cross-validation folders (one level of training,
    one of fold), each with `dir` set to its folder; duplicates of a (training, fold) are an error
    unless identical."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise EmoknnError(f"{run_dir}: not a folder")
        files = sorted(run_dir.glob(f"*/*/{FOLD_RESULT_FILE}"))
        if not files:
            raise EmoknnError(f"{run_dir}: no finished folds (no */*/{FOLD_RESULT_FILE})")
        for path in files:
            result = read_fold_result(path)
            key = (result["training"], result["fold"])
            if key in found and (found[key]["scores"], found[key].get("dimensional")) != (
                result["scores"],
                result.get("dimensional"),
            ):
                raise EmoknnError(
                    f"{path}: fold {key[1]} of {key[0]} is also in {found[key]['dir']} with other "
                    "results; merge runs of the same settings only"
                )
            found[key] = {**result, "dir": str(path.parent)}
    return [found[key] for key in sorted(found)]


# Kept in the records when present: what the probe chose, and the baseline's C and feature set.
PROBE_FIELDS = ("layer", "c", "val_ua", "val_ua_by_layer", "features")


def result_records(fold_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (fold, variant), the rows of results.json."""
    records = []
    for result in fold_results:
        for inference in (i for i in INFERENCES if i in result["scores"]):  # baseline: model only
            score = result["scores"][inference]
            records.append({
                "variant": variant_name(result["label"], inference),
                "training": result["training"],
                "inference": inference,
                "fold": result["fold"],
                "test_speaker": result["test_speaker"],
                "val_speaker": result["val_speaker"],
                "num_test": result["num_test"],
                **score,
                # what the baseline (C) and the probe (layer, C) chose on the validation speaker,
                # and the baseline's feature set (`features`, e.g. eGeMAPSv02)
                **{key: result[key] for key in PROBE_FIELDS if key in result},
            })  # fmt: skip
    return records


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation (over folds, sample std, ddof=1) of WA and UA per variant,
    and the mean expected calibration error (`ece`, as predict shows the probabilities, and
    `ece_raw`, before calibration) where every fold has one; the learned variants first, then
    the encoder probe and the classical baseline (the bars they are measured against)."""
    last = {probe.NAME: 1, baseline.NAME: 2}
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: last.get(r["training"], 0)):  # stable
        by_variant.setdefault(record["variant"], []).append(record)
    summary = []
    for variant, rows in by_variant.items():
        wa = np.array([r["wa"] for r in rows])
        ua = np.array([r["ua"] for r in rows])
        spread = lambda x: float(x.std(ddof=1)) if len(x) > 1 else 0.0  # noqa: E731
        summary.append({
            "variant": variant, "training": rows[0]["training"], "inference": rows[0]["inference"],
            "folds": len(rows), "wa_mean": float(wa.mean()), "wa_std": spread(wa),
            "ua_mean": float(ua.mean()), "ua_std": spread(ua),
        })  # fmt: skip
        for key in ("ece", "ece_raw"):  # folds from before calibration existed have neither
            if all(isinstance(r.get(key), float) for r in rows):
                summary[-1][f"{key}_mean"] = float(np.mean([r[key] for r in rows]))
    return summary


def paper_comparisons(records: list[dict[str, Any]]) -> list[Comparison]:
    """The paper's comparisons that these records allow, each paired over the folds both sides
    have: CE+SCL vs CE; + kNN vs the model alone (CE, CE+SCL); the whole method (CE+SCL + kNN) vs
    CE; each augmentation vs mixed and each λ vs 0.1 (when those tables ran); and the best learned
    variant (highest mean UA; chosen after seeing the results, so its p-value is optimistic) vs
    the classical baseline and vs the encoder probe. Differences are first minus second."""
    scores: dict[str, dict[str, dict[str, float]]] = {}
    variant_of: dict[tuple[str, str], str] = {}
    for r in records:
        scores.setdefault(r["variant"], {})[r["fold"]] = {"ua": r["ua"], "wa": r["wa"]}
        variant_of[(r["training"], r["inference"])] = r["variant"]
    pairs = [
        (("scl", "model"), ("ce", "model")),
        (("ce", "interpolated"), ("ce", "model")),
        (("scl", "interpolated"), ("scl", "model")),
        (("scl", "interpolated"), ("ce", "model")),
    ]
    trainings = sorted({r["training"] for r in records})
    pairs += [((t, "model"), ("scl", "model")) for t in trainings
              if t.startswith("scl-") and not t.startswith("scl-l")]  # fmt: skip
    pairs += [((t, "model"), ("scl", "model")) for t in trainings if t.startswith("scl-l")]
    references = (baseline.NAME, probe.NAME)  # fitted on the folds, not learned variants
    learned = [v for (t, _), v in variant_of.items() if t not in references]
    if learned:
        mean_ua = lambda v: float(np.mean([s["ua"] for s in scores[v].values()]))  # noqa: E731
        best = max(learned, key=mean_ua)  # max keeps the first of ties
        best_key = next(key for key, v in variant_of.items() if v == best)
        pairs += [(best_key, (reference, "model")) for reference in references]
    comparisons = []
    for a, b in pairs:
        if a in variant_of and b in variant_of:
            name = f"{variant_of[a]} vs {variant_of[b]}"
            if b[0] in references:
                name = f"best learned variant ({variant_of[a]}) vs {variant_of[b]}"
            found = compare(name, variant_of[a], variant_of[b], scores)
            if found is not None:
                comparisons.append(found)
    return comparisons


def dimensional_label(result: dict[str, Any]) -> str:
    """A fold result's name where its attribute scores are shown: the ridge for the baseline,
    Reg for CE in a dimensional-only model (no cross-entropy: the regression loss alone)."""
    if result["training"] == baseline.NAME:
        return baseline.RIDGE_LABEL
    if result.get("task") == "dimensional":
        return result["label"].replace("CE", "Reg")
    return result["label"]


def dimensional_records(fold_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per (fold, variant) with attribute scores: `ccc_<attribute>`,
    `pearson_<attribute>`, `mae_<attribute>` for each attribute and `mean`, and k, α, T."""
    records = []
    for result in fold_results:
        dimensional = result.get("dimensional")
        if not dimensional:
            continue
        label = dimensional_label(result)
        for inference in (i for i in INFERENCES if i in dimensional):
            scores = dimensional[inference]
            record = {
                "variant": variant_name(label, inference), "training": result["training"],
                "inference": inference, "fold": result["fold"],
                "test_speaker": result["test_speaker"], "val_speaker": result["val_speaker"],
                "num_test": result["num_test"], "attributes": dimensional["attributes"],
                "k": scores.get("k"), "alpha": scores.get("alpha", 0.0),
                "temperature": scores.get("temperature"),
            }  # fmt: skip
            for name in [*dimensional["attributes"], "mean"]:
                for metric in ("ccc", "pearson", "mae"):
                    record[f"{metric}_{name}"] = scores[name][metric]
            records.append(record)
    return records


def summarize_dimensional(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over folds of every score of `dimensional_records`."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(record)
    summary = []
    for variant, rows in by_variant.items():
        row = {"variant": variant, "training": rows[0]["training"],
               "inference": rows[0]["inference"], "folds": len(rows),
               "attributes": rows[0]["attributes"]}  # fmt: skip
        for key in (k for k in rows[0] if k.split("_")[0] in ("ccc", "pearson", "mae")):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            row[f"{key}_mean"] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary.append(row)
    return summary


def dimensional_comparisons(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired comparisons of the mean CCC over attributes (`emoknn.stats.paired_test`, per fold):
    + kNN vs the model alone for each training; CE+SCL vs CE (models alone); the best learned
    variant (highest mean CCC, chosen after seeing the results) vs the ridge baseline."""
    scores: dict[str, dict[str, float]] = {}
    variant_of: dict[tuple[str, str], str] = {}
    for r in records:
        scores.setdefault(r["variant"], {})[r["fold"]] = r["ccc_mean"]
        variant_of[(r["training"], r["inference"])] = r["variant"]
    trainings = sorted({t for t, _ in variant_of if t != baseline.NAME})
    pairs = [((t, "interpolated"), (t, "model")) for t in trainings]
    pairs.append((("scl", "model"), ("ce", "model")))
    learned = [v for (t, _), v in variant_of.items() if t != baseline.NAME]
    if learned and (baseline.NAME, "model") in variant_of:
        best = max(learned, key=lambda v: float(np.mean(list(scores[v].values()))))
        best_key = next(k for k, v in variant_of.items() if v == best)
        pairs.append((best_key, (baseline.NAME, "model")))
    comparisons = []
    for a, b in pairs:
        if a not in variant_of or b not in variant_of:
            continue
        first, second = variant_of[a], variant_of[b]
        folds = sorted(set(scores[first]) & set(scores[second]))
        if not folds:
            continue
        result = paired_test(np.array([scores[first][f] for f in folds]),
                             np.array([scores[second][f] for f in folds]))  # fmt: skip
        name = f"{first} vs {second}"
        if b[0] == baseline.NAME:
            name = f"best learned variant ({first}) vs {second}"
        comparisons.append({"name": name, "a": first, "b": second, "folds": folds,
                            "metric": "ccc_mean", **asdict(result)})  # fmt: skip
    return comparisons


def write_results(fold_results: list[dict[str, Any]], out_dir: str | os.PathLike,
                  meta: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Write results.json (records per fold and variant, the summary, the paired comparisons)."""
    records = result_records(fold_results)
    baselines = [r for r in fold_results if r["training"] == baseline.NAME]
    feature_sets = sorted({r["features"] for r in baselines if "features" in r})
    descriptions = sorted({r["description"] for r in baselines if "description" in r})
    results = {
        **meta,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "emoknn_version": __version__,
        "records": records,
        "summary": summarize(records),
        "comparisons": [c.to_dict() for c in paper_comparisons(records)],
        "baseline": "; ".join(descriptions) or baseline.DESCRIPTION,
        # the baseline's openSMILE feature set (a list if merged runs used several)
        "baseline_features": feature_sets[0] if len(feature_sets) == 1 else feature_sets,
        "probe": probe.DESCRIPTION,
        "fold_dirs": {f"{r['training']}/{r['fold']}": r["dir"] for r in fold_results if "dir" in r},
    }
    dimensional = dimensional_records(fold_results)
    if dimensional:  # dimensional tasks: attribute scores beside (or instead of) class scores
        results["dimensional_records"] = dimensional
        results["dimensional_summary"] = summarize_dimensional(dimensional)
        results["dimensional_comparisons"] = dimensional_comparisons(dimensional)
        results["ridge_baseline"] = baseline.RIDGE_DESCRIPTION
    write_json_atomic(results, Path(out_dir) / "results.json")
    return results

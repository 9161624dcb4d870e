"""Training configuration, shared by both ways of training: fine-tuning (`emoknn.train`) and the
frozen encoder's head-only loop (`emoknn.frozen`).

`TrainConfig` (every setting, validated as it is built: one line naming the first bad value), the
presets (`paper`, `tiny`, `frozen`, `finetune-cpu`) and `make_config`; the checks the loops run
before anything is written (hardware, labels, the run folder and what a resume may change); the
model a config describes (`model_config_for`); the per-epoch seed; and `TrainResult`, what a
loop returns. Each loop module holds only its loop.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoknn.attributes import attribute_matrix, attribute_statistics, rated_attributes
from emoknn.augment import AUGMENTATION_NAMES
from emoknn.checks import ACCELERATORS, check_accelerator, check_choice, check_int, check_number
from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError, EmoknnError
from emoknn.files import check_writable_folder
from emoknn.losses import REGRESSION_LOSSES
from emoknn.model import POOLINGS, PROJECTION_KINDS, TASKS, ModelConfig, default_normalization
from emoknn.model_folder import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    RUN_CONFIG_FILE,
    has_model,
    ids_digest,
    read_run_config,
)
from emoknn.speaker_stats import MIN_CLIPS

MONITORS = {"val_loss": "min", "val_ua": "max", "val_wa": "max", "val_ccc": "max"}
LAYER_INITS = ("uniform", "best")
# Lightning precisions, or auto = bf16-mixed on a GPU that supports it, else 32-true.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


@dataclass
class TrainConfig:
    """Training settings; defaults are the paper's (the `paper` preset)."""

    encoder: str = "facebook/wav2vec2-base"
    augment: str = "mixed"
    rir_dir: str | None = None
    contrastive_weight: float = 0.1  # λ in L = (1 − λ)·CE + λ·SCL; 0 = CE-only baseline
    # What the head learns: classes, attributes (arousal, valence, dominance) or both; the
    # objective of each is `emoknn.losses.task_loss`. regression_loss: "ccc" (1 − CCC) or "mse".
    task: str = "categorical"
    regression_loss: str = "ccc"
    temperature: float = 0.07  # τ of SupCon
    optimizer: str = "sgd"  # sgd | adamw
    learning_rate: float = 1e-4
    momentum: float = 0.9  # SGD momentum (the paper does not state it)
    weight_decay: float = 0.0
    batch_size: int = 12  # originals per batch; each brings its view, so 24 rows
    max_seconds: float = 7.5
    max_epochs: int = 150
    lr_patience: int = 20  # epochs without validation-loss improvement before LR × lr_factor
    lr_factor: float = 0.1
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"  # which validation figure picks best.ckpt: val_loss, val_ua, val_wa
    freeze_feature_encoder: bool = True
    layer_weighting: bool = False
    head_dropout: float = 0.1
    projection_size: int = 0  # > 0: an MLP maps the pooled output to a P-wide embedding
    projection_dropout: float = 0.0
    normalize_layers: bool = False  # standardise each layer's pooled output before weighting
    projection_kind: str = "mlp"  # mlp (Linear, GELU, dropout, Linear) or linear (one Linear)
    pooling: str = "mean"  # per-layer pooling over frames: mean, or mean_std (statistics pooling)
    standardize: bool = False  # standardise pooled features with training-split statistics
    input_dropout: float = 0.0  # dropout on the pooled (layer-weighted) vector
    layer_lr_scale: float = 1.0  # the layer weights' learning rate = this × learning_rate
    # uniform: the layer weights start equal; best: they start at 0.75 on the layer a ridge probe
    # (training speakers) scores best on the validation speaker (frozen encoder only)
    layer_init: str = "uniform"
    # Standardise each speaker's features with that speaker's own clips (transductive: the test
    # speaker's unlabelled clips too); an explicit evaluation option, never a preset default.
    speaker_norm: bool = False
    # Frozen encoder (emoknn.frozen): train only the head, on encoder outputs computed once per
    # (utterance, view) and cached on disk.
    freeze_encoder: bool = False
    cache_views: int = 4  # K augmented views per training utterance in the feature cache (≥ 0)
    cache_precision: str = "fp32"  # fp32 | bf16-views | bf16: how the cache is filled (features)
    feature_cache: str | None = None  # its folder; None = `emoknn-features` beside the output
    # Partial fine-tuning (emoknn.partial): the top `tune_layers` encoder layers train, on frames
    # of the frozen layers below computed once per (utterance, view) into a frame cache; layers
    # above `cut_layer` are dropped (0 = chosen per fold by a ridge probe on the validation
    # speaker, at least tune_layers). The tuned layers have their own AdamW learning rate.
    tune_layers: int = 0
    cut_layer: int = 0
    tune_learning_rate: float = 5e-5
    frame_cache_gb: float = 20.0  # a fill that would write more refuses before it starts
    seed: int = 0
    num_workers: int = 2
    preload_audio: bool = False
    precision: str = "auto"  # auto = bf16-mixed on a GPU that supports it, else 32-true
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto = ddp when devices × nodes > 1
    tensorboard: bool = False
    progress_bar: bool = True
    preset_name: str = "custom"  # which preset these settings started from (for reports)

    def __post_init__(self) -> None:
        # One line naming the setting on the first bad value (never a dump of the whole config).
        if not isinstance(self.encoder, str) or not self.encoder.strip():
            raise ConfigError(
                f"encoder must be a Hugging Face hub name or a local folder, got {self.encoder!r}",
                setting="encoder",
            )
        check_choice(self.augment, "augment", AUGMENTATION_NAMES)
        check_number(self.contrastive_weight, "contrastive_weight", 0.0, 1.0)
        check_choice(self.task, "task", TASKS)
        check_choice(self.regression_loss, "regression_loss", REGRESSION_LOSSES)
        check_number(self.temperature, "temperature", 0.0, strict_minimum=True)
        check_choice(self.optimizer, "optimizer", ("sgd", "adamw"))
        check_number(self.learning_rate, "learning_rate", 0.0, strict_minimum=True)
        check_number(self.momentum, "momentum", 0.0, 1.0)
        check_number(self.weight_decay, "weight_decay", 0.0)
        check_int(self.batch_size, "batch_size", 2)
        check_number(self.max_seconds, "max_seconds", 0.025, strict_minimum=True)
        check_int(self.max_epochs, "max_epochs", 1)
        check_int(self.lr_patience, "lr_patience", 0)
        check_number(self.lr_factor, "lr_factor", 0.0, 1.0, strict_minimum=True)
        if self.early_stopping_patience is not None:
            check_int(self.early_stopping_patience, "early_stopping_patience", 0)
        check_choice(self.monitor, "monitor", MONITORS)
        if self.task == "dimensional" and self.monitor in ("val_ua", "val_wa"):
            raise ConfigError(
                f"monitor {self.monitor} needs classes; a dimensional model is watched by "
                "val_loss or val_ccc",
                setting="monitor",
            )
        if self.task == "categorical" and self.monitor == "val_ccc":
            raise ConfigError("monitor val_ccc needs --task dimensional or both",
                              setting="monitor")  # fmt: skip
        check_number(self.head_dropout, "head_dropout", 0.0, 0.99)
        check_int(self.seed, "seed", 0, 2**32 - 1)
        check_int(self.num_workers, "num_workers", 0)
        check_choice(self.precision, "precision", PRECISIONS)
        check_choice(self.accelerator, "accelerator", ACCELERATORS)
        check_int(self.devices, "devices", 1)
        check_int(self.num_nodes, "num_nodes", 1)
        check_int(self.cache_views, "cache_views", 0)  # 0: the head trains on originals only
        check_choice(self.cache_precision, "cache_precision", ("fp32", "bf16-views", "bf16"))
        check_number(self.input_dropout, "input_dropout", 0.0, 0.99)
        check_choice(self.pooling, "pooling", POOLINGS)
        check_choice(self.layer_init, "layer_init", LAYER_INITS)
        check_choice(self.projection_kind, "projection_kind", PROJECTION_KINDS)
        check_number(self.layer_lr_scale, "layer_lr_scale", 0.0, strict_minimum=True)
        check_int(self.tune_layers, "tune_layers", 0)
        check_int(self.cut_layer, "cut_layer", 0)
        check_number(self.tune_learning_rate, "tune_learning_rate", 0.0, strict_minimum=True)
        check_number(self.frame_cache_gb, "frame_cache_gb", 0.0, strict_minimum=True)
        if self.tune_layers and self.freeze_encoder:
            raise ConfigError("tune_layers trains encoder layers: it cannot go with "
                              "freeze_encoder", setting="tune_layers")  # fmt: skip
        if self.cut_layer and self.cut_layer < self.tune_layers:
            raise ConfigError(f"cut_layer {self.cut_layer} keeps fewer layers than the "
                              f"{self.tune_layers} to tune", setting="cut_layer")  # fmt: skip
        if self.speaker_norm and not self.freeze_encoder:
            raise ConfigError(
                "speaker_norm needs a frozen encoder (freeze_encoder): the fine-tuning path does "
                "not standardise per speaker",
                setting="speaker_norm",
            )
        if self.standardize and not self.freeze_encoder:
            raise ConfigError(
                "standardize needs a frozen encoder (freeze_encoder): its statistics are those of "
                "the training split's cached features",
                setting="standardize",
            )


def check_hardware(config: TrainConfig) -> None:
    """Refuse settings this machine cannot run (a GPU it lacks, fp16 on a CPU) before any work."""
    check_accelerator(config.accelerator, config.devices)
    on_cpu = config.accelerator == "cpu" or (
        config.accelerator == "auto" and not torch.cuda.is_available()
    )
    cluster = {"MASTER_ADDR", "NODE_RANK", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"} & set(os.environ)
    if config.num_nodes > 1 and not cluster:
        # Lightning would wait forever for the other nodes to join.
        raise ConfigError(
            f"num_nodes {config.num_nodes} needs a multi-node launch (SLURM, or torchrun with "
            "MASTER_ADDR and NODE_RANK set on every node); on one machine use devices",
            setting="num_nodes",
        )
    if on_cpu and config.precision.startswith("16-"):
        raise ConfigError(
            f"precision {config.precision!r} needs a CUDA GPU (fp16 is not supported on the CPU); "
            "use 32-true or bf16-mixed",
            setting="precision",
        )


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # A 2-layer hidden-64 encoder from random weights, for tests and CPU demos; it wants a faster
    # optimiser than the paper's SGD at 1e-4. Its random CNN stays frozen (random conv features):
    # on the synthetic corpus that trained 2.6x faster on 2 CPU cores with the same validation UA
    # (0.52 vs 0.43-0.58 after 8 epochs) and a smoother validation loss.
    "tiny": {
        "encoder": "tiny",
        "optimizer": "adamw",
        "learning_rate": 1e-3,
        "batch_size": 16,
        "max_seconds": 3.0,
        "max_epochs": 12,
        "lr_patience": 3,
        "freeze_feature_encoder": True,
        "head_dropout": 0.0,
        "num_workers": 0,
        "preload_audio": True,
    },
    # The encoder frozen, its outputs cached; only the head trains (emoknn.frozen). How these
    # settings were chosen: docs/training.md, "No GPU? Use a frozen encoder".
    "frozen": {
        "freeze_encoder": True,
        "optimizer": "adamw",
        "learning_rate": 1e-3,
        "weight_decay": 0.05,
        "batch_size": 64,
        "max_epochs": 100,
        "lr_patience": 5,
        "early_stopping_patience": 15,
        "layer_weighting": True,
        "standardize": True,
        "layer_lr_scale": 30.0,
        "layer_init": "best",
        "normalize_layers": True,
        "input_dropout": 0.3,
        "projection_kind": "linear",
        "projection_size": 128,
        "projection_dropout": 0.0,
        "head_dropout": 0.0,
        "cache_views": 0,
        "num_workers": 0,
    },
    # Partial fine-tuning on two CPU cores (emoknn.partial): the top 2 layers below a cut chosen
    # per fold, on cached frames of the layers beneath; docs/training.md, "finetune-cpu".
    "finetune-cpu": {
        "tune_layers": 2,
        "optimizer": "adamw",
        "learning_rate": 1e-3,
        "tune_learning_rate": 5e-5,
        "weight_decay": 0.01,
        "batch_size": 16,
        "max_epochs": 8,
        "lr_patience": 2,
        "early_stopping_patience": 3,
        "monitor": "val_ua",
        "cache_views": 2,
        "head_dropout": 0.1,
        "num_workers": 0,
    },
}


def make_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    """The named preset with `overrides` applied (None values are ignored)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    values = {**PRESETS[preset], "preset_name": preset}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch` of a run seeded with `seed` (the same in both training loops)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# Settings that may change between a run and its resumption: how, not what, it trains.
# The feature cache's folder may move: its entries are keyed by everything that changes a value.
RESUMABLE_CHANGES = ("max_epochs", "num_workers", "progress_bar", "preset_name", "preload_audio",
                     "tensorboard", "feature_cache")  # fmt: skip


def _check_resume(run_dir: Path, config: TrainConfig, labels: list[str],
                  info: dict[str, Any]) -> None:  # fmt: skip
    """Refuse to resume a run with other settings, labels, fold or utterances."""
    stored = read_run_config(run_dir)
    changed = [
        f"{k} {stored['train_config'].get(k)!r} → {v!r}"
        for k, v in asdict(config).items()
        if stored["train_config"].get(k) != v and k not in RESUMABLE_CHANGES
    ]
    if changed:
        raise ConfigError(
            f"{run_dir}: cannot resume with different settings ({'; '.join(changed)}); use the "
            "original settings or a new run folder"
        )
    if stored["labels"] != list(labels):
        raise ConfigError(
            f"{run_dir}: cannot resume: it trained on labels {stored['labels']}, not {labels}"
        )
    for key in ("fold", "scheme", "training", "train_ids_sha256", "val_ids_sha256"):
        if key in stored and key in info and stored[key] != info[key]:
            what = "fold" if key in ("fold", "scheme", "training") else key.split("_")[0]
            raise ConfigError(
                f"{run_dir}: cannot resume: it trained on other utterances ({what} differs: "
                f"{stored.get('fold', '?')} of {stored.get('corpus', '?')}); give the same corpus "
                "and fold, or a new run folder"
            )


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_score: float | None
    epochs: int
    is_global_zero: bool = True  # False in the other processes of a DDP run


def check_trainable(train: list[Utterance], labels: list[str]) -> None:
    """A classifier needs at least two classes, and training data for at least two of them."""
    if len(labels) < 2:
        raise ConfigError(
            f"the corpus has {len(labels)} class ({', '.join(labels) or 'none'}); emotion "
            "recognition needs at least 2 labels"
        )
    present = sorted({u.label for u in train})
    if len(present) < 2:
        raise ConfigError(
            f"the training split holds only {len(present)} class ({', '.join(present) or 'none'}); "
            "a classifier needs at least 2"
        )


def check_run_dir(config: TrainConfig, run_dir: Path, resume: bool, last_checkpoint: Path,
                  labels: list[str], info: dict[str, Any]) -> None:  # fmt: skip
    """Refuse, before anything in the folder is written: a resume with other settings, labels,
    fold or utterances; a resume of a finished run with nothing to resume from; and training over
    a run without resume. `last_checkpoint` is what a resume continues from (a frozen run's
    model file). And a folder that cannot be written (read-only, a file in the way)."""
    check_writable_folder(run_dir, "the run folder")
    if resume and (run_dir / RUN_CONFIG_FILE).is_file():
        _check_resume(run_dir, config, labels, info)
    if resume and not last_checkpoint.exists() and has_model(run_dir):
        raise EmoknnError(
            f"{run_dir}: holds a finished model but no {CHECKPOINT_DIR}/{LAST_CHECKPOINT} to "
            "resume from; train into another folder"
        )
    if not resume and (last_checkpoint.exists() or has_model(run_dir)):
        raise EmoknnError(
            f"{run_dir}: already holds a training run; pass --resume to continue it, or choose "
            "another output folder"
        )


def check_labels(utterances: list[Utterance], labels: list[str]) -> None:
    unknown = sorted({u.label for u in utterances} - set(labels))
    if unknown:
        raise ConfigError(f"labels {unknown} occur in the data but not in the label list {labels}")


def task_attributes(config: TrainConfig, train: list[Utterance], val: list[Utterance]
                    ) -> dict[str, Any]:  # fmt: skip
    """The ModelConfig fields of the config's task: for "dimensional" and "both", the attributes
    rated on every training and validation utterance and their training statistics
    (`emoknn.attributes`); nothing for "categorical"."""
    if config.task == "categorical":
        return {}
    attributes = rated_attributes(train + val, config.task)
    attribute_matrix(val, attributes)  # every validation utterance rated (else: which is not)
    mean, std = attribute_statistics(train, attributes)
    return {"task": config.task, "attributes": attributes, "attribute_mean": mean,
            "attribute_std": std}  # fmt: skip


def model_config_for(config: TrainConfig, labels: list[str],
                     task_fields: dict[str, Any] | None = None) -> ModelConfig:  # fmt: skip
    """The model a training config describes (`task_fields`: `task_attributes`'s answer)."""
    return ModelConfig(
        **(task_fields or {}),
        encoder=config.encoder,
        labels=list(labels),
        freeze_feature_encoder=config.freeze_feature_encoder,
        layer_weighting=config.layer_weighting,
        normalize_waveforms=default_normalization(config.encoder),
        head_dropout=config.head_dropout,
        projection_size=config.projection_size,
        projection_dropout=config.projection_dropout,
        normalize_layers=config.normalize_layers,
        projection_kind=config.projection_kind,
        pooling=config.pooling,
        standardize=config.standardize,
        input_dropout=config.input_dropout,
        speaker_norm=config.speaker_norm,
        speaker_norm_min_clips=MIN_CLIPS if config.speaker_norm else 0,
    )


def split_digests(train: list[Utterance], val: list[Utterance]) -> dict[str, str]:
    """Which utterances trained the model, so that a datastore is never built from another split."""
    return {"train_ids_sha256": ids_digest([u.id for u in train]),
            "val_ids_sha256": ids_digest([u.id for u in val])}  # fmt: skip


def check_fold_run(config: TrainConfig, train: list[Utterance], val: list[Utterance],
                   labels: list[str], run_dir: Path, resume: bool, last_checkpoint: Path,
                   extra_info: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """What both loops refuse before anything is written: settings this machine cannot run, fewer
    than two classes, labels outside the list, and a run folder that may not be (re)used
    (`check_run_dir`). Returns what the run records about its data: `extra_info` and the digests
    of the utterances that train and validate it."""
    check_hardware(config)
    check_trainable(train, labels)
    check_labels(train + val, labels)
    info = {**(extra_info or {}), **split_digests(train, val)}
    check_run_dir(config, run_dir, resume, last_checkpoint, labels, info)
    return info

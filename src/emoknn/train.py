"""Fine-tuning: CE + SupCon on originals and their augmented views, with PyTorch Lightning.

(With the encoder frozen — `--preset frozen`, `--freeze-encoder` — only the head trains, on cached
encoder features, in a plain torch loop: `emoknn.frozen.train_frozen_fold`. This module holds the
settings both loops share: `TrainConfig`, the presets, the run folder checks.)

The loop itself is `EmotionTrainingModule.training_step`: encode the 2N rows of a batch
(N originals, then their N views), then L = (1 − λ)·CE + λ·SupCon over all 2N
(`emoknn.losses.combined_loss`). Validation runs on the un-augmented, centre-cropped utterances of
the validation speaker and reports CE loss, WA and UA; ReduceLROnPlateau watches the validation
loss (patience 20 in the paper preset).

Reproducibility: the model is initialised from `seed`; every epoch re-seeds torch from
(seed, epoch) and the data pipeline derives its generators from (seed, epoch, index), so a run
resumed from its last checkpoint gives the same weights as an uninterrupted one.
Checkpoints (`best.ckpt`, `last.ckpt`) are written to a temporary file and renamed into place, so
an interruption never leaves a half-written checkpoint; they serve `--resume` and are read with
`weights_only=True`. When training ends, the best checkpoint's model is written to the run folder
as `model.safetensors` + `model.json` (`emoknn.model_folder`): the file every other command loads.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torchmetrics
from lightning.fabric.plugins import TorchCheckpointIO
from torch.utils.data import DataLoader

from emoknn.attributes import attribute_matrix, attribute_statistics, rated_attributes
from emoknn.audio import SAMPLE_RATE, max_samples
from emoknn.augment import AUGMENTATION_NAMES, make_augmentation
from emoknn.checks import ACCELERATORS, check_accelerator, check_choice, check_int, check_number
from emoknn.corpora.utterance import Utterance
from emoknn.data import (
    Batch,
    BucketBatchSampler,
    EvaluationAudio,
    TrainingViews,
    collate_evaluation,
    collate_views,
    utterance_lengths,
)
from emoknn.errors import ConfigError, EmoknnError
from emoknn.files import atomic_path
from emoknn.losses import REGRESSION_LOSSES, combined_loss, regression_loss, task_loss
from emoknn.metrics import ccc_columns
from emoknn.model import TASKS, EmotionModel, ModelConfig, default_normalization
from emoknn.model_folder import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    RUN_CONFIG_FILE,
    has_model,
    ids_digest,
    load_checkpoint_model,
    read_checkpoint,
    read_run_config,
    save_model,
    write_run_config,
)

MONITORS = {"val_loss": "min", "val_ua": "max", "val_wa": "max", "val_ccc": "max"}
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
    # Frozen encoder (emoknn.frozen): train only the head, on encoder outputs computed once per
    # (utterance, view) and cached on disk.
    freeze_encoder: bool = False
    cache_views: int = 4  # K augmented views per training utterance in the feature cache
    feature_cache: str | None = None  # its folder; None = `emoknn-features` beside the output
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
        check_int(self.cache_views, "cache_views", 1)


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
    # settings were chosen: README, "No GPU? Use a frozen encoder".
    "frozen": {
        "freeze_encoder": True,
        "optimizer": "adamw",
        "learning_rate": 1e-3,
        "weight_decay": 1e-2,
        "batch_size": 64,
        "max_epochs": 100,
        "lr_patience": 5,
        "early_stopping_patience": 15,
        "layer_weighting": True,
        "projection_size": 256,
        "projection_dropout": 0.1,
        "head_dropout": 0.2,
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
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class EmotionTrainingModule(pl.LightningModule):
    """Lightning wrapper: the training step is the paper's objective on 2N rows."""

    def __init__(self, model_config: dict[str, Any], train_config: dict[str, Any]) -> None:
        super().__init__()
        self.train_config = TrainConfig(**train_config)
        self.model = EmotionModel(ModelConfig(**model_config))
        # Saved after the model is built, so the encoder's full config is in every checkpoint.
        self.save_hyperparameters(
            {"model_config": self.model.config.to_dict(), "train_config": asdict(self.train_config)}
        )
        num_classes = len(self.model.labels)
        self.val_wa = torchmetrics.Accuracy(
            task="multiclass", num_classes=num_classes, average="micro"
        )
        self.val_ua = torchmetrics.Accuracy(
            task="multiclass", num_classes=num_classes, average="macro"
        )
        # Standardised attribute targets (N, A) of the training and validation utterances, by
        # utterance index (`attach_targets`); None for a categorical model.
        self.targets: dict[str, torch.Tensor] | None = None
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def attach_targets(self, train: list[Utterance], val: list[Utterance]) -> None:
        """Give a dimensional model its targets, standardised with its training statistics."""
        config = self.model.config
        if config.attributes is None:
            return
        mean, std = np.array(config.attribute_mean), np.array(config.attribute_std)
        self.targets = {
            name: torch.tensor((attribute_matrix(utterances, config.attributes) - mean) / std,
                               dtype=torch.float32)
            for name, utterances in (("train", train), ("val", val))
        }  # fmt: skip

    def _targets(self, split: str, batch: Batch) -> torch.Tensor:
        return self.targets[split][batch.indices.cpu()].to(self.device)  # (B, A)

    def on_train_epoch_start(self) -> None:
        # Dropout and SpecAugment masks depend only on (seed, epoch): resuming is exact.
        torch.manual_seed(epoch_seed(self.train_config.seed, self.current_epoch))

    def training_step(self, batch: Batch, batch_index: int) -> torch.Tensor:
        output = self.model(batch.waveforms, batch.lengths)  # 2N rows: originals, then views
        if self.train_config.task != "categorical":
            # SupCon here sees this process's rows only (under DDP, not the global batch).
            parts = task_loss(
                self.train_config.task, output.logits, output.embeddings, batch.labels,
                output.standardized_attributes, self._targets("train", batch),
                self.train_config.contrastive_weight, self.train_config.temperature,
                self.train_config.regression_loss,
            )  # fmt: skip
            size = len(batch.labels)
            self.log("train_loss", parts.total, prog_bar=True, batch_size=size)
            self.log("train_ce", parts.cross_entropy, batch_size=size)
            self.log("train_regression", parts.regression, batch_size=size)
            self.log("train_scl", parts.contrastive, batch_size=size)
            return parts.total
        gathered_embeddings = gathered_labels = None
        if self.trainer.world_size > 1 and self.train_config.contrastive_weight > 0:
            # SupCon over the global batch: every process sees every process's embeddings.
            gathered_embeddings = self.all_gather(output.embeddings, sync_grads=True).flatten(0, 1)
            gathered_labels = self.all_gather(batch.labels).flatten(0, 1)
        loss = combined_loss(
            output.logits,
            output.embeddings,
            batch.labels,
            self.train_config.contrastive_weight,
            self.train_config.temperature,
            gathered_embeddings,
            gathered_labels,
        )
        size = len(batch.labels)
        self.log("train_loss", loss.total, prog_bar=True, batch_size=size)
        self.log("train_ce", loss.cross_entropy, batch_size=size)
        self.log("train_scl", loss.contrastive, batch_size=size)
        return loss.total

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        output = self.model(batch.waveforms, batch.lengths)
        if self.train_config.task != "categorical":
            # The regression part of val_loss is over the whole validation set (CCC is not a
            # mean over batches): collected here, scored in on_validation_epoch_end.
            self._val_outputs.append(
                (output.standardized_attributes.float().cpu(), self._targets("val", batch).cpu())
            )
            if self.train_config.task == "dimensional":
                return
        loss = torch.nn.functional.cross_entropy(output.logits.float(), batch.labels)
        if self.train_config.task == "both":
            self._val_outputs[-1] += (loss.detach().cpu() * len(batch.labels),)
        predictions = output.logits.argmax(dim=1)
        self.val_wa.update(predictions, batch.labels)
        self.val_ua.update(predictions, batch.labels)
        size = len(batch.labels)
        if self.train_config.task == "categorical":
            self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=size)
        self.log("val_wa", self.val_wa, prog_bar=True, batch_size=size)
        self.log("val_ua", self.val_ua, prog_bar=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        """Dimensional tasks: val_loss = regression loss over the whole validation set (+ mean CE
        for "both"), val_ccc = mean CCC of the attributes (this process's share under DDP)."""
        if self.train_config.task == "categorical" or not self._val_outputs:
            return
        predicted = torch.cat([item[0] for item in self._val_outputs])
        targets = torch.cat([item[1] for item in self._val_outputs])
        loss = regression_loss(predicted, targets, self.train_config.regression_loss)
        if self.train_config.task == "both":
            loss = loss + sum(item[2] for item in self._val_outputs) / len(targets)
        self._val_outputs.clear()
        score = float(ccc_columns(predicted.numpy(), targets.numpy()).mean())
        self.log("val_loss", float(loss), prog_bar=True)
        self.log("val_ccc", score, prog_bar=True)

    def configure_optimizers(self):
        config = self.train_config
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if config.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                parameters, lr=config.learning_rate, momentum=config.momentum,
                weight_decay=config.weight_decay,
            )  # fmt: skip
        else:
            optimizer = torch.optim.AdamW(
                parameters, lr=config.learning_rate, weight_decay=config.weight_decay
            )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
        }


class FoldData(pl.LightningDataModule):
    """Training views and validation audio of one fold, in length buckets."""

    def __init__(
        self,
        train: list[Utterance],
        val: list[Utterance],
        labels: list[str],
        config: TrainConfig,
    ) -> None:
        super().__init__()
        self.train_utterances, self.val_utterances = train, val
        self.label_to_id = {label: i for i, label in enumerate(labels)}
        self.config = config
        self.max_length = max_samples(config.max_seconds)
        self._train_lengths = utterance_lengths(train, self.max_length, SAMPLE_RATE)
        self._val_lengths = utterance_lengths(val, self.max_length, SAMPLE_RATE)
        self._augmentation = make_augmentation(config.augment, rir_dir=config.rir_dir)

    def _loader(self, dataset, sampler, collate) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = TrainingViews(
            self.train_utterances, self.label_to_id, self._augmentation, self.max_length,
            self.config.seed, preload=self.config.preload_audio,
        )  # fmt: skip
        sampler = BucketBatchSampler(
            self._train_lengths, self.config.batch_size, shuffle=True, seed=self.config.seed,
            rank=self.trainer.global_rank, world_size=self.trainer.world_size,
        )  # fmt: skip
        return self._loader(dataset, sampler, collate_views)

    def val_dataloader(self) -> DataLoader:
        dataset = EvaluationAudio(
            self.val_utterances,
            self.label_to_id,
            self.max_length,
            preload=self.config.preload_audio,
        )
        sampler = BucketBatchSampler(
            self._val_lengths, 2 * self.config.batch_size, shuffle=False,
            rank=self.trainer.global_rank, world_size=self.trainer.world_size,
        )  # fmt: skip
        return self._loader(dataset, sampler, collate_evaluation)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the same folder, then rename it into place."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # Tensors and plain containers only, whatever the caller asks: a checkpoint in a folder
        # someone shared must not be able to run code on --resume. An empty, truncated or foreign
        # file stops with one line naming it.
        return read_checkpoint(path)


class RunCheckpoint(pl.callbacks.ModelCheckpoint):
    """ModelCheckpoint that keeps its best score when the run folder was moved or copied.

    Lightning forgets `best_model_score` when a checkpoint records another folder than the
    current one, and the next validation then overwrites best.ckpt whatever its score. Our file
    names are fixed (best.ckpt, last.ckpt), so the recorded paths are mapped into this folder.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        here = Path(self.dirpath)

        def moved(path: str | None) -> str | None:
            return str(here / Path(path).name) if path else path

        state = {**state_dict, "dirpath": self.dirpath}
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = moved(state[key])
        if "best_k_models" in state:
            state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
        super().load_state_dict(state)


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


def _resolve_precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    on_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


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
    model file)."""
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
    )


def split_digests(train: list[Utterance], val: list[Utterance]) -> dict[str, str]:
    """Which utterances trained the model, so that a datastore is never built from another split."""
    return {"train_ids_sha256": ids_digest([u.id for u in train]),
            "val_ids_sha256": ids_digest([u.id for u in val])}  # fmt: skip


def train_fold(
    config: TrainConfig,
    train: list[Utterance],
    val: list[Utterance],
    labels: list[str],
    run_dir: str | os.PathLike,
    resume: bool = False,
    extra_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one model on `train`, validating on `val`; checkpoints and logs go to `run_dir`.

    With `resume=True` and a `checkpoints/last.ckpt` in `run_dir`, training continues from it
    (same config required) and ends as an uninterrupted run would have.
    """
    check_hardware(config)
    check_trainable(train, labels)
    if config.freeze_encoder:
        raise ConfigError(
            "freeze_encoder: the head trains on cached features with "
            "emoknn.frozen.train_frozen_fold (emoknn train and crossval choose it for you)"
        )
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    last_checkpoint = checkpoint_dir / LAST_CHECKPOINT
    check_labels(train + val, labels)
    info = {**(extra_info or {}), **split_digests(train, val)}
    check_run_dir(config, run_dir, resume, last_checkpoint, labels, info)

    torch.manual_seed(config.seed)  # classifier initialisation
    model_config = model_config_for(config, labels, task_attributes(config, train, val))
    module = EmotionTrainingModule(model_config.to_dict(), asdict(config))
    module.attach_targets(train, val)
    limit = module.model.max_input_seconds
    if limit is not None and config.max_seconds > limit:
        raise ConfigError(
            f"max_seconds {config.max_seconds:g} is longer than the encoder takes at once "
            f"({limit:g} s for {config.encoder}); crop to at most {limit:g} s"
        )
    data = FoldData(train, val, list(labels), config)

    mode = MONITORS[config.monitor]
    checkpoint_callback = RunCheckpoint(
        dirpath=checkpoint_dir, filename="best", monitor=config.monitor, mode=mode,
        save_top_k=1, save_last=True, enable_version_counter=False, auto_insert_metric_name=False,
    )  # fmt: skip
    callbacks: list[pl.Callback] = [checkpoint_callback]
    if config.early_stopping_patience:
        callbacks.append(
            pl.callbacks.EarlyStopping(
                config.monitor, patience=config.early_stopping_patience, mode=mode
            )
        )
    # Each start (first or resumed) logs to its own folder: resuming never overwrites history.
    attempt = len(list((run_dir / "logs").glob("attempt*"))) if resume else 0
    loggers: list = [pl.loggers.CSVLogger(run_dir, name="logs", version=f"attempt{attempt}")]
    if config.tensorboard:
        try:
            loggers.append(pl.loggers.TensorBoardLogger(run_dir, name="tensorboard", version=""))
        except ModuleNotFoundError as error:
            raise EmoknnError("--tensorboard needs TensorBoard: pip install tensorboard") from error
    strategy = config.strategy
    if strategy == "auto" and config.devices * config.num_nodes > 1:
        strategy = "ddp"
    trainer = pl.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=_resolve_precision(config),
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # BucketBatchSampler shards by rank itself
        num_sanity_val_steps=0,
        log_every_n_steps=5,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    # Written once everything above (settings, data, augmentation, trainer) has been accepted.
    write_run_config(run_dir, asdict(config), labels, info)
    ckpt_path = last_checkpoint if resume and last_checkpoint.exists() else None
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    best = Path(checkpoint_callback.best_model_path or last_checkpoint)
    score = checkpoint_callback.best_model_score
    if trainer.is_global_zero:
        model, max_seconds = load_checkpoint_model(best)
        save_model(run_dir, model, max_seconds)
    return TrainResult(
        run_dir=run_dir,
        best_checkpoint=best,
        last_checkpoint=last_checkpoint,
        best_score=None if score is None else float(score),
        epochs=trainer.current_epoch,
        is_global_zero=trainer.is_global_zero,
    )


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """All rows of a run's CSV logs, first attempt first (resumed runs log to a new attempt)."""
    import csv

    rows: list[dict[str, str]] = []
    attempts = sorted(Path(run_dir, "logs").glob("attempt*/metrics.csv"),
                      key=lambda p: int(p.parent.name.removeprefix("attempt")))  # fmt: skip
    for path in attempts:
        with path.open(newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows

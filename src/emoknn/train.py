"""Fine-tuning: CE + SupCon on originals and their augmented views, with PyTorch Lightning.

(With the encoder frozen — `--preset frozen`, `--freeze-encoder` — only the head trains, on cached
encoder features, in a plain torch loop: `emoknn.frozen.train_frozen_fold`. The settings both loops
share — `TrainConfig`, the presets, the run folder checks — are `emoknn.config`.)

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torchmetrics
from lightning.fabric.plugins import TorchCheckpointIO
from torch.utils.data import DataLoader

from emoknn.attributes import attribute_matrix
from emoknn.audio import SAMPLE_RATE, max_samples
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
from emoknn.losses import combined_loss, regression_loss, task_loss
from emoknn.metrics import ccc_columns
from emoknn.model import EmotionModel, ModelConfig
from emoknn.model_folder import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    load_checkpoint_model,
    read_checkpoint,
    save_model,
    write_run_config,
)


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
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []

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


def _resolve_precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    on_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


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
    if config.freeze_encoder:
        raise ConfigError(
            "freeze_encoder: the head trains on cached features with "
            "emoknn.frozen.train_frozen_fold (emoknn train and crossval choose it for you)"
        )
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    last_checkpoint = checkpoint_dir / LAST_CHECKPOINT
    info = check_fold_run(config, train, val, labels, run_dir, resume, last_checkpoint, extra_info)

    task_fields = task_attributes(config, train, val)  # checked before anything is written
    torch.manual_seed(config.seed)  # classifier initialisation
    model_config = model_config_for(config, labels, task_fields)
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

"""Partial fine-tuning on cached lower layers: the paper's recipe at a cost two CPU cores afford.

`--tune-layers N` (preset `finetune-cpu`): the encoder is cut after layer c (the layers above it
are dropped), its top N layers below the cut (c − N + 1 … c) and the head train, everything
beneath stays frozen. The frozen part's output — the frames of hidden-state entry s = c − N — is
computed once per original and per augmented view into the frame cache (`emoknn.frames`), so an
epoch costs only N layers on those frames:

    cut c: a fixed `cut_layer`, or (0, "auto") per fold the layer a ridge probe on the pretrained
        encoder's pooled layers scores best on the fold's validation speaker (`frozen.best_layer`:
        trained on the training speakers, never seeing the test speaker), at least N
    for epoch e (rng = default_rng([seed, e]), torch seeded from (seed, e)):
        each training utterance i gets one of its K cached views, v_i ~ uniform{0..K−1}
        batches of originals (lengths bucketed, order shuffled by rng); for batch B:
            rows = [frames_s of B; frames_s of view v_i of each i in B]      (2|B| rows)
            output = head(mean over real frames of top(rows))       top = layers s+1 … c, norm
            L = (1 − λ)·CE + λ·SupCon over the 2|B| rows           (emoknn.losses.combined_loss)
        AdamW: the head at `learning_rate`, the tuned layers at `tune_learning_rate`
        validation on the validation speaker's originals: CE, UA, WA; LR plateau on val loss;
        the best epoch by `monitor` (val_ua) kept; early stopping after `early_stopping_patience`
    a checkpoint after every epoch (tensors and numbers only, read without unpickling code):
        `--resume` continues from it and ends as an uninterrupted run would

The run folder is a head-only model folder (`emoknn.model_folder`) whose model.safetensors also
holds the N tuned layers (and the final norm), and whose model.json references the pretrained,
cut encoder in the encoder store: it predicts, exports and serves like every other folder, with
the encoder running live (the cached frames equal the live ones to float16 rounding).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emoknn.config import (
    MONITORS,
    TrainConfig,
    TrainResult,
    check_fold_run,
    epoch_seed,
    model_config_for,
)
from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError
from emoknn.features import FeatureCache, fill_threads, torch_threads
from emoknn.files import atomic_path
from emoknn.frames import FrameCache, check_splittable, pad_frames, upper_forward
from emoknn.frozen import FoldFeatures, best_layer, build_frozen_model, view_spec
from emoknn.inference import Embedded
from emoknn.losses import combined_loss
from emoknn.metrics import unweighted_accuracy, weighted_accuracy
from emoknn.model import EmotionModel, tuned_encoder_names
from emoknn.model_folder import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    MODEL_FILE,
    default_encoder_store,
    read_checkpoint,
    save_model,
    write_encoder_store,
    write_run_config,
)

EVAL_BATCH = 32


@dataclass
class PartialContext:
    """What every fold of a partial fine-tuning shares: the pretrained model (its encoder is the
    frozen part), its pooled-layer cache (the cut's probe) and the frame cache."""

    pretrained: EmotionModel
    features: FeatureCache
    frames: FrameCache


def load_context(config: TrainConfig, labels: list[str], root: str | os.PathLike) -> PartialContext:
    """The pretrained encoder (built as `config.encoder` says) and its caches under `root`."""
    pretrained = build_frozen_model(
        TrainConfig(**{**asdict(config), "tune_layers": 0, "freeze_encoder": True}), labels
    )
    check_splittable(pretrained)
    if config.tune_layers > pretrained.num_layers or config.cut_layer > pretrained.num_layers:
        raise ConfigError(
            f"{config.encoder} has {pretrained.num_layers} layers: cannot tune "
            f"{config.tune_layers} below layer {config.cut_layer or 'auto'}", setting="tune_layers"
        )
    return PartialContext(pretrained, FeatureCache(root, pretrained, config.max_seconds),
                          FrameCache(root, pretrained, config.max_seconds))  # fmt: skip


def choose_cut(config: TrainConfig, context: PartialContext, train: list[Utterance],
               val: list[Utterance], labels: list[str]) -> int:  # fmt: skip
    """The last layer kept: `cut_layer`, or the ridge probe's best layer on the validation speaker
    (pooled originals of the pretrained encoder; training speakers fit it), at least N."""
    if config.cut_layer:
        return config.cut_layer
    ids = {label: i for i, label in enumerate(labels)}
    data = FoldFeatures(
        train=torch.from_numpy(context.features.originals(train)),
        train_views=torch.empty(0),
        train_labels=torch.tensor([ids[u.label] for u in train]),
        val=torch.from_numpy(context.features.originals(val)),
        val_labels=torch.tensor([ids[u.label] for u in val]),
    )
    return max(best_layer(data, len(labels)), config.tune_layers)


def build_tuned_model(pretrained: EmotionModel, config: TrainConfig, labels: list[str],
                      cut: int) -> EmotionModel:  # fmt: skip
    """The model to train: the pretrained encoder cut after layer `cut` (its weights copied), a
    new head (seeded by `config.seed`), only the top `tune_layers` layers and the head trainable."""
    model_config = model_config_for(config, labels)
    encoder_config = dict(pretrained.config.encoder_config)
    encoder_config["encoder_layers" if pretrained.is_whisper else "num_hidden_layers"] = cut
    model_config.encoder_config = encoder_config
    model_config.tuned_layers = config.tune_layers
    model_config.encoder = pretrained.config.encoder
    model_config.normalize_waveforms = pretrained.config.normalize_waveforms
    torch.manual_seed(config.seed)  # the head's initialisation (the encoder's is overwritten)
    model = EmotionModel(model_config)
    wanted = model.encoder.state_dict()
    source = pretrained.encoder.state_dict()
    model.encoder.load_state_dict({name: source[name] for name in wanted}, strict=True)
    tuned = set(tuned_encoder_names(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith("encoder.") or name in tuned
    return model


@dataclass
class FoldFrames:
    """A fold's cached frames in memory (each (F_i, H) float16)."""

    train: list[torch.Tensor]
    train_views: list[list[torch.Tensor]]  # K × N
    train_labels: torch.Tensor
    val: list[torch.Tensor]
    val_labels: torch.Tensor


def fold_frames(cache: FrameCache, entry: int, train: list[Utterance], val: list[Utterance],
                labels: list[str], config: TrainConfig) -> FoldFrames:  # fmt: skip
    """Read the frames a fold trains on (they must have been filled)."""
    ids = {label: i for i, label in enumerate(labels)}
    spec = view_spec(config)
    return FoldFrames(
        train=cache.gather(cache.keys(train, entry)),
        train_views=[cache.gather(cache.keys(train, entry, spec, k)) for k in range(spec.views)],
        train_labels=torch.tensor([ids[u.label] for u in train]),
        val=cache.gather(cache.keys(val, entry)),
        val_labels=torch.tensor([ids[u.label] for u in val]),
    )


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator
                   ) -> list[np.ndarray]:  # fmt: skip
    """Shuffled batches of similar lengths: a random order cut in runs of 8 batches, each run
    sorted by length, then the batches shuffled (less padding, still random)."""
    order = rng.permutation(len(lengths))
    run = 8 * batch_size
    batches = []
    for start in range(0, len(order), run):
        chunk = order[start : start + run]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.no_grad()
def frames_outputs(model: EmotionModel, frames: list[torch.Tensor], entry: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Embeddings (N, D) and logits (N, C) of cached frames, in evaluation mode."""
    model.eval()
    order = np.argsort([len(f) for f in frames], kind="stable")
    embeddings, logits = [None] * len(frames), [None] * len(frames)
    for start in range(0, len(order), EVAL_BATCH):
        rows = order[start : start + EVAL_BATCH]
        batch, mask = pad_frames([frames[i] for i in rows])
        output = upper_forward(model, batch, mask, entry)
        for j, i in enumerate(rows):
            embeddings[i], logits[i] = output.embeddings[j], output.logits[j]
    return torch.stack(embeddings).float(), torch.stack(logits).float()


def embed_frames(model: EmotionModel, utterances: list[Utterance], frames: list[torch.Tensor],
                 entry: int) -> Embedded:  # fmt: skip
    """`emoknn.inference.embed_utterances` from cached frames (the kNN stage, the test speaker)."""
    embeddings, logits = frames_outputs(model, frames, entry)
    ids = {label: i for i, label in enumerate(model.labels)}
    known = {u.label for u in utterances} <= set(ids)
    labels = [ids[u.label] if known else -1 for u in utterances]
    probs = torch.softmax(logits, dim=1).numpy()
    return Embedded([u.id for u in utterances], embeddings.numpy(), probs,
                    np.array(labels, dtype=np.int64))  # fmt: skip


def _trainable_state(model: EmotionModel) -> dict[str, torch.Tensor]:
    """The tensors training changes: the head's and the tuned layers'."""
    tuned = set(tuned_encoder_names(model))
    return {name: t.detach().clone() for name, t in model.state_dict().items()
            if not name.startswith("encoder.") or name in tuned}  # fmt: skip


def _optimizer(model: EmotionModel, config: TrainConfig) -> torch.optim.Optimizer:
    tuned = set(tuned_encoder_names(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n not in tuned], "lr": config.learning_rate},
              {"params": [p for n, p in named if n in tuned], "lr": config.tune_learning_rate}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum,
                               weight_decay=config.weight_decay)  # fmt: skip
    return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)


@dataclass
class TunedFit:
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float


def fit_tuned(model: EmotionModel, data: FoldFrames, config: TrainConfig, entry: int,
              checkpoint: Path | None = None, log: Callable[[str], None] | None = None
              ) -> TunedFit:  # fmt: skip
    """Train the tuned layers and the head on cached frames (module docstring); leave the best
    epoch's weights in `model`, in evaluation mode. With `checkpoint`, the state after every epoch
    is saved there and, if it exists, training continues from it."""
    if len(data.val_labels) == 0:
        raise ConfigError("the validation split is empty: partial fine-tuning stops early on it")
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
    )
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_score": None, "best_epoch": -1,
                             "bad_epochs": 0, "best_state": _trainable_state(model)}  # fmt: skip
    if checkpoint is not None and checkpoint.is_file():
        saved = read_checkpoint(checkpoint)
        model.load_state_dict(saved["model"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
    mode = MONITORS[config.monitor]
    count, views = len(data.train), len(data.train_views)
    lengths = [len(f) for f in data.train]
    with torch_threads(fill_threads()):
        for epoch in range(state["epoch"], config.max_epochs):
            if state.get("stopped"):
                break
            start = time.perf_counter()
            torch.manual_seed(epoch_seed(config.seed, epoch))
            rng = np.random.default_rng([config.seed, epoch])
            chosen = rng.integers(max(views, 1), size=count)
            model.train()
            totals = np.zeros(3)
            for rows in length_batches(lengths, config.batch_size, rng):
                inputs = [data.train[i] for i in rows]
                labels = data.train_labels[rows]
                if views:  # (2n rows): the originals, then one view of each
                    inputs += [data.train_views[chosen[i]][i] for i in rows]
                    labels = labels.repeat(2)
                batch, mask = pad_frames(inputs)
                output = upper_forward(model, batch, mask, entry)
                loss = combined_loss(output.logits, output.embeddings, labels,
                                     config.contrastive_weight, config.temperature)  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                optimizer.step()
                parts = (loss.total, loss.cross_entropy, loss.contrastive)
                totals += np.array([float(p.detach()) for p in parts]) * len(rows)
            _, logits = frames_outputs(model, data.val, entry)
            predicted, truth = logits.argmax(dim=1).numpy(), data.val_labels.numpy()
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                   "tune_lr": optimizer.param_groups[1]["lr"],
                   "train_loss": float(totals[0] / count), "train_ce": float(totals[1] / count),
                   "train_scl": float(totals[2] / count),
                   "val_loss": float(F.cross_entropy(logits, data.val_labels)),
                   "val_ua": float(unweighted_accuracy(truth, predicted)),
                   "val_wa": float(weighted_accuracy(truth, predicted)),
                   "seconds": time.perf_counter() - start}  # fmt: skip
            state["history"].append(row)
            scheduler.step(row["val_loss"])
            score, best = row[config.monitor], state["best_score"]
            if best is None or (score < best if mode == "min" else score > best):
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                             best_state=_trainable_state(model))  # fmt: skip
            else:
                state["bad_epochs"] += 1
            patience = config.early_stopping_patience
            state["stopped"] = bool(patience and state["bad_epochs"] >= patience)
            state["epoch"] = epoch + 1
            if log is not None:
                log(f"  epoch {epoch}: loss {row['train_loss']:.3f}, val UA {row['val_ua']:.3f} "
                    f"({row['seconds']:.0f} s)")  # fmt: skip
            if checkpoint is not None:
                _save_checkpoint(checkpoint, model, optimizer, scheduler, state)
    model.load_state_dict(state["best_state"], strict=False)
    model.eval()
    return TunedFit(state["history"], state["best_epoch"], float(state["best_score"]))


def _save_checkpoint(path: Path, model, optimizer, scheduler, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": _trainable_state(model), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "state": state}  # fmt: skip
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


@dataclass
class PartialResult(TrainResult):
    model: EmotionModel | None = None
    entry: int = 0  # the hidden-state entry whose frames it trained on
    cut: int = 0
    seconds: float = 0.0


def fill_frames(context: PartialContext, config: TrainConfig, entries: Sequence[int],
                everyone: list[Utterance], trained_on: list[Utterance],
                log: Callable[[str], None] | None = None) -> int:  # fmt: skip
    """Frames of `entries`: originals of `everyone`, K views of `trained_on` (one pass per clip;
    the budget covers the whole fill)."""
    spec = view_spec(config)
    cache = context.frames
    size = (cache.estimate_bytes(everyone, entries)
            + cache.estimate_bytes(trained_on, entries, spec, originals=False))  # fmt: skip
    budget = config.frame_cache_gb * 2**30
    if size > budget:
        raise ConfigError(
            f"the frame cache fill would write about {size / 2**30:.2f} GB in {cache.folder}, "
            f"over the budget of {config.frame_cache_gb:g} GB; raise --frame-cache-gb, or use "
            "fewer views or a shorter crop", setting="frame_cache_gb"
        )
    computed = cache.fill(everyone, entries, log=log)
    return computed + cache.fill(trained_on, entries, spec, originals=False, log=log)


def train_partial_fold(
    config: TrainConfig,
    train: list[Utterance],
    val: list[Utterance],
    labels: list[str],
    run_dir: str | os.PathLike,
    context: PartialContext,
    resume: bool = False,
    extra_info: dict[str, Any] | None = None,
    encoder_store: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> PartialResult:
    """Choose the cut, fill the frames the fold needs, train (resuming from the run's checkpoint
    with `resume`), and write a model folder to `run_dir` whose encoder goes to `encoder_store`
    (default: `encoders` beside `run_dir`)."""
    if not config.tune_layers:
        raise ConfigError("train_partial_fold needs tune_layers ≥ 1", setting="tune_layers")
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    info = check_fold_run(config, train, val, labels, run_dir, resume, checkpoint, extra_info)
    config = TrainConfig(**{**asdict(config), "feature_cache": str(context.frames.root.resolve())})
    start = time.perf_counter()
    cut = choose_cut(config, context, train, val, labels)
    entry = cut - config.tune_layers
    fill_frames(context, config, [entry], train + val, train, log)
    model = build_tuned_model(context.pretrained, config, labels, cut)
    store = encoder_store if encoder_store is not None else default_encoder_store(run_dir)
    reference = write_encoder_store(store, model)  # the pretrained, cut encoder (before training)
    data = fold_frames(context.frames, entry, train, val, labels, config)
    write_run_config(run_dir, asdict(config), labels,
                     {**info, "cut_layer": cut, "frame_entry": entry})  # fmt: skip
    fit = fit_tuned(model, data, config, entry, checkpoint, log)
    _write_history(run_dir / "logs" / "attempt0" / "metrics.csv", fit.history)
    save_model(run_dir, model, config.max_seconds, encoder=reference)
    return PartialResult(run_dir=run_dir, best_checkpoint=run_dir / MODEL_FILE,
                         last_checkpoint=checkpoint, best_score=fit.best_score,
                         epochs=len(fit.history), model=model, entry=entry, cut=cut,
                         seconds=time.perf_counter() - start)  # fmt: skip

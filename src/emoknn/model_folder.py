"""The model folder: the one place that reads, writes and validates the files of a trained model.

    model.safetensors   the EmotionModel's weights (state_dict). safetensors holds tensors only:
                        loading it cannot run code. A head-only folder (below) holds every
                        tensor but the encoder's.
    model.json          format name and version, the ModelConfig (with the encoder's full config,
                        so the model is rebuilt with no download), labels, the crop length
                        `max_seconds`, and the fingerprint of the weights (always of the whole
                        model, so a datastore made by the model matches however it is stored);
                        a head-only folder adds `encoder_reference` and `head_fingerprint`
    train_config.json   training settings, labels, the corpus and fold trained on (training runs)
    datastore.npz       kNN datastore: embeddings, labels, ids, fingerprint of the model (no
                        pickle), and each entry's source file and speaker where known; a dimensional
                        model's also `values` (N, A) and `attribute_names`
    knn.json            tuned kNN settings: interpolation (k, α, T) and kNN only (k, T); a
                        dimensional model's also `regression` (the same two, tuned for mean CCC)
    calibration.json    temperatures of the model's and the interpolation's probabilities
                        (`emoknn.calibration`); a folder without one loads with T = 1
    checkpoints/        Lightning checkpoints (best.ckpt, last.ckpt), for `train --resume` only;
                        read with `torch.load(weights_only=True)`, which refuses anything but
                        tensors and plain containers
    export.json, model.onnx, model.int8.onnx   an `emoknn export` folder (with datastore, knn.json)
    enrolments/<name>.npz   statistics of a speaker's (or domain's) unlabelled clips, for a model
                        trained with --speaker-norm (`emoknn enrol`): mean and scale arrays and a
                        JSON header (name, kind, clip count, the encoder features they fit)

Every reader checks what it reads (present, complete, the expected keys, types, shapes, ranges)
and raises `ModelFolderError` with one line naming the file and what is wrong. Writers are atomic
(`emoknn.files`): an interruption leaves the old file or the new one.

Head-only folders (model.json version 2): a run whose encoder was frozen (`emoknn.frozen`) stores
its head alone (layer weights, projection, classifier, and whatever other non-encoder tensors and
buffers the model has) and a reference to the encoder: its `source` (Hub id, local folder or
"tiny"), the Hub `revision` it was loaded at (a commit, when known), and `fingerprint`, the SHA-256
of the encoder's weights (`emoknn.knn.module_fingerprint` of `model.encoder`); its config is
model_config.encoder_config. `load_model` resolves the reference, first match wins:

    1. an encoder store: `encoders/<fingerprint>/` (encoder.safetensors + encoder.json) in the
       model folder, its parent or its grandparent (a cross-validation writes OUT/encoders/, a
       single run RUN/../encoders/, once per encoder), or in a folder of $EMOKNN_ENCODER_STORE
       (paths separated by os.pathsep);
    2. the source: a local folder, the Hugging Face cache or the Hub, at the recorded revision
       (`emoknn.hub`: fails in seconds offline);

and the weights found must have the recorded fingerprint. Nothing found: `EncoderNotFoundError`, one
line saying which encoder (source, revision, fingerprint) and how to get it. `pack_model` writes a
self-contained copy (full weights, version 1) that any emoknn reads.

Folders from emoknn versions before model.safetensors hold only `checkpoints/best.ckpt`, which
was written as a full pickle. `convert_checkpoint` turns one into a model file, once: safely when
the checkpoint holds only tensors and plain values, and by unpickling only when the caller says the
file is trusted (`emoknn convert RUN --trust-pickle`). Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoknn import __version__
from emoknn.calibration import Calibration
from emoknn.errors import EmoknnError, ModelFolderError
from emoknn.files import (
    atomic_path,
    check_writable_folder,
    give_default_permissions,
    read_json_object,
    write_json_atomic,
)
from emoknn.knn import (
    Datastore,
    KnnSettings,
    TuningResult,
    model_fingerprint,
    module_fingerprint,
)
from emoknn.model import EmotionModel, ModelConfig, load_encoder, tuned_encoder_names
from emoknn.speaker_stats import SpeakerStatistics

MODEL_FILE = "model.safetensors"
MODEL_META_FILE = "model.json"
RUN_CONFIG_FILE = "train_config.json"
DATASTORE_FILE = "datastore.npz"
KNN_SETTINGS_FILE = "knn.json"
CALIBRATION_FILE = "calibration.json"
EXPORT_META_FILE = "export.json"
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"

MODEL_FORMAT = "emoknn-model"
MODEL_FORMAT_VERSION = 2  # the newest this emoknn reads; full-weight folders are still written as 1
FULL_FORMAT_VERSION = 1  # model.safetensors holds every weight
HEAD_ONLY_FORMAT_VERSION = 2  # model.safetensors holds the head; model.json names the encoder
ENCODER_PREFIX = "encoder."  # state_dict names of the encoder's tensors
ENCODER_STORE_DIR = "encoders"
ENCODER_STORE_ENV = "EMOKNN_ENCODER_STORE"
ENCODER_WEIGHTS_FILE = "encoder.safetensors"
ENCODER_META_FILE = "encoder.json"
ENCODER_FORMAT = "emoknn-encoder"
STORE_SEARCH_LEVELS = 3  # the model folder, its parent, its grandparent (OUT/<training>/<fold>)
MAX_CROP_SECONDS = 600.0  # a crop longer than this is not a setting anyone trained with


def fingerprint_of(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights (see `emoknn.knn.model_fingerprint`)."""
    return model_fingerprint(model.state_dict())


def predictable_labels(model_config: dict[str, Any]) -> list[str] | None:
    """The output labels a model's classifier can predict, when that is not all of them (an
    adapted model given labels of its own: `ModelConfig.label_map`); None when it predicts all."""
    output, label_map = model_config.get("output_labels"), model_config.get("label_map")
    if not output or not isinstance(label_map, dict):
        return None
    known = [name for name in output if name in label_map.values()]
    return None if known == list(output) else known


# ── small validated readers ─────────────────────────────────────────────────────────────────────


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or one line saying why not."""
    return read_json_object(path, ModelFolderError, allow_nan=False)


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path,
             where: str = "") -> Any:  # fmt: skip
    """data[key], which must exist and be of `kind` (bool is not accepted as a number)."""
    name = f"{where}{key}"
    if key not in data:
        raise ModelFolderError(f"{path}: missing {name!r}")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong_bool = isinstance(value, bool) and bool not in kinds
    if wrong_bool or not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise ModelFolderError(f"{path}: {name!r} must be {expected}, got {value!r:.60}")
    return value


def _labels(value: Any, path: Path, name: str = "labels") -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(label, str) and label for label in value)
        or len(set(value)) != len(value)
    ):
        raise ModelFolderError(
            f"{path}: {name!r} must be a list of at least 2 distinct non-empty names, "
            f"got {value!r:.80}"
        )
    return list(value)


def _crop_seconds(value: Any, path: Path, name: str = "max_seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelFolderError(f"{path}: {name!r} must be a number of seconds, got {value!r:.60}")
    if not 0.025 < value <= MAX_CROP_SECONDS:
        raise ModelFolderError(
            f"{path}: {name!r} must lie in (0.025, {MAX_CROP_SECONDS:g}] seconds, got {value}"
        )
    return float(value)


def _fingerprint(value: Any, path: Path, name: str = "fingerprint") -> str:
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                                 for c in value)):  # fmt: skip
        raise ModelFolderError(f"{path}: {name!r} must be 64 hex digits (SHA-256)")
    return value


# ── the model: model.safetensors + model.json ──────────────────────────────────────────────────


@dataclass
class ModelMeta:
    """What model.json says: enough to rebuild the model and to use it as it was trained."""

    model_config: dict[str, Any]  # ModelConfig.to_dict(), with the encoder's full config
    labels: list[str]
    max_seconds: float  # crop length the model was trained with; prediction windows default to it
    fingerprint: str  # model_fingerprint of the whole model's weights (head and encoder)
    encoder: EncoderReference | None = None  # head-only folders: the encoder they need
    head_fingerprint: str | None = None  # head-only folders: model_fingerprint of the file

    @property
    def head_only(self) -> bool:
        return self.encoder is not None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": MODEL_FORMAT,
            "version": HEAD_ONLY_FORMAT_VERSION if self.head_only else FULL_FORMAT_VERSION,
            "labels": self.labels,
            "max_seconds": self.max_seconds,
            "fingerprint": self.fingerprint,
            "model_config": self.model_config,
            "emoknn_version": __version__,
        }
        if self.encoder is not None:
            data["encoder_reference"] = self.encoder.to_dict()
            data["head_fingerprint"] = self.head_fingerprint
        return data


@dataclass(frozen=True)
class EncoderReference:
    """Which encoder a head-only folder needs (module docstring)."""

    source: str  # Hub id, local folder (absolute) or "tiny"
    revision: str | None  # the Hub commit it was loaded at; None for a folder or unknown
    fingerprint: str  # module_fingerprint of model.encoder

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "revision": self.revision, "fingerprint": self.fingerprint}

    def describe(self) -> str:
        at = f" at revision {self.revision}" if self.revision else ""
        return f"{self.source}{at} (weights sha256 {self.fingerprint[:16]}…)"


def encoder_reference(model: EmotionModel) -> EncoderReference:
    """The reference to `model`'s encoder that a head-only folder records."""
    source, revision = model.config.encoder, None
    path = Path(source).expanduser()
    if source != "tiny" and path.is_dir():
        source = str(path.resolve())
    elif source != "tiny":
        commit = getattr(model.encoder.config, "_commit_hash", None)
        revision = commit if isinstance(commit, str) and commit else None
    return EncoderReference(source, revision, module_fingerprint(model.encoder))


def _encoder_reference(value: Any, path: Path) -> EncoderReference:
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path}: 'encoder_reference' must be a JSON object")
    source = _require(value, "source", str, path, "encoder_reference.")
    revision = value.get("revision")
    if revision is not None and not isinstance(revision, str):
        raise ModelFolderError(f"{path}: 'encoder_reference.revision' must be a string or null")
    fingerprint = _fingerprint(value.get("fingerprint"), path, "encoder_reference.fingerprint")
    return EncoderReference(source, revision, fingerprint)


def has_model(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / MODEL_FILE).is_file() and (folder / MODEL_META_FILE).is_file()


def _unshared_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors, none sharing memory with another (safetensors refuses shared
    storage, e.g. tied weights; `load_state_dict` restores each copy)."""
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if key in seen:
            tensor = tensor.clone()
        seen.add(key)
        tensors[name] = tensor
    return tensors


def save_model(folder: str | os.PathLike, model: EmotionModel, max_seconds: float,
               encoder: EncoderReference | None = None) -> ModelMeta:  # fmt: skip
    """Write `model` to `folder` as model.safetensors + model.json (each atomically); with
    `encoder` (a frozen run's, see `write_encoder_store`), the head alone and that reference.

    The weights are written first: a reader never finds a model.json that describes weights not
    yet on disk (and `load_model` checks the fingerprint that ties the two together).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    state = _unshared_tensors(model.state_dict())
    meta = ModelMeta(
        model_config=model.config.to_dict(),
        labels=list(model.labels),
        max_seconds=float(max_seconds),
        fingerprint=model_fingerprint(state),
    )
    if encoder is not None:
        # A partially fine-tuned model (`tuned_layers`) differs from the referenced encoder in its
        # tuned layers, which it keeps beside the head; the reference is the encoder they started
        # from (its fingerprint was taken before training, by `write_encoder_store`).
        tuned = set(tuned_encoder_names(model))
        if not tuned and encoder.fingerprint != module_fingerprint(model.encoder):
            raise ModelFolderError(f"{folder}: the encoder reference names other weights than "
                                   "the model's encoder")  # fmt: skip
        state = {name: t for name, t in state.items()
                 if not name.startswith(ENCODER_PREFIX) or name in tuned}  # fmt: skip
        meta.encoder, meta.head_fingerprint = encoder, model_fingerprint(state)
    _crop_seconds(meta.max_seconds, folder / MODEL_META_FILE)
    with atomic_path(folder / MODEL_FILE) as temporary:
        save_file(state, str(temporary), metadata={"format": MODEL_FORMAT})
        give_default_permissions(temporary)
    write_json_atomic(meta.to_dict(), folder / MODEL_META_FILE)
    return meta


def _missing_model_error(folder: Path) -> ModelFolderError:
    """Why `folder` has no usable model file, and what to do about it."""
    if not folder.exists():
        return ModelFolderError(f"{folder}: model folder not found")
    if not folder.is_dir():
        return ModelFolderError(f"{folder}: not a model folder (expected a folder)")
    if (folder / MODEL_FILE).is_file() and not (folder / MODEL_META_FILE).is_file():
        return ModelFolderError(f"{folder / MODEL_META_FILE}: not found (it belongs with "
                                f"{MODEL_FILE})")  # fmt: skip
    if (folder / MODEL_META_FILE).is_file():
        return ModelFolderError(f"{folder / MODEL_FILE}: not found (model.json describes it)")
    checkpoints = folder / CHECKPOINT_DIR
    if (checkpoints / BEST_CHECKPOINT).is_file():
        return ModelFolderError(
            f"{folder}: made by an earlier emoknn (a pickled checkpoints/{BEST_CHECKPOINT}, no "
            f"{MODEL_FILE}); convert it once with `emoknn convert {folder}` (it unpickles the "
            "checkpoint only with --trust-pickle: use that on your own files only)"
        )
    if (checkpoints / LAST_CHECKPOINT).is_file():
        return ModelFolderError(
            f"{folder}: training has not finished (no {MODEL_FILE} yet); continue it with "
            "`emoknn train ... --resume`"
        )
    return ModelFolderError(
        f"{folder}: not a trained model folder (no {MODEL_FILE}; `emoknn train` writes one)"
    )


def read_model_meta(folder: str | os.PathLike) -> ModelMeta:
    """model.json of `folder`, validated (the weights are not read)."""
    folder = Path(folder)
    if not has_model(folder):
        raise _missing_model_error(folder)
    path = folder / MODEL_META_FILE
    data = _read_json(path)
    kind = data.get("format")
    if kind != MODEL_FORMAT:
        raise ModelFolderError(f"{path}: 'format' must be {MODEL_FORMAT!r}, got {kind!r:.60}")
    version = _require(data, "version", int, path)
    if version > MODEL_FORMAT_VERSION:
        raise ModelFolderError(
            f"{path}: model format version {version} is newer than this emoknn reads "
            f"({MODEL_FORMAT_VERSION}); upgrade emoknn"
        )
    if version < 1:
        raise ModelFolderError(f"{path}: 'version' must be ≥ 1, got {version}")
    labels = _labels(data.get("labels"), path)
    model_config = _require(data, "model_config", dict, path)
    _check_model_config(model_config, labels, path)
    meta = ModelMeta(
        model_config=model_config,
        labels=labels,
        max_seconds=_crop_seconds(data.get("max_seconds"), path),
        fingerprint=_fingerprint(data.get("fingerprint"), path),
    )
    if version >= HEAD_ONLY_FORMAT_VERSION:
        meta.encoder = _encoder_reference(data.get("encoder_reference"), path)
        meta.head_fingerprint = _fingerprint(data.get("head_fingerprint"), path,
                                             "head_fingerprint")  # fmt: skip
    return meta


def _check_model_config(config: dict[str, Any], labels: list[str], path: Path) -> None:
    """The ModelConfig dict: known fields only, each of its default's type, the encoder's full
    config present (so that building the model never downloads anything)."""
    known = {f.name: f for f in fields(ModelConfig)}
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ModelFolderError(
            f"{path}: model_config has unknown field(s) {', '.join(unknown)} (written by a newer "
            "emoknn?)"
        )
    defaults = ModelConfig()
    for name, value in config.items():
        default = getattr(defaults, name)
        if value is None or default is None or isinstance(default, (list, dict)):
            continue
        kind = float if isinstance(default, float) else type(default)
        ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
        if not ok or (isinstance(value, bool) and kind is not bool):
            raise ModelFolderError(
                f"{path}: model_config.{name} must be {kind.__name__}, got {value!r:.60}"
            )
    encoder_config = config.get("encoder_config")
    if not isinstance(encoder_config, dict) or not isinstance(
        encoder_config.get("model_type"), str
    ):
        raise ModelFolderError(
            f"{path}: model_config.encoder_config must be the encoder's config (a JSON object "
            "with model_type)"
        )
    # An adapted model answers in its output labels (ModelConfig.label_map), else its own.
    if (config.get("output_labels") or config.get("labels")) != labels:
        raise ModelFolderError(f"{path}: model_config's labels differ from 'labels'")


def _build_model(model_config: dict[str, Any], path: Path,
                 encoder: torch.nn.Module | None = None) -> EmotionModel:  # fmt: skip
    """An EmotionModel with random weights, of the architecture `model_config` describes (around
    `encoder`, if given)."""
    try:
        config = ModelConfig(**model_config)
        return EmotionModel(config, encoder=encoder)
    except (EmoknnError, TypeError, ValueError, KeyError, AttributeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFolderError(
            f"{path}: cannot build the model it describes ({message})"
        ) from error


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    if path.stat().st_size == 0:
        raise ModelFolderError(f"{path}: the file is empty")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelFolderError(
            f"{path}: not a readable safetensors file ({str(error).splitlines()[0]}; truncated?)"
        ) from error


def _check_weights(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                   path: Path) -> None:  # fmt: skip
    """Same names, shapes and dtypes as the model expects, and finite values."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[0]}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s), e.g. {extra[0]}")
        raise ModelFolderError(f"{path}: does not match model.json ({'; '.join(parts)})")
    for name, want in expected.items():
        got = weights[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ModelFolderError(
                f"{path}: tensor {name} is {got.dtype} {tuple(got.shape)}, the model needs "
                f"{want.dtype} {tuple(want.shape)}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise ModelFolderError(f"{path}: tensor {name} holds NaN or infinite values")


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> EmotionModel:
    """The model of `folder` (model.json + model.safetensors), in evaluation mode on `device`.

    Strict: the weights must match the architecture model.json describes name for name, shape for
    shape and dtype for dtype, and their fingerprint must be the one model.json records.
    """
    folder = Path(folder)
    meta = read_model_meta(folder)
    path = folder / MODEL_FILE
    weights = _read_weights(path)
    if meta.encoder is not None:
        return _load_head_only(folder, meta, weights).to(device)
    model = _build_model(meta.model_config, folder / MODEL_META_FILE)
    _check_weights(weights, model.state_dict(), path)
    if model_fingerprint(weights) != meta.fingerprint:
        raise ModelFolderError(
            f"{path}: the weights are not the ones model.json describes (fingerprint differs); "
            "the folder mixes files of two models"
        )
    model.load_state_dict(weights, strict=True)
    return model.eval().to(device)


# ── head-only folders: the encoder store, resolving a reference, packing ──────────────────────


class EncoderNotFoundError(ModelFolderError):
    """A head-only model folder's encoder is nowhere to be found (or has other weights)."""


def default_encoder_store(run_dir: str | os.PathLike) -> Path:
    """`encoders` beside a run folder: the runs of one parent folder share it."""
    return Path(run_dir).resolve().parent / ENCODER_STORE_DIR


def encoder_stores(folder: str | os.PathLike) -> list[Path]:
    """Where `load_model` looks for the encoder of a head-only `folder`, in order."""
    here = Path(folder).resolve()
    levels = [here, *here.parents][:STORE_SEARCH_LEVELS]
    extra = [Path(p) for p in os.environ.get(ENCODER_STORE_ENV, "").split(os.pathsep) if p]
    return [level / ENCODER_STORE_DIR for level in levels] + extra


def write_encoder_store(root: str | os.PathLike, model: EmotionModel) -> EncoderReference:
    """Put `model`'s encoder in the store `root` (root/<fingerprint>/, written once, atomically:
    staged, then renamed) unless it is there; return the reference a head-only folder records."""
    from safetensors.torch import save_file

    reference = encoder_reference(model)
    target = Path(root) / reference.fingerprint
    if (target / ENCODER_META_FILE).is_file():
        return reference
    stage = Path(root) / f".{reference.fingerprint}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        save_file(_unshared_tensors(model.encoder.state_dict()), str(stage / ENCODER_WEIGHTS_FILE),
                  metadata={"format": ENCODER_FORMAT})  # fmt: skip
        give_default_permissions(stage / ENCODER_WEIGHTS_FILE)  # safetensors writes it 0600
        info = {"format": ENCODER_FORMAT, "version": 1, **reference.to_dict(),
                "config": model.config.encoder_config, "emoknn_version": __version__}  # fmt: skip
        write_json_atomic(info, stage / ENCODER_META_FILE)
        if target.is_dir():  # left by an interrupted writer of an older emoknn: never complete
            shutil.rmtree(target)
        try:
            os.replace(stage, target)
        except OSError:
            if not (target / ENCODER_META_FILE).is_file():  # not another process's copy
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return reference


# (path, size, mtime_ns) of a store's weights file → its fingerprint: hashed once per process.
_VERIFIED_STORE_FILES: dict[tuple[str, int, int], str] = {}


def _model_from_store(entry: Path, meta: ModelMeta, config_path: Path) -> EmotionModel:
    """The model of `meta` around the encoder in the store entry `entry` (checked)."""
    reference = meta.encoder
    assert reference is not None
    info = _read_json(entry / ENCODER_META_FILE)
    if info.get("format") != ENCODER_FORMAT or info.get("fingerprint") != reference.fingerprint:
        raise ModelFolderError(f"{entry / ENCODER_META_FILE}: not the store entry of encoder "
                               f"{reference.fingerprint[:16]}…")  # fmt: skip
    path = entry / ENCODER_WEIGHTS_FILE
    if not path.is_file():
        raise ModelFolderError(f"{path}: not found (the encoder store entry is incomplete)")
    tensors = _read_weights(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED_STORE_FILES:
        _VERIFIED_STORE_FILES[key] = model_fingerprint(tensors)
    if _VERIFIED_STORE_FILES[key] != reference.fingerprint:
        raise ModelFolderError(f"{path}: its weights are not the encoder {reference.describe()} "
                               "(damaged store: delete this entry)")  # fmt: skip
    model = _build_model(meta.model_config, config_path)  # the encoder built from its config
    _check_weights(tensors, model.encoder.state_dict(), path)
    model.encoder.load_state_dict(tensors, strict=True)
    return model


def model_from_source(meta: ModelMeta, config_path: Path) -> tuple[EmotionModel | None, str]:
    """(the model of `meta` around the encoder loaded from its source, "") or (None, why not)."""
    reference = meta.encoder
    assert reference is not None
    if reference.source == "tiny":
        return None, "the tiny encoder starts from random weights, so only a store holds them"
    from transformers.utils import logging as transformers_logging

    bar = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a bar per load, around a one-line error
    try:
        encoder = load_encoder(ModelConfig(encoder=reference.source), reference.revision)
    except EmoknnError as error:
        return None, str(error).splitlines()[0]
    finally:
        if bar:
            transformers_logging.enable_progress_bar()
    model = _build_model(meta.model_config, config_path, encoder=encoder)
    found = module_fingerprint(model.encoder)
    if found != reference.fingerprint:
        return None, f"{reference.source} holds other weights (sha256 {found[:16]}…)"
    return model, ""


def resolve_encoder(folder: str | os.PathLike, meta: ModelMeta) -> EmotionModel:
    """The model of a head-only folder with its encoder's weights in place (the head's are not
    yet loaded), or `EncoderNotFoundError`: one line naming the encoder and how to get it."""
    folder = Path(folder)
    reference = meta.encoder
    assert reference is not None
    config_path = folder / MODEL_META_FILE
    for store in encoder_stores(folder):
        entry = store / reference.fingerprint
        if (entry / ENCODER_META_FILE).is_file():
            return _model_from_store(entry, meta, config_path)
    model, why = model_from_source(meta, config_path)
    if model is not None:
        return model
    raise EncoderNotFoundError(
        f"{folder}: needs the encoder {reference.describe()}, found in no encoder store "
        f"({ENCODER_STORE_DIR}/{reference.fingerprint[:16]}… beside the run or in "
        f"${ENCODER_STORE_ENV}) nor at its source ({why}); copy the {ENCODER_STORE_DIR}/ folder "
        "of the output folder it was trained in beside it, make the source available, or make a "
        "self-contained copy with `emoknn pack RUN OUT` where the encoder is"
    )


def _load_head_only(folder: Path, meta: ModelMeta, weights: dict[str, torch.Tensor]
                    ) -> EmotionModel:  # fmt: skip
    path = folder / MODEL_FILE
    if model_fingerprint(weights) != meta.head_fingerprint:
        raise ModelFolderError(
            f"{path}: the weights are not the ones model.json describes (head fingerprint "
            "differs); the folder mixes files of two models"
        )
    model = resolve_encoder(folder, meta)
    tuned = set(tuned_encoder_names(model))  # partial fine-tuning: its layers come with the head
    expected = {n: t for n, t in model.state_dict().items()
                if not n.startswith(ENCODER_PREFIX) or n in tuned}  # fmt: skip
    _check_weights(weights, expected, path)
    model.load_state_dict(weights, strict=False)  # the encoder's are in place (resolve_encoder)
    return model.eval()


PACK_SKIPPED = (CHECKPOINT_DIR, "onnx", ".staging-*", ".*.tmp-*")  # resume state, exports, temps


def pack_model(folder: str | os.PathLike, out: str | os.PathLike) -> ModelMeta:
    """Write a self-contained copy of the model folder `folder` to `out` (a new or empty folder):
    every file but checkpoints/ and exports, the model with its full weights (format version 1),
    its files without paths of this machine (`emoknn.publish`).

    Everything is read and checked first (the encoder resolved, the datastore matched to the
    model); the copy is staged beside `out` and renamed into place whole.
    """
    from emoknn.publish import publish_folder

    folder, out = Path(folder), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelFolderError(f"{out}: exists and is not empty; pack writes a new folder")
    if out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents:
        raise ModelFolderError(f"{out}: inside the model folder {folder}; pack it elsewhere")
    check_writable_folder(out, "the pack folder")
    meta = read_model_meta(folder)
    model = load_model(folder)
    if (folder / DATASTORE_FILE).is_file():
        load_knn(folder, meta.fingerprint, meta.labels, model.embedding_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        shutil.copytree(folder, stage, ignore=shutil.ignore_patterns(*PACK_SKIPPED))
        for name in (MODEL_FILE, MODEL_META_FILE):
            (stage / name).unlink()
        packed = save_model(stage, model, meta.max_seconds)
        publish_folder(stage)  # a copy to share: no path of this machine in its files
        if packed.fingerprint != meta.fingerprint:
            raise ModelFolderError(
                f"{folder}: the assembled model's fingerprint differs from model.json's; the "
                "folder mixes files of two models"
            )
        if out.is_dir():
            out.rmdir()
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return packed


# ── Lightning checkpoints (resume; converting folders of earlier versions) ─────────────────────


def checkpoint_path(folder: str | os.PathLike, which: str = "last") -> Path:
    """`folder/checkpoints/{best,last}.ckpt`."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    return Path(folder) / CHECKPOINT_DIR / (BEST_CHECKPOINT if which == "best" else LAST_CHECKPOINT)


def read_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint's contents. With `weights_only=True` (the default here) torch's
    unpickler builds tensors and plain containers only, so the file cannot run code; with
    `trust_pickle` it is fully unpickled: only for files you made yourself."""
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise ModelFolderError(f"{path}: the file is empty (interrupted while written?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:  # torch raises many types for a bad file
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise ModelFolderError(
                f"{path}: holds Python objects besides tensors, so it is not loaded (loading it "
                "could run code). If you made this file yourself, convert it with `emoknn convert "
                "RUN --trust-pickle`"
            ) from error
        raise ModelFolderError(f"{path}: not a readable checkpoint ({message})") from error
    if not isinstance(state, dict):
        raise ModelFolderError(f"{path}: not an emoknn training checkpoint")
    return state


def model_from_checkpoint(state: dict[str, Any], path: Path) -> tuple[EmotionModel, float]:
    """(model, crop length) from a Lightning checkpoint's contents (see `read_checkpoint`)."""
    hyper = state.get("hyper_parameters")
    weights = state.get("state_dict")
    if not isinstance(hyper, dict) or not isinstance(weights, dict):
        raise ModelFolderError(f"{path}: not an emoknn training checkpoint (no hyper_parameters "
                               "or state_dict)")  # fmt: skip
    model_config = hyper.get("model_config")
    train_config = hyper.get("train_config")
    if not isinstance(model_config, dict) or not isinstance(train_config, dict):
        raise ModelFolderError(f"{path}: not an emoknn training checkpoint (no model_config)")
    labels = _labels(model_config.get("labels"), path, "model_config.labels")
    _check_model_config(model_config, labels, path)
    max_seconds = _crop_seconds(train_config.get("max_seconds"), path, "train_config.max_seconds")
    model = _build_model(model_config, path)
    tensors = {
        name.removeprefix("model."): value
        for name, value in weights.items()
        if isinstance(name, str) and name.startswith("model.")
    }
    if not all(isinstance(value, torch.Tensor) for value in tensors.values()):
        raise ModelFolderError(f"{path}: state_dict holds values that are not tensors")
    _check_weights(tensors, model.state_dict(), path)
    model.load_state_dict(tensors, strict=True)
    return model.eval(), max_seconds


def load_checkpoint_model(path: str | os.PathLike, device: str | torch.device = "cpu"
                          ) -> tuple[EmotionModel, float]:  # fmt: skip
    """(model in evaluation mode, crop length) of a Lightning checkpoint, read safely
    (`weights_only=True`)."""
    path = Path(path)
    model, max_seconds = model_from_checkpoint(read_checkpoint(path), path)
    return model.to(device), max_seconds


def convert_checkpoint(folder: str | os.PathLike, trust_pickle: bool = False) -> ModelMeta:
    """Write the model file of a run folder from an earlier emoknn (checkpoints/best.ckpt only).

    Reads the checkpoint with `weights_only=True` when it can; a checkpoint that holds other
    Python objects is unpickled only with `trust_pickle` (unpickling runs whatever code the file
    carries: only for files you made yourself).
    """
    folder = Path(folder)
    path = checkpoint_path(folder, "best")
    if not path.is_file():
        raise ModelFolderError(f"{folder}: nothing to convert (no {CHECKPOINT_DIR}/"
                               f"{BEST_CHECKPOINT})")  # fmt: skip
    model, max_seconds = model_from_checkpoint(read_checkpoint(path, trust_pickle), path)
    return save_model(folder, model, max_seconds)


# ── train_config.json ───────────────────────────────────────────────────────────────────────────

RUN_INFO_STRINGS = ("corpus", "kind", "scheme", "label_map", "fold", "test_speaker", "val_speaker",
                    "training")  # fmt: skip


def write_run_config(folder: str | os.PathLike, train_config: dict[str, Any], labels: list[str],
                     info: dict[str, Any] | None = None) -> None:  # fmt: skip
    """train_config.json: the training settings, the labels and `info` (corpus, fold, ...)."""
    write_json_atomic(
        {"train_config": train_config, "labels": list(labels), **(info or {})},
        Path(folder) / RUN_CONFIG_FILE,
    )


def read_run_config(folder: str | os.PathLike) -> dict[str, Any]:
    """train_config.json of a training run, validated."""
    folder = Path(folder)
    path = folder / RUN_CONFIG_FILE
    if not path.is_file():
        if not folder.is_dir():
            raise ModelFolderError(f"{folder}: run folder not found")
        raise ModelFolderError(f"{folder}: not a training run (no {RUN_CONFIG_FILE})")
    data = _read_json(path)
    train_config = _require(data, "train_config", dict, path)
    _labels(data.get("labels"), path)
    _crop_seconds(train_config.get("max_seconds"), path, "train_config.max_seconds")
    for key in RUN_INFO_STRINGS:
        if key in data:
            _require(data, key, str, path)
    for key in ("train_ids_sha256", "val_ids_sha256"):
        if key in data:
            _require(data, key, str, path)
    return data


def ids_digest(ids: list[str]) -> str:
    """SHA-256 of a set of utterance ids (order-free): identifies which utterances a split held."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def run_max_seconds(folder: str | os.PathLike) -> float:
    """The crop length the model of `folder` was trained with (model.json)."""
    return read_model_meta(folder).max_seconds


# ── datastore.npz and knn.json ──────────────────────────────────────────────────────────────────


def save_datastore(folder: str | os.PathLike, store: Datastore) -> None:
    """datastore.npz, atomically (plain arrays: strings as unicode arrays, no pickled objects)."""
    # A file handle, so that np.savez does not append .npz to the temporary name.
    with atomic_path(Path(folder) / DATASTORE_FILE) as temporary, temporary.open("wb") as handle:
        np.savez(
            handle,
            keys=store.keys,
            labels=store.labels,
            label_names=np.array(store.label_names),
            ids=np.array(store.ids, dtype=str),
            fingerprint=np.array(store.fingerprint),
            index_type=np.array(store.index_type),
            # Where each entry came from, when known ("" where not); older files lack them.
            **{name: np.array(values, dtype=str)
               for name, values in (("sources", store.sources), ("speakers", store.speakers))
               if any(values)},
            # A dimensional model's datastore: each entry's attribute values (N, A) and names.
            **({} if store.values is None else {
                "values": store.values, "attribute_names": np.array(store.attributes)}),
        )  # fmt: skip


def load_datastore(folder: str | os.PathLike, fingerprint: str | None = None,
                   labels: list[str] | None = None, width: int | None = None
                   ) -> Datastore:  # fmt: skip
    """datastore.npz of `folder`, validated; with `fingerprint` (and `labels`, `width`), refused
    unless made by that model (with those classes, embeddings `width` wide)."""
    path = Path(folder) / DATASTORE_FILE
    if not path.is_file():
        raise ModelFolderError(f"{path}: datastore not found")
    if path.stat().st_size == 0:
        raise ModelFolderError(f"{path}: the file is empty")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFolderError(f"{path}: not a readable datastore ({message})") from error
    required = ("keys", "labels", "label_names", "ids", "fingerprint", "index_type")
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ModelFolderError(f"{path}: not an emoknn datastore (missing {', '.join(missing)})")
    keys, ids = arrays["keys"], arrays["ids"]
    stored_labels, names = arrays["labels"], arrays["label_names"]
    if keys.ndim != 2 or keys.dtype.kind != "f" or keys.shape[0] == 0 or keys.shape[1] == 0:
        raise ModelFolderError(f"{path}: keys must be a non-empty float (N, D) array, got "
                               f"{keys.dtype} {keys.shape}")  # fmt: skip
    if not np.isfinite(keys).all():
        raise ModelFolderError(f"{path}: keys hold NaN or infinite values")
    if width is not None and keys.shape[1] != width:
        raise ModelFolderError(
            f"{path}: holds {keys.shape[1]}-wide embeddings, the model gives {width}-wide ones; "
            "the folder mixes files of two models"
        )
    count = keys.shape[0]
    if stored_labels.shape != (count,) or stored_labels.dtype.kind not in "iu":
        raise ModelFolderError(f"{path}: labels must be {count} integers, got "
                               f"{stored_labels.dtype} {stored_labels.shape}")  # fmt: skip
    if names.ndim != 1 or names.dtype.kind != "U":
        raise ModelFolderError(f"{path}: label_names must be a list of names")
    label_names = _labels(names.tolist(), path, "label_names")
    if stored_labels.min() < 0 or stored_labels.max() >= len(label_names):
        raise ModelFolderError(f"{path}: labels must lie in [0, {len(label_names)})")
    if ids.shape != (count,) or ids.dtype.kind != "U":
        raise ModelFolderError(f"{path}: ids must be {count} strings, got {ids.dtype} {ids.shape}")
    id_list = ids.tolist()
    if len(set(id_list)) != count:
        raise ModelFolderError(f"{path}: ids repeat (each utterance may be stored once)")
    scalars = {}
    for name in ("fingerprint", "index_type"):
        value = arrays[name]
        if value.shape != () or value.dtype.kind != "U":
            raise ModelFolderError(f"{path}: {name} must be a string")
        scalars[name] = str(value)
    if scalars["index_type"] not in ("exact", "hnsw"):
        raise ModelFolderError(f"{path}: index_type must be exact or hnsw, got "
                               f"{scalars['index_type']!r:.40}")  # fmt: skip
    if fingerprint is not None and scalars["fingerprint"] != fingerprint:
        raise ModelFolderError(
            f"{path}: this datastore was built by a different model (fingerprint "
            f"{scalars['fingerprint'][:12]}…, the model is {fingerprint[:12]}…); rebuild it with "
            "`emoknn datastore build`"
        )
    if labels is not None and label_names != list(labels):
        raise ModelFolderError(f"{path}: its classes {label_names} are not the model's {labels}")
    recorded = {}
    for name in ("sources", "speakers"):  # optional: one string per entry
        if name in arrays:
            value = arrays[name]
            if value.shape != (count,) or value.dtype.kind != "U":
                raise ModelFolderError(f"{path}: {name} must be {count} strings, got "
                                       f"{value.dtype} {value.shape}")  # fmt: skip
            recorded[name] = value.tolist()
    values, attributes = _datastore_values(arrays, count, path)
    return Datastore(keys, stored_labels, label_names, id_list, scalars["fingerprint"],
                     scalars["index_type"], **recorded, values=values,
                     attributes=attributes)  # fmt: skip


def _datastore_values(arrays: dict[str, np.ndarray], count: int, path: Path
                      ) -> tuple[np.ndarray | None, list[str] | None]:  # fmt: skip
    """The optional attribute values (count, A) and their names, checked."""
    if "values" not in arrays and "attribute_names" not in arrays:
        return None, None
    values, names = arrays.get("values"), arrays.get("attribute_names")
    if values is None or names is None:
        raise ModelFolderError(f"{path}: values and attribute_names come together")
    if names.ndim != 1 or names.dtype.kind != "U" or not names.size:
        raise ModelFolderError(f"{path}: attribute_names must be a list of names")
    if (
        values.dtype.kind != "f"
        or values.shape != (count, names.size)
        or not np.isfinite(values).all()
    ):
        raise ModelFolderError(f"{path}: values must be finite floats ({count}, {names.size}), "
                               f"got {values.dtype} {values.shape}")  # fmt: skip
    return values, names.tolist()


def save_knn_settings(folder: str | os.PathLike, tuning: TuningResult) -> None:
    write_json_atomic(tuning.to_dict(), Path(folder) / KNN_SETTINGS_FILE)


def _knn_settings(data: Any, path: Path, name: str) -> KnnSettings:
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: {name!r} must be a JSON object")
    where = f"{name}."
    k = _require(data, "k", int, path, where)
    alpha = _require(data, "alpha", (int, float), path, where)
    temperature = _require(data, "temperature", (int, float, str), path, where)
    score = _require(data, "score", (int, float), path, where)
    criterion = _require(data, "criterion", str, path, where)
    model_labels = data.get("model_labels")
    if model_labels is not None and (
        not isinstance(model_labels, list)
        or not all(isinstance(label, str) and label for label in model_labels)
    ):
        raise ModelFolderError(f"{path}: {name}.model_labels must be a list of label names")
    known_fields = {"k", "alpha", "temperature", "score", "criterion", "model_labels"}
    unknown = sorted(set(data) - known_fields)
    if unknown:
        raise ModelFolderError(f"{path}: {name} has unknown field(s) {', '.join(unknown)}")
    if k < 1:
        raise ModelFolderError(f"{path}: {name}.k must be ≥ 1, got {k}")
    if not 0.0 <= alpha <= 1.0:
        raise ModelFolderError(f"{path}: {name}.alpha must lie in [0, 1], got {alpha}")
    if temperature == "inf":
        temperature = math.inf
    if isinstance(temperature, str) or not temperature > 0 or math.isnan(temperature):
        raise ModelFolderError(
            f'{path}: {name}.temperature must be > 0 or "inf", got {temperature!r:.40}'
        )
    regression = name.startswith("regression.")
    if criterion not in (("ccc",) if regression else ("ua", "wa")):
        expected = "ccc" if regression else "ua or wa"
        raise ModelFolderError(
            f"{path}: {name}.criterion must be {expected}, got {criterion!r:.20}"
        )
    low = -1.0 if regression else 0.0  # a CCC lies in [−1, 1]
    if not low <= score <= 1.0:
        raise ModelFolderError(f"{path}: {name}.score must lie in [{low:g}, 1], got {score}")
    return KnnSettings(k, float(alpha), float(temperature), float(score), criterion, model_labels)


def load_knn_settings(folder: str | os.PathLike) -> TuningResult:
    """knn.json of `folder`, validated."""
    path = Path(folder) / KNN_SETTINGS_FILE
    data = _read_json(path)
    regression = data.get("regression")
    if regression is not None:
        if not isinstance(regression, dict):
            raise ModelFolderError(f"{path}: 'regression' must be a JSON object")
        regression = TuningResult(
            _knn_settings(regression.get("interpolated"), path, "regression.interpolated"),
            _knn_settings(regression.get("knn_only"), path, "regression.knn_only"),
        )
    return TuningResult(
        _knn_settings(data.get("interpolated"), path, "interpolated"),
        _knn_settings(data.get("knn_only"), path, "knn_only"),
        regression,
    )


def save_knn(folder: str | os.PathLike, store: Datastore, tuning: TuningResult) -> None:
    save_datastore(folder, store)
    save_knn_settings(folder, tuning)


def _check_model_labels(tuning: TuningResult, labels: list[str], known: list[str] | None,
                        path: Path) -> None:  # fmt: skip
    """Each setting's `model_labels` are the labels the model predicts (`known`; None: all)."""
    for name in ("interpolated", "knn_only"):
        stored = getattr(tuning, name).model_labels
        if stored is not None:
            outside = [label for label in stored if label not in labels]
            if outside or len(set(stored)) != len(stored):
                raise ModelFolderError(
                    f"{path}: {name}.model_labels {stored!r:.80} must be distinct labels of the "
                    f"model ({', '.join(labels)})"
                )
            if sorted(stored) == sorted(labels):
                stored = None
        if (sorted(stored) if stored else stored) != (sorted(known) if known else known):
            said = "all of its labels" if known is None else ", ".join(known) or "none"
            raise ModelFolderError(
                f"{path}: {name}.model_labels is {stored!r:.80}, but the model predicts {said}; "
                "the folder mixes files of two models"
            )


_NOT_GIVEN: Any = object()


def load_knn(folder: str | os.PathLike, fingerprint: str, labels: list[str],
             width: int | None = None, known: list[str] | None = _NOT_GIVEN
             ) -> tuple[Datastore, TuningResult]:  # fmt: skip
    """The datastore and kNN settings of `folder`, checked against the model: its fingerprint,
    labels, embedding `width`, and the labels it can predict (`known`, None for all; by default
    read from the folder's model.json or export.json)."""
    folder = Path(folder)
    if not (folder / DATASTORE_FILE).is_file():
        raise ModelFolderError(
            f"{folder}: no kNN datastore; build it with `emoknn datastore build {folder}`, or "
            "predict with the model alone (--no-knn / use_knn=False)"
        )
    store = load_datastore(folder, fingerprint, labels, width)
    tuning = load_knn_settings(folder)
    if known is _NOT_GIVEN:
        if has_model(folder):
            known = predictable_labels(read_model_meta(folder).model_config)
        elif is_export_folder(folder):
            known = read_export_meta(folder).get("model_labels")  # None: it predicts all
        else:
            known = None
    _check_model_labels(tuning, labels, known, folder / KNN_SETTINGS_FILE)
    return store, tuning


def save_calibration(folder: str | os.PathLike, calibration: Calibration) -> None:
    write_json_atomic(calibration.to_dict(), Path(folder) / CALIBRATION_FILE)


def _temperature_value(data: dict[str, Any], key: str, path: Path) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ModelFolderError(f"{path}: {key} must be a positive number, got {value!r:.40}")
    return float(value)


def load_calibration(folder: str | os.PathLike) -> Calibration:
    """calibration.json of `folder`, validated; T = 1 for both stages when the folder has none
    (written before calibration existed, or by a command that does not fit it)."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return Calibration()
    data = _read_json(path)
    if "fitted_for" not in data:  # null is fine (no kNN stage); absent would silently drop a T
        raise ModelFolderError(f"{path}: no fitted_for (the kNN settings the interpolation's "
                               "temperature was fitted with, or null)")  # fmt: skip
    fitted_for = data["fitted_for"]
    if fitted_for is not None:
        _knn_settings(fitted_for, path, "fitted_for")  # the settings it was fitted with
    clips = data.get("clips", 0)
    speakers = data.get("speakers", [])
    nll = data.get("nll", {})
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 0:
        raise ModelFolderError(f"{path}: clips must be a count ≥ 0, got {clips!r:.40}")
    if not isinstance(speakers, list) or not all(isinstance(x, str) for x in speakers):
        raise ModelFolderError(f"{path}: speakers must be a list of names")
    if not isinstance(nll, dict):
        raise ModelFolderError(f"{path}: nll must be a JSON object")
    return Calibration(_temperature_value(data, "model_temperature", path),
                       _temperature_value(data, "interpolated_temperature", path),
                       fitted_for, clips, speakers, nll)  # fmt: skip


# ── export folders: export.json, model.onnx, model.int8.onnx ───────────────────────────────────


def is_export_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / EXPORT_META_FILE).is_file()


def write_export_meta(folder: str | os.PathLike, meta: dict[str, Any]) -> None:
    write_json_atomic(meta, Path(folder) / EXPORT_META_FILE)


def read_export_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """export.json of an `emoknn export` folder, validated."""
    folder = Path(folder)
    path = folder / EXPORT_META_FILE
    if not path.is_file():
        raise ModelFolderError(f"{folder}: not an emoknn ONNX export (no {EXPORT_META_FILE})")
    data = _read_json(path)
    _labels(data.get("labels"), path)
    _crop_seconds(data.get("max_seconds"), path)
    _fingerprint(data.get("fingerprint"), path)
    if "embedding_size" not in data and "hidden_size" in data:  # written by emoknn ≤ 0.1
        data["embedding_size"] = data.pop("hidden_size")
    width = _require(data, "embedding_size", int, path)
    if width < 1:
        raise ModelFolderError(f"{path}: 'embedding_size' must be ≥ 1, got {width}")
    limit = data.get("max_input_seconds")  # the graph's longest input (Whisper), null if none
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or not limit > 0):  # fmt: skip
        raise ModelFolderError(
            f"{path}: 'max_input_seconds' must be a positive number or null, got {limit!r:.60}"
        )
    attributes = data.get("attributes")  # a dimensional model's regression outputs, in order
    if attributes is not None and (
        not isinstance(attributes, list) or not attributes
        or not all(isinstance(a, str) and a for a in attributes)
    ):  # fmt: skip
        raise ModelFolderError(f"{path}: 'attributes' must be a list of names or null")
    statistics = data.get("attribute_statistics")
    if statistics is not None and (
        not attributes or not isinstance(statistics, dict)
        or not all(isinstance(statistics.get(k), list) and len(statistics[k]) == len(attributes)
                   and all(isinstance(v, (int, float)) for v in statistics[k])
                   for k in ("mean", "std"))
    ):  # fmt: skip
        raise ModelFolderError(
            f"{path}: 'attribute_statistics' must hold a mean and a std per attribute"
        )
    if data.get("task", "categorical") not in ("categorical", "dimensional", "both"):
        raise ModelFolderError(f"{path}: 'task' must be categorical, dimensional or both")
    known = data.get("model_labels")  # an adapted model's predictable labels, null if all
    if known is not None and (not isinstance(known, list)
                              or not all(isinstance(x, str) and x in data["labels"]
                                         for x in known)):  # fmt: skip
        raise ModelFolderError(
            f"{path}: 'model_labels' must be null or a list of its labels, got {known!r:.60}"
        )
    if "int8" in data:
        int8 = _require(data, "int8", dict, path)
        name = _require(int8, "file", str, path, "int8.")
        if name != INT8_ONNX_FILE:
            raise ModelFolderError(f"{path}: int8.file must be {INT8_ONNX_FILE!r}")
    return data


def onnx_model_file(folder: str | os.PathLike, quantized: bool = False) -> Path:
    """The ONNX model of an export folder (int8 with `quantized`), which must exist and be
    non-empty; onnxruntime says what else is wrong with it when the session is made."""
    path = Path(folder) / (INT8_ONNX_FILE if quantized else ONNX_FILE)
    if not path.is_file():
        hint = " (export with --quantize)" if quantized else ""
        raise ModelFolderError(f"{path}: not found{hint}")
    if path.stat().st_size == 0:
        raise ModelFolderError(f"{path}: the file is empty")
    return path


# ── enrolments: speaker (or domain) statistics of unlabelled clips ─────────────────────────────

ENROLMENT_DIR = "enrolments"  # MODEL/enrolments/<name>.npz, one per enrolled speaker or domain
ENROLMENT_SUFFIX = ".npz"
ENROLMENT_FORMAT = "emoknn-enrolment"
ENROLMENT_VERSION = 1
ENROLMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_enrolment_name(name: str, what: str = "--speaker") -> str:
    """A speaker or domain name usable as a file name: letters, digits, '.', '_', '-', at most
    64, starting with a letter or digit (so it can never name a path elsewhere)."""
    if not isinstance(name, str) or not ENROLMENT_NAME.fullmatch(name):
        raise ModelFolderError(
            f"{what} {name!r}: a name is 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def enrolment_path(folder: str | os.PathLike, name: str) -> Path:
    """Where the model folder keeps the enrolment of `name`."""
    return Path(folder) / ENROLMENT_DIR / f"{check_enrolment_name(name)}{ENROLMENT_SUFFIX}"


def save_enrolment(path: str | os.PathLike, statistics: SpeakerStatistics) -> Path:
    """Write an enrolment file atomically: plain arrays (mean, scale) and a JSON header (no
    pickle): format, version, name, kind, clip count, the features key, the emoknn version."""
    import json

    header = {"format": ENROLMENT_FORMAT, "version": ENROLMENT_VERSION, "name": statistics.name,
              "kind": statistics.kind, "clips": statistics.clips,
              "features_key": statistics.features_key, "emoknn_version": __version__}  # fmt: skip
    path = Path(path)
    with atomic_path(path) as temporary, temporary.open("wb") as handle:
        np.savez(handle, mean=statistics.mean, scale=statistics.scale,
                 header=np.array(json.dumps(header)))  # fmt: skip
    give_default_permissions(path)
    return path


def load_enrolment(path: str | os.PathLike) -> SpeakerStatistics:
    """An enrolment file, validated (`ModelFolderError` naming the file on anything wrong)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path}: enrolment not found")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        header = json.loads(str(arrays["header"]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFolderError(f"{path}: not a readable enrolment file ({message})") from error
    if not isinstance(header, dict) or header.get("format") != ENROLMENT_FORMAT:
        raise ModelFolderError(f"{path}: not an emoknn enrolment file")
    if header.get("version") != ENROLMENT_VERSION:
        raise ModelFolderError(f"{path}: enrolment version {header.get('version')!r}; this "
                               f"emoknn reads version {ENROLMENT_VERSION}")  # fmt: skip
    for key in ("name", "kind", "features_key"):
        _require(header, key, str, path)
    clips = _require(header, "clips", int, path)
    if clips < 1:
        raise ModelFolderError(f"{path}: 'clips' must be ≥ 1, got {clips}")
    for name in ("mean", "scale"):
        if name not in arrays or arrays[name].dtype.kind != "f":
            raise ModelFolderError(f"{path}: missing or non-numeric {name!r}")
    try:
        mean, scale = arrays["mean"].astype(np.float32), arrays["scale"].astype(np.float32)
        return SpeakerStatistics(header["name"], header["kind"], clips, mean, scale,
                                 header["features_key"])  # fmt: skip
    except EmoknnError as error:
        raise ModelFolderError(f"{path}: {error}") from error


def list_enrolments(folder: str | os.PathLike) -> dict[str, Path]:
    """The enrolment files a model folder keeps, by name (none: an empty dict)."""
    root = Path(folder) / ENROLMENT_DIR
    if not root.is_dir():
        return {}
    return {path.name[: -len(ENROLMENT_SUFFIX)]: path
            for path in sorted(root.glob(f"*{ENROLMENT_SUFFIX}"))
            if ENROLMENT_NAME.fullmatch(path.name[: -len(ENROLMENT_SUFFIX)])}  # fmt: skip

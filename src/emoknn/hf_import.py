"""Published Hugging Face audio classifiers as emoknn models, with no training.

    model, max_seconds = import_hf_classifier("superb/wav2vec2-base-superb-er")  # or a folder

A Hugging Face audio-classification checkpoint (`Wav2Vec2ForSequenceClassification`,
`HubertForSequenceClassification`, `WavLMForSequenceClassification`,
`Data2VecAudioForSequenceClassification`, `WhisperForAudioClassification`) computes

    frames h_l (F, H) per hidden-state entry l = 0 … L
    x_t = Σ_l softmax(w)_l · h_l,t     with `use_weighted_layer_sum`, else the last hidden state
    logits = classifier( mean_t projector(x_t) )          projector: one Linear H → P

The emoknn model it becomes keeps every weight and computes the same thing in emoknn's order:
pool each entry over real frames, weight the layers (`ModelConfig.layer_weighting`), project
(`projection_kind="linear"`), classify. The projector is affine, so mean_t projector(x_t) =
projector(mean_t x_t): the two orders agree up to float rounding (tests: ≤ 1e-5 on the logits).
**The embedding emoknn stores in a datastore is the pooled projector output** (P wide, e.g. 256
for the SUPERB models), the vector the published classifier reads.

Pooling: HF pools over the frames of its input, and for models whose feature extractor returns no
attention mask (wav2vec2-base style) that includes padded frames of a padded batch; emoknn pools
over real frames only. On one unpadded utterance the two are the same, and that is what HF's
`pipeline("audio-classification")` feeds the model.

Whisper: HF's feature extractor pads every clip to the 30 s window (`chunk_length`) and the
classifier averages over all of it, padding included, which is what such models were trained on.
An imported Whisper classifier therefore keeps that front end (`ModelConfig.pad_to_seconds`): its
predictions equal HF's on every clip, at the cost of encoding 30 s whatever the clip's length.

Labels come from `id2label`, in logit order; waveform normalisation from the feature extractor's
`do_normalize`. Loading never runs code from the checkpoint: no `trust_remote_code`, and weights
are read by transformers with `weights_only=True` (safetensors, or a restricted unpickler for
`.bin` files).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from emoknn.errors import ConfigError, EmoknnError
from emoknn.model import EmotionModel, ModelConfig

# Architecture name in config.json → emoknn encoder family (model_type).
HF_CLASSIFIERS = {
    "Wav2Vec2ForSequenceClassification": "wav2vec2",
    "HubertForSequenceClassification": "hubert",
    "WavLMForSequenceClassification": "wavlm",
    "Data2VecAudioForSequenceClassification": "data2vec-audio",
    "WhisperForAudioClassification": "whisper",
}
# HF classifies a clip whole; windows this long mean clips up to 30 s are predicted whole too.
IMPORTED_MAX_SECONDS = 30.0


def hf_classifier_architecture(folder: str | os.PathLike) -> str | None:
    """The architecture of a local Hugging Face audio classifier folder, or None if it is not one
    (no config.json, or an architecture emoknn does not import)."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return next((name for name in architectures if name in HF_CLASSIFIERS), None)


def _labels(config: Any, source: str) -> list[str]:
    """Class names in logit order from `id2label` (keys may be ints or digit strings)."""
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    if sorted(id2label) != list(range(config.num_labels)):
        raise ConfigError(
            f"{source}: id2label must name every class 0 … {config.num_labels - 1}, got "
            f"{sorted(id2label)}"
        )
    labels = [id2label[i] for i in range(config.num_labels)]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: id2label repeats a class name: {labels}")
    for index, label in enumerate(labels):
        # emoknn names labels in --label-map (MODEL=YOURS,…) and model.json refuses empty ones
        unusable = not label.strip() or label != label.strip() or any(c in label for c in ",=")
        if unusable or not label.isprintable():
            raise ConfigError(
                f"{source}: id2label[{index}] = {label!r} cannot be an emoknn label (names must "
                "be non-empty, printable, without surrounding spaces, ',' or '='); rename it in "
                "config.json"
            )
    return labels


def import_hf_classifier(source: str | os.PathLike) -> tuple[EmotionModel, float]:
    """An emoknn model from a Hugging Face audio classifier (hub name or local folder), and the
    window length (seconds) to predict it with. See the module docstring for what is kept."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

    source = str(source)
    try:
        config = AutoConfig.from_pretrained(source)
    except RecursionError as error:
        raise EmoknnError(f"{source}: config.json is nested too deeply to read") from error
    except (OSError, ValueError) as error:
        raise EmoknnError(
            f"cannot read {source!r} as a Hugging Face model: {str(error).splitlines()[0]}"
        ) from error
    architecture = next((a for a in config.architectures or [] if a in HF_CLASSIFIERS), None)
    if architecture is None:
        raise ConfigError(
            f"{source}: architecture {config.architectures} is not an audio classifier emoknn "
            f"imports ({', '.join(HF_CLASSIFIERS)})"
        )
    labels = _labels(config, source)
    try:
        extractor = AutoFeatureExtractor.from_pretrained(source)
        classifier = AutoModelForAudioClassification.from_pretrained(
            source, weights_only=True, trust_remote_code=False
        ).eval()
    except pickle.UnpicklingError as error:
        raise EmoknnError(
            f"{source}: its weights file holds pickled objects beyond plain tensors; emoknn "
            "never unpickles code from a model (convert the checkpoint to model.safetensors in "
            "a session you trust)"
        ) from error
    except (OSError, ValueError, RecursionError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise EmoknnError(f"{source}: cannot load the classifier ({message})") from error
    family = HF_CLASSIFIERS[architecture]
    whisper = family == "whisper"
    pad_to_seconds = float(extractor.chunk_length) if whisper else 0.0
    model_config = ModelConfig(
        encoder=source,
        labels=labels,
        freeze_feature_encoder=True,
        layer_weighting=bool(config.use_weighted_layer_sum),
        normalize_waveforms=bool(getattr(extractor, "do_normalize", False)),
        head_dropout=0.0,  # HF's classifier reads the pooled projection directly
        projection_size=int(config.classifier_proj_size),
        projection_kind="linear",
        pad_to_seconds=pad_to_seconds,
    )
    encoder = classifier.encoder if whisper else classifier.base_model
    model = EmotionModel(model_config, encoder=encoder)
    with torch.no_grad():
        if model.layer_weights is not None:
            model.layer_weights.copy_(classifier.layer_weights)  # both softmax-normalised
        model.projection.load_state_dict(classifier.projector.state_dict())
        model.classifier.load_state_dict(classifier.classifier.state_dict())
    max_seconds = pad_to_seconds if whisper else IMPORTED_MAX_SECONDS
    return model.eval(), max_seconds


def check_import_destination(source: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """`out_dir` may receive an imported model: absent or an empty folder, writable, and neither
    the source folder nor a folder holding it (which would overwrite the checkpoint's own
    model.safetensors)."""
    from emoknn.files import check_writable_folder

    out_dir = Path(out_dir)
    source_path = Path(source)
    if source_path.exists():
        src, out = source_path.resolve(), out_dir.resolve()
        if out == src or src.is_relative_to(out) or (src.is_dir() and out.is_relative_to(src)):
            raise ConfigError(
                f"{out_dir}: is, holds or lies inside the model being imported, {source}; choose "
                "a new folder for the emoknn model"
            )
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: already exists and is not empty; choose a new folder")
    return check_writable_folder(out_dir, "the model folder")


def import_to_folder(source: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the emoknn model folder (model.safetensors + model.json, no datastore) of a Hugging
    Face audio classifier: what `export` and `adapt` read, with no transformers checkpoint. The
    folder appears whole (written beside, then renamed) or not at all."""
    import shutil

    from emoknn.model_folder import save_model

    out_dir = check_import_destination(source, out_dir)
    model, max_seconds = import_hf_classifier(source)
    staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_model(staging, model, max_seconds)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir

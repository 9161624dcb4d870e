"""The model: a Hugging Face audio encoder, masked mean pooling, and a linear classifier.

    waveforms (B, T) ─encoder─▶ frames (B, F, H) ─masked mean─▶ embedding (B, H) ─▶ logits (B, C)

The embedding is what SupCon pulls together and what the kNN datastore stores.

Padding never changes an utterance's embedding: frames computed from padding are excluded from
the mean, the transformer gets the frame attention mask, and for encoders whose first conv layer
uses GroupNorm over time (wav2vec2-base, hubert-base: `feat_extract_norm="group"`, where zero
padding would shift the normalisation statistics) the CNN feature encoder runs on each utterance
at its own length. This is why `encode` drives the encoder's parts (feature_extractor,
feature_projection, encoder) itself rather than calling its `forward`; the four families
wav2vec2, HuBERT, WavLM and data2vec-audio share this structure. data2vec-audio encodes one
utterance at a time (its stacked positional convs leak padding into real frames).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emoknn.errors import ConfigError, EmoknnError

SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


def tiny_encoder_config() -> dict[str, Any]:
    """A 2-layer, hidden-64 wav2vec2 built locally: for tests and CPU demos (~0.2 M parameters).

    LayerNorm feature encoder (so padding invariance is exact and batches stay batched); the same
    total conv stride (320 samples = 20 ms) as wav2vec2-base.
    """
    return {
        "model_type": "wav2vec2",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "conv_dim": [32] * 7,
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "mask_time_prob": 0.0,
        "layerdrop": 0.0,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
    }


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model (stored in every checkpoint).

    Attributes:
        encoder: Hugging Face hub name or local directory of a pretrained encoder, or "tiny".
        labels: class names; logit i is labels[i].
        encoder_config: the encoder's full config dict; when set (always, in a checkpoint), the
            encoder is built from it with no download and its weights come from the checkpoint.
        freeze_feature_encoder: keep the CNN feature encoder fixed (the usual fine-tuning choice).
        layer_weighting: embed a learned softmax-weighted sum of every transformer layer's output
            instead of the last hidden state.
        normalize_waveforms: zero-mean, unit-variance per utterance before the encoder (what the
            encoder's feature extractor does when its `do_normalize` is set).
        head_dropout: dropout on the embedding before the classifier.
    """

    encoder: str = "facebook/wav2vec2-base"
    labels: list[str] = field(default_factory=lambda: ["angry", "happy", "neutral", "sad"])
    encoder_config: dict[str, Any] | None = None
    freeze_feature_encoder: bool = True
    layer_weighting: bool = False
    normalize_waveforms: bool = True
    head_dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelOutput:
    embeddings: torch.Tensor  # (B, H) pooled utterance embeddings
    logits: torch.Tensor  # (B, C)


def load_encoder(config: ModelConfig) -> nn.Module:
    """Build the encoder: from `encoder_config` (checkpoints), the tiny config, or pretrained.

    Pretrained weights come from `from_pretrained(config.encoder)`: a hub name (needs network or a
    filled Hugging Face cache) or a local directory holding config.json and the weights.
    """
    from transformers import AutoConfig, AutoModel

    if config.encoder_config is not None or config.encoder == "tiny":
        encoder_dict = dict(config.encoder_config or tiny_encoder_config())
        model_type = encoder_dict.pop("model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"encoder model_type {model_type!r} is not supported; expected one of "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        encoder_config = AutoConfig.for_model(model_type, **encoder_dict)
        return AutoModel.from_config(encoder_config)
    try:
        # LayerDrop off: it would make DDP see unused parameters, and adds nothing to fine-tuning
        # with frozen-length batches.
        encoder = AutoModel.from_pretrained(config.encoder, layerdrop=0.0)
    except (OSError, ValueError) as error:
        raise EmoknnError(
            f"cannot load the encoder {config.encoder!r}: {str(error).splitlines()[0]}\n"
            "Give a Hugging Face hub name (needs network, or the model in the local HF cache) or a "
            "local directory with config.json and model weights (save one with "
            "`AutoModel.from_pretrained(name).save_pretrained(dir)` on a machine with network)."
        ) from error
    if encoder.config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{config.encoder}: model_type {encoder.config.model_type!r} is not a supported audio "
            f"encoder ({', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return encoder


def default_normalization(encoder_name: str) -> bool:
    """Whether the encoder's own feature extractor normalises waveforms (True if unknown)."""
    if encoder_name == "tiny":
        return True
    try:
        from transformers import AutoFeatureExtractor

        return bool(
            getattr(AutoFeatureExtractor.from_pretrained(encoder_name), "do_normalize", True)
        )
    except (OSError, ValueError):
        return True


class EmotionModel(nn.Module):
    """Encoder + masked mean pooling + linear classifier (see the module docstring)."""

    def __init__(self, config: ModelConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else load_encoder(config)
        # Store the encoder's full config so the model can be rebuilt with no download.
        encoder_dict = self.encoder.config.to_dict()
        keep = {"model_type", *self.encoder.config.to_diff_dict().keys()}
        config.encoder_config = {
            k: v for k, v in encoder_dict.items() if k in keep and not k.startswith("_")
        }
        config.encoder_config["model_type"] = self.encoder.config.model_type
        self.config = config
        self.hidden_size = int(self.encoder.config.hidden_size)
        num_layers = int(self.encoder.config.num_hidden_layers)
        self.layer_weights = (
            nn.Parameter(torch.zeros(num_layers)) if config.layer_weighting else None
        )
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(self.hidden_size, len(config.labels))
        # data2vec-audio has no such field: its conv layers always use LayerNorm.
        norm = getattr(self.encoder.config, "feat_extract_norm", "layer")
        self._per_item_features = norm == "group"
        # data2vec-audio's positional embedding is a stack of convs with LayerNorm, which turns
        # zeroed padding frames into non-zero ones that then leak into the last real frames: for
        # exact padding invariance its utterances are encoded one at a time (slower, correct).
        self._per_item_encoder = self.encoder.config.model_type == "data2vec-audio"
        mask_parameters = inspect.signature(self.encoder._mask_hidden_states).parameters
        self._mask_takes_attention = "attention_mask" in mask_parameters
        if config.freeze_feature_encoder:
            for parameter in self.encoder.feature_extractor.parameters():
                parameter.requires_grad = False

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of encoder frames computed from real samples only (for sample lengths (B,))."""
        return self.encoder._get_feat_extract_output_lengths(lengths).long()

    def _cnn_features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) → (B, C, F) CNN features; per item for GroupNorm encoders (see module doc)."""
        feature_encoder = self.encoder.feature_extractor
        with torch.set_grad_enabled(
            torch.is_grad_enabled() and not self.config.freeze_feature_encoder
        ):
            if not self._per_item_features or len(lengths) == 1:  # one item: nothing to pad
                return feature_encoder(waveforms)
            items = [feature_encoder(waveforms[i : i + 1, : int(n)]) for i, n in enumerate(lengths)]
            num_frames = max(item.shape[-1] for item in items)
            return torch.cat([F.pad(item, (0, num_frames - item.shape[-1])) for item in items])

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pooled utterance embeddings (B, H) of zero-padded waveforms (B, T) with lengths (B,)."""
        if waveforms.ndim != 2 or lengths.shape != waveforms.shape[:1]:
            raise ValueError(
                f"expected waveforms (B, T) and lengths (B,), got {tuple(waveforms.shape)} and "
                f"{tuple(lengths.shape)}"
            )
        if self._per_item_encoder and len(lengths) > 1:
            items = [
                self.encode(waveforms[i : i + 1, : int(n)], lengths[i : i + 1])
                for i, n in enumerate(lengths)
            ]
            return torch.cat(items)  # (B, H)
        sample_mask = (
            torch.arange(waveforms.shape[1], device=waveforms.device)[None] < lengths[:, None]
        )
        if self.config.normalize_waveforms:
            waveforms = normalize_waveforms(waveforms, sample_mask)

        features = self._cnn_features(waveforms, lengths).transpose(1, 2)  # (B, F, C)
        frame_lengths = self.frame_lengths(lengths)
        frame_mask = (
            torch.arange(features.shape[1], device=features.device)[None] < frame_lengths[:, None]
        )  # (B, F)
        projected = self.encoder.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected  # (B, F, H)
        if self.training:  # SpecAugment-style time masking, as the encoder's config asks
            if self._mask_takes_attention:
                hidden = self.encoder._mask_hidden_states(hidden, attention_mask=frame_mask)
            else:
                hidden = self.encoder._mask_hidden_states(hidden)
        if self.layer_weights is None:
            frames = self.encoder.encoder(hidden, attention_mask=frame_mask).last_hidden_state
        else:
            layer_outputs = self._run_collecting_layers(hidden, frame_mask)  # L × (B, F, H)
            stacked = torch.stack(layer_outputs, dim=0)  # (L, B, F, H)
            weights = torch.softmax(self.layer_weights, dim=0)  # (L,)
            frames = (weights[:, None, None, None] * stacked).sum(dim=0)  # (B, F, H)
        # Pooled in fp32 even under bf16 autocast: the embedding is what kNN compares.
        return masked_mean(frames.float(), frame_mask)

    def _run_collecting_layers(
        self, hidden: torch.Tensor, frame_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """Run the transformer and return every layer's output (forward hooks: transformers ≥ 5
        records `hidden_states` only in the top-level model's forward)."""
        collected: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            collected.append(output[0] if isinstance(output, tuple) else output)

        handles = [layer.register_forward_hook(keep) for layer in self.encoder.encoder.layers]
        try:
            self.encoder.encoder(hidden, attention_mask=frame_mask)
        finally:
            for handle in handles:
                handle.remove()
        return collected

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        embeddings = self.encode(waveforms, lengths)
        logits = self.classifier(self.dropout(embeddings))
        return ModelOutput(embeddings=embeddings, logits=logits)


def masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real frames: Σ_t m_t·h_t / Σ_t m_t.  frames (B, F, H), mask (B, F) → (B, H)."""
    weights = mask.to(frames.dtype).unsqueeze(-1)  # (B, F, 1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def normalize_waveforms(waveforms: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each row's real samples; padding stays exactly zero.

    x̂ = (x − μ) / sqrt(σ² + 1e-7), with μ, σ² over the masked samples (as HF feature extractors).
    Written to touch the batch as few times as possible (where, sum, where, dot, multiply): with
    the tiny encoder this step was 9 % of a prediction's forward time.
    """
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    mean = torch.where(mask, waveforms, 0.0).sum(dim=1, keepdim=True) / count
    centered = torch.where(mask, waveforms - mean, 0.0)
    variance = torch.linalg.vecdot(centered, centered)[:, None] / count  # Σ(x − μ)² / n
    return centered * torch.rsqrt(variance + 1e-7)

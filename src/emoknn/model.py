"""The model: a Hugging Face audio encoder, per-layer masked mean pooling, and a small head.

    waveforms (B, T) ─encoder─▶ hidden states L+1 × (B, F, H) ─masked mean─▶ pooled (B, L+1, H)
        ─head: layer choice or softmax layer weights─▶ (B, H) ─projection (optional)─▶
        embedding (B, D) ─dropout, linear─▶ logits (B, C)
                         └dropout, linear─▶ standardised attributes (B, A) ─·σ + μ─▶ attributes

The second branch exists for the dimensional tasks (`task` "dimensional" or "both"): one output
per attribute (arousal, valence, dominance), trained on targets standardised with the training
split's mean μ and standard deviation σ (stored in the config), and returned in the corpus's
scale. A "dimensional" model keeps a classifier layer that is never trained: its class output
means nothing, and predictions leave it out.

    forward(waveforms, lengths) = head(pooled_layers(waveforms, lengths))

The embedding is what SupCon pulls together and what the kNN datastore stores. `pooled_layers`
is all the head ever needs, which is what lets a frozen encoder's outputs be computed once and
cached (`emoknn.features`). An encoder backend is one method returning `(hidden_states,
frame_mask)` with Hugging Face's `output_hidden_states` meaning (`EmotionModel.hidden_states`).

Padding never changes an utterance's embedding: frames computed from padding are excluded from
the mean, the transformer gets the frame attention mask, and for encoders whose first conv layer
uses GroupNorm over time (wav2vec2-base, hubert-base: `feat_extract_norm="group"`, where zero
padding would shift the normalisation statistics) the CNN feature encoder runs on each utterance
at its own length. This is why `_wav2vec2_hidden_states` drives the encoder's parts
(feature_extractor, feature_projection, encoder) itself rather than calling its `forward`; the four
families wav2vec2, HuBERT, WavLM and data2vec-audio share this structure. data2vec-audio encodes
one utterance at a time (its stacked positional convs leak padding into real frames).

Whisper's encoder (`openai/whisper-*`, `distil-whisper/*`) is the fifth backend: `self.encoder` is
then an `emoknn.whisper.WhisperBackbone`, which computes log-mel features at each utterance's own
length (never padded to 30 s) and runs the encoder's parts on real frames only; inputs are at most
30 s (`max_input_seconds`), longer ones are cut into windows by `predict`.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emoknn.errors import ConfigError, EmoknnError, SpeakerNormError
from emoknn.whisper import (
    SAMPLE_RATE,
    WhisperBackbone,
    load_whisper_encoder,
    whisper_encoder_from_config,
)

SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")
PROJECTION_KINDS = ("mlp", "linear")
TASKS = ("categorical", "dimensional", "both")  # what the model's head is trained to predict
ATTRIBUTES = ("arousal", "valence", "dominance")  # the dimensional attributes, in this order
# How frames are pooled per layer: "mean" (H values), or "mean_std" (statistics pooling: the mean
# and the standard deviation over real frames, 2H values; prosody lives in how frames vary).
POOLINGS = ("mean", "mean_std")
STD_EPSILON = 1e-5  # std = sqrt(var + ε): finite gradients and a defined value for one frame
# The logit of an output label the classifier cannot predict (ModelConfig.label_map): softmax gives
# it exactly 0 (exp(−10⁴) underflows), and it is finite, so exported graphs compare equal.
UNKNOWN_LABEL_LOGIT = -1.0e4


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
        layer_weighting: embed a learned softmax-weighted sum of all L + 1 hidden states (the
            transformer's input and every layer's output) instead of the last hidden state.
        normalize_waveforms: zero-mean, unit-variance per utterance before the encoder (what the
            encoder's feature extractor does when its `do_normalize` is set).
        head_dropout: dropout on the embedding before the classifier.
        projection_size: when > 0, a small MLP (Linear H→P, GELU, dropout, Linear P→P) maps the
            pooled encoder output to the embedding (P wide); 0 = the embedding is the pooled H.
        projection_dropout: dropout inside the projection MLP.
        normalize_layers: standardise each pooled hidden state (zero mean, unit variance over its
            H values, no learned scale) before the layers are weighted, so that layers whose
            activations are large do not dominate the weighted sum.
        pooling: "mean" (the masked mean of each layer's frames: H values per layer) or "mean_std"
            (statistics pooling: mean and standard deviation over frames, 2H values per layer).
        standardize: standardise each pooled value with a mean and scale per (layer, value) held
            in the model (`input_mean`, `input_scale`, saved with the weights), set from the
            training split before training (`set_standardization`): layers of different scales
            then weigh alike, and the statistics travel with the model to prediction.
        input_dropout: dropout on the layer-weighted pooled vector, before the projection (a
            strong regulariser for a head trained on a few hundred clips).
        projection_kind: "mlp" (the above) or "linear": one Linear H→P, no activation — the
            `projector` of Hugging Face's audio classifiers, kept as is when one is imported
            (`emoknn.hf_import`).
        pad_to_seconds: when > 0, every clip is zero-padded to this length and the padding is
            encoded and pooled as if it were signal: the front end of Hugging Face's Whisper
            classifiers (30 s windows), kept for imported ones so that they predict as HF does.
            0 = each clip at its own length (padding never changes an embedding).
        output_labels, label_map: the labels an adapted model answers in (`emoknn.adapt`), and
            which classifier label (of `labels`) goes to which of them; classifier labels the map
            leaves out are dropped. Output logit j = log Σ_{i ↦ j} exp(z_i), so the model's
            probability of an output label is the summed probability of its classifier labels,
            renormalised over the labels kept. An output label no classifier label maps to gets
            the logit UNKNOWN_LABEL_LOGIT (probability 0): the kNN alone serves it. None = the
            classifier's labels as they are.
        task: "categorical" (classes only), "dimensional" (attributes only) or "both".
        attributes: the attributes the regression head predicts (a subset of ATTRIBUTES, in that
            order); None for a categorical model.
        attribute_mean, attribute_std: the training split's mean and standard deviation of each
            attribute: the head predicts (y − mean) / std and returns y in the corpus's scale.
        speaker_norm: the head was trained on pooled features standardised per speaker with that
            speaker's own clips (`--speaker-norm`): the model predicts only with statistics of the
            speaker's (or domain's) unlabelled clips (`forward(..., statistics=)`,
            `emoknn.speaker_stats`), and refuses raw waveforms without them.
        speaker_norm_min_clips: the fewest clips such statistics may come from.
        tuned_layers: partial fine-tuning (`emoknn.partial`): the top `tuned_layers` transformer
            layers of the encoder (and its final norm, where it has one after the layers) were
            trained; the rest is the pretrained encoder, kept in an encoder store, and a model
            folder holds only the head and these layers (`tuned_encoder_names`). 0 = none.
    """

    encoder: str = "facebook/wav2vec2-base"
    labels: list[str] = field(default_factory=lambda: ["angry", "happy", "neutral", "sad"])
    encoder_config: dict[str, Any] | None = None
    freeze_feature_encoder: bool = True
    layer_weighting: bool = False
    normalize_waveforms: bool = True
    head_dropout: float = 0.1
    projection_size: int = 0
    projection_dropout: float = 0.0
    normalize_layers: bool = False
    projection_kind: str = "mlp"
    pad_to_seconds: float = 0.0
    pooling: str = "mean"
    standardize: bool = False
    input_dropout: float = 0.0
    output_labels: list[str] | None = None
    label_map: dict[str, str] | None = None
    task: str = "categorical"
    attributes: list[str] | None = None
    attribute_mean: list[float] | None = None
    attribute_std: list[float] | None = None
    speaker_norm: bool = False
    speaker_norm_min_clips: int = 0
    tuned_layers: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.tuned_layers, int) or self.tuned_layers < 0:
            raise ConfigError(f"tuned_layers must be a whole number ≥ 0, got {self.tuned_layers!r}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if (self.task == "categorical") != (self.attributes is None):
            raise ConfigError(
                f"task {self.task!r}: attributes must be "
                f"{'None' if self.task == 'categorical' else 'given'}, got {self.attributes!r}"
            )
        if self.attributes is not None:
            count = len(self.attributes)
            if (
                not count
                or [a for a in ATTRIBUTES if a in self.attributes] != list(self.attributes)
                or self.attribute_mean is None
                or self.attribute_std is None
                or len(self.attribute_mean) != count
                or len(self.attribute_std) != count
                or not all(std > 0 for std in self.attribute_std)
            ):
                raise ConfigError(
                    f"attributes must be distinct names among {ATTRIBUTES} (in that order), each "
                    f"with a mean and a standard deviation > 0; got {self.attributes!r}, "
                    f"{self.attribute_mean!r}, {self.attribute_std!r}"
                )
        if self.projection_size < 0:
            raise ConfigError(f"projection_size must be ≥ 0, got {self.projection_size}")
        if self.projection_kind not in PROJECTION_KINDS:
            raise ConfigError(
                f"projection_kind must be one of {PROJECTION_KINDS}, got {self.projection_kind!r}"
            )
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pad_to_seconds < 0:
            raise ConfigError(f"pad_to_seconds must be ≥ 0, got {self.pad_to_seconds}")
        if (self.output_labels is None) != (self.label_map is None):
            raise ConfigError("give both output_labels and label_map, or neither")
        if self.label_map is not None:
            unknown = sorted(set(self.label_map) - set(self.labels))
            targets = sorted(set(self.label_map.values()) - set(self.output_labels))
            if unknown or targets or len(set(self.output_labels)) != len(self.output_labels):
                raise ConfigError(
                    f"label_map must send classifier labels {self.labels} to distinct output "
                    f"labels {self.output_labels}; it names {unknown or targets}"
                )
        if self.speaker_norm and self.speaker_norm_min_clips < 2:
            raise ConfigError(
                "speaker_norm_min_clips must be ≥ 2 (one clip has no spread to standardise with), "
                f"got {self.speaker_norm_min_clips}"
            )
        for name in ("head_dropout", "projection_dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must lie in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelOutput:
    embeddings: torch.Tensor  # (B, D) utterance embeddings (D = EmotionModel.embedding_size)
    logits: torch.Tensor  # (B, C)
    # (B, A) attributes standardised with the training statistics (what the loss sees), and the
    # same in the corpus's scale; None for a categorical model.
    standardized_attributes: torch.Tensor | None = None
    attributes: torch.Tensor | None = None


def load_encoder(config: ModelConfig, revision: str | None = None) -> nn.Module:
    """Build the encoder: from `encoder_config` (checkpoints), the tiny config, or pretrained.

    Pretrained weights come from `from_pretrained(config.encoder)`: a hub name (needs network or a
    filled Hugging Face cache; at `revision`, a branch, tag or commit, if given) or a local
    directory holding config.json and the weights. Whisper
    checkpoints (`openai/whisper-*`, `distil-whisper/*`, any folder with a Whisper config) give
    their `WhisperEncoder` only: the decoder is never built.
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
        if model_type == "whisper":
            return whisper_encoder_from_config(encoder_dict)
        # LayerDrop off, as for pretrained encoders below.
        encoder_config = AutoConfig.for_model(model_type, **{**encoder_dict, "layerdrop": 0.0})
        return AutoModel.from_config(encoder_config)
    from emoknn.sources import pretrained_kwargs

    source = pretrained_kwargs(config.encoder)  # fails in seconds on a bad path or no network
    try:
        kind = AutoConfig.from_pretrained(config.encoder, revision=revision, **source).model_type
        if kind == "whisper":
            return load_whisper_encoder(config.encoder, revision)
        # LayerDrop off: it would make DDP see unused parameters, and adds nothing to fine-tuning
        # with frozen-length batches.
        encoder = AutoModel.from_pretrained(config.encoder, layerdrop=0.0, revision=revision,
                                            **source)  # fmt: skip
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
    """Whether the encoder's own feature extractor normalises waveforms (True if unknown).

    Whisper's does not (`WhisperFeatureExtractor` has `do_normalize` only as a call option, off
    by default): its log-mel features are normalised per utterance instead.
    """
    if encoder_name == "tiny":
        return True
    from emoknn.sources import pretrained_kwargs

    source = pretrained_kwargs(encoder_name)  # fails in seconds on a bad path or no network
    try:
        from transformers import AutoConfig, AutoFeatureExtractor

        if AutoConfig.from_pretrained(encoder_name, **source).model_type == "whisper":
            return False
        extractor = AutoFeatureExtractor.from_pretrained(encoder_name, **source)
        return bool(getattr(extractor, "do_normalize", True))
    except (OSError, ValueError):
        return True


class EmotionModel(nn.Module):
    """Encoder + per-layer masked mean pooling + head (see the module docstring).

    Attributes:
        hidden_size: the encoder's width H.
        num_layers: the encoder's transformer layers L (so L + 1 hidden-state entries).
        embedding_size: width of the embeddings (the projection's output, else H).
    """

    def __init__(self, config: ModelConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        encoder = encoder if encoder is not None else load_encoder(config)
        self.is_whisper = encoder.config.model_type == "whisper"
        if self.is_whisper and not isinstance(encoder, WhisperBackbone):
            # The log-mel front end and an own-length runner around HF's WhisperEncoder.
            encoder = WhisperBackbone(encoder, freeze_conv_stem=config.freeze_feature_encoder)
        self.encoder = encoder
        # Store the encoder's full config so the model can be rebuilt with no download.
        encoder_dict = self.encoder.config.to_dict()
        keep = {"model_type", *self.encoder.config.to_diff_dict().keys()}
        config.encoder_config = {
            k: v for k, v in encoder_dict.items() if k in keep and not k.startswith("_")
        }
        config.encoder_config["model_type"] = self.encoder.config.model_type
        self.config = config
        self.hidden_size = int(self.encoder.config.hidden_size)
        self.num_layers = int(self.encoder.config.num_hidden_layers)
        # Width of each layer's pooled vector: H (mean), 2H (mean and std).
        self.pooled_size = self.hidden_size * (2 if config.pooling == "mean_std" else 1)
        self.embedding_size = config.projection_size or self.pooled_size
        if config.standardize:  # identity until set_standardization; saved with the weights
            shape = (self.num_layers + 1, self.pooled_size)
            self.register_buffer("input_mean", torch.zeros(shape))
            self.register_buffer("input_scale", torch.ones(shape))
        # The head (`head`): layer weights → projection → dropout → classifier.
        self.layer_weights = (
            nn.Parameter(torch.zeros(self.num_layers + 1)) if config.layer_weighting else None
        )  # softmax(0) = the plain mean of the L + 1 entries at the start
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.projection = self._projection(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(self.embedding_size, len(config.labels))
        self.regressor = None
        if config.attributes is not None:  # one output per attribute
            self.regressor = nn.Linear(self.embedding_size, len(config.attributes))
            # The training statistics come from the config: not saved with the weights.
            mean, std = torch.tensor(config.attribute_mean), torch.tensor(config.attribute_std)
            self.register_buffer("attribute_mean", mean.float(), persistent=False)
            self.register_buffer("attribute_std", std.float(), persistent=False)
        # (C_out, C) membership of classifier labels in output labels; derived from the config,
        # so not saved with the weights.
        groups = None
        if config.output_labels is not None:
            groups = torch.tensor(
                [[config.label_map.get(name) == out for name in config.labels]
                 for out in config.output_labels]
            )  # fmt: skip
        self.register_buffer("label_groups", groups, persistent=False)
        if not self.is_whisper:
            self._setup_wav2vec2()
        # `from_pretrained` returns its model in eval mode, and Lightning keeps each submodule's
        # mode: without this, fine-tuning would silently run with dropout and SpecAugment off.
        self.train()

    @property
    def max_input_seconds(self) -> float | None:
        """The longest input the encoder takes at once (Whisper: its positional table, 30 s for
        OpenAI's checkpoints), or None when any length works; longer inputs are cut in windows."""
        if self.is_whisper:
            return self.encoder.max_samples / SAMPLE_RATE
        return None

    def _projection(self, config: ModelConfig) -> nn.Module | None:
        """The optional projection from the pooled encoder output (H) to the embedding (P)."""
        if not config.projection_size:
            return None
        if config.projection_kind == "linear":  # Hugging Face's `projector`
            return nn.Linear(self.pooled_size, config.projection_size)
        return nn.Sequential(
            nn.Linear(self.pooled_size, config.projection_size),
            nn.GELU(),
            nn.Dropout(config.projection_dropout),
            nn.Linear(config.projection_size, config.projection_size),
        )

    def _setup_wav2vec2(self) -> None:
        """Padding-invariance settings of the wav2vec2 family (see the module docstring)."""
        # data2vec-audio has no such field: its conv layers always use LayerNorm.
        norm = getattr(self.encoder.config, "feat_extract_norm", "layer")
        self._per_item_features = norm == "group"
        # data2vec-audio's positional embedding is a stack of convs with LayerNorm, which turns
        # zeroed padding frames into non-zero ones that then leak into the last real frames: for
        # exact padding invariance its utterances are encoded one at a time (slower, correct).
        self._per_item_encoder = self.encoder.config.model_type == "data2vec-audio"
        mask_parameters = inspect.signature(self.encoder._mask_hidden_states).parameters
        self._mask_takes_attention = "attention_mask" in mask_parameters
        if self.config.freeze_feature_encoder:
            for parameter in self.encoder.feature_extractor.parameters():
                parameter.requires_grad = False

    @property
    def labels(self) -> list[str]:
        """The labels of the logits `forward` returns."""
        return self.config.output_labels or self.config.labels

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of encoder frames computed from real samples only (for sample lengths (B,))."""
        if self.is_whisper:
            return self.encoder.frame_lengths(lengths)
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

    def hidden_states(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, all_layers: bool = True
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The encoder's hidden states of zero-padded waveforms (B, T) with lengths (B,).

        Returns `(hidden_states, frame_mask)`: hidden_states is a tuple of L + 1 tensors
        (B, F, H) with the meaning of Hugging Face's `output_hidden_states=True` on each single
        utterance (entry 0 = the input to the first transformer layer, the last entry =
        `last_hidden_state`, after the final layer norm where the encoder has one — transformers
        5 reports the pre-norm output there for stable-layer-norm wav2vec2 models; transformers 4
        and this method give last_hidden_state, what the unweighted model pools), or only
        `(last_hidden_state,)` when `all_layers` is False; frame_mask (B, F) is True on frames
        computed from real samples. Every encoder backend answers this one question.
        """
        if waveforms.ndim != 2 or lengths.shape != waveforms.shape[:1]:
            raise ConfigError(
                f"expected waveforms (B, T) and lengths (B,), got {tuple(waveforms.shape)} and "
                f"{tuple(lengths.shape)}"
            )
        if self.config.pad_to_seconds:  # HF Whisper classifiers' fixed window (ModelConfig)
            target = round(self.config.pad_to_seconds * SAMPLE_RATE)
            waveforms = F.pad(waveforms, (0, max(0, target - waveforms.shape[1])))
            lengths = torch.full_like(lengths, waveforms.shape[1])
        if self.is_whisper:
            return self._whisper_hidden_states(waveforms, lengths, all_layers)
        return self._wav2vec2_hidden_states(waveforms, lengths, all_layers)

    def _whisper_hidden_states(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, all_layers: bool
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """`hidden_states` for Whisper: `WhisperBackbone` (log-mel at each utterance's own
        length, the encoder on real frames only; see emoknn.whisper)."""
        if self.config.normalize_waveforms:  # off by default: Whisper's extractor does not
            sample_mask = torch.arange(waveforms.shape[1], device=waveforms.device)[None]
            waveforms = normalize_waveforms(waveforms, sample_mask < lengths[:, None])
        return self.encoder(waveforms, lengths, all_layers)  # L + 1 (or 1) × (B, F, H), (B, F)

    def _wav2vec2_hidden_states(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, all_layers: bool
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """`hidden_states` for wav2vec2, HuBERT, WavLM and data2vec-audio."""
        if self._per_item_encoder and len(lengths) > 1:
            items = [
                self._wav2vec2_hidden_states(waveforms[i : i + 1, : int(n)], lengths[i : i + 1],
                                             all_layers)
                for i, n in enumerate(lengths)
            ]  # fmt: skip
            num_frames = max(mask.shape[1] for _, mask in items)
            pad = lambda x: F.pad(x, (0, 0, 0, num_frames - x.shape[1]))  # noqa: E731 (B, F, H)
            layers = tuple(
                torch.cat([pad(states[i]) for states, _ in items]) for i in range(len(items[0][0]))
            )
            mask = torch.cat([F.pad(m, (0, num_frames - m.shape[1])) for _, m in items])
            return layers, mask  # L + 1 × (B, F, H), (B, F)
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
        if not all_layers:
            last = self.encoder.encoder(hidden, attention_mask=frame_mask).last_hidden_state
            return (last,), frame_mask
        return self._run_collecting_layers(hidden, frame_mask), frame_mask

    def _run_collecting_layers(
        self, hidden: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Run the transformer and return its L + 1 hidden states as Hugging Face defines them:
        (input to layer 1, outputs of layers 1 … L − 1, last_hidden_state). Forward hooks, because
        transformers ≥ 5 records `hidden_states` only in the top-level model's forward."""
        layers = self.encoder.encoder.layers
        collected: list[torch.Tensor] = []

        def keep_input(_module, inputs):
            collected.append(inputs[0])

        def keep_output(_module, _inputs, output):
            collected.append(output[0] if isinstance(output, tuple) else output)

        handles = [layers[0].register_forward_pre_hook(keep_input)]
        handles += [layer.register_forward_hook(keep_output) for layer in layers[:-1]]
        try:
            last = self.encoder.encoder(hidden, attention_mask=frame_mask).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        if len(collected) != self.num_layers:  # LayerDrop skipped a layer: the entries shift
            raise ConfigError("the encoder skipped layers (LayerDrop); set its layerdrop to 0")
        return (*collected, last)

    def pooled_layers(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Every hidden-state entry pooled over real frames: (B, L + 1, P), fp32 (P = H for
        mean pooling, 2H for mean and std: `pooled_size`).

        This is what the feature cache stores: the head (`head`) needs nothing else, because it
        pools each layer before weighting the layers (the weighted sum of per-layer means equals
        the mean of the weighted sum; per-layer statistics are what the head weighs).
        """
        hidden, frame_mask = self.hidden_states(waveforms, lengths)
        # Pooled in fp32 even under bf16 autocast: the embedding is what kNN compares.
        return torch.stack([self._pool(h.float(), frame_mask) for h in hidden], dim=1)

    def _pool(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, F, H) frames → (B, P) by the configured pooling, over real frames only."""
        if self.config.pooling == "mean_std":
            return masked_mean_std(frames, mask)
        return masked_mean(frames, mask)

    def set_standardization(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """The per-(layer, value) statistics `head` standardises with: (L + 1, P) each."""
        if not self.config.standardize:
            raise ConfigError("this model was built without standardize")
        shape = tuple(self.input_mean.shape)
        if tuple(mean.shape) != shape or tuple(scale.shape) != shape:
            raise ConfigError(f"standardisation statistics must be {shape}, got "
                              f"{tuple(mean.shape)} and {tuple(scale.shape)}")  # fmt: skip
        with torch.no_grad():
            self.input_mean.copy_(mean)
            self.input_scale.copy_(scale)

    def head(self, pooled_layers: torch.Tensor) -> ModelOutput:
        """Embeddings and logits from pooled hidden states (B, L + 1, H).

        Without layer weighting only the last entry is read, so (B, 1, H) will do.
            pooled_l ← (pooled_l − input_mean_l) / input_scale_l   (standardize)
            pooled_l ← layer_norm(pooled_l)    (normalize_layers)
            x = Σ_l softmax(w)_l · pooled_l   (layer weighting), else pooled_L
            embedding = projection(dropout_in(x))  (when configured), else x
            logits = classifier(dropout(embedding)), mapped onto output_labels when configured
            z = regressor(dropout(embedding)); attributes = z·std + mean    (dimensional tasks)
        """
        if self.config.standardize:
            count = pooled_layers.shape[1]  # L + 1, or 1 (the last entry) without weighting
            mean, scale = self.input_mean[-count:], self.input_scale[-count:]
            pooled_layers = (pooled_layers - mean) / scale
        if self.config.normalize_layers:  # (x − mean) / sqrt(var + 1e-5) over H, per layer
            pooled_layers = F.layer_norm(pooled_layers, (pooled_layers.shape[-1],))
        if self.layer_weights is None:
            x = pooled_layers[:, -1]  # (B, H)
        else:
            if pooled_layers.shape[1] != self.num_layers + 1:
                raise ConfigError(
                    f"expected pooled layers (B, {self.num_layers + 1}, {self.pooled_size}), got "
                    f"{tuple(pooled_layers.shape)}"
                )
            weights = torch.softmax(self.layer_weights, dim=0)  # (L + 1,)
            x = (weights[None, :, None] * pooled_layers).sum(dim=1)  # (B, H)
        x = self.input_dropout(x)
        embeddings = self.projection(x) if self.projection is not None else x  # (B, D)
        dropped = self.dropout(embeddings)
        logits = self.classifier(dropped)  # (B, C)
        if self.label_groups is not None:
            logits = self._map_labels(logits)  # (B, C_out)
        if self.regressor is None:
            return ModelOutput(embeddings=embeddings, logits=logits)
        standardized = self.regressor(dropped)  # (B, A)
        attributes = standardized.float() * self.attribute_std + self.attribute_mean  # (B, A)
        return ModelOutput(embeddings, logits, standardized, attributes)

    @property
    def attributes(self) -> list[str] | None:
        """The attributes the regression head predicts, or None (a categorical model)."""
        return self.config.attributes

    @property
    def predicts_classes(self) -> bool:
        """False for a "dimensional" model, whose classifier layer is never trained."""
        return self.config.task != "dimensional"

    def _map_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Output logits z'_j = log Σ_{i ↦ j} exp(z_i); UNKNOWN_LABEL_LOGIT where no i maps to j.

        softmax(z')_j = Σ_{i ↦ j} p_i / Σ_{i kept} p_i. A large finite negative number stands in
        for −∞ in the sum over non-members (exp underflows to 0 just the same).
        """
        groups = self.label_groups  # (C_out, C)
        members = logits[:, None, :].masked_fill(~groups, -1.0e9)  # (B, C_out, C)
        merged = torch.logsumexp(members, dim=-1)  # (B, C_out)
        return torch.where(groups.any(dim=1), merged, UNKNOWN_LABEL_LOGIT)

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor,
        statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> ModelOutput:
        """head(pooled_layers(waveforms, lengths)); without layer weighting the encoder keeps
        only its last hidden state (the head reads nothing else).

        A speaker-normalised model (`config.speaker_norm`) needs `statistics`, the (mean, scale)
        of a speaker's or domain's pooled layers, (L + 1, P) each (`emoknn.speaker_stats`):
            pooled ← (pooled − mean) / scale        before the head
        Without them it refuses (never a prediction on features it was not trained on); any
        other model refuses statistics.
        """
        self.check_statistics(statistics is not None)
        if self.layer_weights is not None:
            pooled = self.pooled_layers(waveforms, lengths)
        else:
            (last,), frame_mask = self.hidden_states(waveforms, lengths, all_layers=False)
            pooled = self._pool(last.float(), frame_mask)[:, None]  # (B, 1, P)
        if statistics is not None:
            mean, scale = statistics
            count = pooled.shape[1]  # L + 1, or 1 (the last entry)
            pooled = (pooled - mean[-count:].to(pooled)) / scale[-count:].to(pooled)
        return self.head(pooled)

    def check_statistics(self, given: bool) -> None:
        """Refuse a speaker-normalised model without statistics, or statistics for another."""
        if self.config.speaker_norm and not given:
            raise SpeakerNormError(
                "this model was trained with speaker normalisation (--speaker-norm): it predicts "
                "only with statistics of the speaker's unlabelled clips (`emoknn enrol`, or "
                "predict --speaker, --speakers CSV or --domain-stats; see docs/prediction.md)"
            )
        if given and not self.config.speaker_norm:
            raise SpeakerNormError(
                "speaker statistics were given, but this model was trained without speaker "
                "normalisation (it standardises nothing per speaker)"
            )

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Utterance embeddings (B, D) of zero-padded waveforms (B, T) with lengths (B,)."""
        return self.forward(waveforms, lengths).embeddings


def transformer_layers(model: EmotionModel) -> nn.ModuleList:
    """The encoder's transformer layers, first to last (every supported family keeps them at
    `encoder.layers` of its Hugging Face module)."""
    return model.encoder.encoder.layers


def final_norm(model: EmotionModel) -> nn.Module | None:
    """The LayerNorm the encoder applies after its last layer (Whisper; wav2vec2-style models with
    `do_stable_layer_norm`), or None (wav2vec2-base, HuBERT-base, data2vec-audio normalise before
    their first layer instead)."""
    if model.is_whisper:
        return model.encoder.encoder.layer_norm
    if "StableLayerNorm" in type(model.encoder.encoder).__name__:
        return model.encoder.encoder.layer_norm
    return None


def tuned_encoder_names(model: EmotionModel) -> list[str]:
    """state_dict names of the encoder tensors partial fine-tuning trains: those of the top
    `config.tuned_layers` layers and of the final norm after them (none when tuned_layers is 0)."""
    count = model.config.tuned_layers
    if not count:
        return []
    layers = transformer_layers(model)
    tuned = [*layers[len(layers) - count:], final_norm(model)]
    prefixes = tuple(f"{name}." for name, module in model.named_modules()
                     if any(module is m for m in tuned if m is not None))  # fmt: skip
    return [name for name in model.state_dict() if name.startswith(prefixes)]


def masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real frames: Σ_t m_t·h_t / Σ_t m_t.  frames (B, F, H), mask (B, F) → (B, H)."""
    weights = mask.to(frames.dtype).unsqueeze(-1)  # (B, F, 1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def masked_mean_std(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[mean, std] over real frames: (B, F, H), mask (B, F) → (B, 2H); std = sqrt(var + ε)."""
    mean = masked_mean(frames, mask)  # (B, H)
    weights = mask.to(frames.dtype).unsqueeze(-1)
    centered = (frames - mean[:, None]) * weights
    variance = (centered * centered).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    return torch.cat([mean, torch.sqrt(variance + STD_EPSILON)], dim=-1)


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

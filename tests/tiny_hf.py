"""Tiny Hugging Face audio classifiers of every family emoknn imports, saved as users save theirs.

`save_tiny_classifier(family, folder)` writes `config.json`, `model.safetensors` and
`preprocessor_config.json` with `save_pretrained`, exactly the layout of a published checkpoint
such as `superb/wav2vec2-base-superb-er`, from a 2-layer hidden-32 config (random weights, fixed
seed), so that import parity can be tested offline in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("wav2vec2", "wav2vec2-group", "hubert", "wavlm", "data2vec-audio", "whisper")
LABELS = ["neu", "hap", "ang", "sad"]  # not alphabetical: id2label order must be kept
# The tiny Whisper reads 1 s windows (max_source_positions 50 → 100 mel frames), so HF's
# "pad to the window" front end and emoknn's own-length one agree on 1 s clips.
WHISPER_SECONDS = 1.0

_WAV2VEC2_LIKE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "mask_time_prob": 0.0,
    "layerdrop": 0.0,
}


def tiny_config(family: str, weighted: bool = False, proj_size: int = 8):
    """The transformers config of a tiny classifier of `family` (see FAMILIES)."""
    from transformers import AutoConfig

    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
    head = {"use_weighted_layer_sum": weighted, "classifier_proj_size": proj_size, **labels}
    if family == "whisper":
        return AutoConfig.for_model(
            "whisper", d_model=32, encoder_layers=2, encoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
            num_mel_bins=80, max_source_positions=int(50 * WHISPER_SECONDS), **head,
        )  # fmt: skip
    if family == "wav2vec2-group":  # wav2vec2-base style: GroupNorm CNN, post-norm transformer
        extra = {"feat_extract_norm": "group", "do_stable_layer_norm": False}
        return AutoConfig.for_model("wav2vec2", **_WAV2VEC2_LIKE, **extra, **head)
    if family == "wav2vec2":  # wav2vec2-large-robust / XLS-R style: LayerNorm CNN, pre-norm
        extra = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
        return AutoConfig.for_model("wav2vec2", **_WAV2VEC2_LIKE, **extra, **head)
    if family == "hubert":
        return AutoConfig.for_model("hubert", **_WAV2VEC2_LIKE, feat_extract_norm="group", **head)
    if family == "wavlm":
        return AutoConfig.for_model(
            "wavlm", **_WAV2VEC2_LIKE, feat_extract_norm="layer", num_buckets=16,
            max_bucket_distance=80, **head,
        )  # fmt: skip
    if family == "data2vec-audio":
        config = {**_WAV2VEC2_LIKE, "num_conv_pos_embeddings": 5, "conv_pos_kernel_size": 5}
        return AutoConfig.for_model("data2vec-audio", **config, **head)
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def save_tiny_classifier(
    family: str, folder: str | Path, weighted: bool = False, seed: int = 0
) -> Path:
    """Build a tiny classifier of `family` with random weights and save it with its feature
    extractor to `folder` (config.json, model.safetensors, preprocessor_config.json)."""
    from transformers import (
        AutoModelForAudioClassification,
        Wav2Vec2FeatureExtractor,
        WhisperFeatureExtractor,
    )

    folder = Path(folder)
    config = tiny_config(family, weighted)
    torch.manual_seed(seed)
    model = AutoModelForAudioClassification.from_config(config)
    with torch.no_grad():
        # HF initialises the head with std 0.02, which gives logits near 0: scale it so logits
        # are O(1) and a tolerance on them means something.
        for layer in (model.projector, model.classifier):
            layer.weight.normal_(0.0, layer.in_features**-0.5)
            layer.bias.normal_(0.0, 0.1)
        if weighted:  # HF initialises these equal; make the softmax weighting visible
            model.layer_weights.copy_(torch.randn_like(model.layer_weights))
    model.save_pretrained(folder)
    if family == "whisper":
        extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=int(WHISPER_SECONDS))
    else:  # as wav2vec2-base (group norm: no attention mask) and the large models (layer norm)
        extractor = Wav2Vec2FeatureExtractor(
            do_normalize=True,
            return_attention_mask=getattr(config, "feat_extract_norm", "layer") == "layer",
        )
    extractor.save_pretrained(folder)
    return folder


def hf_logits(folder: str | Path, waveform) -> torch.Tensor:
    """The logits Hugging Face itself gives one 16 kHz waveform (1-D numpy): its own feature
    extractor, then its own model, as `pipeline("audio-classification")` runs them."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    extractor = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModelForAudioClassification.from_pretrained(folder).eval()
    # The last of the L + 1 hidden states is `last_hidden_state` (after the final layer norm of
    # pre-norm encoders), as in transformers 4, where published checkpoints were trained, and in
    # emoknn; transformers 5 gives wav2vec2-family pre-norm encoders the un-normed output there
    # unless the config says otherwise. It matters only with `use_weighted_layer_sum`.
    model.config.tie_last_hidden_states = True
    inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits[0]

"""Whisper's encoder as a backbone: log-mel features at each utterance's own length, never 30 s.

    waveforms (B, T) ─log-mel─▶ (B, n_mels, M) ─conv1, GELU, conv2 (stride 2), GELU─▶ (B, F, H)
        + positional embeddings[:F] ─L transformer layers (attention mask over padding)─▶
        final LayerNorm ─▶ last hidden state (B, F, H)

Hugging Face's `WhisperEncoder.forward` insists on exactly 3000 mel frames (30 s): a 3 s clip then
costs the compute of 30 s and its pooled embedding is mostly padding. `WhisperBackbone` drives the
encoder's parts itself (the same weights, the same operations) on the frames of real audio only:

- M = ⌊T / 160⌋ mel frames (25 ms windows every 10 ms), F = ⌊(M − 1) / 2⌋ + 1 encoder frames
  (20 ms each); at most 2 · max_source_positions mel frames (30 s for every OpenAI checkpoint).
- Padding invariance: each utterance's spectrogram is computed from its own samples (reflection at
  its own ends, its own max in the clamp); padded mel frames are zero, as the zero padding `conv1`
  sees at the end of a lone utterance; `conv1`'s output is zeroed again at padded frames before
  `conv2` (its bias and GELU made them non-zero); the transformer gets an attention mask over
  padded frames. A batch therefore gives every utterance what it gets alone.

Only the encoder half is ever built: loading a full checkpoint (`WhisperForConditionalGeneration`,
`WhisperModel`, `WhisperForAudioClassification`) keeps its encoder weights and drops the decoder.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emoknn.errors import ConfigError, EmoknnError

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms analysis window
HOP_LENGTH = 160  # 10 ms between frames
# Checkpoint keys of the encoder in every Whisper class: "model.encoder."
# (WhisperForConditionalGeneration), "encoder." (WhisperModel, WhisperForAudioClassification);
# everything else (the decoder, heads) is left out of the model.
ENCODER_KEY_MAPPING = {r"^(model\.)?encoder\.": ""}


def tiny_whisper_config() -> dict[str, Any]:
    """A 2-layer, d_model-64 Whisper with 80 mel bins built locally: for tests and CPU demos."""
    return {
        "model_type": "whisper",
        "num_mel_bins": 80,
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 128,
        "decoder_layers": 2,  # never built (only the encoder is), but part of a valid config
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 128,
        "max_source_positions": 1500,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
    }


def mel_frame_counts(lengths: torch.Tensor) -> torch.Tensor:
    """Mel frames of utterances of `lengths` samples: M = ⌊T / 160⌋ (the extractor drops the last
    of the 1 + ⌊T / 160⌋ centred STFT frames)."""
    return torch.div(lengths, HOP_LENGTH, rounding_mode="floor")


def encoder_frame_counts(mel_lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames after conv2 (kernel 3, stride 2, padding 1): F = ⌊(M − 1) / 2⌋ + 1."""
    return torch.div(mel_lengths - 1, 2, rounding_mode="floor") + 1


class LogMelFrontEnd(nn.Module):
    """`WhisperFeatureExtractor`'s log-mel spectrogram, per utterance at its own length, in torch.

    For each utterance x of n samples (reflect-padded by N_FFT/2 at both ends, as `center=True`):
        P[k, t] = |Σ_j w[j] x[160t + j] e^{−2πi jk/400}|²        (w: periodic Hann, k = 0..200)
        S = log10(max(mel_filters · P, 1e-10))                    t = 0..⌊n/160⌋ − 1
        S = max(S, max(S) − 8),   features = (S + 4) / 4
    where max(S) runs over the utterance's own frames only. The DFT is a strided conv1d with a
    fixed (cos, sin) basis: exact arithmetic of the definition, batched, and exportable to ONNX
    (which has no complex numbers). Padded frames of the output are exactly zero.
    """

    def __init__(self, num_mel_bins: int) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        # The extractor's own filters (same arguments as WhisperFeatureExtractor.__init__).
        filters = mel_filter_bank(
            num_frequency_bins=1 + N_FFT // 2, num_mel_filters=num_mel_bins, min_frequency=0.0,
            max_frequency=8000.0, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
        )  # fmt: skip  # (201, n_mels)
        n = np.arange(N_FFT)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)  # periodic Hann
        angle = 2 * np.pi * np.outer(np.arange(1 + N_FFT // 2), n) / N_FFT  # (201, 400)
        basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window  # (402, 400)
        # Fixed, derived from the config: not saved in checkpoints (persistent=False).
        self.register_buffer(
            "dft_basis", torch.tensor(basis[:, None, :], dtype=torch.float32), persistent=False
        )  # (402, 1, 400)
        self.register_buffer(
            "mel_filters", torch.tensor(filters.T, dtype=torch.float32), persistent=False
        )  # (n_mels, 201)

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) waveforms with (B,) sample lengths → features (B, n_mels, M), mel mask (B, M)."""
        # fp32 whatever the autocast around it: the log of a bf16 power spectrum loses the quiet
        # bins the clamp keeps.
        autocast_off = (
            torch.autocast(waveforms.device.type, enabled=False)
            if torch.is_autocast_enabled(waveforms.device.type)
            else contextlib.nullcontext()
        )
        with autocast_off:
            return self._features(waveforms.float(), lengths)

    def _features(
        self, waveforms: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        half = N_FFT // 2
        total = waveforms.shape[1]
        # Reflect-pad every row at its own ends (what F.pad(x[:n], (200, 200), "reflect") does to
        # each utterance alone), as one gather: padded position p reads sample s = |p − 200|,
        # mirrored at the end, s ↦ 2(n − 1) − s for s ≥ n; positions past n + 400 read zero.
        n = lengths[:, None]  # (B, 1)
        position = torch.arange(total + 2 * half, device=waveforms.device)[None]  # (1, T + 400)
        source = (position - half).abs()
        source = torch.where(source >= n, 2 * (n - 1) - source, source)  # (B, T + 400)
        inside = position < n + 2 * half
        padded = torch.gather(waveforms, 1, source.clamp(0, total - 1)) * inside  # (B, T + 400)

        spectrum = F.conv1d(padded[:, None], self.dft_basis, stride=HOP_LENGTH)  # (B, 402, M + 1)
        real, imaginary = spectrum[:, :, :-1].chunk(2, dim=1)  # 2 × (B, 201, M): last frame dropped
        power = real.square() + imaginary.square()  # |X|² (B, 201, M)
        log_mel = torch.log10(torch.clamp(self.mel_filters @ power, min=1e-10))  # (B, n_mels, M)

        mel_lengths = mel_frame_counts(lengths)  # (B,)
        mel_mask = (
            torch.arange(log_mel.shape[2], device=log_mel.device)[None] < mel_lengths[:, None]
        )
        peak = torch.where(mel_mask[:, None], log_mel, -torch.inf).amax(dim=(1, 2))  # (B,)
        log_mel = torch.maximum(log_mel, peak[:, None, None] - 8.0)
        features = torch.where(mel_mask[:, None], (log_mel + 4.0) / 4.0, 0.0)
        return features, mel_mask


class WhisperBackbone(nn.Module):
    """A Hugging Face `WhisperEncoder` run on real frames only (see the module docstring).

    `forward(waveforms, lengths)` returns `(hidden_states, frame_mask)`: hidden_states is a tuple
    of L + 1 tensors (B, F, H) with Hugging Face `output_hidden_states=True` semantics (entry 0 is
    the input to the first layer: conv stem + positional embeddings; the last is the last hidden
    state, after the final LayerNorm), or `(last_hidden_state,)` with `all_layers=False` (nothing
    else is kept: 32 layers of whisper-large-v3 would hold GBs); frame_mask (B, F) is True on
    frames computed from real audio.
    """

    def __init__(self, encoder: nn.Module, freeze_conv_stem: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.front_end = LogMelFrontEnd(int(encoder.config.num_mel_bins))
        self.freeze_conv_stem = freeze_conv_stem
        # Whisper's positions are fixed sinusoids: WhisperEncoder.__init__ freezes them, but
        # `from_pretrained` (transformers 5) hands them back trainable.
        encoder.embed_positions.requires_grad_(False)
        if freeze_conv_stem:  # as freeze_feature_encoder does for wav2vec2's CNN
            for parameter in (*encoder.conv1.parameters(), *encoder.conv2.parameters()):
                parameter.requires_grad = False

    @property
    def max_samples(self) -> int:
        """Longest input the positional table covers: 2 · max_source_positions mel frames
        (480,000 samples = 30 s for every OpenAI checkpoint)."""
        return 2 * int(self.config.max_source_positions) * HOP_LENGTH

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames of utterances of `lengths` samples (B,)."""
        return encoder_frame_counts(mel_frame_counts(lengths))

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, all_layers: bool = True
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        if waveforms.shape[1] > self.max_samples:
            raise ConfigError(
                f"Whisper encodes at most {self.max_samples} samples "
                f"({self.max_samples / SAMPLE_RATE:g} s) at once, got {waveforms.shape[1]}: cut "
                "longer inputs into windows"
            )
        encoder = self.encoder
        features, mel_mask = self.front_end(waveforms, lengths)  # (B, n_mels, M), (B, M)
        if self.training:
            features = self._spec_augment(features, mel_mask)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_conv_stem):
            hidden = F.gelu(encoder.conv1(features))  # (B, H, M)
            # conv2 must see zeros past each utterance's end, as a lone utterance's zero padding.
            hidden = hidden * mel_mask[:, None].to(hidden.dtype)
            hidden = F.gelu(encoder.conv2(hidden)).transpose(1, 2)  # (B, F, H)
        num_frames = hidden.shape[1]
        frame_mask = (
            torch.arange(num_frames, device=hidden.device)[None]
            < encoder_frame_counts(mel_mask.sum(dim=1))[:, None]
        )  # (B, F)
        hidden = hidden + encoder.embed_positions.weight[:num_frames]  # positions sliced to F
        hidden = F.dropout(hidden, p=float(self.config.dropout), training=self.training)
        # Additive mask over keys: 0 for real frames, the dtype's minimum for padding, so that
        # softmax gives padded keys exactly zero weight. (B, 1, 1, F), broadcast over heads and
        # queries. LayerDrop is never applied (as for wav2vec2: it would make DDP see unused
        # parameters, and adds nothing to fine-tuning).
        attention_mask = torch.zeros(frame_mask.shape, dtype=hidden.dtype, device=hidden.device)
        attention_mask = attention_mask.masked_fill(~frame_mask, torch.finfo(hidden.dtype).min)
        attention_mask = attention_mask[:, None, None, :]
        states = [hidden]
        for layer in encoder.layers:
            hidden = layer(hidden, attention_mask)
            if all_layers:
                states.append(hidden)
        last = encoder.layer_norm(hidden)
        hidden_states = (*states[:-1], last) if all_layers else (last,)
        return hidden_states, frame_mask

    def _spec_augment(self, features: torch.Tensor, mel_mask: torch.Tensor) -> torch.Tensor:
        """SpecAugment as `WhisperModel._mask_input_features` does it, when the config asks
        (`apply_spec_augment` with `mask_time_prob` / `mask_feature_prob` > 0): masked spans of
        mel frames (chosen among real frames) and of mel bins are set to zero."""
        from transformers.models.whisper.modeling_whisper import _compute_mask_indices

        config = self.config
        if not getattr(config, "apply_spec_augment", False):
            return features
        batch_size, num_bins, num_frames = features.shape
        if config.mask_time_prob > 0:
            spans = _compute_mask_indices(
                (batch_size, num_frames), mask_prob=config.mask_time_prob,
                mask_length=config.mask_time_length, attention_mask=mel_mask.long(),
                min_masks=config.mask_time_min_masks,
            )  # fmt: skip
            time_mask = torch.tensor(spans, device=features.device, dtype=torch.bool)  # (B, M)
            features = features.masked_fill(time_mask[:, None], 0.0)
        if config.mask_feature_prob > 0:
            spans = _compute_mask_indices(
                (batch_size, num_bins), mask_prob=config.mask_feature_prob,
                mask_length=config.mask_feature_length, min_masks=config.mask_feature_min_masks,
            )  # fmt: skip
            bin_mask = torch.tensor(spans, device=features.device, dtype=torch.bool)  # (B, n_mels)
            features = features.masked_fill(bin_mask[:, :, None], 0.0)
        return features


def is_whisper_config(config: Any) -> bool:
    return getattr(config, "model_type", None) == "whisper"


def whisper_encoder_from_config(encoder_config: dict[str, Any]) -> nn.Module:
    """A randomly initialised `WhisperEncoder` (no decoder) from a config dict (no download)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    settings = {k: v for k, v in encoder_config.items() if k != "model_type"}
    try:
        config = WhisperConfig(**{**settings, "encoder_layerdrop": 0.0})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid Whisper encoder config: {error}") from error
    return WhisperEncoder(config)


def load_whisper_encoder(name: str) -> nn.Module:
    """The encoder half of a pretrained Whisper (hub name or local folder), its decoder never kept.

    Any Whisper class's checkpoint works: the encoder's weights are renamed to `WhisperEncoder`'s
    own keys and every other weight is skipped. A checkpoint missing any encoder weight is refused
    (transformers would silently initialise it at random).
    """
    import transformers
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from emoknn.sources import pretrained_kwargs

    verbosity = transformers.logging.get_verbosity()
    # The skipped decoder weights would be listed as "unexpected" in a long report: quiet it, and
    # check the one thing that matters (no encoder weight missing) below.
    transformers.logging.set_verbosity_error()
    try:
        encoder, info = WhisperEncoder.from_pretrained(
            name,
            key_mapping=ENCODER_KEY_MAPPING,
            output_loading_info=True,
            encoder_layerdrop=0.0,
            **pretrained_kwargs(name),  # local folder, cache, or a Hub that answers (sources.py)
        )
    except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: weights of wrong shape
        raise EmoknnError(
            f"cannot load the Whisper encoder {name!r}: {str(error).splitlines()[0]}"
        ) from error
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = sorted(info["missing_keys"]) + sorted(k for k, *_ in info["mismatched_keys"])
    if missing:
        raise EmoknnError(
            f"{name}: the checkpoint lacks Whisper encoder weights ({', '.join(missing[:3])}"
            f"{', …' if len(missing) > 3 else ''})"
        )
    return encoder

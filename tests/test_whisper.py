"""Whisper's encoder as a backbone: mel front end, padding invariance, encoder-only loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoknn.whisper import (
    LogMelFrontEnd,
    WhisperBackbone,
    load_whisper_encoder,
    tiny_whisper_config,
    whisper_encoder_from_config,
)

# Our log-mel (float32 DFT as a conv) against WhisperFeatureExtractor's numpy STFT: measured
# ≤ 2e-5 on features of magnitude ~1 (speech-like, noise, digital silence, 401 samples to 30 s).
MEL_TOLERANCE = 1e-4


def speech_like(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a gliding 100–150 Hz pitch, gated like syllables, over faint noise."""
    t = np.arange(num_samples) / 16000
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    voiced = sum(np.sin(h * phase) / h for h in range(1, 20)) * (np.sin(2 * np.pi * 3 * t) > -0.3)
    return (0.1 * voiced + 0.003 * rng.standard_normal(num_samples)).astype(np.float32)


@pytest.mark.parametrize("num_mel_bins", [80, 128])
def test_log_mel_matches_the_feature_extractor_on_unpadded_audio(num_mel_bins):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
    front_end = LogMelFrontEnd(num_mel_bins)
    rng = np.random.default_rng(0)
    for num_samples in (401, 16001, 48123, 120000):
        clip = speech_like(num_samples, rng)
        clip[num_samples // 2 : num_samples // 2 + 4000] = 0.0  # digital silence: the clamp acts
        expected = extractor(
            clip, sampling_rate=16000, padding="longest", return_tensors="np"
        ).input_features[0]  # (n_mels, M), not padded to 30 s
        features, mask = front_end(torch.from_numpy(clip)[None], torch.tensor([num_samples]))
        assert features.shape == (1, num_mel_bins, num_samples // 160) == (1, *expected.shape)
        assert mask.all()
        np.testing.assert_allclose(features[0].numpy(), expected, atol=MEL_TOLERANCE, rtol=0)


def test_padded_mel_frames_are_zero_and_the_clamp_uses_real_frames_only():
    front_end = LogMelFrontEnd(80)
    rng = np.random.default_rng(1)
    quiet = 0.001 * speech_like(8000, rng)
    loud = speech_like(32000, rng)
    batch = torch.zeros(2, 32000)
    batch[0, :8000], batch[1] = torch.from_numpy(quiet), torch.from_numpy(loud)
    features, mask = front_end(batch, torch.tensor([8000, 32000]))
    alone, _ = front_end(torch.from_numpy(quiet)[None], torch.tensor([8000]))
    assert mask[0].sum() == 50 and mask[1].all()
    assert torch.equal(features[0, :, 50:], torch.zeros(80, 150))
    torch.testing.assert_close(features[0, :, :50], alone[0], atol=1e-5, rtol=0)


def test_full_30_s_input_equals_hugging_face_encoder_hidden_states():
    """On the one input length HF's forward accepts, the backbone is HF's encoder exactly."""
    from transformers import WhisperFeatureExtractor

    torch.manual_seed(0)
    encoder = whisper_encoder_from_config(tiny_whisper_config()).eval()
    backbone = WhisperBackbone(encoder)
    clip = speech_like(480000, np.random.default_rng(2))
    features = WhisperFeatureExtractor(feature_size=80)(
        clip, sampling_rate=16000, return_tensors="pt"
    ).input_features  # (1, 80, 3000)
    with torch.no_grad():
        expected = encoder(features, output_hidden_states=True).hidden_states
        hidden, mask = backbone(torch.from_numpy(clip)[None], torch.tensor([480000]))
    assert len(hidden) == len(expected) == 3 and mask.shape == (1, 1500) and mask.all()
    for ours, theirs in zip(hidden, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)  # mel differences, propagated


def test_a_batch_gives_every_utterance_what_it_gets_alone():
    torch.manual_seed(0)
    backbone = WhisperBackbone(whisper_encoder_from_config(tiny_whisper_config())).eval()
    rng = np.random.default_rng(3)
    lengths = [400, 1000, 16000, 33333, 80000]
    clips = [speech_like(n, rng) for n in lengths]
    batch = torch.zeros(len(clips), max(lengths))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = torch.from_numpy(clip)
    with torch.no_grad():
        hidden, mask = backbone(batch, torch.tensor(lengths))
        for row, clip in enumerate(clips):
            alone, alone_mask = backbone(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
            frames = alone_mask.shape[1]
            assert int(mask[row].sum()) == frames == (len(clip) // 160 - 1) // 2 + 1
            for ours, single in zip(hidden, alone, strict=True):
                torch.testing.assert_close(ours[row, :frames], single[0], atol=1e-5, rtol=0)


def test_inputs_past_the_positional_table_are_refused():
    backbone = WhisperBackbone(whisper_encoder_from_config(tiny_whisper_config()))
    assert backbone.max_samples == 480000
    with pytest.raises(ValueError, match="at most 480000 samples"):
        backbone(torch.zeros(1, 480001), torch.tensor([480001]))


def test_conv_stem_frozen_by_default_and_spec_augment_only_when_asked():
    config = tiny_whisper_config()
    backbone = WhisperBackbone(whisper_encoder_from_config(config))
    assert not any(p.requires_grad for p in backbone.encoder.conv1.parameters())
    assert all(p.requires_grad for p in backbone.encoder.layers.parameters())
    waveform, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    backbone.train()
    with torch.no_grad():  # dropout is 0 in the tiny config: train mode changes nothing …
        torch.testing.assert_close(backbone(waveform, lengths)[0][-1],
                                   backbone.eval()(waveform, lengths)[0][-1])  # fmt: skip
    masked = WhisperBackbone(whisper_encoder_from_config(
        {**config, "apply_spec_augment": True, "mask_time_prob": 0.5, "mask_time_length": 5}
    ))  # fmt: skip
    masked.load_state_dict(backbone.state_dict())
    with torch.no_grad():  # … unless the config asks for SpecAugment
        assert not torch.allclose(masked.train()(waveform, lengths)[0][-1],
                                  masked.eval()(waveform, lengths)[0][-1])  # fmt: skip


@pytest.mark.parametrize("class_name", ["WhisperModel", "WhisperForConditionalGeneration"])
def test_encoder_only_from_a_saved_whisper_folder(tmp_path, class_name):
    import transformers

    from emoknn.whisper import ENCODER_KEY_MAPPING  # noqa: F401 (documents what is kept)

    config = transformers.WhisperConfig(
        **{k: v for k, v in tiny_whisper_config().items() if k != "model_type"}
    )
    torch.manual_seed(0)
    full = getattr(transformers, class_name)(config).eval()
    full.save_pretrained(tmp_path / "whisper")
    encoder = load_whisper_encoder(str(tmp_path / "whisper"))
    assert type(encoder).__name__ == "WhisperEncoder"
    assert not any("decoder" in name for name in encoder.state_dict())
    source = full.get_encoder().state_dict()
    for name, weight in encoder.state_dict().items():
        assert torch.equal(weight, source[name]), name


def test_a_folder_without_encoder_weights_is_refused(tmp_path):
    import transformers

    from emoknn.errors import EmoknnError

    config = transformers.WhisperConfig(
        **{k: v for k, v in tiny_whisper_config().items() if k != "model_type"}
    )
    from safetensors.torch import save_file

    folder = tmp_path / "decoder_only"
    transformers.WhisperModel(config).save_pretrained(folder)
    decoder = transformers.WhisperModel(config).get_decoder().state_dict()
    save_file({f"decoder.{k}": v.contiguous() for k, v in decoder.items()},
              folder / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    with pytest.raises(EmoknnError, match="lacks Whisper encoder weights"):
        load_whisper_encoder(str(folder))

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoknn.model import EmotionModel, ModelConfig, masked_mean, tiny_encoder_config


def encoder_config(family: str, norm: str) -> dict:
    config = tiny_encoder_config()
    config["model_type"] = family
    if family == "data2vec-audio":  # always LayerNorm convs; no such fields
        del config["feat_extract_norm"], config["do_stable_layer_norm"]
        config["num_conv_pos_embeddings"] = 4
    elif norm == "group":
        config.update(feat_extract_norm="group", do_stable_layer_norm=False)
    return config


@pytest.mark.parametrize(
    ("family", "norm", "layer_weighting"),
    [
        ("wav2vec2", "layer", False),
        ("wav2vec2", "group", False),  # like wav2vec2-base
        ("hubert", "group", True),
        ("wavlm", "layer", True),
        ("data2vec-audio", "layer", False),
    ],
)
def test_padding_does_not_change_embeddings(family, norm, layer_weighting):
    torch.manual_seed(0)
    config = ModelConfig(
        encoder="tiny", encoder_config=encoder_config(family, norm), layer_weighting=layer_weighting
    )
    model = EmotionModel(config).eval()
    lengths = torch.tensor([16000, 9000, 4000])
    waveforms = torch.randn(3, 16000) * 0.1
    for row, length in enumerate(lengths):
        waveforms[row, length:] = 0
    with torch.no_grad():
        batched = model(waveforms, lengths)
        for row, length in enumerate(lengths):
            alone = model(waveforms[row : row + 1, :length], lengths[row : row + 1])
            torch.testing.assert_close(
                alone.embeddings[0], batched.embeddings[row], atol=2e-5, rtol=1e-4
            )
            torch.testing.assert_close(alone.logits[0], batched.logits[row], atol=2e-5, rtol=1e-4)
    assert batched.embeddings.shape == (3, 64) and batched.logits.shape == (3, 4)


FAMILIES = [
    ("wav2vec2", "layer"),
    ("wav2vec2", "group"),
    ("hubert", "group"),
    ("wavlm", "layer"),
    ("data2vec-audio", "layer"),
]


def padded_batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths_tensor = torch.tensor(lengths)
    waveforms = torch.randn(len(lengths), max(lengths)) * 0.1
    for row, length in enumerate(lengths):
        waveforms[row, length:] = 0
    return waveforms, lengths_tensor


@pytest.mark.parametrize(("family", "norm"), FAMILIES)
def test_pooled_layers_equal_hugging_face_hidden_states_per_utterance(family, norm):
    """Entry l of pooled_layers on a padded batch = the frame mean of HF's hidden_states[l] on
    the utterance alone (entry 0 = transformer input, the last = last_hidden_state)."""
    from emoknn.model import normalize_waveforms

    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(encoder="tiny", encoder_config=encoder_config(family, norm)))
    model.eval()
    waveforms, lengths = padded_batch([16000, 9000, 4000])
    with torch.no_grad():
        pooled = model.pooled_layers(waveforms, lengths)
        assert pooled.shape == (3, 3, 64) and pooled.dtype == torch.float32
        for row, length in enumerate(lengths.tolist()):
            clip = waveforms[row : row + 1, :length]
            clip = normalize_waveforms(clip, torch.ones_like(clip, dtype=torch.bool))
            reference = model.encoder(clip, output_hidden_states=True)
            # transformers 5 gives stable-layer-norm models' last layer before the final norm as
            # hidden_states[-1]; the contract's last entry is last_hidden_state (as transformers 4).
            states = (*reference.hidden_states[:-1], reference.last_hidden_state)
            assert len(states) == 3
            expected = torch.stack([h[0].mean(dim=0) for h in states])
            torch.testing.assert_close(pooled[row], expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(("family", "norm"), FAMILIES)
def test_head_on_pooled_layers_equals_forward(family, norm):
    torch.manual_seed(0)
    for layer_weighting, projection_size in [(False, 0), (True, 0), (True, 16), (False, 16)]:
        config = ModelConfig(
            encoder="tiny", encoder_config=encoder_config(family, norm),
            layer_weighting=layer_weighting, projection_size=projection_size,
        )  # fmt: skip
        model = EmotionModel(config).eval()
        if model.layer_weights is not None:  # not the uniform start: a real weighting
            model.layer_weights.data = torch.tensor([1.5, -0.5, 0.25])
        waveforms, lengths = padded_batch([12000, 7000])
        with torch.no_grad():
            live = model(waveforms, lengths)
            cached = model.head(model.pooled_layers(waveforms, lengths))
        torch.testing.assert_close(cached.embeddings, live.embeddings, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cached.logits, live.logits, atol=1e-5, rtol=1e-5)
        assert live.embeddings.shape == (2, projection_size or 64)
        assert model.embedding_size == (projection_size or 64)


def test_layer_weighting_and_projection_keep_batches_equal_to_single_utterances():
    torch.manual_seed(0)
    config = ModelConfig(encoder="tiny", layer_weighting=True, projection_size=32,
                         projection_dropout=0.2, head_dropout=0.2)  # fmt: skip
    model = EmotionModel(config).eval()
    model.layer_weights.data = torch.tensor([-1.0, 0.5, 2.0])
    waveforms, lengths = padded_batch([16000, 5000, 11000])
    with torch.no_grad():
        batched = model(waveforms, lengths)
        for row, length in enumerate(lengths.tolist()):
            alone = model(waveforms[row : row + 1, :length], lengths[row : row + 1])
            torch.testing.assert_close(alone.embeddings[0], batched.embeddings[row],
                                       atol=2e-5, rtol=1e-4)  # fmt: skip
            torch.testing.assert_close(alone.logits[0], batched.logits[row], atol=2e-5, rtol=1e-4)
    assert batched.embeddings.shape == (3, 32)
    assert model.layer_weights.shape == (3,)  # L + 1 = 3 entries for 2 layers


def test_bad_head_settings_are_rejected():
    from emoknn.errors import ConfigError

    with pytest.raises(ConfigError, match="projection_size must be ≥ 0"):
        ModelConfig(encoder="tiny", projection_size=-1)
    with pytest.raises(ConfigError, match="projection_dropout must lie in"):
        ModelConfig(encoder="tiny", projection_dropout=1.0)
    model = EmotionModel(ModelConfig(encoder="tiny", layer_weighting=True))
    with pytest.raises(ValueError, match=r"expected pooled layers \(B, 3, 64\)"):
        model.head(torch.zeros(2, 2, 64))


def test_masked_mean_ignores_padding():
    frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(frames, torch.tensor([[True, True, False]])).item() == 2.0


def test_frozen_feature_encoder_and_config_round_trip():
    model = EmotionModel(ModelConfig(encoder="tiny", freeze_feature_encoder=True))
    assert not any(p.requires_grad for p in model.encoder.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert model.config.encoder_config["model_type"] == "wav2vec2"
    rebuilt = EmotionModel(ModelConfig(**model.config.to_dict()))
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.encoder.config.hidden_size == 64


def test_bad_shapes_are_rejected():
    model = EmotionModel(ModelConfig(encoder="tiny"))
    with pytest.raises(ValueError, match=r"expected waveforms \(B, T\) and lengths \(B,\)"):
        model(torch.zeros(16000), torch.tensor([16000]))


def test_pretrained_encoder_from_a_local_folder(tmp_path, small_synthetic_corpus):
    """The loading code users run (`from_pretrained`), on a small encoder saved to a folder."""
    import shutil

    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    from emoknn.config import make_config
    from emoknn.corpora import FOUR_CLASSES, load_synthetic
    from emoknn.folds import speaker_folds
    from emoknn.model import default_normalization
    from emoknn.model_folder import load_model
    from emoknn.train import train_fold

    settings = tiny_encoder_config()
    model_type = settings.pop("model_type")
    folder = tmp_path / "my-encoder"
    AutoModel.from_config(AutoConfig.for_model(model_type, **settings)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(folder)
    assert default_normalization(str(folder)) is False  # follows the encoder's own extractor

    fold = speaker_folds(load_synthetic(small_synthetic_corpus))[0]
    config = make_config("tiny", encoder=str(folder), max_epochs=1, max_seconds=1.0,
                         progress_bar=False)  # fmt: skip
    result = train_fold(config, fold.train, fold.val, list(FOUR_CLASSES), tmp_path / "run")
    shutil.rmtree(folder)  # the model file alone rebuilds the model
    model = load_model(result.run_dir)
    assert model.config.normalize_waveforms is False
    assert model.config.encoder == str(folder)


def test_unreachable_encoder_name_gives_a_helpful_error(monkeypatch):
    import huggingface_hub.constants

    from emoknn.errors import EmoknnError

    # As HF_HUB_OFFLINE=1 would (the variable is read at import, so set the constant itself).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EmoknnError, match="cannot load the encoder 'facebook/wav2vec2-base'"):
        EmotionModel(ModelConfig(encoder="facebook/wav2vec2-base"))


def test_waveform_normalisation_matches_the_feature_extractor_and_keeps_padding_zero():
    from transformers import Wav2Vec2FeatureExtractor

    from emoknn.data import pad_batch
    from emoknn.model import normalize_waveforms

    rng = np.random.default_rng(0)
    clips = [(0.3 * rng.standard_normal(n) + 0.05).astype(np.float32) for n in (800, 3000, 1999)]
    waveforms, lengths = pad_batch(clips)
    mask = torch.arange(waveforms.shape[1])[None] < lengths[:, None]
    ours = normalize_waveforms(waveforms, mask)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    for row, clip in enumerate(clips):
        expected = extractor(clip, sampling_rate=16000)["input_values"][0]
        np.testing.assert_allclose(ours[row, : len(clip)].numpy(), expected, atol=1e-5)
        assert torch.all(ours[row, len(clip) :] == 0)

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

    from emoknn.corpora import FOUR_CLASSES, load_synthetic
    from emoknn.folds import speaker_folds
    from emoknn.model import default_normalization
    from emoknn.train import load_trained_model, make_config, train_fold

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
    shutil.rmtree(folder)  # the checkpoint alone rebuilds the model
    model = load_trained_model(result.best_checkpoint)
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

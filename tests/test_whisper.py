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
        (last,), _ = backbone(
            torch.from_numpy(clip)[None], torch.tensor([480000]), all_layers=False
        )
    assert len(hidden) == len(expected) == 3 and mask.shape == (1, 1500) and mask.all()
    for ours, theirs in zip(hidden, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)  # mel differences, propagated
    assert torch.equal(last, hidden[-1])


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
    assert not backbone.encoder.embed_positions.weight.requires_grad
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


# ---- Whisper wherever an encoder goes: EmotionModel, training, checkpoints, predict, serve, ONNX


def save_tiny_whisper(folder, class_name: str = "WhisperForConditionalGeneration"):
    """A tiny Whisper checkpoint with its feature extractor, as `save_pretrained` writes them."""
    import transformers

    config = transformers.WhisperConfig(
        **{k: v for k, v in tiny_whisper_config().items() if k != "model_type"}
    )
    torch.manual_seed(0)
    getattr(transformers, class_name)(config).save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("layer_weighting", "projection_size"), [(False, 0), (True, 32)])
def test_emotion_model_batch_equals_single(layer_weighting, projection_size):
    from emoknn.model import EmotionModel, ModelConfig

    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(
        encoder="tiny", encoder_config=tiny_whisper_config(), normalize_waveforms=False,
        layer_weighting=layer_weighting, projection_size=projection_size,
    )).eval()  # fmt: skip
    assert model.max_input_seconds == 30.0 and model.num_layers == 2
    rng = np.random.default_rng(4)
    lengths = torch.tensor([16000, 9000, 4000, 401])
    waveforms = torch.zeros(4, 16000)
    for row, length in enumerate(lengths):
        waveforms[row, :length] = torch.from_numpy(speech_like(int(length), rng))
    with torch.no_grad():
        batched = model(waveforms, lengths)
        pooled = model.pooled_layers(waveforms, lengths)
        for row, length in enumerate(lengths):
            alone = model(waveforms[row : row + 1, :length], lengths[row : row + 1])
            torch.testing.assert_close(alone.embeddings[0], batched.embeddings[row], atol=1e-5,
                                       rtol=0)  # fmt: skip
            torch.testing.assert_close(alone.logits[0], batched.logits[row], atol=1e-5, rtol=0)
    assert pooled.shape == (4, 3, 64)
    torch.testing.assert_close(model.head(pooled).logits, batched.logits, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def whisper_run(small_synthetic_corpus, tmp_path_factory):
    """A tiny Whisper trained 1 epoch from a locally saved checkpoint folder, with its kNN stage;
    the folder is deleted afterwards: everything later must rebuild from the run alone."""
    import shutil

    from emoknn.config import make_config
    from emoknn.corpora import FOUR_CLASSES, load_synthetic
    from emoknn.folds import speaker_folds
    from emoknn.inference import fit_run_knn
    from emoknn.model import default_normalization
    from emoknn.train import train_fold

    root = tmp_path_factory.mktemp("whisper")
    folder = save_tiny_whisper(root / "tiny-whisper")
    assert default_normalization(str(folder)) is False  # Whisper's extractor does not normalise
    initial = load_whisper_encoder(str(folder)).state_dict()
    fold = speaker_folds(load_synthetic(small_synthetic_corpus))[0]
    config = make_config("tiny", encoder=str(folder), max_epochs=1, max_seconds=1.0,
                         batch_size=8, progress_bar=False)  # fmt: skip
    result = train_fold(config, fold.train, fold.val, list(FOUR_CLASSES), root / "run")
    fit_run_knn(root / "run", fold.train, fold.val, config.max_seconds)
    shutil.rmtree(folder)
    return root / "run", result, fold, initial


def test_training_changes_the_transformer_and_keeps_the_conv_stem(whisper_run):
    from safetensors import safe_open

    from emoknn.model_folder import MODEL_FILE, load_model, read_checkpoint

    run, result, _, initial = whisper_run
    trained = load_model(run)  # no download: the saved Whisper folder is gone
    assert trained.config.encoder_config["model_type"] == "whisper"
    assert trained.config.normalize_waveforms is False
    with safe_open(run / MODEL_FILE, "pt") as weights:  # only the encoder half is kept
        assert not any("decoder" in name for name in weights.keys())  # noqa: SIM118
    checkpoint = read_checkpoint(result.best_checkpoint)["state_dict"]
    assert checkpoint and not any("decoder" in name for name in checkpoint)
    encoder = trained.encoder.encoder.state_dict()
    assert set(encoder) == set(initial)
    for name in ("conv1.weight", "conv2.bias", "embed_positions.weight"):  # frozen by default
        assert torch.equal(encoder[name], initial[name]), name
    assert not torch.equal(encoder["layers.1.fc1.weight"], initial["layers.1.fc1.weight"])


def test_predict_batch_equals_single_and_windows_stay_within_30_s(whisper_run, tmp_path):
    import soundfile as sf

    from emoknn.errors import ConfigError
    from emoknn.predict import EmotionRecognizer

    run, _, fold, _ = whisper_run
    recognizer = EmotionRecognizer.load(run, device="cpu")
    paths = [u.path for u in fold.test[:6]]
    together = recognizer.predict(paths, batch_size=6)
    for path, batched in zip(paths, together, strict=True):
        alone = recognizer.predict(path, batch_size=1)[0]
        assert alone.knn_probabilities is not None
        assert alone.probabilities == pytest.approx(batched.probabilities, abs=1e-5)
    long_file = tmp_path / "long.wav"
    sf.write(long_file, speech_like(16000 * 35, np.random.default_rng(5)), 16000)
    with pytest.raises(ConfigError, match="at most 30 s"):
        recognizer.predict(long_file, window_seconds=40)
    recognizer.max_seconds = 45.0  # a crop longer than Whisper takes: windows shrink to 30 s
    segments = recognizer.predict(long_file)[0].segments
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 30.0), (30.0, 35.0)]


def test_serve_and_the_cli_predict_with_a_whisper_run(whisper_run):
    import json

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from emoknn.cli import app
    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    run, _, fold, _ = whisper_run
    recognizer = EmotionRecognizer.load(run, device="cpu")
    clip = fold.test[0].path
    expected = recognizer.predict(clip)[0]
    client = TestClient(create_app(recognizer, model_name="tiny-whisper"))
    response = client.post("/predict", files={"file": ("clip.wav", clip.read_bytes(), "audio/wav")})
    assert response.status_code == 200, response.text
    assert response.json()["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    result = CliRunner().invoke(
        app, ["predict", str(clip), "--model", str(run), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["probabilities"] == pytest.approx(
        expected.probabilities, abs=1e-6
    )


def test_onnx_export_takes_waveforms_and_matches_pytorch(whisper_run, tmp_path):
    from emoknn.export import OnnxEmotionRecognizer, export_onnx
    from emoknn.predict import EmotionRecognizer

    run, _, fold, _ = whisper_run
    meta = export_onnx(run, tmp_path, quantize=True)
    assert meta["parity_max_abs_logit_difference"] < 1e-4  # the export refuses > 1e-3
    assert meta["max_input_seconds"] == 30.0 and meta["int8"]["clips"] > 0
    paths = [u.path for u in fold.test[:6]]
    torch_results = EmotionRecognizer.load(run, device="cpu").predict(paths)
    onnx_results = OnnxEmotionRecognizer.load(tmp_path).predict(paths)
    for expected, got in zip(torch_results, onnx_results, strict=True):
        assert got.probabilities == pytest.approx(expected.probabilities, abs=1e-4)
    int8 = OnnxEmotionRecognizer.load(tmp_path, quantized=True)
    assert int8.max_input_seconds == 30.0
    assert len(int8.predict(paths)) == len(paths)


def test_from_pretrained_of_a_whisper_model_folder(tmp_path):
    """`--encoder DIR` with a saved WhisperModel: the encoder's weights, no decoder."""
    from emoknn.model import EmotionModel, ModelConfig

    folder = save_tiny_whisper(tmp_path / "whisper-model", "WhisperModel")
    model = EmotionModel(ModelConfig(encoder=str(folder), normalize_waveforms=False))
    assert not any("decoder" in name for name in model.state_dict())
    from transformers import WhisperModel

    reference = WhisperModel.from_pretrained(folder).encoder.state_dict()
    for name, weight in model.encoder.encoder.state_dict().items():
        assert torch.equal(weight, reference[name]), name


@pytest.mark.pretrained
def test_real_whisper_base_mel_parity_and_batch_equals_single(whisper_base_dir):
    from transformers import WhisperFeatureExtractor

    from emoknn.model import masked_mean

    backbone = WhisperBackbone(load_whisper_encoder(str(whisper_base_dir))).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(whisper_base_dir)
    rng = np.random.default_rng(6)
    lengths = [8000, 24000, 56000, 120000]
    clips = [speech_like(n, rng) for n in lengths]
    for clip in clips:
        expected = extractor(clip, sampling_rate=16000, padding="longest",
                             return_tensors="np").input_features[0]  # fmt: skip
        features, _ = backbone.front_end(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
        np.testing.assert_allclose(features[0].numpy(), expected, atol=MEL_TOLERANCE, rtol=0)
    batch = torch.zeros(len(clips), max(lengths))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = torch.from_numpy(clip)
    # Whisper-base's middle layers carry activations in the hundreds: float32 reordering between
    # batch and single shows as up to ~2e-3 absolute there, so the check is relative to each
    # layer's largest value (measured 1.9e-5), and absolute on the pooled last hidden state, the
    # embedding (measured 6.7e-6).
    worst_relative = worst_pooled = 0.0
    with torch.no_grad():
        hidden, _ = backbone(batch, torch.tensor(lengths))
        for row, clip in enumerate(clips):
            alone, mask = backbone(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
            frames = mask.shape[1]
            for ours, single in zip(hidden, alone, strict=True):
                difference = float((ours[row, :frames] - single[0]).abs().max())
                worst_relative = max(worst_relative, difference / float(single.abs().max()))
            pooled = masked_mean(hidden[-1][row : row + 1, :frames], mask)
            worst_pooled = max(
                worst_pooled, float((pooled - masked_mean(alone[-1], mask)).abs().max())
            )
    print(f"whisper-base batch vs single: {worst_relative:.1e} relative (hidden states), "
          f"{worst_pooled:.1e} absolute (pooled last hidden state)")  # fmt: skip
    assert worst_relative < 1e-4 and worst_pooled < 1e-4


def test_whisper_benchmark_warms_up_on_a_few_items_then_times_every_round():
    import whisper_throughput  # bench/ is on pytest's pythonpath

    calls: list[tuple[str, int]] = []
    methods = {name: (lambda items, name=name: calls.append((name, len(items)))) for name in "ab"}
    times = whisper_throughput.interleaved(methods, list(range(10)), rounds=2, warmup_items=3)
    assert sorted(calls) == [("a", 3), ("a", 10), ("a", 10), ("b", 3), ("b", 10), ("b", 10)]
    assert all(len(values) == 2 for values in times.values())

"""Imported Hugging Face audio classifiers predict exactly as Hugging Face does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emoknn.data import pad_batch
from emoknn.errors import EmoknnError
from emoknn.hf_import import hf_classifier_architecture, import_hf_classifier
from tiny_hf import FAMILIES, LABELS, WHISPER_SECONDS, hf_logits, save_tiny_classifier

# fp32; the two sides pool and project in a different order (mean∘projector vs projector∘mean),
# so they agree to float rounding, not bit for bit.
LOGIT_TOLERANCE = 1e-5


def _voice(seconds: float, seed: int) -> np.ndarray:
    """A buzzing vowel-like signal with noise: not silence, not white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 40 * rng.random()
    wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
    return (0.1 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("weighted", [False, True], ids=["last-layer", "weighted-layers"])
@pytest.mark.parametrize("family", FAMILIES)
def test_imported_logits_equal_hugging_face(family, weighted, tmp_path):
    folder = save_tiny_classifier(family, tmp_path / family, weighted=weighted)
    assert hf_classifier_architecture(folder) is not None
    model, max_seconds = import_hf_classifier(folder)
    assert model.labels == LABELS  # id2label order, not sorted
    assert model.embedding_size == 8  # the projector's width
    seconds = [WHISPER_SECONDS] if family == "whisper" else [0.7, 1.0, 1.9]
    if family == "whisper":
        seconds += [0.4]  # shorter than the window: HF pads it to 1 s, so does the import
        assert max_seconds == WHISPER_SECONDS
    clips = [_voice(s, seed) for seed, s in enumerate(seconds)]
    for clip in clips:
        expected = hf_logits(folder, clip)
        with torch.no_grad():
            ours = model(torch.from_numpy(clip)[None], torch.tensor([len(clip)])).logits[0]
        torch.testing.assert_close(ours, expected, atol=LOGIT_TOLERANCE, rtol=0)
    # In a padded batch, each clip still gets what it gets alone (HF itself would not, for
    # models without an attention mask).
    waveforms, lengths = pad_batch(clips)
    with torch.no_grad():
        batched = model(waveforms, lengths).logits
    for row, clip in enumerate(clips):
        torch.testing.assert_close(batched[row], hf_logits(folder, clip), atol=1e-5, rtol=0)


def test_embedding_is_the_pooled_projector_output(tmp_path):
    from transformers import AutoModelForAudioClassification

    folder = save_tiny_classifier("wav2vec2", tmp_path / "w", weighted=False)
    model, _ = import_hf_classifier(folder)
    hf = AutoModelForAudioClassification.from_pretrained(folder).eval()
    clip = _voice(1.0, 3)
    x = torch.from_numpy((clip - clip.mean()) / np.sqrt(clip.var() + 1e-7))[None]
    with torch.no_grad():
        frames = hf.wav2vec2(x).last_hidden_state  # (1, F, H)
        expected = hf.projector(frames).mean(dim=1)[0]  # (P,)
        ours = model(torch.from_numpy(clip)[None], torch.tensor([len(clip)])).embeddings[0]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_not_a_classifier_is_refused(tmp_path):
    folder = save_tiny_classifier("hubert", tmp_path / "h")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["HubertModel"]
    (folder / "config.json").write_text(json.dumps(config))
    assert hf_classifier_architecture(folder) is None
    with pytest.raises(EmoknnError, match="not an audio classifier"):
        import_hf_classifier(folder)
    assert hf_classifier_architecture(tmp_path / "nothing") is None


@pytest.mark.pretrained
def test_whisper_base_classifier_equals_hugging_face(whisper_base_dir, tmp_path):
    """The real whisper-base encoder under a (seeded, random) classification head: the imported
    model, with HF's 30 s window, gives HF's logits on a 4 s clip."""
    from transformers import AutoFeatureExtractor, WhisperConfig, WhisperForAudioClassification

    config = WhisperConfig.from_pretrained(whisper_base_dir, num_labels=4,
                                           id2label=dict(enumerate(LABELS)))  # fmt: skip
    torch.manual_seed(0)
    classifier = WhisperForAudioClassification.from_pretrained(whisper_base_dir, config=config)
    classifier.save_pretrained(tmp_path / "clf")
    AutoFeatureExtractor.from_pretrained(whisper_base_dir).save_pretrained(tmp_path / "clf")
    model, max_seconds = import_hf_classifier(tmp_path / "clf")
    assert max_seconds == 30.0
    clip = _voice(4.0, 7)
    with torch.no_grad():
        ours = model(torch.from_numpy(clip)[None], torch.tensor([len(clip)])).logits[0]
    torch.testing.assert_close(ours, hf_logits(tmp_path / "clf", clip), atol=1e-4, rtol=0)

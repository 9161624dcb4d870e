"""Partial fine-tuning on cached lower layers (`emoknn.frames`, `emoknn.partial`), tiny encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoknn.augment import make_augmentation
from emoknn.config import make_config
from emoknn.corpora import label_names, load_synthetic
from emoknn.errors import ConfigError
from emoknn.features import ViewSpec
from emoknn.folds import speaker_folds
from emoknn.frames import FrameCache, lower_frames, upper_forward
from emoknn.model import EmotionModel, ModelConfig, tiny_encoder_config, tuned_encoder_names
from emoknn.model_folder import load_model, read_model_meta
from emoknn.partial import (
    build_tuned_model,
    fit_tuned,
    fold_frames,
    load_context,
    train_partial_fold,
)
from emoknn.whisper import tiny_whisper_config

LABELS = ["angry", "happy", "neutral", "sad"]


def three_layer(kind: str) -> dict:
    if kind == "whisper":
        return {**tiny_whisper_config(), "encoder_layers": 3}
    return {**tiny_encoder_config(), "num_hidden_layers": 3}


def pretrained(kind: str) -> EmotionModel:
    torch.manual_seed(0)
    config = ModelConfig(encoder="tiny", labels=LABELS, encoder_config=three_layer(kind))
    return EmotionModel(config).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([16000, 9000, 12160])
    waveforms = torch.randn(3, 16000, generator=generator)
    waveforms[torch.arange(16000)[None] >= lengths[:, None]] = 0.0
    return waveforms, lengths


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
@pytest.mark.parametrize("cut", [2, 3])
def test_lower_frames_and_the_tuned_top_equal_the_live_encoder(kind, cut):
    model = pretrained(kind)
    waveforms, lengths = padded_batch()
    config = make_config("finetune-cpu", encoder="tiny", tune_layers=1)
    tuned = build_tuned_model(model, config, LABELS, cut).eval()
    entry = cut - 1
    with torch.no_grad():
        frames, mask = lower_frames(model, waveforms, lengths, [0, entry])
        states, live_mask = model.hidden_states(waveforms, lengths)
        assert torch.equal(mask, live_mask)
        for index in (0, entry):
            torch.testing.assert_close(frames[index][mask], states[index][mask], atol=1e-5, rtol=0)
        top = upper_forward(tuned, frames[entry], mask, entry)
        live = tuned(waveforms, lengths)
    torch.testing.assert_close(top.logits, live.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(top.embeddings, live.embeddings, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def corpus(small_synthetic_corpus):
    utterances = load_synthetic(small_synthetic_corpus)
    return utterances, speaker_folds(utterances)[0]


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
def test_cached_frames_are_the_live_frames_in_float16(kind, corpus, tmp_path):
    from emoknn.audio import center_crop, load_audio, max_samples

    utterances = corpus[0][:6]
    model = pretrained(kind)
    cache = FrameCache(tmp_path, model, max_seconds=0.8)
    assert cache.fill(utterances, [1], batch_size=4) == len(utterances)
    assert cache.fill(utterances, [1]) == 0  # all there: nothing computed again
    cached = cache.gather(cache.keys(utterances, 1))
    for utterance, frames in zip(utterances, cached, strict=True):
        clip = torch.from_numpy(center_crop(load_audio(utterance.path), max_samples(0.8)))
        with torch.no_grad():
            live, mask = lower_frames(model, clip[None], torch.tensor([len(clip)]), [1])
        live = live[1][0][mask[0]]
        assert frames.dtype == torch.float16 and frames.shape == live.shape
        # float16 storage: the live frame rounded to 11 significant bits
        torch.testing.assert_close(frames.float(), live.half().float(), atol=1e-5,
                                   rtol=2**-10)  # fmt: skip


def test_cache_keys_cover_entry_crop_views_and_weights(corpus, tmp_path):
    utterances = corpus[0][:3]
    model = pretrained("wav2vec2")
    cache = FrameCache(tmp_path, model, max_seconds=0.8)
    spec = ViewSpec(make_augmentation("noise"), seed=0, views=2)
    keys = {
        "entry0": cache.keys(utterances, 0)[0],
        "entry1": cache.keys(utterances, 1)[0],
        "view0": cache.keys(utterances, 1, spec, 0)[0],
        "view1": cache.keys(utterances, 1, spec, 1)[0],
        "seed1": cache.keys(utterances, 1, ViewSpec(spec.augmentation, 1, 2), 0)[0],
        "volume": cache.keys(utterances, 1, ViewSpec(make_augmentation("volume"), 0, 2), 0)[0],
    }
    assert len(set(keys.values())) == len(keys)
    assert FrameCache(tmp_path, model, max_seconds=0.5).folder != cache.folder  # crop
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)
    assert FrameCache(tmp_path, model, max_seconds=0.8).folder != cache.folder  # weights


def test_a_fill_over_its_budget_refuses_before_writing(corpus, tmp_path):
    cache = FrameCache(tmp_path, pretrained("whisper"), max_seconds=0.8)
    with pytest.raises(ConfigError, match="over the budget") as refused:
        cache.fill(corpus[0][:4], [1], budget_bytes=1000)
    assert len(str(refused.value).splitlines()) == 1
    assert not cache.folder.exists()


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
def test_only_the_tuned_layers_and_the_head_change(kind, corpus, tmp_path):
    fold = corpus[1]
    model = pretrained(kind)
    config = make_config("finetune-cpu", encoder="tiny", tune_layers=1, max_epochs=2,
                         max_seconds=0.8, cache_views=1, augment="noise",
                         tune_learning_rate=1e-2, head_dropout=0.0)  # fmt: skip
    cache = FrameCache(tmp_path, model, config.max_seconds)
    from emoknn.frozen import view_spec

    cache.fill(fold.train + fold.val, [2])
    cache.fill(fold.train, [2], view_spec(config), originals=False)
    tuned = build_tuned_model(model, config, LABELS, cut=3)
    before = {n: t.clone() for n, t in tuned.state_dict().items()}
    fit_tuned(tuned, fold_frames(cache, 2, fold.train, fold.val, LABELS, config), config, 2)
    names = set(tuned_encoder_names(tuned))
    assert any(".layers.2." in n for n in names) and not any(".layers.1." in n for n in names)
    after = tuned.state_dict()
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    encoder_changed = {n for n in changed if n.startswith("encoder.")}
    assert encoder_changed and encoder_changed <= names  # tuned ones move, frozen ones never
    assert "classifier.weight" in changed


def partial_config(**overrides):
    values = {"encoder": "tiny", "tune_layers": 1, "cut_layer": 2, "max_epochs": 3,
              "max_seconds": 0.8, "cache_views": 1, "augment": "noise",
              "early_stopping_patience": None, **overrides}  # fmt: skip
    return make_config("finetune-cpu", **values)


@pytest.fixture(scope="module")
def trained_partial(corpus, tmp_path_factory):
    """A partial fine-tuning of fold 0 (tiny wav2vec2, 3 epochs) and its context."""
    utterances, fold = corpus
    root = tmp_path_factory.mktemp("partial")
    config = partial_config()
    context = load_context(config, label_names(utterances), root / "cache")
    result = train_partial_fold(config, fold.train, fold.val, label_names(utterances),
                                root / "run", context)  # fmt: skip
    return root, config, context, result


def test_resume_ends_as_an_uninterrupted_run(corpus, trained_partial):
    utterances, fold = corpus
    root, config, context, whole = trained_partial
    labels = label_names(utterances)
    run = root / "resumed"
    train_partial_fold(partial_config(max_epochs=2), fold.train, fold.val, labels, run, context)
    resumed = train_partial_fold(config, fold.train, fold.val, labels, run, context, resume=True)
    assert resumed.epochs == whole.epochs == 3
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    # Another number of tuned layers, cut or learning rate is another run: refused.
    for change in ({"tune_layers": 2}, {"cut_layer": 3}, {"tune_learning_rate": 1e-3}):
        with pytest.raises(ConfigError, match="cannot resume with different settings"):
            train_partial_fold(partial_config(**change), fold.train, fold.val, labels, run,
                               context, resume=True)  # fmt: skip


def test_the_folder_holds_the_tuned_layers_and_predicts_and_exports_alike(
    corpus, trained_partial, tmp_path
):
    from safetensors import safe_open

    from emoknn.export import export_onnx
    from emoknn.onnx_runtime import onnx_session

    result = trained_partial[3]
    run = result.run_dir
    meta = read_model_meta(run)
    assert meta.head_only and meta.model_config["tuned_layers"] == 1
    with safe_open(str(run / "model.safetensors"), framework="pt") as handle:
        stored = set(handle.keys())
    encoder_stored = {n for n in stored if n.startswith("encoder.")}
    assert encoder_stored == set(tuned_encoder_names(result.model))  # the tuned layer, no more
    loaded = load_model(run)
    assert loaded.num_layers == 2  # the layer above the cut was dropped
    waveforms, lengths = padded_batch()
    with torch.no_grad():
        expected = result.model.eval()(waveforms, lengths)
        got = loaded(waveforms, lengths)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.embeddings, expected.embeddings, atol=1e-5, rtol=0)
    out = tmp_path / "onnx"
    export_onnx(run, out)
    session = onnx_session(out / "model.onnx")
    clip = waveforms[:1, : int(lengths[0])]
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: clip.numpy()}),
                       strict=True))  # fmt: skip
    with torch.no_grad():
        live = result.model(clip, lengths[:1])
    np.testing.assert_allclose(outputs["logits"], live.logits.numpy(), atol=1e-5, rtol=0)


def _training_loss(run_dir, utterances, labels) -> float:
    """CE of a run's model on the given clips' centred 1 s crops, evaluation mode."""
    from emoknn.inference import embed_utterances

    model = load_model(run_dir)
    embedded = embed_utterances(model, utterances, 1.0, device="cpu")
    ids = [labels.index(u.label) for u in utterances]
    return float(-np.log(embedded.probs[np.arange(len(ids)), ids]).mean())


@pytest.mark.pretrained
def test_the_paper_preset_fine_tunes_real_whisper_base_and_resumes(whisper_base_dir, corpus,
                                                                    tmp_path):  # fmt: skip
    """`paper` keeps its meaning (every layer trains, SGD at 1e-4, one view per clip): one epoch
    on real weights lowers the training loss, and a resumed run continues from its checkpoint."""
    from emoknn.train import read_metrics, train_fold

    utterances, fold = corpus
    labels = label_names(utterances)
    train = fold.train[:8]
    settings = {"encoder": str(whisper_base_dir), "max_seconds": 1.0, "batch_size": 4,
                "num_workers": 0, "preload_audio": True, "progress_bar": False,
                "accelerator": "cpu"}  # fmt: skip
    config = make_config("paper", max_epochs=1, **settings)
    assert config.tune_layers == 0 and not config.freeze_encoder and config.optimizer == "sgd"
    run = tmp_path / "run"
    # The loss before training: the same model as epoch 0 starts from (seeded head).
    start = tmp_path / "start"
    train_fold(make_config("paper", max_epochs=1, learning_rate=1e-12, **settings), train,
               fold.val[:4], labels, start)  # fmt: skip
    before = _training_loss(start, train, labels)
    train_fold(config, train, fold.val[:4], labels, run)
    after = _training_loss(run, train, labels)
    assert after < before
    top = "encoder.encoder.layers.5.fc1.weight"  # whisper-base's last layer trains too
    assert not torch.equal(load_model(run).state_dict()[top], load_model(start).state_dict()[top])
    resumed = train_fold(make_config("paper", max_epochs=2, **settings), train, fold.val[:4],
                         labels, run, resume=True)  # fmt: skip
    assert resumed.epochs == 2
    epochs = {row["epoch"] for row in read_metrics(run) if row.get("epoch")}
    assert epochs == {"0", "1"}  # epoch 0 from the first attempt, epoch 1 from the resumed one

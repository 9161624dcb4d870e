"""The frozen-encoder fast path: the feature cache (hits, misses, every invalidation, resume), the
head trained on it, and a frozen run used like any other run folder."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emoknn.augment import AddNoise, make_augmentation
from emoknn.cli import app
from emoknn.config import PRESETS, make_config
from emoknn.corpora import label_names, load_synthetic
from emoknn.errors import ConfigError
from emoknn.features import FeatureCache, ViewSpec, utterance_seed
from emoknn.folds import speaker_folds
from emoknn.frozen import build_frozen_model, fit_head, fold_features, train_frozen_fold
from emoknn.inference import embed_pooled, embed_utterances
from emoknn.model import EmotionModel, ModelConfig
from emoknn.train import train_fold

runner = CliRunner()


@pytest.fixture
def corpus(small_synthetic_corpus, tmp_path):
    """A private copy (tests below touch its files), 12 utterances of 0.5–1 s."""
    shutil.copytree(small_synthetic_corpus, tmp_path / "corpus")
    return load_synthetic(tmp_path / "corpus")[:12]


def tiny_model(**settings) -> EmotionModel:
    torch.manual_seed(0)
    return EmotionModel(ModelConfig(encoder="tiny", **settings)).eval()


def test_fill_computes_what_is_missing_and_nothing_twice(corpus, tmp_path):
    model = tiny_model()
    cache = FeatureCache(tmp_path / "cache", model, max_seconds=1.0)
    spec = ViewSpec(make_augmentation("noise"), seed=0, views=2)
    first = cache.fill(corpus, spec)
    assert (first.entries, first.computed) == (36, 36)  # 12 originals + 2 × 12 views
    again = FeatureCache(tmp_path / "cache", model, max_seconds=1.0).fill(corpus, spec)
    assert (again.entries, again.computed) == (36, 0)  # a new process finds them on disk
    assert cache.originals(corpus).shape == (12, 3, 64)
    views = cache.views(corpus, spec)
    assert views.shape == (2, 12, 3, 64) and views.dtype == np.float16
    assert cache.size_bytes() > 0 and (cache.folder / "encoder.json").is_file()


def test_cached_originals_are_the_live_pooled_layers_and_views_are_seeded_per_utterance(
    corpus, tmp_path
):
    from emoknn.audio import load_audio, random_crop
    from emoknn.data import pad_batch

    model = tiny_model()
    cache = FeatureCache(tmp_path / "cache", model, max_seconds=1.0)
    augmentation = make_augmentation("noise")
    spec = ViewSpec(augmentation, seed=3, views=2)
    originals, views = cache.originals(corpus), cache.views(corpus, spec)
    with torch.no_grad():
        for row in (0, 7):
            samples = load_audio(corpus[row].path)[:16000]
            live = model.pooled_layers(*pad_batch([samples]))[0].numpy()
            np.testing.assert_allclose(originals[row], live, atol=1e-5, rtol=1e-5)
            # View 1 = augmentation(random crop) with rng (seed, utterance, view index)
            rng = np.random.default_rng([3, utterance_seed(corpus[row].id), 1])
            clip = augmentation(random_crop(load_audio(corpus[row].path), 16000, rng), rng)
            live_view = model.pooled_layers(*pad_batch([clip]))[0].numpy()
            np.testing.assert_allclose(views[1, row], live_view, atol=2e-3, rtol=2e-3)  # float16


def test_every_part_of_the_key_invalidates(corpus, tmp_path):
    root = tmp_path / "cache"
    model = tiny_model()
    noise = ViewSpec(make_augmentation("noise"), seed=0, views=2)
    FeatureCache(root, model, 1.0).fill(corpus, noise)

    def computed(cache_model=model, max_seconds=1.0, spec=noise, utterances=corpus) -> int:
        return FeatureCache(root, cache_model, max_seconds).fill(utterances, spec).computed

    assert computed() == 0
    assert computed(max_seconds=0.8) == 36  # crop length
    assert computed(cache_model=tiny_model(normalize_waveforms=False)) == 36  # normalisation
    changed = tiny_model()
    with torch.no_grad():
        changed.encoder.encoder.layers[0].attention.q_proj.weight[0, 0] += 1e-3
    assert computed(cache_model=changed) == 36  # encoder weights
    assert computed(spec=ViewSpec(make_augmentation("volume"), 0, 2)) == 24  # augmentation
    assert computed(spec=ViewSpec(AddNoise(min_snr_db=10.0), 0, 2)) == 24  # its parameters
    assert computed(spec=ViewSpec(make_augmentation("noise"), 1, 2)) == 24  # seed
    assert computed(spec=ViewSpec(make_augmentation("noise"), 0, 3)) == 12  # a new view index
    # The audio file: rewritten (new size and time) → its originals and views only.
    path = corpus[5].path
    samples, rate = __import__("soundfile").read(path)
    __import__("soundfile").write(path, samples[:-100], rate)
    assert computed() == 3
    os.utime(corpus[6].path, ns=(1, 1))  # only the modification time: the same content
    assert computed() == 0
    assert computed() == 0


def test_an_interrupted_fill_resumes_where_it_stopped(corpus, tmp_path, monkeypatch):
    import emoknn.features

    monkeypatch.setattr(emoknn.features, "SHARD_ENTRIES", 8)
    model = tiny_model()
    spec = ViewSpec(make_augmentation("noise"), seed=0, views=1)

    def stop_after_two_batches(done: int, total: int) -> None:
        if done >= 16:
            raise KeyboardInterrupt

    cache = FeatureCache(tmp_path / "cut", model, 1.0)
    with pytest.raises(KeyboardInterrupt):
        cache.fill(corpus, spec, batch_size=8, progress=stop_after_two_batches)
    assert not list(cache.folder.glob(".*tmp"))  # no half-written file left
    resumed = FeatureCache(tmp_path / "cut", model, 1.0)
    assert resumed.fill(corpus, spec, batch_size=8).computed == 24 - 16
    whole = FeatureCache(tmp_path / "whole", model, 1.0)
    whole.fill(corpus, spec, batch_size=8)
    np.testing.assert_array_equal(resumed.originals(corpus), whole.originals(corpus))
    np.testing.assert_array_equal(resumed.views(corpus, spec), whole.views(corpus, spec))


def test_frozen_training_is_deterministic_and_keeps_the_encoder(small_synthetic_corpus, tmp_path):
    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    labels = label_names(utterances)
    config = make_config("frozen", encoder="tiny", max_seconds=1.0, max_epochs=8, cache_views=2)
    model = build_frozen_model(config, labels)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    cache = FeatureCache(tmp_path / "cache", model, 1.0)
    from emoknn.frozen import view_spec

    data = fold_features(cache, fold.train, fold.val, labels, view_spec(config))
    fit = fit_head(model, data, config)
    again = build_frozen_model(config, labels)
    fit_head(again, data, config)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, rtol=0, atol=0)
    for name, tensor in before.items():
        assert torch.equal(model.encoder.state_dict()[name], tensor)
    assert len(fit.history) == 8 and 0 <= fit.best_epoch < 8
    assert {"train_loss", "train_scl", "val_loss", "val_ua"} <= set(fit.history[0])
    with pytest.raises(ConfigError, match=r"emoknn\.frozen\.train_frozen_fold"):
        train_fold(config, fold.train, fold.val, labels, tmp_path / "run")


@pytest.fixture(scope="module")
def frozen_run(small_synthetic_corpus, tmp_path_factory):
    """A frozen run trained with `emoknn train --preset frozen`, kNN stage included."""
    out = tmp_path_factory.mktemp("frozen") / "run"
    result = runner.invoke(app, [
        "train", "--corpus", str(small_synthetic_corpus), "--fold", "0", "--out", str(out),
        "--preset", "frozen", "--encoder", "tiny", "--max-seconds", "1.0", "--epochs", "10",
        "--cache-views", "2",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_a_frozen_run_embeds_live_as_its_cache_does(frozen_run, small_synthetic_corpus):
    from emoknn.inference import fold_of_run
    from emoknn.model_folder import load_model

    run_config = json.loads((frozen_run / "train_config.json").read_text())["train_config"]
    assert run_config["freeze_encoder"] and run_config["feature_cache"]
    assert (frozen_run.parent / "emoknn-features").is_dir()  # beside the run by default
    model = load_model(frozen_run)
    assert not (frozen_run / "checkpoints").exists()  # nothing to resume: the head retrains
    fold = fold_of_run(frozen_run)
    cache = FeatureCache(run_config["feature_cache"], model, 1.0)
    assert cache.fill(fold.train + fold.val, None).computed == 0  # the run's features are there
    cached = embed_pooled(model, fold.val, cache.originals(fold.val))
    live = embed_utterances(model, fold.val, max_seconds=1.0)
    np.testing.assert_allclose(cached.embeddings, live.embeddings, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(cached.probs, live.probs, atol=1e-5)
    assert model.embedding_size == PRESETS["frozen"]["projection_size"]
    assert model.layer_weights is not None and model.config.standardize


def test_a_frozen_run_predicts_serves_and_exports(frozen_run, small_synthetic_corpus, tmp_path):
    from fastapi.testclient import TestClient

    from emoknn.export import OnnxEmotionRecognizer, export_onnx
    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    clips = [u.path for u in load_synthetic(small_synthetic_corpus)[:4]]
    recognizer = EmotionRecognizer.load(frozen_run, device="cpu")
    predictions = recognizer.predict(clips)
    assert all(p.knn_probabilities is not None for p in predictions)
    client = TestClient(create_app(recognizer, max_upload_mb=1.0, max_seconds=20.0,
                                   model_name="frozen-test"))  # fmt: skip
    response = client.post("/predict", files={"file": ("a.wav", clips[0].read_bytes())})
    assert response.status_code == 200
    assert response.json()["label"] == predictions[0].label
    export_onnx(frozen_run, tmp_path / "onnx")
    exported = OnnxEmotionRecognizer.load(tmp_path / "onnx").predict(clips)
    for expected, got in zip(predictions, exported, strict=True):
        assert got.probabilities == pytest.approx(expected.probabilities, abs=1e-4)


def test_crossval_through_the_fast_path(small_synthetic_corpus, tmp_path):
    """Two folds, CE and CE+SCL, from one cache fill; a second run computes nothing."""
    out = tmp_path / "cv"
    args = ["crossval", "--corpus", str(small_synthetic_corpus), "--out", str(out),
            "--folds", "0,1", "--preset", "frozen", "--encoder", "tiny", "--max-seconds", "0.5",
            "--epochs", "5", "--cache-views", "1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # Originals of all 72 utterances; one view of the 48 that either fold trains on.
    assert "Feature cache: 120 of 120 entries computed" in result.output
    records = json.loads((out / "results.json").read_text())["records"]
    records = [r for r in records if r["training"] != "baseline"]
    assert len(records) == 2 * 2 * 3 + 2  # folds × trainings × inferences, and the probe per fold
    probe_rows = [r for r in records if r["training"] == "probe"]
    assert [r["inference"] for r in probe_rows] == ["model", "model"]
    assert all(0 <= r["layer"] <= 2 and r["c"] > 0 for r in probe_rows)  # tiny: L + 1 = 3
    assert "Encoder probe (LR)" in result.output and "| Encoder probe (LR) |" in (
        out / "report.md").read_text()  # fmt: skip
    assert (out / "report.md").is_file()
    assert (out / "scl" / "fold00-Syn01F" / "model.safetensors").is_file()
    shutil.rmtree(out)  # the cache beside it stays: the same crossval again computes nothing
    from emoknn.experiments import crossval, result_records

    utterances = load_synthetic(small_synthetic_corpus)
    folds = speaker_folds(utterances)[:2]
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=5, cache_views=1)
    messages: list[str] = []
    again = crossval(utterances, folds, config, out, log=messages.append, with_baseline=False)
    assert "Feature cache: 0 of 120 entries computed" in messages[-1]
    key = lambda r: (r["training"], r["fold"], r["inference"])  # noqa: E731
    assert sorted(result_records(again), key=key) == sorted(records, key=key)  # deterministic


def test_train_frozen_fold_refuses_a_fine_tuning_config(small_synthetic_corpus, tmp_path):
    fold = speaker_folds(load_synthetic(small_synthetic_corpus))[0]
    with pytest.raises(ConfigError, match="freeze_encoder=True"):
        train_frozen_fold(make_config("tiny"), fold.train, fold.val, ["angry"], tmp_path)


def test_a_frozen_resume_checks_the_fold_but_not_where_the_cache_lives(
    small_synthetic_corpus, tmp_path
):
    utterances = load_synthetic(small_synthetic_corpus)
    folds = speaker_folds(utterances)
    labels = label_names(utterances)
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=2, cache_views=1)
    run = tmp_path / "run"
    train_frozen_fold(config, folds[0].train, folds[0].val, labels, run,
                      extra_info={"fold": folds[0].name})  # fmt: skip
    # The run recorded its resolved cache folder; a resume that does not name it is the same run.
    train_frozen_fold(config, folds[0].train, folds[0].val, labels, run, resume=True,
                      extra_info={"fold": folds[0].name})  # fmt: skip
    with pytest.raises(ConfigError, match="cannot resume"):
        train_frozen_fold(config, folds[1].train, folds[1].val, labels, run, resume=True,
                          extra_info={"fold": folds[1].name})  # fmt: skip
    # Every head setting of #23 blocks a resume with another value.
    other_init = "uniform" if config.layer_init == "best" else "best"
    for setting, value in [("standardize", not config.standardize), ("pooling", "mean_std"),
                           ("input_dropout", config.input_dropout + 0.1),
                           ("layer_lr_scale", config.layer_lr_scale + 1.0),
                           ("layer_init", other_init), ("speaker_norm", True)]:  # fmt: skip
        other = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=2,
                            cache_views=1, **{setting: value})  # fmt: skip
        with pytest.raises(ConfigError, match=f"cannot resume with different settings.*{setting}"):
            train_frozen_fold(other, folds[0].train, folds[0].val, labels, run, resume=True,
                              extra_info={"fold": folds[0].name})  # fmt: skip


def test_statistics_pooling_cache_equals_live_and_has_its_own_folder(corpus, tmp_path):
    from emoknn.audio import load_audio
    from emoknn.data import pad_batch

    model = tiny_model(pooling="mean_std")
    cache = FeatureCache(tmp_path / "cache", model, max_seconds=1.0)
    assert cache.folder != FeatureCache(tmp_path / "cache", tiny_model(), 1.0).folder
    originals = cache.originals(corpus)
    assert originals.shape == (12, 3, 128)  # mean and std of 64 values per layer
    with torch.no_grad():
        samples = load_audio(corpus[3].path)[:16000]
        live = model.pooled_layers(*pad_batch([samples]))[0].numpy()
    np.testing.assert_allclose(originals[3], live, atol=1e-5, rtol=1e-5)
    # The mean half is exactly what mean pooling computes ...
    mean_only = FeatureCache(tmp_path / "other", tiny_model(), 1.0).originals(corpus)
    np.testing.assert_allclose(originals[..., :64], mean_only, atol=1e-6)
    assert (originals[..., 64:] > 0).all()
    # ... so a mean cache beside a statistics one reads its entries and computes nothing.
    beside = FeatureCache(tmp_path / "cache", tiny_model(), 1.0)
    assert beside.fill(corpus, None).computed == 0
    np.testing.assert_allclose(beside.originals(corpus), mean_only, atol=1e-6)


def test_standardisation_statistics_come_from_the_training_speakers_only(
    small_synthetic_corpus, tmp_path
):
    from emoknn.model_folder import load_model

    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    labels = label_names(utterances)
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=2, cache_views=1,
                         standardize=True, feature_cache=str(tmp_path / "cache"))  # fmt: skip
    run = tmp_path / "run"
    result = train_frozen_fold(config, fold.train, fold.val, labels, run)
    cache = FeatureCache(tmp_path / "cache", result.model, 0.5)
    train = cache.originals(fold.train).astype(np.float64)
    everyone = cache.originals(fold.train + fold.val + fold.test).astype(np.float64)
    saved = load_model(run)  # the statistics travel with the model
    for model in (result.model, saved):
        mean = model.input_mean.numpy()
        np.testing.assert_allclose(mean, train.mean(0), atol=1e-5)
        np.testing.assert_allclose(model.input_scale.numpy(), train.std(0), rtol=1e-4, atol=1e-6)
        assert not np.allclose(mean, everyone.mean(0), atol=1e-5)  # would catch a leak
    # The saved model standardises live audio as the cached path does.
    live = embed_utterances(saved, fold.test[:3], max_seconds=0.5)
    cached = embed_pooled(saved, fold.test[:3], cache.originals(fold.test[:3]))
    np.testing.assert_allclose(live.embeddings, cached.embeddings, atol=1e-4, rtol=1e-4)


def test_standardize_and_speaker_norm_need_a_frozen_encoder():
    for setting in ("standardize", "speaker_norm"):
        with pytest.raises(ConfigError, match=f"{setting} needs a frozen encoder"):
            make_config("tiny", **{setting: True})


def test_speaker_norm_is_refused_for_a_speaker_with_one_clip(small_synthetic_corpus, tmp_path):
    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    lonely = fold.val[0]
    train, val = fold.train, [lonely]  # the validation speaker has a single clip
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=2, cache_views=1,
                         speaker_norm=True)  # fmt: skip
    with pytest.raises(ConfigError, match=f"speaker {lonely.speaker!r} has 1"):
        train_frozen_fold(config, train, val, label_names(utterances), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_speaker_norm_is_recorded_standardises_each_speaker_and_blocks_a_resume_without_it(
    small_synthetic_corpus, tmp_path
):
    from emoknn.frozen import speaker_statistics

    out = tmp_path / "cv"
    args = ["crossval", "--corpus", str(small_synthetic_corpus), "--out", str(out),
            "--folds", "0", "--preset", "frozen", "--encoder", "tiny", "--max-seconds", "0.5",
            "--epochs", "2", "--cache-views", "1", "--speaker-norm"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Speaker normalisation (transductive)" in result.output
    assert json.loads((out / "results.json").read_text())["speaker_norm"] is True
    experiment = json.loads((out / "experiment.json").read_text())
    assert experiment["train_config"]["speaker_norm"] is True
    assert "speaker normalisation on" in (out / "report.md").read_text()
    # Each fold model records it, so that it predicts only with a speaker's statistics.
    for model_json in out.glob("*/fold*/model.json"):
        assert json.loads(model_json.read_text())["model_config"]["speaker_norm"] is True
    assert list(out.glob("*/fold*/model.json"))
    # Each speaker's features are standardised with its own clips: mean 0, std 1 per speaker.
    utterances = load_synthetic(small_synthetic_corpus)
    model = build_frozen_model(make_config("frozen", encoder="tiny", max_seconds=0.5), ["a"])
    cache = FeatureCache(out.parent / "emoknn-features", model, 0.5)
    from emoknn.frozen import pooled_originals

    stats = speaker_statistics(cache, utterances)
    one = [u for u in utterances if u.speaker == utterances[0].speaker]
    normalized = pooled_originals(cache, one, stats).astype(np.float64)
    np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-4)
    # Continuing the same output folder without the option is refused (another experiment).
    again = runner.invoke(app, args[:-1])
    assert again.exit_code != 0
    assert "speaker_norm True → False" in again.output + str(again.exception)

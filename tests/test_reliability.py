"""Issue #22: nothing inflated, nothing overwritten. One test (at least) per reproduced defect."""

from __future__ import annotations

import numpy as np
import pytest

from emoknn.errors import EmoknnError
from emoknn.stats import describe, paired_test

# ── statistics ───────────────────────────────────────────────────────────────────────────────────


def test_paired_test_refuses_non_finite_scores():
    with pytest.raises(EmoknnError, match="score 1 of 6 is nan"):
        paired_test(np.full(6, np.nan), np.full(6, 0.5))
    with pytest.raises(EmoknnError, match="second variant's score 3 of 6 is inf"):
        paired_test(np.full(6, 0.5), np.array([0.5, 0.5, np.inf, 0.5, 0.5, 0.5]))


def test_float_noise_is_no_difference():
    a = np.full(6, 0.1) + 0.2  # 0.30000000000000004
    b = np.full(6, 0.3)
    result = paired_test(a, b)
    assert result.mean == 0.0 and result.p_value == 1.0 and not result.significant
    sentence = describe("A vs B", result, result)
    assert "no UA (= WA) difference detectable (+0.0" in sentence


# ── the feature cache ────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def corpus12(small_synthetic_corpus, tmp_path):
    """A private copy of 12 utterances (tests below rewrite their files)."""
    import shutil

    from emoknn.corpora import load_synthetic

    shutil.copytree(small_synthetic_corpus, tmp_path / "corpus")
    return load_synthetic(tmp_path / "corpus")[:12]


def _tiny_model():
    import torch

    from emoknn.model import EmotionModel, ModelConfig

    torch.manual_seed(0)
    return EmotionModel(ModelConfig(encoder="tiny")).eval()


def _reencode_keeping_size_and_time(path, in_place: bool) -> None:
    """New samples, same length (so the same WAV size), the old modification time restored, as
    `cp -p` / `rsync -t` / `tar` leave a re-encoded file."""
    import os

    import soundfile

    before = os.stat(path)
    samples, rate = soundfile.read(path, dtype="float32")
    changed = np.ascontiguousarray(samples[::-1])  # other audio, same number of samples
    if in_place:
        soundfile.write(path, changed, rate, subtype="PCM_16")
    else:
        replacement = path.with_name("replacement.wav")
        soundfile.write(replacement, changed, rate, subtype="PCM_16")
        os.replace(replacement, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("in_place", [False, True])
def test_a_reencoded_file_with_its_size_and_time_restored_is_not_served_stale(
    corpus12, tmp_path, in_place
):
    from emoknn.features import FeatureCache

    model = _tiny_model()
    cache = FeatureCache(tmp_path / "cache", model, 1.0)
    old = cache.originals(corpus12)
    _reencode_keeping_size_and_time(corpus12[4].path, in_place)
    fresh = FeatureCache(tmp_path / "cache", model, 1.0)  # a new process: no memory of the file
    assert fresh.fill(corpus12, None).computed == 1
    new = fresh.originals(corpus12)
    assert not np.allclose(new[4], old[4])
    np.testing.assert_array_equal(np.delete(new, 4, 0), np.delete(old, 4, 0))


def test_content_hashes_are_computed_once_per_file_version(corpus12, tmp_path, monkeypatch):
    import emoknn.features
    from emoknn.features import FeatureCache

    model = _tiny_model()
    FeatureCache(tmp_path / "cache", model, 1.0).fill(corpus12, None)
    hashed = []
    real = emoknn.features.file_sha256
    monkeypatch.setattr(emoknn.features, "file_sha256", lambda p: hashed.append(p) or real(p))
    again = FeatureCache(tmp_path / "cache", model, 1.0)  # reads content-hashes.json
    assert again.fill(corpus12, None).computed == 0 and hashed == []


def test_a_truncated_cache_shard_is_skipped_and_recomputed(corpus12, tmp_path):
    from emoknn.features import FeatureCache

    model = _tiny_model()
    cache = FeatureCache(tmp_path / "cache", model, 1.0)
    expected = cache.originals(corpus12)
    (shard,) = cache.folder.glob("shard-*.npz")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    again = FeatureCache(tmp_path / "cache", model, 1.0)
    assert again.fill(corpus12, None).computed == 12
    np.testing.assert_allclose(again.originals(corpus12), expected, atol=1e-6)


def _poison_shards(folder) -> None:
    for shard in folder.glob("shard-*.npz"):
        with np.load(shard) as stored:
            keys, features = stored["keys"], stored["features"].copy()
        features[0, 0, 0] = np.nan
        with shard.open("wb") as handle:
            np.savez(handle, keys=keys, features=features)


def test_nan_features_in_the_cache_blame_the_cache_and_write_no_run(small_synthetic_corpus,
                                                                    tmp_path):  # fmt: skip
    from emoknn.corpora import label_names, load_synthetic
    from emoknn.features import FeatureCache
    from emoknn.folds import speaker_folds
    from emoknn.frozen import build_frozen_model, train_frozen_fold
    from emoknn.train import make_config

    utterances = load_synthetic(small_synthetic_corpus)
    fold, labels = speaker_folds(utterances)[0], label_names(utterances)
    config = make_config("frozen", encoder="tiny", max_seconds=1.0, max_epochs=2, cache_views=1,
                         feature_cache=str(tmp_path / "cache"))  # fmt: skip
    model = build_frozen_model(config, labels)
    cache = FeatureCache(tmp_path / "cache", model, 1.0)
    cache.fill(fold.train + fold.val, None)
    _poison_shards(cache.folder)
    with pytest.raises(EmoknnError, match=r"shard-.*feature cache holds NaN.*delete it"):
        train_frozen_fold(config, fold.train, fold.val, labels, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# ── knn.json and datastore.npz checked against the model at load ─────────────────────────────────


@pytest.fixture
def run(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def _set_model_labels(folder, value) -> None:
    import json

    path = folder / "knn.json"
    data = json.loads(path.read_text())
    for name in ("interpolated", "knn_only"):
        data[name]["model_labels"] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("value", [["zzz"], ["angry"]])
def test_knn_json_model_labels_must_be_what_the_model_predicts(run, tmp_path, value):
    from emoknn.export import export_onnx
    from emoknn.predict import EmotionRecognizer

    _set_model_labels(run, value)
    with pytest.raises(EmoknnError, match=r"knn\.json: interpolated\.model_labels"):
        EmotionRecognizer.load(run, device="cpu")
    with pytest.raises(EmoknnError, match=r"knn\.json"):
        export_onnx(run, tmp_path / "export")
    assert not (tmp_path / "export" / "knn.json").exists()


def test_a_datastore_of_the_wrong_width_is_refused_at_load_naming_it(run):
    from emoknn.model_folder import load_datastore, save_datastore
    from emoknn.predict import EmotionRecognizer

    store = load_datastore(run)
    store.keys = np.ascontiguousarray(store.keys[:, :-1])
    save_datastore(run, store)
    with pytest.raises(EmoknnError, match=r"datastore\.npz: holds \d+-wide embeddings"):
        EmotionRecognizer.load(run, device="cpu")


# ── adapt: nothing inflated ─────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
    from emoknn.adapt import load_source
    from tiny_hf import save_tiny_classifier

    return load_source(save_tiny_classifier("wav2vec2", tmp_path_factory.mktemp("hf") / "c"))


HF_MAP = {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}


def _manifest(path, rows) -> str:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(rows)
    return path


def test_adapt_refuses_the_same_audio_under_two_names(hf_source, small_synthetic_corpus,
                                                      tmp_path):  # fmt: skip
    import shutil

    from emoknn.adapt import adapt_model
    from emoknn.corpora import load_synthetic

    rows = []
    for u in load_synthetic(small_synthetic_corpus):
        copy = tmp_path / "clips" / f"{u.path.stem}_copy.wav"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(u.path, copy)
        rows += [(u.path, u.label, u.speaker), (copy, u.label, u.speaker)]
    manifest = _manifest(tmp_path / "m.csv", rows)
    with pytest.raises(EmoknnError, match=r"_copy\.wav is the same audio as .*give each clip once"):
        adapt_model(hf_source, manifest, tmp_path / "out", HF_MAP, device="cpu")
    assert not (tmp_path / "out").exists()


def test_adapt_refuses_a_reencoded_copy_of_a_clip(hf_source, small_synthetic_corpus, tmp_path):
    import soundfile

    from emoknn.adapt import adapt_model
    from emoknn.corpora import load_synthetic

    utterances = load_synthetic(small_synthetic_corpus)
    rows = [(u.path, u.label, u.speaker) for u in utterances]
    samples, rate = soundfile.read(utterances[5].path, dtype="float32")
    soundfile.write(tmp_path / "again.wav", samples, rate, subtype="FLOAT")  # other bytes
    rows.append((tmp_path / "again.wav", utterances[5].label, utterances[5].speaker))
    manifest = _manifest(tmp_path / "m.csv", rows)
    with pytest.raises(EmoknnError, match=r"again\.wav holds the same audio as .*identical"):
        adapt_model(hf_source, manifest, tmp_path / "out", HF_MAP, device="cpu")
    assert not (tmp_path / "out").exists()


def test_keep_datastore_never_scores_a_clip_against_its_own_kept_entry(
    trained_run, small_synthetic_corpus, tmp_path
):
    """The source run's datastore holds its train + validation clips; the user adapts on copies
    of the whole corpus under other names (so only the audio can tell)."""
    import shutil

    from emoknn.adapt import adapt_model, load_source
    from emoknn.corpora import load_synthetic
    from emoknn.model_folder import load_datastore

    source = load_source(trained_run)
    rows = []
    for number, u in enumerate(load_synthetic(small_synthetic_corpus)):
        renamed = tmp_path / "clips" / f"clip{number:03d}.wav"
        renamed.parent.mkdir(exist_ok=True)
        shutil.copy(u.path, renamed)
        rows.append((renamed, u.label, u.speaker))
    manifest = _manifest(tmp_path / "m.csv", rows)
    result = adapt_model(source, manifest, tmp_path / "out", keep_datastore=True, device="cpu")
    assert result.report["original_entries_dropped"] == len(source.store)
    store = load_datastore(tmp_path / "out")
    assert not [i for i in store.ids if i.startswith("original/")] and len(store) == 72

    # Clips of three speakers only: the source entries of the other speakers are kept.
    some = [row for row in rows if row[2] in ("Syn01F", "Syn02M", "Syn03F")]
    manifest = _manifest(tmp_path / "some.csv", some)
    result = adapt_model(source, manifest, tmp_path / "out2", keep_datastore=True, device="cpu")
    kept = result.report["original_entries"]
    dropped = result.report["original_entries_dropped"]
    assert kept > 0 and dropped > 0 and kept + dropped == len(source.store)


def test_adapt_when_the_model_knows_none_of_the_labels(hf_source, small_synthetic_corpus,
                                                        tmp_path):  # fmt: skip
    from emoknn.adapt import adapt_model, parse_label_map
    from emoknn.corpora import load_synthetic
    from emoknn.predict import EmotionRecognizer

    utterances = load_synthetic(small_synthetic_corpus)
    manifest = _manifest(tmp_path / "m.csv", [(u.path, f"new_{u.label}", u.speaker)
                                              for u in utterances])  # fmt: skip
    result = adapt_model(hf_source, manifest, tmp_path / "out",
                         parse_label_map("ang=,hap=,neu=,sad="), device="cpu")  # fmt: skip
    assert result.model_labels == [] and result.report["model_knows_no_label"] is True
    assert set(result.summary) == {"knn"} and result.comparisons == []
    assert all("model" not in record for record in result.per_fold)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| model alone |" not in card and "knows none of these labels" in card
    with pytest.raises(EmoknnError, match=r"knows none of its labels.*drop --no-knn"):
        EmotionRecognizer.load(tmp_path / "out", device="cpu", use_knn=False)
    EmotionRecognizer.load(tmp_path / "out", device="cpu").predict(utterances[0].path)


# ── untrusted files: one line, nothing run ───────────────────────────────────────────────────────


class _RunsCode:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (self.marker,))


def test_a_pickled_pytorch_model_bin_is_one_line_and_runs_nothing(tmp_path):
    import torch
    from safetensors.torch import load_file

    from emoknn.hf_import import import_hf_classifier
    from tiny_hf import save_tiny_classifier

    folder = save_tiny_classifier("wav2vec2", tmp_path / "hf")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({**state, "payload": _RunsCode(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(EmoknnError) as caught:
        import_hf_classifier(folder)
    message = str(caught.value)
    assert "\n" not in message and "never unpickles" in message
    assert "weights_only=False" not in message
    assert not marker.exists()


def test_model_json_nested_deeply_is_one_line(trained_run, tmp_path):
    import shutil

    from emoknn.model_folder import read_model_meta

    shutil.copytree(trained_run, tmp_path / "run")
    (tmp_path / "run" / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EmoknnError, match=r"model\.json: JSON nested too deeply"):
        read_model_meta(tmp_path / "run")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    from emoknn.hf_import import hf_classifier_architecture

    assert hf_classifier_architecture(tmp_path / "hf") is None

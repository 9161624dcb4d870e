"""Issue #22: nothing inflated, nothing overwritten. One test (at least) per reproduced defect."""

from __future__ import annotations

from pathlib import Path

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
    from emoknn.config import make_config
    from emoknn.corpora import label_names, load_synthetic
    from emoknn.features import FeatureCache
    from emoknn.folds import speaker_folds
    from emoknn.frozen import build_frozen_model, train_frozen_fold

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
    # The kNN remedy: the one that keeps the source datastore beside the user's clips.
    result = adapt_model(source, manifest, tmp_path / "out", keep_datastore=True, device="cpu",
                         remedy="knn")  # fmt: skip
    assert result.report["original_entries_dropped"] == len(source.store)
    store = load_datastore(tmp_path / "out")
    assert not [i for i in store.ids if i.startswith("original/")] and len(store) == 72

    # Clips of three speakers only: the source entries of the other speakers are kept.
    some = [row for row in rows if row[2] in ("Syn01F", "Syn02M", "Syn03F")]
    manifest = _manifest(tmp_path / "some.csv", some)
    result = adapt_model(source, manifest, tmp_path / "out2", keep_datastore=True, device="cpu",
                         remedy="knn")  # fmt: skip
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
                         parse_label_map("ang=,hap=,neu=,sad="), device="cpu",
                         remedy="knn")  # fmt: skip
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


# ── push ─────────────────────────────────────────────────────────────────────────────────────────


def test_push_without_network_is_one_line_and_writes_no_card(trained_run, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from emoknn.cli import app
    from emoknn.hub import push_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: ConnectError
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    folder = tmp_path / "run"
    shutil.copytree(trained_run, folder)
    with pytest.raises(EmoknnError, match=r"push to me/x failed \(.*\); nothing was written"):
        push_model(folder, "me/x", token="hf_fake")
    assert not (folder / "README.md").exists()
    result = CliRunner().invoke(app, ["push", str(folder), "me/x"])
    assert result.exit_code != 0 and isinstance(result.exception, (EmoknnError, SystemExit))
    assert "Traceback" not in result.output and not (folder / "README.md").exists()


def test_push_puts_the_licence_into_an_existing_card_and_no_local_paths(trained_run, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    import json
    import shutil

    import huggingface_hub

    from emoknn.hub import push_model
    from emoknn.model_folder import load_datastore

    sent = {}

    class RecordingApi:
        def __init__(self, token=None) -> None:
            pass

        def create_repo(self, repo_id, **_):
            return f"https://huggingface.co/{repo_id}"

        def create_commit(self, repo_id, operations, **_):
            for op in operations:
                content = op.path_or_fileobj
                sent[op.path_in_repo] = (content if isinstance(content, bytes)
                                         else Path(content).read_bytes())  # fmt: skip

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    folder = tmp_path / "run"
    shutil.copytree(trained_run, folder)
    local = json.loads((folder / "train_config.json").read_text())["corpus"]
    assert local.startswith("/")
    (folder / "README.md").write_text("---\nlicense: other\nlibrary_name: emoknn\n---\n# mine\n")
    push_model(folder, "me/x", licence="cc-by-4.0")
    card = sent["README.md"].decode()
    assert "license: cc-by-4.0" in card and "license: other" not in card
    assert "license: cc-by-4.0" in (folder / "README.md").read_text()  # after the upload
    published = json.loads(sent["train_config.json"])
    assert published["corpus"] == local.rsplit("/", 1)[-1]
    assert "/tmp/" not in sent["train_config.json"].decode()
    import io

    with np.load(io.BytesIO(sent["datastore.npz"])) as published:
        sources = [s for s in published["sources"].tolist() if s]
        assert sources and not any("/" in s for s in sources)
        np.testing.assert_array_equal(published["keys"], load_datastore(folder).keys)
    assert json.loads((folder / "train_config.json").read_text())["corpus"] == local  # kept


def test_a_generated_run_card_names_no_local_path(trained_run):
    from emoknn.card import run_card

    assert "/tmp/" not in run_card(trained_run)


# ── import: nothing overwritten ─────────────────────────────────────────────────────────────────


@pytest.fixture
def hf_folder(tmp_path):
    from tiny_hf import save_tiny_classifier

    return save_tiny_classifier("wav2vec2", tmp_path / "hf")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_import_refuses_its_own_source_folder_or_one_holding_it(hf_folder, tmp_path):
    from typer.testing import CliRunner

    from emoknn.cli import app

    before = _snapshot(tmp_path)
    for out in (hf_folder, tmp_path, hf_folder / ".", hf_folder / "sub"):  # sub: issue #32
        result = CliRunner().invoke(app, ["import", str(hf_folder), str(out)])
        assert isinstance(result.exception, EmoknnError), result.output
        assert "is, holds or lies inside the model being imported" in str(result.exception)
    assert _snapshot(tmp_path) == before


def test_import_refuses_a_non_empty_folder_and_leaves_it_as_it_was(hf_folder, tmp_path):
    from emoknn.hf_import import import_to_folder

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my files")
    with pytest.raises(EmoknnError, match="already exists and is not empty"):
        import_to_folder(hf_folder, mine)
    assert _snapshot(mine) == {"notes.txt": b"my files"}
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(EmoknnError, match=r"a_file/out: cannot create the model folder"):
        import_to_folder(hf_folder, tmp_path / "a_file" / "out")


def test_an_imported_model_is_readable_like_the_other_files(hf_folder, tmp_path):
    import os

    from emoknn.hf_import import import_to_folder

    out = import_to_folder(hf_folder, tmp_path / "out")
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "model.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("bad", ["", " sad", "a,b", "x=y"])
def test_import_refuses_label_names_emoknn_cannot_use(hf_folder, tmp_path, bad):
    import json

    from emoknn.hf_import import import_to_folder

    config = json.loads((hf_folder / "config.json").read_text())
    config["id2label"]["1"] = bad
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (hf_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmoknnError, match=r"id2label\[1\] = .* cannot be an emoknn label"):
        import_to_folder(hf_folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ── unusable destinations: refused before the work, left as they were ────────────────────────────


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """A folder that refuses new files, as a read-only mount or a folder of another user does
    (the tests run as any user, root included, so the refusal is simulated where emoknn asks)."""
    import errno
    import os
    import tempfile

    import emoknn.files

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "precious.txt").write_text("mine")
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # tempfile names it dir
        if dir is not None and Path(dir).resolve().is_relative_to(locked.resolve()):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(emoknn.files.tempfile, "mkstemp", mkstemp)
    return locked


def _cli(args):
    from typer.testing import CliRunner

    from emoknn.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _refused(result, *words) -> str:
    assert result.exit_code != 0, result.output
    error = result.exception
    assert isinstance(error, EmoknnError), (type(error), result.output)
    message = str(error)
    assert "\n" not in message and all(word in message for word in words), message
    return message


def test_every_command_refuses_an_unusable_destination_before_working(
    read_only, trained_run, small_synthetic_corpus, hf_folder, tmp_path, monkeypatch
):
    import shutil

    import emoknn.adapt
    import emoknn.export
    import emoknn.hf_import
    import emoknn.inference

    def must_not_run(*args, **kwargs):
        raise AssertionError("the work started before the destination was checked")

    monkeypatch.setattr(emoknn.adapt, "embed_utterances", must_not_run)
    monkeypatch.setattr(emoknn.hf_import, "import_hf_classifier", must_not_run)
    monkeypatch.setattr(emoknn.export, "_export_into", must_not_run)
    monkeypatch.setattr(emoknn.inference, "load_model", must_not_run)
    before = _snapshot(read_only)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    corpus = small_synthetic_corpus
    for out in (read_only / "new", a_file):
        _refused(_cli(["train", "--corpus", corpus, "--fold", "0", "--out", out, "--preset",
                       "tiny", "--epochs", "1"]), str(out))  # fmt: skip
        _refused(_cli(["train", "--corpus", corpus, "--fold", "0", "--out", out, "--preset",
                       "frozen", "--encoder", "tiny"]), str(out))  # fmt: skip
        _refused(_cli(["adapt", "--model", hf_folder, "--data", corpus / "manifest.csv",
                       "--out", out]), str(out))  # fmt: skip
        _refused(_cli(["import", hf_folder, out]), str(out))
        _refused(_cli(["corpus", "synth", out]), str(out))
        _refused(_cli(["export", "--model", trained_run, "--out", out]), str(out))
    assert _snapshot(read_only) == before and a_file.read_text() == "x"
    run = read_only / "run"
    shutil.copytree(trained_run, run)
    before = _snapshot(read_only)
    _refused(_cli(["datastore", "build", run]), "run folder")
    assert _snapshot(read_only) == before


def test_a_frozen_run_checks_its_feature_cache_folder_before_computing(
    read_only, small_synthetic_corpus, tmp_path, monkeypatch
):
    import emoknn.features

    def must_not_run(*args, **kwargs):
        raise AssertionError("features were computed for a cache that cannot keep them")

    monkeypatch.setattr(emoknn.features, "_clip_batches", must_not_run)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for cache in (read_only / "cache", a_file):
        out = tmp_path / f"run-{cache.name}"
        _refused(_cli(["train", "--corpus", small_synthetic_corpus, "--fold", "0", "--out", out,
                       "--preset", "frozen", "--encoder", "tiny", "--feature-cache", cache]),
                 "feature cache folder")  # fmt: skip
        assert not out.exists() or not any(out.iterdir())


# ── serve ────────────────────────────────────────────────────────────────────────────────────────


def test_serve_answers_503_beyond_its_queue(trained_run, small_synthetic_corpus):
    import threading

    from fastapi.testclient import TestClient

    from emoknn.corpora import load_synthetic
    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    recognizer = EmotionRecognizer.load(trained_run, device="cpu")
    started, release = threading.Event(), threading.Event()
    real = recognizer.predict

    def slow_predict(*args, **kwargs):
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    recognizer.predict = slow_predict
    app = create_app(recognizer, max_queue=0)
    clip = load_synthetic(small_synthetic_corpus)[0].path.read_bytes()
    answers = []

    def post() -> None:
        with TestClient(app) as client:
            answers.append(client.post("/predict", files={"file": ("a.wav", clip)}).status_code)

    first = threading.Thread(target=post)
    first.start()
    assert started.wait(30)
    with TestClient(app) as client:
        busy = client.post("/predict", files={"file": ("b.wav", clip)})
    release.set()
    first.join(30)
    assert busy.status_code == 503 and "busy" in busy.json()["detail"]
    assert busy.headers["retry-after"] == "1"
    assert answers == [200]


def test_serve_announces_itself_only_once_the_model_has_loaded(tmp_path, monkeypatch):
    import emoknn.serve

    monkeypatch.setattr(emoknn.serve, "check_listen_address", lambda *a: None)
    result = _cli(["serve", "--model", tmp_path / "missing", "--port", "8765"])
    assert result.exit_code != 0 and "serving" not in result.output


# ── truncated audio ──────────────────────────────────────────────────────────────────────────────


def test_a_truncated_wav_is_refused_not_decoded_shorter(small_synthetic_corpus, tmp_path):
    import soundfile

    from emoknn.audio import load_audio, stream_audio
    from emoknn.corpora import load_synthetic

    source = load_synthetic(small_synthetic_corpus)[0].path
    whole = tmp_path / "whole.wav"
    whole.write_bytes(source.read_bytes())
    cut = tmp_path / "cut.wav"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
    assert len(load_audio(whole)) > 0
    for read in (load_audio, lambda p: list(stream_audio(p))):
        with pytest.raises(EmoknnError, match=r"cut\.wav: truncated WAV: its header declares"):
            read(cut)
    # A WAV streamed with an unknown length (data size 0xFFFFFFFF) is not called truncated.
    data = bytearray(whole.read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    try:
        samples = load_audio(streamed)
    except EmoknnError as error:
        assert "truncated" not in str(error)
    else:
        assert len(samples) == len(load_audio(whole))
    assert soundfile.info(str(whole)).frames > 0


# ── a model folder without a datastore ───────────────────────────────────────────────────────────


def test_an_imported_classifier_and_its_export_predict_alone_and_say_so(hf_folder, trained_run,
                                                                         small_synthetic_corpus,
                                                                         tmp_path):  # fmt: skip
    import shutil

    from emoknn.corpora import load_synthetic
    from emoknn.export import export_onnx
    from emoknn.hf_import import import_to_folder
    from emoknn.predict import EmotionRecognizer, load_recognizer

    clip = load_synthetic(small_synthetic_corpus)[0].path
    imported = import_to_folder(hf_folder, tmp_path / "imported")
    recognizer = EmotionRecognizer.load(imported, device="cpu")
    assert recognizer.store is None and "emoknn adapt" in recognizer.note
    direct = EmotionRecognizer.load(hf_folder, device="cpu").predict(clip)[0]
    assert recognizer.predict(clip)[0].probabilities == pytest.approx(direct.probabilities,
                                                                      abs=1e-5)  # fmt: skip
    result = _cli(["predict", clip, "--model", imported])
    assert result.exit_code == 0 and "model alone" in " ".join(result.output.split())
    export_onnx(imported, tmp_path / "onnx")
    exported = load_recognizer(tmp_path / "onnx")
    assert exported.store is None and exported.note
    assert exported.predict(clip)[0].label == direct.label
    # A training run without its datastore is unfinished: that still says how to finish it.
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "datastore.npz").unlink()
    with pytest.raises(EmoknnError, match="datastore build"):
        EmotionRecognizer.load(run, device="cpu")


# ── adapt from the command line: what it prints and records ─────────────────────────────────────


def test_adapt_cli_records_folds_and_counts_clips_added_later(hf_folder, small_synthetic_corpus,
                                                              tmp_path):  # fmt: skip
    import json
    import shlex

    import soundfile

    from emoknn.corpora import load_synthetic
    from emoknn.model_folder import load_datastore

    utterances = load_synthetic(small_synthetic_corpus)
    manifest = _manifest(tmp_path / "m.csv", [(u.path, u.label, "") for u in utterances])
    out = tmp_path / "my model"
    _refused(_cli(["adapt", "--model", hf_folder, "--data", manifest, "--out", out, "--label-map",
                   "ang=angry,hap=happy,neu=neutral", "--device", "tpu"]), "--device")
    assert not out.exists()
    result = _cli(["adapt", "--model", hf_folder, "--data", manifest, "--out", out,
                   "--label-map", "ang=angry,hap=happy,neu=neutral"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"--model {shlex.quote(str(out))}" in " ".join(result.output.split())
    report = json.loads((out / "adapt.json").read_text())
    assert report["protocol"]["grouping"] == "stratified"
    held_out = [clip for record in report["per_fold"] for clip in record["ids"]]
    assert sorted(held_out) == sorted(load_datastore(out).ids)  # every clip in one fold
    assert len(set(held_out)) == len(utterances) and not any(i.startswith("/") for i in held_out)
    assert all(set(record["knn_only"]) == {"k", "temperature"} for record in report["per_fold"])

    new = []
    for number, u in enumerate(utterances[:2]):
        samples, rate = soundfile.read(u.path, dtype="float32")
        new.append(tmp_path / f"new{number}.wav")
        soundfile.write(new[-1], 0.5 * samples, rate)
    result = _cli(["datastore", "add", out, *new, "--label", "sad"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "adapt.json").read_text())
    assert report["added_clips"] == 2 and report["datastore_entries"] == len(utterances) + 2
    assert "2 added later with `emoknn datastore add`" in (out / "README.md").read_text()
    ids = [i for i in load_datastore(out).ids if i.startswith("added")]
    assert len(ids) == 2 and not any("//" in i or str(tmp_path) in i for i in ids)


def test_one_epoch_is_said_in_the_singular(small_synthetic_corpus, tmp_path):
    result = _cli(["train", "--corpus", small_synthetic_corpus, "--fold", "0", "--out",
                   tmp_path / "run", "--preset", "frozen", "--encoder", "tiny", "--epochs", "1",
                   "--max-seconds", "1.0", "--cache-views", "1", "--no-knn"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(1 epoch)" in result.output and "1 epochs" not in result.output


# ── help ─────────────────────────────────────────────────────────────────────────────────────────

COMMANDS = [["train"], ["crossval"], ["report"], ["demo"], ["predict"], ["convert"], ["import"],
            ["adapt"], ["push"], ["serve"], ["export"], ["corpus", "summarize"],
            ["corpus", "synth"], ["augment", "preview"], ["datastore", "build"],
            ["datastore", "add"]]  # fmt: skip


def test_help_shows_no_python_types_or_braces():
    import re

    for command in COMMANDS:
        result = _cli([*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        text = result.output
        assert not re.search(r"<bool>|<list\[|\{[a-z_]+\}", text), (command, text)
    usage = " ".join(_cli(["predict", "--help"]).output.split())
    assert "Usage: emoknn predict [OPTIONS] [INPUTS]..." in usage


@pytest.mark.parametrize("command", [["predict"], ["serve"], ["export"]])
def test_model_help_names_every_kind_of_model(command):
    text = " ".join(_cli([*command, "--help"]).output.replace("│", " ").split())
    assert "--model" in text
    if command != ["export"]:
        assert "Hugging Face audio classifier" in text and "Hub id" in text
    else:
        assert "adapted or imported" in text

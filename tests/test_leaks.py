"""Issue #32: nothing leaks, nothing drifts. Label maps, manifests, corpus checks, paths and
writes of the newest commands; one test (at least) per reproduced defect."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoknn.errors import EmoknnError


def _cli(args, **kwargs):
    from typer.testing import CliRunner

    from emoknn.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def _refused(result, *words) -> str:
    """The command failed with one EmoknnError line holding every word."""
    assert result.exit_code != 0, result.output
    error = result.exception
    assert isinstance(error, EmoknnError), (type(error), result.output)
    message = str(error)
    assert "\n" not in message and all(word in message for word in words), message
    return message


def _wav(path: Path, seconds: float = 0.3, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, int(16000 * seconds))
    sf.write(path, samples.astype(np.float32), 16000, subtype="PCM_16")
    return path


def _manifest(folder: Path, rows: list[tuple[str, str, str]], extra: str = "") -> Path:
    csv = folder / "manifest.csv"
    lines = ["path,label,speaker" + extra] + [",".join(row) for row in rows]
    csv.write_text("\n".join(lines) + "\n")
    return csv


# ── 1, 2: label maps ─────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def corpus_copy(small_synthetic_corpus, tmp_path) -> Path:
    shutil.copytree(small_synthetic_corpus, tmp_path / "corpus")
    return tmp_path / "corpus"


def test_a_run_keeps_its_label_map_by_content(corpus_copy, tmp_path):
    from emoknn.inference import fold_of_run

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"angry": "angry", "happy": "happy", "neutral": "neutral",
                                   "sad": "sad"}))  # fmt: skip
    run = tmp_path / "run"
    result = _cli(["train", "--corpus", corpus_copy, "--fold", "0", "--preset", "tiny",
                   "--epochs", "1", "--augment", "none", "--max-seconds", "0.5", "--out", run,
                   "--no-progress", "--no-knn", "--label-map", mapping])  # fmt: skip
    assert result.exit_code == 0, result.output
    before = {u.id: u.label for u in fold_of_run(run).train}
    info = json.loads((run / "train_config.json").read_text())
    assert str(tmp_path) not in json.dumps({k: v for k, v in info.items() if k != "corpus"})
    # The file edited later (angry <-> sad): the rebuilt fold keeps the labels the head learnt.
    mapping.write_text(json.dumps({"angry": "sad", "sad": "angry"}))
    assert {u.id: u.label for u in fold_of_run(run).train} == before
    mapping.unlink()  # and a deleted file does not make the run unrebuildable
    assert {u.id: u.label for u in fold_of_run(run).train} == before
    # The stored map edited by hand no longer matches its hash: refused.
    info["label_map_classes"]["angry"] = "sad"
    (run / "train_config.json").write_text(json.dumps(info))
    with pytest.raises(EmoknnError, match="does not match label_map_sha256"):
        fold_of_run(run)
    # A run that recorded only the file's path cannot say which map it was trained with.
    for key in ("label_map_classes", "label_map_sha256"):
        info.pop(key)
    info["label_map"] = str(mapping)
    (run / "train_config.json").write_text(json.dumps(info))
    with pytest.raises(EmoknnError, match="only as the file"):
        fold_of_run(run)


def test_a_json_label_map_keeps_unnamed_classes_and_refuses_unknown_keys(
    small_synthetic_corpus, tmp_path
):
    from collections import Counter

    from emoknn.corpora import load_corpus

    everyone = Counter(u.label for u in load_corpus(small_synthetic_corpus))
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"angry": "happy", "neutral": None}))
    mapped = Counter(u.label for u in load_corpus(small_synthetic_corpus, label_map=mapping))
    assert mapped == {"happy": everyone["angry"] + everyone["happy"], "sad": everyone["sad"]}
    mapping.write_text(json.dumps({"angri": "angry"}))
    with pytest.raises(EmoknnError, match="'angri', not a class of this corpus"):
        load_corpus(small_synthetic_corpus, label_map=mapping)
    result = _cli(["corpus", "summarize", small_synthetic_corpus, "--label-map", mapping])
    _refused(result, "angri")
    # "four" stays a preset that keeps the paper's four and drops the rest.
    assert {u.label for u in load_corpus(small_synthetic_corpus, label_map="four")} == set(everyone)


# ── 4: the same file under two rows ─────────────────────────────────────────────────────────────


def test_manifest_rows_naming_one_file_are_refused_before_folds(small_synthetic_corpus, tmp_path):
    from emoknn.corpora import load_corpus

    root = tmp_path / "c"
    for speaker in ("s1", "s2", "s3"):
        for label in ("angry", "sad"):
            _wav(root / "wav" / speaker / f"{label}.wav", seed=hash((speaker, label)) % 1000)
    rows = [(f"wav/{s}/{lab}.wav", lab, s) for s in ("s1", "s2", "s3") for lab in ("angry", "sad")]
    # The same file by another spelling, under another speaker and label.
    leak = _manifest(root, [*rows, ("wav/../wav/s1/angry.wav", "sad", "s2")])
    with pytest.raises(EmoknnError, match=r"wav/s1/angry\.wav.*same audio file"):
        load_corpus(leak)
    _refused(_cli(["train", "--corpus", leak, "--fold", "0", "--preset", "tiny", "--out",
                   tmp_path / "run"]), "same audio file")  # fmt: skip
    assert not (tmp_path / "run").exists()
    # A byte copy under another name, and a link to another row's file.
    shutil.copy(root / "wav/s1/angry.wav", root / "wav/s2/copy.wav")
    copied = _manifest(root, [*rows, ("wav/s2/copy.wav", "angry", "s2")])
    _refused(_cli(["train", "--corpus", copied, "--fold", "0", "--preset", "tiny", "--out",
                   tmp_path / "run"]), "same bytes")  # fmt: skip
    _refused(_cli(["crossval", "--corpus", copied, "--preset", "tiny", "--out",
                   tmp_path / "cv"]), "same bytes")  # fmt: skip
    assert not (tmp_path / "run").exists() and not (tmp_path / "cv").exists()
    os.symlink(root / "wav/s1/sad.wav", root / "wav/s3/link.wav")
    with pytest.raises(EmoknnError, match="same audio file"):
        load_corpus(_manifest(root, [*rows, ("wav/s3/link.wav", "sad", "s3")]))
    assert len(load_corpus(_manifest(root, rows))) == 6


def test_a_manifest_split_column_gives_the_official_folds(tmp_path):
    from emoknn.corpora import load_corpus
    from emoknn.folds import speaker_folds

    rows = []
    for number, split in enumerate(["train"] * 4 + ["dev"] * 2 + ["test"] * 2):
        for label in ("angry", "sad"):
            name = f"wav/{split}{number}_{label}.wav"
            _wav(tmp_path / name, seed=number * 2 + (label == "sad"))
            rows.append((name, label, f"spk{number}", split))
    csv = tmp_path / "manifest.csv"
    csv.write_text("path,label,speaker,split\n" + "\n".join(",".join(r) for r in rows) + "\n")
    utterances = load_corpus(csv)
    assert {u.split for u in utterances} == {"train", "dev", "test"}
    (fold,) = speaker_folds(utterances, "official")
    assert (len(fold.train), len(fold.val), len(fold.test)) == (8, 4, 4)


# ── 5: corpus verify reads every audio file ──────────────────────────────────────────────────────


def _tess(root: Path) -> Path:
    for i, stem in enumerate(("OAF_back_angry", "OAF_back_sad", "YAF_bite_sad", "YAF_bite_happy")):
        _wav(root / f"{stem}.wav", seed=i)
    return root


def test_verify_fails_a_copy_with_empty_or_unreadable_audio(tmp_path):
    from emoknn.corpora.verify import verify_corpus

    root = _tess(tmp_path / "tess")
    assert all(c.status != "fail" for c in verify_corpus("tess", root).checks if "audio" in c.text)
    (root / "OAF_back_angry.wav").write_bytes(b"")
    (root / "OAF_back_sad.wav").write_bytes(os.urandom(100))
    report = verify_corpus("tess", root)
    failed = [c.text for c in report.checks if c.status == "fail"]
    assert any("2 audio files" in text and "OAF_back_angry.wav" in text for text in failed), failed
    result = _cli(["corpus", "verify", "tess", root])
    assert result.exit_code != 0 and "every check passed" not in result.output


def test_summarize_names_an_lfs_stub_and_skip_missing_skips_it(tmp_path):
    root = _tess(tmp_path / "tess")
    (root / "YAF_bite_happy.wav").write_bytes(
        b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n")
    _refused(_cli(["corpus", "summarize", root, "--kind", "tess"]), "Git LFS pointer")
    result = _cli(["corpus", "summarize", root, "--kind", "tess", "--skip-missing"],
                  env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 utterances" in result.output


def test_summarize_to_a_pipe_keeps_whole_words(tmp_path):
    import subprocess
    import sys

    labels = ["angry", "boredom", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    rows = []
    for speaker in ("speaker_one", "speaker_two"):
        for number, label in enumerate(labels):
            name = f"wav/{speaker}_{label}.wav"
            _wav(tmp_path / name, seed=number + 10 * len(rows))
            rows.append((name, label, speaker))
    csv = _manifest(tmp_path, rows)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    out = subprocess.run([sys.executable, "-m", "emoknn", "corpus", "summarize", str(csv)],
                         capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert "speaker_one" in out.stdout and "surprised" in out.stdout, out.stdout
    assert "…" not in out.stdout, out.stdout


# ── 3: a dimensional model's neighbours and its training lines ───────────────────────────────────


@pytest.fixture(scope="module")
def dimensional_run(small_synthetic_corpus, tmp_path_factory) -> tuple[Path, str]:
    """A frozen tiny dimensional run trained by the command line: (folder, what it printed)."""
    run = tmp_path_factory.mktemp("dimensional") / "run"
    result = _cli(["train", "--corpus", small_synthetic_corpus, "--fold", "0", "--preset",
                   "frozen", "--encoder", "tiny", "--task", "dimensional", "--epochs", "2",
                   "--max-seconds", "0.5", "--out", run, "--no-progress",
                   "--feature-cache", run.parent / "cache"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, result.output


def test_a_dimensional_model_lists_the_regression_knns_neighbours(dimensional_run,
                                                                  small_synthetic_corpus):
    from emoknn.predict import EmotionRecognizer

    run, printed = dimensional_run
    assert "tuned on the validation speaker (UA)" not in printed
    assert "tuned for mean CCC" in printed
    recognizer = EmotionRecognizer.load(run, device="cpu")
    settings = recognizer.regression_settings
    clip = next((small_synthetic_corpus / "wav").rglob("*.wav"))
    (prediction,) = recognizer.predict(clip, neighbours=12)
    weights = [n.weight for n in prediction.neighbours]
    assert len(weights) == 12
    used = min(settings.k, 12)
    assert all(w > 0 for w in weights[:used]) and all(w == 0 for w in weights[used:])
    if np.isinf(settings.temperature):
        assert np.allclose(weights[:used], 1.0 / settings.k)


def _rated_copy(small_synthetic_corpus, tmp_path, change) -> Path:
    """The synthetic corpus's manifest with `change(rows)` applied to its rows (dicts)."""
    import csv

    with (small_synthetic_corpus / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    change(rows)
    for row in rows:
        row["path"] = str(small_synthetic_corpus / row["path"])
    out = tmp_path / f"rated-{change.__name__}.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_crossval_checks_every_folds_ratings_before_any_work(small_synthetic_corpus, tmp_path,
                                                              monkeypatch):  # fmt: skip
    import emoknn.experiments

    def must_not_run(*args, **kwargs):
        raise AssertionError("cross-validation started before every fold's ratings were checked")

    monkeypatch.setattr(emoknn.experiments, "crossval", must_not_run)

    def unrate_last_speaker(rows):
        for row in rows:
            if row["speaker"] == rows[-1]["speaker"]:
                row["arousal"] = row["valence"] = row["dominance"] = ""

    unrated = _rated_copy(small_synthetic_corpus, tmp_path, unrate_last_speaker)
    args = ["crossval", "--corpus", unrated, "--preset", "frozen", "--encoder", "tiny", "--task",
            "dimensional", "--out", tmp_path / "cv"]  # fmt: skip
    _refused(_cli(args), "has none")

    def constant_arousal(rows):
        for row in rows:
            row["arousal"] = "3.0"

    args[2] = _rated_copy(small_synthetic_corpus, tmp_path, constant_arousal)
    _refused(_cli(args), "arousal ratings are all equal")
    assert not (tmp_path / "cv").exists()


def test_dimensional_fold_lines_name_variants_as_the_table_does():
    from emoknn import baseline
    from emoknn.experiments import dimensional_label

    assert dimensional_label({"training": "ce", "label": "CE+SCL", "task": "dimensional"}) == (
        "Reg+SCL")
    assert dimensional_label({"training": "baseline", "label": baseline.LABEL,
                              "task": "dimensional"}) == baseline.RIDGE_LABEL  # fmt: skip


# ── 6: no absolute path leaves a shared folder or a response ─────────────────────────────────────


def local_paths_in(value) -> list[str]:
    """Every string in JSON-like `value` that names a place on this machine."""
    from emoknn.card import local_name

    if isinstance(value, dict):
        return [p for key, item in value.items()
                for p in local_paths_in(key) + local_paths_in(item)]
    if isinstance(value, (list, tuple)):
        return [p for item in value for p in local_paths_in(item)]
    if isinstance(value, str) and local_name(value) != value:
        return [value]
    return []


def local_paths_in_folder(folder: Path, markers: list[str]) -> list[str]:
    """Local paths in a folder's files: JSON strings, datastore arrays of text, and the raw bytes
    of every other file searched for `markers` (UTF-8 and the UTF-32 of numpy's text arrays)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder)
        if path.suffix == ".json":
            found += [f"{name}: {p}" for p in local_paths_in(json.loads(path.read_text()))]
        elif path.suffix == ".npz":
            with np.load(path) as stored:
                for key in stored.files:
                    if stored[key].dtype.kind == "U":
                        found += [f"{name}[{key}]: {p}"
                                  for p in local_paths_in(stored[key].tolist())]  # fmt: skip
        data = path.read_bytes()
        for marker in markers:
            if marker.encode() in data or marker.encode("utf-32-le") in data:
                found.append(f"{name}: holds {marker}")
    return found


@pytest.fixture(scope="module")
def run_with_paths(trained_run, tmp_path_factory) -> Path:
    """A copy of the trained run whose train_config names a label map and a feature cache by
    absolute path, as runs trained with those options do."""
    run = tmp_path_factory.mktemp("paths") / "run"
    shutil.copytree(trained_run, run)
    info = json.loads((run / "train_config.json").read_text())
    info["train_config"]["feature_cache"] = str(run.parent / "emoknn-features")
    info["label_map"] = str(run.parent / "map.json")
    (run / "train_config.json").write_text(json.dumps(info))
    return run


def _markers(*paths: Path) -> list[str]:
    return sorted({str(p.resolve().parent) for p in paths})


def test_pack_output_carries_no_local_path(run_with_paths, small_synthetic_corpus, tmp_path):
    from emoknn.predict import EmotionRecognizer

    assert local_paths_in_folder(run_with_paths, [])  # the run itself names them
    out = tmp_path / "packed"
    result = _cli(["pack", run_with_paths, out])
    assert result.exit_code == 0, result.output
    assert local_paths_in_folder(out, _markers(run_with_paths, small_synthetic_corpus)) == []
    recognizer = EmotionRecognizer.load(out, device="cpu")
    clip = next((small_synthetic_corpus / "wav").rglob("*.wav"))
    (prediction,) = recognizer.predict(clip, neighbours=2)
    assert all(n.source and "/" not in n.source for n in prediction.neighbours)


def test_export_output_carries_no_local_path(run_with_paths, small_synthetic_corpus, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "export"
    result = _cli(["export", "--model", run_with_paths, "--out", out])
    assert result.exit_code == 0, result.output
    assert local_paths_in_folder(out, _markers(run_with_paths, small_synthetic_corpus)) == []


@pytest.mark.parametrize("neighbour_audio", [False, True])
def test_serve_answers_with_no_local_path(trained_run, small_synthetic_corpus, neighbour_audio):
    from fastapi.testclient import TestClient

    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    recognizer = EmotionRecognizer.load(trained_run, device="cpu")
    client = TestClient(create_app(recognizer, serve_neighbour_audio=neighbour_audio))
    clip = next((small_synthetic_corpus / "wav").rglob("*.wav"))
    for name in (clip.name, str(clip)):  # the client's own name for its upload comes back as a name
        response = client.post("/predict?neighbours=4",
                               files={"file": (name, clip.read_bytes())})  # fmt: skip
        assert response.status_code == 200, response.text
        answer = response.json()
        assert len(answer["neighbours"]) == 4 and local_paths_in(answer) == []
        assert str(small_synthetic_corpus) not in response.text
    if neighbour_audio:  # the page still plays a neighbour, by its id
        entry = answer["neighbours"][0]["id"]
        assert client.get("/neighbour-audio", params={"id": entry}).status_code == 200


# ── 7 and tracebacks: datastore inspect --plot ────────────────────────────────────────────────────


def test_inspect_writes_no_plot_unasked_and_overwrites_nothing(trained_run, tmp_path,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    result = _cli(["datastore", "inspect", trained_run, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["plot"] is None and list(tmp_path.iterdir()) == []
    result = _cli(["datastore", "inspect", trained_run])
    assert result.exit_code == 0 and list(tmp_path.iterdir()) == []
    existing = tmp_path / "map.png"
    existing.write_text("my figure")
    _refused(_cli(["datastore", "inspect", trained_run, "--plot", existing]), str(existing),
             "exists")  # fmt: skip
    assert existing.read_text() == "my figure"
    (tmp_path / "folder.png").mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for bad in (tmp_path / "folder.png", a_file / "map.png", Path("/sys/emoknn/map.png"),
                Path("/dev/null/map.png")):  # fmt: skip
        _refused(_cli(["datastore", "inspect", trained_run, "--plot", bad]), str(bad))
    _refused(_cli(["datastore", "inspect", trained_run, "--vote-k", "1000"]), "--vote-k",
             "entries")  # fmt: skip


def test_pack_refuses_an_impossible_destination_in_one_line(trained_run, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for bad in (Path("/sys/emoknn-pack"), a_file / "packed", Path("/dev/null/packed")):
        _refused(_cli(["pack", trained_run, bad]), str(bad))


# ── tracebacks: corpus download destinations ─────────────────────────────────────────────────────


def test_download_refuses_impossible_destinations_before_fetching(tmp_path, monkeypatch):
    import emoknn.corpora.download as download

    def must_not_run(*args, **kwargs):
        raise AssertionError("the download started before the destination was checked")

    monkeypatch.setattr(download, "_fetch_archives", must_not_run)
    monkeypatch.setattr(download, "_fetch_files", must_not_run)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for bad in (Path("/sys/emoknn-corpus"), Path("/dev/null/ravdess"), a_file / "ravdess"):
        with pytest.raises(download.DownloadError, match=str(bad)):
            download.download_corpus("ravdess", bad, accept_licence=True)
    assert not list(Path("/dev").glob(".*emoknn-download"))


def test_a_listing_naming_a_file_twice_is_refused():
    from emoknn.corpora.download import DownloadError, _dataverse_files

    entry = {"dataFile": {"id": 1, "filename": "a.wav", "filesize": 3}, "label": "a.wav"}
    listing = json.dumps({"data": {"latestVersion": {"files": [entry, entry]}}}).encode()
    with pytest.raises(DownloadError, match=r"'a\.wav' twice"):
        _dataverse_files(listing, "https://example.org", "listing")


def test_an_encoder_store_is_readable_like_every_other_file(small_synthetic_corpus, tmp_path):
    import stat

    from emoknn.config import make_config
    from emoknn.corpora import label_names, load_synthetic
    from emoknn.folds import speaker_folds
    from emoknn.frozen import train_frozen_fold

    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=1, cache_views=1,
                         progress_bar=False, feature_cache=str(tmp_path / "cache"))  # fmt: skip
    train_frozen_fold(config, fold.train, fold.val, label_names(utterances), tmp_path / "run")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")
             if p.is_file() and "cache" not in p.parts}  # fmt: skip
    assert modes["encoder.safetensors"] == modes["model.json"], modes

"""`datastore inspect`: counts, and a planted duplicate and mislabel found on a tiny run."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from emoknn.corpora import load_corpus
from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError
from emoknn.folds import speaker_folds
from emoknn.inference import embed_utterances, fit_knn, record_origins
from emoknn.knn import Datastore
from emoknn.model_folder import load_datastore, load_model, read_model_meta, save_knn
from emoknn.store_inspect import inspect_datastore, inspect_run


@pytest.fixture(scope="module")
def planted_run(trained_run, small_synthetic_corpus, tmp_path_factory):
    """The tiny trained model with a datastore built from its fold's clips plus two planted ones:
    an exact copy of a clip under another name (same label), and a near copy of another clip
    (its last 10 ms cut, at 0.9 of the level) under another label."""
    corpus = tmp_path_factory.mktemp("planted") / "corpus"
    shutil.copytree(small_synthetic_corpus, corpus)
    fold = speaker_folds(load_corpus(corpus))[0]
    original, victim = fold.train[0], fold.train[7]
    wrong = next(name for name in ("angry", "happy", "neutral", "sad") if name != victim.label)
    copy = corpus / "planted" / "copy.wav"
    copy.parent.mkdir()
    shutil.copyfile(original.path, copy)
    samples, rate = sf.read(victim.path, dtype="float32")
    sf.write(corpus / "planted" / "relabelled.wav", 0.9 * samples[: -rate // 100], rate)
    planted = [
        Utterance("planted/copy", copy, original.label, original.speaker, original.session),
        Utterance("planted/relabelled", corpus / "planted" / "relabelled.wav", wrong,
                  victim.speaker, victim.session),
    ]  # fmt: skip
    run = tmp_path_factory.mktemp("planted_run")
    for name in ("model.safetensors", "model.json"):
        shutil.copyfile(trained_run / name, run / name)
    model = load_model(run)
    seconds = read_model_meta(run).max_seconds
    train = embed_utterances(model, fold.train + planted, seconds)
    val = embed_utterances(model, fold.val, seconds)
    store, tuning = fit_knn(model, train, val)
    record_origins(store, fold.train + planted + fold.val)
    save_knn(run, store, tuning)
    return run, original, victim, fold


def test_finds_the_planted_duplicate_and_mislabel(planted_run, tmp_path):
    run, original, victim, fold = planted_run
    plot = tmp_path / "map.png"
    inspection = inspect_run(run, plot=plot)
    assert inspection.duplicates == [sorted([original.id, "planted/copy"])]  # not the near copy
    flagged = [{s.id, s.neighbour_id} for s in inspection.near_duplicates]
    assert {victim.id, "planted/relabelled"} in flagged
    assert len(flagged) <= 2  # the planted pair, and at most one chance neighbour
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    # Counts per label and per speaker, speakers as recorded at build time.
    entries = len(fold.train) + len(fold.val) + 2
    assert inspection.entries == entries and sum(inspection.labels.values()) == entries
    speakers = {u.speaker for u in fold.train + fold.val}
    assert set(inspection.speakers) == speakers
    by_speaker = inspection.speakers[victim.speaker]
    expected = sum(1 for u in fold.train + fold.val if u.speaker == victim.speaker) + (
        2 if original.speaker == victim.speaker else 1
    )
    assert sum(by_speaker.values()) == expected
    text = inspection.to_text()
    assert "planted/relabelled" in text and "exact duplicates (identical embeddings): 1" in text


def test_a_clean_store_has_nothing_flagged_as_duplicate():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 8))
    labels = np.repeat(np.arange(3), 40)
    keys = centres[labels] + rng.normal(0, 1, (120, 8))
    store = Datastore(keys, labels, ["a", "b", "c"], [f"e{i}" for i in range(120)], "f")
    inspection = inspect_datastore(store)
    assert inspection.duplicates == [] and inspection.near_duplicates == []
    assert inspection.speakers is None
    # A relabelled entry deep inside another cluster disagrees with all its neighbours.
    labels[5] = 2
    relabelled = inspect_datastore(Datastore(keys, labels, ["a", "b", "c"], store.ids, "f"))
    assert [s.id for s in relabelled.disagreements] == ["e5"]
    assert relabelled.disagreements[0].neighbour_label == "a"


def test_bad_settings_are_refused(planted_run, tmp_path):
    run = planted_run[0]
    with pytest.raises(ConfigError, match="near_factor must be > 0"):
        inspect_datastore(load_datastore(run), near_factor=0)
    with pytest.raises(ConfigError, match=r"map.txt: the plot is written as \.png"):
        inspect_run(run, plot=tmp_path / "map.txt")
    assert not (tmp_path / "map.txt").exists()


def test_datastore_inspect_command(planted_run, tmp_path):
    import json

    from typer.testing import CliRunner

    from emoknn.cli import app

    run, original, _, _ = planted_run
    runner = CliRunner()
    plot = tmp_path / "out" / "map.svg"
    result = runner.invoke(app, ["datastore", "inspect", str(run), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "planted/copy = " + original.id in result.output or (
        original.id + " = planted/copy" in result.output
    )
    assert "planted/relabelled" in result.output and plot.read_text().startswith("<?xml")
    result = runner.invoke(app, ["datastore", "inspect", str(run), "--no-plot", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["plot"] is None and len(report["duplicates"]) == 1
    for bad, message in (
        (["--near-factor", "0"], "--near-factor"),
        (["--vote-k", "0"], "--vote-k"),
        (["--plot", str(tmp_path / "m.jpg")], "the plot is written as"),
    ):
        result = runner.invoke(app, ["datastore", "inspect", str(run), *bad])
        assert result.exit_code == 1 and message in str(result.exception)
    assert not (tmp_path / "m.jpg").exists()
    result = runner.invoke(app, ["datastore", "inspect", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "nowhere" in str(result.exception)


def test_an_older_datastore_gets_its_speakers_from_the_runs_corpus(trained_run, tmp_path):
    from emoknn.model_folder import save_datastore

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "model.json", "train_config.json", "knn.json"):
        shutil.copyfile(trained_run / name, run / name)
    store = load_datastore(trained_run)
    older = Datastore(store.keys, store.labels, store.label_names, store.ids, store.fingerprint)
    save_datastore(run, older)  # as written before sources and speakers were recorded
    assert not any(load_datastore(run).speakers)
    inspection = inspect_run(run)
    assert inspection.speakers is not None
    assert {s: sum(c.values()) for s, c in inspection.speakers.items()} == dict(
        Counter(s for s in store.speakers)
    )
    (run / "train_config.json").unlink()  # no corpus to ask: speakers are unknown, not guessed
    assert inspect_run(run).speakers is None

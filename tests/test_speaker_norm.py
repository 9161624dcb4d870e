"""Speaker (or domain) statistics from unlabelled clips in the product: a model trained with
--speaker-norm records it, refuses to predict without statistics, and takes them only from the
clips named for them (never labels, never another speaker's clips)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from emoknn.cli import app
from emoknn.config import make_config
from emoknn.corpora import label_names, load_synthetic
from emoknn.data import pad_batch
from emoknn.errors import ModelFolderError, SpeakerNormError
from emoknn.folds import speaker_folds
from emoknn.frozen import train_frozen_fold
from emoknn.inference import fit_run_knn
from emoknn.model_folder import load_datastore, load_enrolment, save_enrolment
from emoknn.predict import EmotionRecognizer
from emoknn.serve import create_app
from emoknn.speaker_stats import SpeakerStatistics, feature_statistics

runner = CliRunner()
MAX_SECONDS = 0.5


@pytest.fixture(scope="module")
def corpus(small_synthetic_corpus, tmp_path_factory):
    """A private copy of the synthetic corpus (tests below rewrite some of its files)."""
    root = tmp_path_factory.mktemp("spk") / "corpus"
    shutil.copytree(small_synthetic_corpus, root)
    return root


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """A tiny frozen model trained with --speaker-norm on fold 0, with its kNN stage."""
    utterances = load_synthetic(corpus)
    fold = speaker_folds(utterances)[0]
    folder = tmp_path_factory.mktemp("spk-run") / "run"
    config = make_config("frozen", encoder="tiny", max_seconds=MAX_SECONDS, max_epochs=2,
                         cache_views=0, speaker_norm=True,
                         feature_cache=str(folder.parent / "cache"))  # fmt: skip
    train_frozen_fold(config, fold.train, fold.val, label_names(utterances), folder)
    fit_run_knn(folder, fold.train, fold.val, MAX_SECONDS)
    return folder


@pytest.fixture(scope="module")
def recognizer(run):
    return EmotionRecognizer.load(run, device="cpu")


def said(result) -> str:
    """What a command printed, and the one-line error it ended with (`emoknn.cli.main` prints
    it; the test runner calls the app directly)."""
    return result.output + ("" if result.exception is None else str(result.exception))


def clips_of(corpus, speaker: str) -> list:
    return [u.path for u in load_synthetic(corpus) if u.speaker == speaker]


def speakers(corpus) -> list[str]:
    return sorted({u.speaker for u in load_synthetic(corpus)})


def test_the_run_records_speaker_norm_and_refuses_to_predict_without_statistics(run, corpus):
    config = json.loads((run / "model.json").read_text())["model_config"]
    assert config["speaker_norm"] is True and config["speaker_norm_min_clips"] == 10
    recognizer = EmotionRecognizer.load(run, device="cpu")
    clip = clips_of(corpus, speakers(corpus)[0])[0]
    with pytest.raises(SpeakerNormError, match="trained with speaker normalisation"):
        recognizer.predict(clip)
    result = runner.invoke(app, ["predict", "--model", str(run), str(clip)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SpeakerNormError)
    assert "trained with speaker normalisation" in said(result)


def test_statistics_are_those_of_the_named_clips_alone(recognizer, corpus):
    """mean and scale equal the formula over the named clips' own pooled centred crops."""
    from emoknn.audio import center_crop, load_audio, max_samples

    clips = clips_of(corpus, speakers(corpus)[0])
    statistics = recognizer.speaker_statistics(clips, "A")
    with torch.no_grad():
        pooled = np.concatenate([
            recognizer.model.pooled_layers(*pad_batch([
                center_crop(load_audio(path), max_samples(MAX_SECONDS))]))[0][None].numpy()
            for path in clips])  # fmt: skip
    mean, scale = feature_statistics(pooled)
    np.testing.assert_allclose(statistics.mean, mean, atol=1e-5)
    np.testing.assert_allclose(statistics.scale, scale, atol=1e-5, rtol=1e-4)
    assert statistics.clips == len(clips) and statistics.describe() == (
        f"normalised with {len(clips)} unlabelled clips of speaker A"
    )


def write_csv(path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(rows)


def predicted(run, csv_path) -> dict[str, dict]:
    result = runner.invoke(app, ["predict", "--model", str(run), "--speakers", str(csv_path),
                                 "--format", "json", "--no-knn"])  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = result.stdout[result.stdout.index("[") :]
    return {item["source"]: item for item in json.loads(payload)}


def test_a_speakers_predictions_ignore_labels_and_other_speakers_clips(run, corpus, tmp_path):
    """Would catch a leak: speaker A's predictions stay the same when speaker B's clips are
    replaced and when every label in the CSV is changed; B's own predictions do change."""
    first, second = speakers(corpus)[:2]
    a, b = clips_of(corpus, first), clips_of(corpus, second)
    rows = [(str(p), "angry", first) for p in a] + [(str(p), "sad", second) for p in b]
    write_csv(tmp_path / "inputs.csv", rows)
    before = predicted(run, tmp_path / "inputs.csv")
    # B's clips replaced by other audio (louder, noisier) and every label changed.
    other = tmp_path / "other"
    other.mkdir()
    rng = np.random.default_rng(0)
    changed = []
    for path in b:
        samples, rate = sf.read(path)
        target = other / path.name
        sf.write(target, 0.5 * samples + 0.05 * rng.standard_normal(len(samples)), rate)
        changed.append(target)
    labels = ["happy", "neutral", "sad", "angry"]
    rows = [(str(p), labels[i % 4], first) for i, p in enumerate(a)]
    rows += [(str(p), labels[i % 4], second) for i, p in enumerate(changed)]
    write_csv(tmp_path / "changed.csv", rows)
    after = predicted(run, tmp_path / "changed.csv")
    for path in a:
        assert after[str(path)]["probabilities"] == before[str(path)]["probabilities"]
        assert after[str(path)]["normalisation"]["note"] == (
            f"normalised with {len(a)} unlabelled clips of speaker {first}"
        )
    assert any(after[str(new)]["probabilities"] != before[str(old)]["probabilities"]
               for old, new in zip(b, changed, strict=True))  # fmt: skip


def test_a_speaker_with_too_few_clips_is_refused_in_one_line(recognizer, run, corpus, tmp_path):
    first, second = speakers(corpus)[:2]
    with pytest.raises(SpeakerNormError, match=f"speaker '{first}' has 3 clips; .* at least 10"):
        recognizer.speaker_statistics(clips_of(corpus, first)[:3], first)
    rows = [(str(p), "x", first) for p in clips_of(corpus, first)]
    rows += [(str(p), "x", second) for p in clips_of(corpus, second)[:4]]
    write_csv(tmp_path / "few.csv", rows)
    result = runner.invoke(app, ["predict", "--model", str(run), "--speakers",
                                 str(tmp_path / "few.csv")])  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, SpeakerNormError)
    lines = str(result.exception).splitlines()
    assert len(lines) == 1 and f"speaker '{second}' has 4 clips" in lines[0]


def test_enrol_then_predict_and_serve_by_name(run, corpus, recognizer, tmp_path):
    first = speakers(corpus)[0]
    clips = clips_of(corpus, first)
    result = runner.invoke(app, ["enrol", "--model", str(run), "--speaker", "alice",
                                 *map(str, clips)])  # fmt: skip
    assert result.exit_code == 0, result.output
    path = run / "enrolments" / "alice.npz"
    enrolled = load_enrolment(path)
    assert (enrolled.name, enrolled.kind, enrolled.clips) == ("alice", "speaker", len(clips))
    again = runner.invoke(app, ["enrol", "--model", str(run), "--speaker", "alice",
                                *map(str, clips)])  # fmt: skip
    assert again.exit_code == 1 and "--replace" in said(again)
    direct = recognizer.predict(clips[0], statistics=recognizer.speaker_statistics(clips, "x"))
    result = runner.invoke(app, ["predict", "--model", str(run), "--speaker", "alice",
                                 "--format", "json", str(clips[0])])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "normalised with 12 unlabelled clips of speaker alice" in result.output
    item = json.loads(result.stdout[result.stdout.index("[") :])[0]
    assert item["probabilities"] == pytest.approx(direct[0].probabilities, abs=1e-6)
    assert item["normalisation"]["unlabelled_target_audio"] is True
    # serve: the speaker named per request; none named, or an unknown one, is refused
    client = TestClient(create_app(recognizer, enrolments={"alice": recognizer.enrolment("alice")}))
    upload = {"file": ("clip.wav", clips[0].read_bytes(), "audio/wav")}
    assert client.get("/health").json()["enrolments"] == [
        {"name": "alice", "kind": "speaker", "clips": len(clips)}]  # fmt: skip
    response = client.post("/predict?speaker=alice", files=upload)
    assert response.status_code == 200, response.text
    assert response.json()["probabilities"] == pytest.approx(direct[0].probabilities, abs=1e-6)
    assert response.json()["normalisation"]["name"] == "alice"
    for query, reason in (("", "trained with speaker normalisation"), ("?speaker=bob", "bob")):
        refused = client.post(f"/predict{query}", files=upload)
        assert refused.status_code == 422 and reason in refused.json()["detail"]


def test_enrolment_files_are_checked(run, recognizer, corpus, tmp_path):
    statistics = recognizer.speaker_statistics(clips_of(corpus, speakers(corpus)[1]), "bob")
    other = SpeakerStatistics("bob", "speaker", statistics.clips, statistics.mean,
                              statistics.scale, "0" * 64)  # fmt: skip
    save_enrolment(tmp_path / "other.npz", other)
    with pytest.raises(SpeakerNormError, match="other encoder features"):
        recognizer.enrolment(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"not an enrolment")
    with pytest.raises(ModelFolderError, match=r"broken\.npz: not a readable enrolment"):
        recognizer.enrolment(tmp_path / "broken.npz")
    result = runner.invoke(app, ["enrol", "--model", str(run), "--speaker", "../escape",
                                 str(clips_of(corpus, speakers(corpus)[0])[0])])  # fmt: skip
    assert result.exit_code == 1 and "a name is 1-64 letters" in said(result)


def test_domain_statistics_from_a_folder(run, corpus):
    folder = corpus / "wav" / speakers(corpus)[2]
    clip = clips_of(corpus, speakers(corpus)[3])[0]
    result = runner.invoke(app, ["predict", "--model", str(run), "--domain-stats", str(folder),
                                 "--format", "json", str(clip)])  # fmt: skip
    assert result.exit_code == 0, result.output
    item = json.loads(result.stdout[result.stdout.index("[") :])[0]
    assert item["normalisation"]["kind"] == "domain"
    assert item["normalisation"]["clips"] == len(list(folder.glob("*.wav")))


def test_the_datastore_holds_each_training_speakers_own_normalised_features(run, recognizer):
    """The datastore's entries are what prediction computes with that speaker's statistics."""
    from emoknn.audio import center_crop, load_audio, max_samples

    store = load_datastore(run)
    speaker = store.speakers[0]
    rows = [i for i, s in enumerate(store.speakers) if s == speaker]
    paths = [store.sources[i] for i in rows]
    statistics = recognizer.speaker_statistics(paths, speaker)
    crops = [center_crop(load_audio(p), max_samples(MAX_SECONDS)) for p in paths]
    _, embeddings = recognizer.forward_clips(crops, statistics=statistics)
    np.testing.assert_allclose(embeddings, store.keys[rows], atol=1e-4, rtol=1e-4)


def test_other_models_and_paths_refuse_statistics(trained_run, run, corpus, tmp_path):
    folder = corpus / "wav" / speakers(corpus)[0]
    clip = str(clips_of(corpus, speakers(corpus)[0])[0])
    result = runner.invoke(app, ["predict", "--model", str(trained_run), "--domain-stats",
                                 str(folder), clip])  # fmt: skip
    assert result.exit_code == 1 and "trained without speaker normalisation" in said(result)
    result = runner.invoke(app, ["export", "--model", str(run), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "speaker normalisation" in said(result)
    result = runner.invoke(app, ["datastore", "add", str(run), "--label", "sad",
                                 str(clips_of(corpus, speakers(corpus)[5])[0])])  # fmt: skip
    assert result.exit_code == 1 and "speaker normalisation" in said(result)


def test_evaluate_standardises_each_speaker_with_its_own_clips(recognizer, corpus):
    """`emoknn evaluate` on a speaker-normalised model: each corpus speaker's statistics come from
    that speaker's own clips, the scores equal the recognizer's with those statistics, and the
    result says it used unlabelled target audio."""
    from emoknn.audio import center_crop, load_audio, max_samples
    from emoknn.evaluation import evaluate_model
    from emoknn.metrics import unweighted_accuracy

    utterances = [u for u in load_synthetic(corpus) if u.speaker in speakers(corpus)[:2]]
    evaluation = evaluate_model(recognizer, utterances, draws=0)
    assert evaluation.info["normalisation"]["unlabelled_target_audio"] is True
    truth, predicted = [], []
    for speaker in speakers(corpus)[:2]:
        mine = [u for u in utterances if u.speaker == speaker]
        clips = [center_crop(load_audio(u.path), max_samples(MAX_SECONDS)) for u in mine]
        statistics = recognizer.speaker_statistics(clips, speaker)
        final = recognizer.score(clips, statistics=statistics)["final"]
        truth += [recognizer.labels.index(u.label) for u in mine]
        predicted += list(final.argmax(axis=1))
    assert evaluation.scores[evaluation.headline].ua == pytest.approx(
        unweighted_accuracy(np.array(truth), np.array(predicted)))

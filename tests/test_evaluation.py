"""`emoknn evaluate`: a trained model on another (shifted) labelled corpus — classes met by name,
classes the model lacks reported and left out of UA, speaker-bootstrap intervals, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emoknn import cli
from emoknn.cli import app
from emoknn.corpora import load_corpus
from emoknn.corpora.utterance import Utterance
from emoknn.corpora.vocabulary import canonical_label, shared_classes
from emoknn.errors import ConfigError
from emoknn.evaluation import (
    bootstrap_intervals,
    evaluate_model,
    match_labels,
    score_predictions,
)
from emoknn.predict import EmotionRecognizer
from shifted_corpus import make_shifted_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    return make_shifted_corpus(tmp_path_factory.mktemp("shifted"))


@pytest.fixture(scope="module")
def frozen_model(small_synthetic_corpus, tmp_path_factory):
    """A frozen tiny-encoder run on fold 0 of the first corpus, with its kNN stage."""
    out = tmp_path_factory.mktemp("frozen") / "run"
    result = runner.invoke(app, [
        "train", "--corpus", str(small_synthetic_corpus), "--fold", "0", "--out", str(out),
        "--preset", "frozen", "--encoder", "tiny", "--max-seconds", "1.0", "--epochs", "4",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_the_vocabulary_meets_spellings_and_keeps_emotions_apart():
    assert canonical_label("Fear") == canonical_label("fearful") == "fearful"
    assert canonical_label(" ANG ") == "angry" and canonical_label("joy") == "happy"
    assert canonical_label("excited") == "excited"  # never merged into happy by default
    assert shared_classes(["fearful", "anger", "calm"], ["angry", "fear", "fearful"]) == {
        "fearful": "fearful", "anger": "angry"}  # an exact name wins; calm has no partner


def _clip(label: str, speaker: str) -> Utterance:
    return Utterance(f"{speaker}-{label}", "x.wav", label, speaker)


def test_ua_is_the_mean_recall_of_the_known_rows_and_unknown_clips_stay_out():
    model_labels = ["angry", "happy", "sad"]
    truth = ["angry", "angry", "happy", "happy", "happy", "happy", "calm", "calm"]
    speakers = ["a", "b", "a", "b", "a", "b", "a", "b"]
    match = match_labels(model_labels, [_clip(*pair) for pair in zip(truth, speakers, strict=True)])
    assert match.unknown == {"calm": 2} and match.known_rows == ["angry", "happy"]
    # angry: 1 of 2 right; happy: 3 of 4; the calm clips were called sad and angry
    predicted = np.array([0, 2, 1, 1, 1, 0, 2, 0])
    scores = score_predictions(truth, predicted, speakers, match, draws=0)
    assert scores.recall == {"angry": 0.5, "happy": 0.75}
    assert scores.ua == pytest.approx((0.5 + 0.75) / 2)  # sad has no row: the corpus has none
    assert scores.wa == pytest.approx(4 / 6)  # the 2 calm clips count nowhere
    assert scores.confusion.tolist() == [[1, 0, 1], [1, 3, 0]]
    assert scores.confusion_rows == ["angry", "happy"] and scores.confusion_columns == model_labels
    assert scores.unknown_predicted == {"calm": {"angry": 1, "sad": 1}}
    with pytest.raises(ConfigError, match="share none with the model's"):
        match_labels(model_labels, [_clip("calm", "a"), _clip("bored", "b")])


def test_bootstrap_intervals_resample_speakers_and_are_seeded():
    # 8 speakers, 2 classes × 8 clips each; speaker s gets s + 1 of each class right
    per_speaker = np.array([[[s + 1, 7 - s], [7 - s, s + 1]] for s in range(8)])
    columns = np.array([0, 1])
    first = bootstrap_intervals(per_speaker, columns, draws=500, seed=3)
    assert first == bootstrap_intervals(per_speaker, columns, draws=500, seed=3)
    assert first != bootstrap_intervals(per_speaker, columns, draws=500, seed=4)
    (ua_low, ua_high), (wa_low, wa_high) = first
    assert 0.3 < ua_low < 36 / 64 < ua_high < 0.8  # pooled: 36 of 64 right
    assert (wa_low, wa_high) == (ua_low, ua_high)  # balanced classes: WA = UA in every draw
    assert bootstrap_intervals(per_speaker[:1], columns) is None  # one speaker: nothing to draw


def test_evaluate_a_model_on_a_shifted_corpus_with_a_class_it_lacks(frozen_model, shifted,
                                                                    tmp_path):  # fmt: skip
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--model", str(frozen_model), "--corpus",
                                 str(shifted), "--out", str(out), "--format", "json",
                                 "--bootstrap", "200"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads((out / "evaluation.json").read_text())  # printed = written
    assert data["unknown_labels"] == {"calm": 8}  # the shifted corpus's sad clips, renamed
    assert data["label_pairs"] == {"anger": "angry", "joy": "happy", "neutral": "neutral"}
    assert data["num_scored"] == 24 and data["num_speakers"] == 4
    confusion = np.array(data["confusion"]["counts"])
    rows, columns = data["confusion"]["true"], data["confusion"]["predicted"]
    assert rows == ["angry", "happy", "neutral"] and columns == ["angry", "happy", "neutral", "sad"]
    recalls = [confusion[r, columns.index(label)] / confusion[r].sum()
               for r, label in enumerate(rows)]  # fmt: skip
    assert data["ua"] == pytest.approx(np.mean(recalls))
    assert confusion.sum() == 24  # no calm clip was folded into a row
    assert sum(data["unknown_predicted"]["calm"].values()) == 8
    assert set(data["inferences"]) == {"model", "knn", "interpolated"}
    assert data["inference"] == "interpolated"
    low, high = data["ua_interval"]
    assert 0 <= low <= high <= 1
    assert (out / "confusion-interpolated.png").read_bytes()[:4] == b"\x89PNG"
    # Again into the same folder: allowed (only an evaluation's files), and the same numbers.
    again = runner.invoke(app, ["evaluate", "--model", str(frozen_model), "--corpus",
                                str(shifted), "--out", str(out), "--format", "json",
                                "--bootstrap", "200"])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["inferences"] == data["inferences"]


def test_a_label_map_renames_the_corpus_classes_first(frozen_model, shifted, tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"anger": "angry", "joy": "happy", "neutral": "neutral",
                                   "calm": "sad"}))  # fmt: skip
    result = runner.invoke(app, ["evaluate", "--model", str(frozen_model), "--corpus",
                                 str(shifted), "--label-map", str(mapping), "--format", "json",
                                 "--bootstrap", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["unknown_labels"] == {} and data["num_scored"] == 32
    assert data["confusion"]["true"] == ["angry", "happy", "neutral", "sad"]
    assert data["ua_interval"] is None  # --bootstrap 0


def test_each_speaker_is_scored_on_its_own_clips(frozen_model, shifted):
    """The hook speaker normalisation needs: one scorer call per speaker, that speaker only."""
    recognizer = EmotionRecognizer.load(frozen_model, device="cpu")
    calls = []

    def scorer(utterances, clips):
        calls.append({u.speaker for u in utterances})
        assert len(clips) == len(utterances) and all(len(c) <= 16000 for c in clips)
        return {"model": recognizer.score(clips)["model"]}

    utterances = load_corpus(shifted)
    evaluation = evaluate_model(recognizer, utterances, scorer=scorer, draws=0)
    assert [len(speakers) for speakers in calls] == [1, 1, 1, 1]
    assert set(evaluation.scores) == {"model"} and evaluation.headline == "model"


@pytest.mark.parametrize("case", ["no shared class", "no corpus", "bad audio", "other files"])
def test_bad_input_is_one_line_and_writes_nothing(frozen_model, shifted, tmp_path, case, capsys):
    out = tmp_path / "eval"
    corpus = shifted
    args = []
    if case == "no shared class":
        mapping = tmp_path / "map.json"
        mapping.write_text(json.dumps({"anger": "furious", "joy": "elated", "neutral": "placid"}))
        args = ["--label-map", str(mapping)]
        expected = "share none with the model's"
    elif case == "no corpus":
        corpus = tmp_path / "missing"
        expected = "not found"
    elif case == "bad audio":
        broken = tmp_path / "broken.wav"
        broken.write_bytes(b"not audio at all")
        corpus = tmp_path / "broken.csv"
        corpus.write_text(f"path,label,speaker\n{broken},anger,s1\n")
        expected = "broken.wav"
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        expected = "holds other files (notes.txt)"
    with pytest.raises(SystemExit) as exited:
        cli.main(["evaluate", "--model", str(frozen_model), "--corpus", str(corpus), "--out",
                  str(out), *args])  # fmt: skip
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines
    if case == "other files":
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
        assert (out / "notes.txt").read_text() == "mine"
    else:
        assert not out.exists()


def test_an_export_folder_scores_as_its_run(frozen_model, shifted, tmp_path):
    """Any model emoknn loads: the ONNX export of the run gives the run's figures."""
    from emoknn.export import export_onnx
    from emoknn.predict import load_recognizer

    export_onnx(frozen_model, tmp_path / "onnx")
    utterances = load_corpus(shifted)
    run = evaluate_model(load_recognizer(frozen_model, "cpu"), utterances, draws=50).to_dict()
    exported = evaluate_model(load_recognizer(tmp_path / "onnx"), utterances, draws=50).to_dict()
    for name in ("model", "knn", "interpolated"):
        assert exported["inferences"][name]["confusion"] == run["inferences"][name]["confusion"]

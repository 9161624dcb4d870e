"""`emoknn crosscorpus`: the matrix of two synthetic corpora, the second shifted (other speakers,
pitch raised, one class the first lacks) — its diagonal is the LOSO cross-validation of the same
settings, and no clip of a test corpus reaches training, tuning or the datastore."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emoknn import cli
from emoknn.cli import app
from emoknn.corpora import load_corpus
from shifted_corpus import make_shifted_corpus

runner = CliRunner()
SETTINGS = ["--preset", "frozen", "--encoder", "tiny", "--max-seconds", "0.5", "--epochs", "3"]


@pytest.fixture(scope="module")
def matrix(small_synthetic_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    shifted = make_shifted_corpus(root / "shifted")
    out = root / "out"
    result = runner.invoke(app, ["crosscorpus", "--corpus", str(small_synthetic_corpus),
                                 "--corpus", str(shifted), "--out", str(out), "--feature-cache",
                                 str(root / "cache"), *SETTINGS])  # fmt: skip
    assert result.exit_code == 0, result.output
    return {"out": out, "first": small_synthetic_corpus, "shifted": shifted, "root": root,
            "results": json.loads((out / "results.json").read_text())}  # fmt: skip


def test_the_matrix_has_every_cell_variant_and_a_report(matrix):
    results = matrix["results"]
    first = matrix["first"].name
    assert [c["name"] for c in results["corpora"]] == [first, "shifted"]
    assert results["common_classes"] == {first: ["angry", "happy", "neutral"],
                                         "shifted": ["anger", "joy", "neutral"]}  # fmt: skip
    cells = {(c["train"], c["test"]): c for c in results["cells"]}
    assert set(cells) == {(first, first), (first, "shifted"), ("shifted", first),
                          ("shifted", "shifted")}  # fmt: skip
    across = cells[(first, "shifted")]
    assert across["classes"] == ["angry", "happy", "neutral"]  # calm (the shifted sad) left out
    assert across["num_test"] == 24 and across["folds"] == 1
    assert set(across["variants"]) == {
        "CE", "CE kNN only", "CE + kNN", "CE+SCL", "CE+SCL kNN only", "CE+SCL + kNN",
        "Encoder probe (LR)", "Baseline (eGeMAPS + LR)"}  # fmt: skip
    for scores in across["variants"].values():
        low, high = scores["ua_interval"]
        assert 0 <= low <= high <= 1 and 0 <= scores["ua"] <= 1
    assert cells[(first, first)]["folds"] == 6 and cells[("shifted", "shifted")]["folds"] == 4
    report = (matrix["out"] / "report.md").read_text()
    assert "## CE+SCL + kNN" in report and "| trained on ↓ / tested on → |" in report
    assert (matrix["out"] / "figures" / "crosscorpus.png").read_bytes()[:4] == b"\x89PNG"


def test_the_diagonal_is_the_loso_crossval_of_the_same_settings(matrix):
    root = matrix["root"]
    keep = root / "three.json"
    # The classes both corpora share (angry, happy, neutral): a JSON map keeps what it does not
    # name, so it drops sad by name.
    keep.write_text(json.dumps({"sad": None}))
    out = root / "crossval"
    result = runner.invoke(app, ["crossval", "--corpus", str(matrix["first"]), "--out", str(out),
                                 "--label-map", str(keep), "--feature-cache",
                                 str(root / "cache"), *SETTINGS])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = {row["variant"]: row for row in json.loads((out / "results.json").read_text())[
        "summary"]}  # fmt: skip
    diagonal = next(c for c in matrix["results"]["cells"]
                    if c["in_corpus"] and c["train"] == matrix["first"].name)  # fmt: skip
    assert set(diagonal["variants"]) == set(summary)
    for variant, scores in diagonal["variants"].items():
        assert scores["ua"] == summary[variant]["ua_mean"], variant
        assert scores["ua_std"] == summary[variant]["ua_std"], variant
        assert scores["wa"] == summary[variant]["wa_mean"], variant


def test_no_test_corpus_clip_reaches_training_tuning_or_the_datastore(matrix):
    out = matrix["out"]
    first = matrix["first"].name
    cell = out / "cross" / f"{first}-on-shifted"
    # The shifted corpus shares speaker names with the first: its clips are tagged "shifted:".
    test_ids = {f"shifted:{u.id}" for u in load_corpus(matrix["shifted"])
                if u.label != "calm"}  # fmt: skip
    first_ids = {u.id for u in load_corpus(matrix["first"])}
    for training in ("ce", "scl"):
        (fold,) = (cell / training).glob("fold*")
        with np.load(fold / "datastore.npz", allow_pickle=False) as store:
            stored = set(store["ids"].tolist())
        assert stored and stored <= first_ids and not stored & test_ids
    for training in ("ce", "scl", "probe", "baseline"):
        (fold,) = (cell / training).glob("fold*")
        with (fold / "predictions.csv").open(newline="") as handle:
            predicted = {row["id"] for row in csv.DictReader(handle)}
        assert predicted == test_ids  # every test clip scored, and only those
    experiment = json.loads((cell / "experiment.json").read_text())
    assert experiment["labels"] == ["angry", "happy", "neutral"]


def test_a_second_run_resumes_and_changes_nothing(matrix):
    again = runner.invoke(app, ["crosscorpus", "--corpus", str(matrix["first"]), "--corpus",
                                str(matrix["shifted"]), "--out", str(matrix["out"]),
                                "--feature-cache", str(matrix["root"] / "cache"),
                                *SETTINGS])  # fmt: skip
    assert again.exit_code == 0, again.output
    results = json.loads((matrix["out"] / "results.json").read_text())
    assert results["cells"] == matrix["results"]["cells"]


def test_corpora_sharing_under_two_classes_are_refused_before_any_work(
    small_synthetic_corpus, tmp_path, capsys
):
    other = tmp_path / "other.csv"
    clips = load_corpus(small_synthetic_corpus)
    with other.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        for u in clips:
            writer.writerow([u.path, "angry" if u.label == "angry" else "bored", u.speaker])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        cli.main(["crosscorpus", "--corpus", str(small_synthetic_corpus), "--corpus", str(other),
                  "--out", str(out), *SETTINGS])  # fmt: skip
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "share 1 class(es)" in lines[0], lines
    assert not out.exists()

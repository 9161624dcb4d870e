from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

import emoknn.experiments as experiments
from emoknn.cli import app
from emoknn.config import make_config
from emoknn.corpora import load_synthetic
from emoknn.experiments import crossval, trainings_for
from emoknn.folds import speaker_folds
from emoknn.metrics import unweighted_accuracy, weighted_accuracy
from emoknn.report import write_report

runner = CliRunner()
VARIANTS = {"CE", "CE + kNN", "CE kNN only", "CE+SCL", "CE+SCL + kNN", "CE+SCL kNN only",
            "Baseline (eGeMAPS + LR)", "Encoder probe (LR)"}  # fmt: skip


def tiny_config():
    return make_config("tiny", max_epochs=1, max_seconds=1.0, batch_size=8, progress_bar=False)


@pytest.fixture(scope="module")
def two_fold_run(small_synthetic_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("crossval") / "cv"  # the probe's feature cache goes beside it
    result = runner.invoke(app, [
        "crossval", "--corpus", str(small_synthetic_corpus), "--out", str(out), "--folds", "0,2",
        "--preset", "tiny", "--epochs", "1", "--max-seconds", "1.0", "--batch-size", "8",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result.output


def test_crossval_writes_results_and_report_with_every_variant(two_fold_run):
    out, output = two_fold_run
    results = json.loads((out / "results.json").read_text())
    assert {r["variant"] for r in results["summary"]} == VARIANTS
    assert len(results["records"]) == 2 * 8  # 2 folds × (6 variants + the baseline + the probe)
    assert {r["fold"] for r in results["records"]} == {"fold00-Syn01F", "fold02-Syn02F"}
    assert all(r["folds"] == 2 for r in results["summary"])
    baseline_records = [r for r in results["records"] if r["training"] == "baseline"]
    assert [r["features"] for r in baseline_records] == ["eGeMAPSv02"] * 2
    assert results["baseline_features"] == "eGeMAPSv02"
    assert results["baseline"].startswith("openSMILE eGeMAPSv02 functionals (88)")
    interpolated = [r for r in results["records"] if r["inference"] == "interpolated"]
    assert all(1 <= r["k"] <= 32 and 0 < r["alpha"] < 1 for r in interpolated)
    report = (out / "report.md").read_text()
    assert "Synthetic data" in report and "73.32 / 74.45" in report
    for variant in VARIANTS:
        assert f"| {variant} |" in report
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert len(figures) == 9 and "tsne-ce-vs-scl.png" in figures
    assert all(f"figures/{name}" in report for name in figures)
    assert "not emotional speech" in output and "Report:" in output
    assert "Paired comparisons over folds" in report
    printed = " ".join(output.split())  # rich wraps long lines
    for comparison in results["comparisons"]:
        assert comparison["sentence"] in report and comparison["sentence"] in printed


def test_comparisons_are_paired_differences_of_the_records(two_fold_run):
    out, _ = two_fold_run
    results = json.loads((out / "results.json").read_text())
    score = {(r["variant"], r["fold"]): r for r in results["records"]}
    names = [c["name"] for c in results["comparisons"]]
    assert names[:4] == ["CE+SCL vs CE", "CE + kNN vs CE", "CE+SCL + kNN vs CE+SCL",
                         "CE+SCL + kNN vs CE"]  # fmt: skip
    assert names[4].startswith("best learned variant (")
    assert names[4].endswith("vs Baseline (eGeMAPS + LR)")
    assert names[5] == names[4].replace("Baseline (eGeMAPS + LR)", "Encoder probe (LR)")
    for comparison in results["comparisons"]:
        assert comparison["folds"] == ["fold00-Syn01F", "fold02-Syn02F"]
        for metric in ("ua", "wa"):
            expected = [score[(comparison["a"], f)][metric] - score[(comparison["b"], f)][metric]
                        for f in comparison["folds"]]  # fmt: skip
            assert comparison[metric]["differences"] == pytest.approx(expected)
            assert comparison[metric]["test"] == "sign"  # 2 folds: too few for Wilcoxon
        assert "too few folds to tell (2;" in comparison["sentence"]


def test_baseline_fold_is_recomputable_from_cached_features(two_fold_run, small_synthetic_corpus):
    out, _ = two_fold_run
    result_file = out / "baseline" / "fold00-Syn01F" / "fold_result.json"
    result = json.loads(result_file.read_text())
    assert result["training"] == "baseline" and set(result["scores"]) == {"model"}
    assert result["c"] in (0.01, 0.1, 1.0, 10.0) and result["features"] == "eGeMAPSv02"
    assert (out / "baseline" / "features-eGeMAPSv02.npz").is_file()
    # A fold finished before openSMILE (no feature set named) is redone, from the cache.
    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    labels = sorted({u.label for u in utterances})
    old = {key: value for key, value in result.items() if key != "features"}
    result_file.write_text(json.dumps({**old, "scores": {"model": {"ua": 0.0, "wa": 0.0}}}))
    redone = experiments.run_baseline_fold(fold, labels, out)
    assert redone["features"] == "eGeMAPSv02" and redone["scores"] == result["scores"]


def test_json_scores_equal_those_recomputed_from_saved_predictions(two_fold_run):
    out, _ = two_fold_run
    results = json.loads((out / "results.json").read_text())
    for record in results["records"]:
        fold_dir = results["fold_dirs"][f"{record['training']}/{record['fold']}"]
        with open(f"{fold_dir}/predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        truth = [row["label"] for row in rows]
        predicted = [row[record["inference"]] for row in rows]
        assert len(rows) == record["num_test"]
        assert record["wa"] == pytest.approx(weighted_accuracy(truth, predicted))
        assert record["ua"] == pytest.approx(unweighted_accuracy(truth, predicted))


def test_resume_skips_finished_folds(small_synthetic_corpus, tmp_path, monkeypatch):
    utterances = load_synthetic(small_synthetic_corpus)
    folds = speaker_folds(utterances)
    # A cross-validation from before the encoder probe: resuming it adds the probe's rows.
    crossval(utterances, folds[:1], tiny_config(), tmp_path, with_probe=False)
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*/fold_result.json")}
    assert len(finished) == 3  # CE, CE+SCL and the baseline
    trained = []
    real_train_fold = experiments.train_fold
    monkeypatch.setattr(
        experiments, "train_fold", lambda *a, **k: trained.append(a[0]) or real_train_fold(*a, **k)
    )
    results = crossval(utterances, folds[:2], tiny_config(), tmp_path)
    assert len(results) == 8 and len(trained) == 2  # only fold 1's two models were trained
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert sorted(r["fold"] for r in results if r["training"] == "probe") == [
        folds[0].name, folds[1].name]  # fmt: skip
    probes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("probe/*/fold_result.json")}
    again = crossval(utterances, folds[:2], tiny_config(), tmp_path)
    assert len(trained) == 2 and {p: p.stat().st_mtime_ns for p in probes} == probes
    assert [r["scores"] for r in again] == [r["scores"] for r in results]


def test_report_merges_folds_run_as_separate_jobs(small_synthetic_corpus, tmp_path):
    utterances = load_synthetic(small_synthetic_corpus)
    folds = speaker_folds(utterances)
    crossval(utterances, [folds[0]], tiny_config(), tmp_path / "job0")
    crossval(utterances, [folds[3]], tiny_config(), tmp_path / "job3")
    result = runner.invoke(app, ["report", str(tmp_path / "job0"), str(tmp_path / "job3"),
                                 "--out", str(tmp_path / "merged")])  # fmt: skip
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert {r["fold"] for r in merged["records"]} == {"fold00-Syn01F", "fold03-Syn02M"}
    probe_rows = [r for r in merged["records"] if r["training"] == "probe"]
    assert sorted(r["fold"] for r in probe_rows) == ["fold00-Syn01F", "fold03-Syn02M"]
    assert "Encoder probe (LR)" in (tmp_path / "merged" / "report.md").read_text()
    assert (tmp_path / "merged" / "report.md").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="no finished folds"):
        write_report([empty], tmp_path / "x", {})


def test_tables_select_trainings():
    assert [t.name for t in trainings_for(["main"])] == ["ce", "scl"]
    names = [t.name for t in trainings_for(["main", "augment", "lambda"])]
    assert names[:6] == ["ce", "scl", "scl-noise", "scl-volume", "scl-reverb", "scl-pitch"]
    assert "scl-l0.5" in names
    with pytest.raises(Exception, match="unknown table"):
        trainings_for(["table9"])


def test_a_fine_tuning_crossval_probes_the_untuned_encoder(two_fold_run, small_synthetic_corpus):
    """The probe of a fine-tuning run equals a probe fitted directly on the features of the
    encoder training starts from, on training and validation clips only."""
    from emoknn.features import FeatureCache, default_cache_dir
    from emoknn.frozen import build_frozen_model
    from emoknn.probe import fit_fold

    out, output = two_fold_run
    assert "Encoder probe: pretrained tiny features of 72 utterances" in " ".join(output.split())
    utterances = load_synthetic(small_synthetic_corpus)
    fold = speaker_folds(utterances)[0]
    labels = sorted({u.label for u in utterances})
    config = tiny_config()
    cache = FeatureCache(default_cache_dir(out), build_frozen_model(config, labels), 1.0)
    assert cache.missing(cache.original_keys(utterances)) == []  # the crossval filled these
    direct = fit_fold(fold.train, fold.val, fold.test, labels, cache.originals)
    result = json.loads((out / "probe" / fold.name / "fold_result.json").read_text())
    assert (result["layer"], result["c"]) == (direct.probe.layer_, direct.probe.c_)
    assert result["val_ua"] == pytest.approx(direct.probe.val_ua_)
    assert result["training"] == "probe" and result["encoder"] == "tiny"
    with open(out / "probe" / fold.name / "predictions.csv", newline="") as handle:
        predicted = [row["model"] for row in csv.DictReader(handle)]
    assert predicted == [labels[i] for i in direct.predicted]
    record = next(r for r in json.loads((out / "results.json").read_text())["records"]
                  if r["training"] == "probe" and r["fold"] == fold.name)  # fmt: skip
    assert (record["layer"], record["c"], record["inference"]) == (
        direct.probe.layer_, direct.probe.c_, "model")  # fmt: skip

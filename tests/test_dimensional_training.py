"""Dimensional and multi-task models on tiny configs: train (frozen and fine-tuned), fit the
regression kNN, cross-validate, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emoknn.config import make_config
from emoknn.corpora import label_names, load_synthetic
from emoknn.corpora.utterance import Utterance
from emoknn.errors import ConfigError
from emoknn.folds import speaker_folds
from emoknn.frozen import train_frozen_fold
from emoknn.inference import embed_utterances, fit_run_knn
from emoknn.knn import knn_predict_values, tune_knn_regression
from emoknn.metrics import ccc_columns
from emoknn.model_folder import load_datastore, load_knn_settings, load_model, read_model_meta
from emoknn.train import train_fold


@pytest.fixture(scope="module")
def corpus(small_synthetic_corpus):
    utterances = load_synthetic(small_synthetic_corpus)
    return utterances, speaker_folds(utterances), label_names(utterances)


def _frozen_fold_run(corpus, folder: Path, task: str, epochs: int):
    """A frozen tiny run of fold 0 with `task`, its kNN stage fitted: (run folder, fold)."""
    _, folds, labels = corpus
    fold = folds[0]
    run = folder / "run"
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=epochs,
                         cache_views=1, task=task, progress_bar=False)  # fmt: skip
    train_frozen_fold(config, fold.train, fold.val, labels, run, extra_info={"fold": fold.name})
    fit_run_knn(run, fold.train, fold.val, config.max_seconds)
    return run, fold


@pytest.fixture(scope="module")
def frozen_dimensional_run(corpus, tmp_path_factory):
    return _frozen_fold_run(corpus, tmp_path_factory.mktemp("dimensional"), "dimensional", 8)


def test_a_frozen_dimensional_run_stores_its_attributes_and_regression_knn(
    frozen_dimensional_run,
):
    run, fold = frozen_dimensional_run
    model = load_model(run)
    assert model.config.task == "dimensional" and not model.predicts_classes
    assert model.attributes == ["arousal", "valence", "dominance"]
    train_values = np.array([[u.arousal, u.valence, u.dominance] for u in fold.train])
    # Targets are standardised with the training split's statistics (population std).
    np.testing.assert_allclose(model.config.attribute_mean, train_values.mean(axis=0))
    np.testing.assert_allclose(model.config.attribute_std, train_values.std(axis=0))
    store = load_datastore(run, read_model_meta(run).fingerprint)
    assert store.attributes == model.attributes
    assert store.ids == [u.id for u in fold.train + fold.val]
    val_values = np.array([[u.arousal, u.valence, u.dominance] for u in fold.val])
    np.testing.assert_allclose(store.values, np.concatenate([train_values, val_values]))
    tuning = load_knn_settings(run)
    assert tuning.regression is not None and tuning.regression.interpolated.criterion == "ccc"
    # The stored choice is the tuning on the validation speaker against a train-only store.
    from emoknn.knn import Datastore

    train_emb = embed_utterances(model, fold.train, 0.5)
    val_emb = embed_utterances(model, fold.val, 0.5)
    train_store = Datastore(train_emb.embeddings, train_emb.labels, model.labels, train_emb.ids,
                            "fp", values=train_values, attributes=model.attributes)  # fmt: skip
    again = tune_knn_regression(val_emb.embeddings, val_values, val_emb.attributes, train_store,
                                query_ids=val_emb.ids)  # fmt: skip
    assert again.interpolated.k == tuning.regression.interpolated.k
    assert again.interpolated.alpha == tuning.regression.interpolated.alpha
    assert again.interpolated.score == pytest.approx(tuning.regression.interpolated.score, abs=1e-4)
    predicted = knn_predict_values(val_emb.embeddings, val_emb.attributes, train_store,
                                   again.interpolated)  # fmt: skip
    assert ccc_columns(predicted, val_values).mean() == pytest.approx(again.interpolated.score)


def test_a_fine_tuned_multitask_model_trains_and_fits_both_knn_stages(corpus, tmp_path):
    from emoknn.experiments import evaluate_test_speaker

    _, folds, labels = corpus
    fold = folds[1]
    config = make_config("tiny", max_epochs=1, max_seconds=0.5, batch_size=8, task="both",
                         regression_loss="mse", progress_bar=False)  # fmt: skip
    train_fold(config, fold.train, fold.val, labels, tmp_path / "run")
    metrics = (tmp_path / "run" / "logs" / "attempt0" / "metrics.csv").read_text()
    assert "val_ccc" in metrics and "train_regression" in metrics
    fit_run_knn(tmp_path / "run", fold.train, fold.val, 0.5)
    scores = evaluate_test_speaker(tmp_path / "run", fold, 0.5, device="cpu")
    assert set(scores) == {"model", "knn", "interpolated", "dimensional"}
    dimensional = scores["dimensional"]
    assert dimensional["attributes"] == ["arousal", "valence", "dominance"]
    for inference in ("model", "knn", "interpolated"):
        assert -1 <= dimensional[inference]["mean"]["ccc"] <= 1
    rows = (tmp_path / "run" / "attribute_predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + len(fold.test) and rows[0].startswith("id,speaker,arousal_true")


def test_dimensional_tasks_need_ratings_and_fitting_monitors(corpus, tmp_path):
    _, folds, labels = corpus
    fold = folds[0]
    unrated = [Utterance(u.id, u.path, u.label, u.speaker, u.session) for u in fold.train]
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=1, cache_views=1,
                         task="dimensional")  # fmt: skip
    with pytest.raises(ConfigError, match="needs arousal, valence or dominance ratings"):
        train_frozen_fold(config, unrated, fold.val, labels, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="monitor val_ua needs classes"):
        make_config("tiny", task="dimensional", monitor="val_ua")
    with pytest.raises(ConfigError, match="val_ccc needs"):
        make_config("tiny", monitor="val_ccc")
    with pytest.raises(ConfigError, match="task"):
        make_config("tiny", task="regression")


def test_crossval_of_a_dimensional_model_reports_ccc_with_and_without_knn(corpus, tmp_path):
    from emoknn.experiments import crossval
    from emoknn.report import write_report

    utterances, folds, labels = corpus
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=4, cache_views=1,
                         task="dimensional", progress_bar=False)  # fmt: skip
    out = tmp_path / "cv"
    results = crossval(utterances, folds[:2], config, out)
    learned = [r for r in results if r["training"] != "baseline"]
    assert len(learned) == 4 and all(r["scores"] == {} for r in learned)  # no classes
    report = write_report([out], out, {"corpus_name": "synthetic", "labels": labels,
                                       "synthetic": True})  # fmt: skip
    data = json.loads((out / "results.json").read_text())
    assert [r for r in data["records"] if r["training"] != "baseline"] == []
    variants = {r["variant"] for r in data["dimensional_summary"]}
    assert {"Reg", "Reg + kNN", "Reg kNN only", "Reg+SCL + kNN",
            "Baseline (eGeMAPS + ridge)"} <= variants  # fmt: skip
    names = [c["name"] for c in data["dimensional_comparisons"]]
    assert "Reg + kNN vs Reg" in names
    text = report.read_text()
    assert "## Dimensional attributes" in text and "figures/scatter-scl.png" in text
    assert (out / "figures" / "scatter-scl.png").is_file()
    assert (out / "figures" / "scatter-baseline.png").is_file()


@pytest.fixture(scope="module")
def frozen_both_run(corpus, tmp_path_factory):
    return _frozen_fold_run(corpus, tmp_path_factory.mktemp("both"), "both", 3)


@pytest.mark.parametrize("which", ["dimensional", "both"])
def test_dimensional_and_multitask_models_predict_serve_and_export(
    which, frozen_dimensional_run, frozen_both_run, tmp_path
):
    from fastapi.testclient import TestClient

    from emoknn.audio import center_crop, load_audio, max_samples
    from emoknn.export import OnnxEmotionRecognizer, export_onnx
    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    run, fold = frozen_dimensional_run if which == "dimensional" else frozen_both_run
    recognizer = EmotionRecognizer.load(run, device="cpu")
    clip = fold.test[0].path
    cropped = center_crop(load_audio(clip), max_samples(0.5))  # what embed_utterances sees
    long_input = np.concatenate([load_audio(u.path) for u in fold.test[:4]])
    short, long = recognizer.predict([cropped, (long_input, 16000)], window_seconds=0.5)
    model = load_model(run)
    store = load_datastore(run)
    settings = load_knn_settings(run).regression.interpolated
    # By hand: the model's attributes, the kNN's weighted mean, their interpolation.
    embedded = embed_utterances(model, [fold.test[0]], 0.5)
    y_knn = knn_predict_values(embedded.embeddings, embedded.attributes, store, settings)
    expected = dict(zip(model.attributes, y_knn[0], strict=True))
    assert short.attributes == pytest.approx(expected, abs=1e-4)
    assert short.model_attributes == pytest.approx(
        dict(zip(model.attributes, embedded.attributes[0], strict=True)), abs=1e-4
    )
    data = short.to_dict()
    assert {"arousal", "valence", "dominance"} <= set(data) and data["valence"] is not None
    assert len(long.segments) >= 4 and all(s.attributes for s in long.segments)
    if which == "dimensional":
        assert short.label is None and short.probabilities == {}
    else:
        assert short.label in model.labels and short.knn_probabilities is not None
    alone = EmotionRecognizer.load(run, device="cpu", use_knn=False).predict(cropped)[0]
    assert alone.attributes == pytest.approx(alone.model_attributes)
    assert alone.knn_attributes is None

    client = TestClient(create_app(recognizer, max_upload_mb=1.0, max_seconds=20.0))
    health = client.get("/health").json()
    assert health["task"] == which and health["attributes"] == model.attributes
    low, high = health["attribute_axes"]["valence"]
    assert low < model.config.attribute_mean[1] < high
    from_file = recognizer.predict(clip)[0]
    response = client.post("/predict", files={"file": ("a.wav", clip.read_bytes())})
    assert response.status_code == 200
    assert response.json()["arousal"] == pytest.approx(from_file.arousal, abs=1e-6)
    assert response.json()["label"] == from_file.label

    if which == "both":
        return  # the export of the attributes output is the same code (and slow): once is enough
    export_onnx(run, tmp_path / "onnx")
    exported = OnnxEmotionRecognizer.load(tmp_path / "onnx").predict(cropped)[0]
    assert exported.attributes == pytest.approx(short.attributes, abs=1e-4)
    assert exported.label == short.label
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert meta["attributes"] == model.attributes and meta["task"] == which


def test_web_page_draws_a_dimensional_result_on_the_valence_arousal_plane():
    import shutil
    from importlib import resources

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    page_html = resources.files("emoknn.web").joinpath("index.html").read_text(encoding="utf-8")
    rated = {"arousal": 4.0, "valence": 2.0, "dominance": 3.0}
    segment = {"start_s": 0.0, "end_s": 1.0, "label": None, "probabilities": {},
               "no_speech": False, "neighbours": [], "attributes": rated}  # fmt: skip
    result = {"source": "a.wav", "label": None, "probabilities": {}, "duration_s": 1.0,
              "segments": [segment], "no_speech": False, "level_dbfs": -12.0, "neighbours": [],
              "arousal": 5.0, "valence": 1.0, "dominance": 3.0}  # fmt: skip
    health = {"status": "ok", "model": "m", "labels": ["angry", "sad"], "knn": True,
              "max_upload_mb": 50, "max_seconds": 600, "task": "dimensional",
              "attributes": ["arousal", "valence", "dominance"],
              "attribute_axes": {"arousal": [1, 5], "valence": [1, 5], "dominance": [1, 5]},
              "neighbours": {"max": 32, "audio": False}}  # fmt: skip
    with sync_playwright() as started:
        browser = started.chromium.launch(executable_path=chromium, headless=True,
                                          args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        page = browser.new_page()
        page.route("**/health", lambda route: route.fulfill(json=health))
        page.set_content(page_html)
        # What /health gives a dimensional model's page (set here: about:blank cannot fetch it).
        page.evaluate("(a) => { axes = a; }", health["attribute_axes"])
        page.evaluate("(result) => render(result)", result)
        verdict = page.inner_text("#verdict")
        plane_hidden = page.eval_on_selector("#plane", "e => e.hidden")
        circles = page.eval_on_selector_all(
            "#plane-svg circle",
            "cs => cs.map((c) => [Number(c.getAttribute('cx')), Number(c.getAttribute('cy'))])",
        )
        timeline = page.locator("#timeline .segment").all_inner_texts()
        browser.close()
    assert verdict == "arousal 5.00, valence 1.00, dominance 3.00"
    assert plane_hidden is False
    # 320-px plane, 34-px margins: valence 1 → left edge, arousal 5 → top edge; the segment
    # (valence 2, arousal 4) a quarter in from each.
    assert circles[-1] == [34, 34]
    assert circles[0] == pytest.approx([34 + 0.25 * 252, 320 - 34 - 0.75 * 252])
    assert timeline == ["A 4.0 V 2.0"]


def test_command_line_trains_and_predicts_a_dimensional_model(small_synthetic_corpus, tmp_path):
    from typer.testing import CliRunner

    from emoknn.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    trained = runner.invoke(app, [
        "train", "--corpus", str(small_synthetic_corpus), "--preset", "frozen", "--encoder",
        "tiny", "--task", "dimensional", "--epochs", "2", "--max-seconds", "0.5",
        "--cache-views", "1", "--out", str(run), "--no-progress",
    ])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "tuned for mean CCC" in trained.output
    clip = next((small_synthetic_corpus / "wav").rglob("*.wav"))
    shown = runner.invoke(app, ["predict", str(clip), "--model", str(run), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)[0]
    assert result["label"] is None and result["probabilities"] == {}
    assert all(isinstance(result[a], float) for a in ("arousal", "valence", "dominance"))
    table = runner.invoke(app, ["predict", str(clip), "--model", str(run), "--format", "csv"])
    header = "source,start_s,end_s,label,no_speech,arousal,valence,dominance"
    assert table.stdout.splitlines()[0] == header
    bad = runner.invoke(app, ["train", "--corpus", str(small_synthetic_corpus), "--task", "x",
                              "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code != 0 and "--task must be one of" in str(bad.exception)


def test_adapt_a_dimensional_model_to_rated_clips(frozen_dimensional_run,
                                                   small_synthetic_corpus, tmp_path):
    import csv

    import soundfile
    from typer.testing import CliRunner

    from emoknn.adapt import adapt_model, load_labelled_clips, load_source
    from emoknn.audio import center_crop, load_audio, max_samples
    from emoknn.cli import app
    from emoknn.errors import CorpusError
    from emoknn.knn import knn_regress
    from emoknn.metrics import ccc

    run, _ = frozen_dimensional_run
    source = load_source(run)
    attributes = source.model.attributes
    manifest = small_synthetic_corpus / "manifest.csv"
    out = tmp_path / "adapted"
    adapt_model(source, manifest, out, max_folds=3, device="cpu")
    report = json.loads((out / "adapt.json").read_text())
    dimensional = report["dimensional"]
    assert dimensional["attributes"] == attributes and len(dimensional["per_fold"]) == 3
    assert [c["metric"] for c in dimensional["comparisons"]] == ["ccc_mean"] * 3
    assert "| valence CCC |" in (out / "README.md").read_text()  # the model card shows them
    clips, _ = load_labelled_clips(manifest, attributes)
    ratings = np.array([[getattr(u, a) for a in attributes] for u in clips])
    # The model alone, held out, is the model's own output: its pooled CCC by hand.
    alone = embed_utterances(source.model, clips, 0.5).attributes
    pooled = dimensional["summary"]["model"]["pooled"]
    for a, name in enumerate(attributes):
        assert pooled[name] == pytest.approx(ccc(ratings[:, a], alone[:, a]), abs=1e-5)
    # The categorical side: a dimensional model's classifier is never used (kNN alone).
    assert report["model_labels"] == [] and set(report["summary"]) == {"knn"}

    # The folder: the clips' ratings as datastore values, the regression stage tuned for CCC.
    store = load_datastore(out)
    assert store.attributes == attributes
    by_id = {u.id: ratings[i] for i, u in enumerate(clips)}
    np.testing.assert_allclose(store.values, np.array([by_id[i] for i in store.ids]))
    settings = load_knn_settings(out).regression.interpolated
    assert settings.criterion == "ccc"
    assert settings.to_dict() == report["tuning"]["regression"]["interpolated"]
    # `emoknn predict --model OUT --format json` gives the kNN-regression formula's attributes.
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, center_crop(load_audio(clips[0].path), max_samples(0.5)), 16000)
    result = CliRunner().invoke(app, ["predict", str(clip), "--model", str(out), "--format",
                                      "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.output)[0]
    assert predicted["label"] is None  # a dimensional model predicts no class, adapted or not
    model = load_model(out)
    embedded = embed_utterances(model, [Utterance("clip", clip, "x", "s")], 0.5)
    distances, rows = store.search(embedded.embeddings, settings.k)
    y_knn = knn_regress(distances, store.values[rows], settings.temperature)
    expected = settings.alpha * y_knn + (1 - settings.alpha) * embedded.attributes
    for a, name in enumerate(attributes):
        assert predicted[name] == pytest.approx(expected[0, a], abs=1e-4)

    # A clip without a rating the model predicts: one line naming the manifest row, nothing
    # written.
    with manifest.open(newline="") as handle:
        rows_ = list(csv.DictReader(handle))
    rows_[2]["valence"] = ""
    unrated = manifest.parent / "unrated.csv"
    with unrated.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows_[0]))
        writer.writeheader()
        writer.writerows(rows_)
    with pytest.raises(CorpusError, match=r"unrated.csv:4: no valence rating") as refused:
        adapt_model(source, unrated, tmp_path / "never", max_folds=3, device="cpu")
    assert "\n" not in str(refused.value) and not (tmp_path / "never").exists()
    cli = CliRunner().invoke(app, ["adapt", "--model", str(run), "--data", str(manifest), "--out",
                                   str(tmp_path / "cli"), "--folds", "3", "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    assert "held-out CCC per attribute" in cli.output and "valence" in cli.output
    with pytest.raises(ConfigError, match="--label-map does not apply"):
        adapt_model(source, manifest, tmp_path / "never", {"angry": "happy"}, device="cpu")
    assert not (tmp_path / "never").exists()


def test_adapt_a_multitask_model_keeps_its_classes_and_adds_the_regression_stage(
    frozen_both_run, small_synthetic_corpus, tmp_path
):
    from emoknn.adapt import adapt_model, load_source

    run, _ = frozen_both_run
    source = load_source(run)
    result = adapt_model(source, small_synthetic_corpus / "manifest.csv", tmp_path / "both",
                         max_folds=3, device="cpu")  # fmt: skip
    # The class side is the categorical adapt's: the model's labels kept, three inferences.
    assert result.model_labels == source.model.labels
    assert set(result.summary) == {"model", "knn", "interpolated"}
    assert set(result.report["dimensional"]["summary"]) == {"model", "knn", "interpolated"}
    tuning = load_knn_settings(tmp_path / "both")
    assert tuning.interpolated.criterion == "ua"
    assert tuning.regression.interpolated.criterion == "ccc"
    assert load_datastore(tmp_path / "both").attributes == source.model.attributes

"""`emoknn demo --corpus`: a laid-out real corpus (here generated clips under EmoDB's names), its
kind detected or given, the probe and baseline rows printed with what they are; and on the real
EmoDB copy when one is named (`real` and `pretrained` markers)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from emoknn.cli import app
from emoknn.demo import reference_rows

runner = CliRunner()
EMOTIONS = {"W": 220.0, "T": 140.0, "N": 170.0}  # EmoDB letters: anger, sadness, neutral


def fake_emodb(root: Path) -> Path:
    """EmoDB's layout (`wav/SSTTTEV.wav`) with generated clips: 4 speakers × 3 emotions × 2
    texts; each emotion a different pitch, so the classes can be told apart."""
    for number, speaker in enumerate(("03", "08", "09", "10")):
        for letter, hz in EMOTIONS.items():
            for text in ("a01", "a02"):
                rng = np.random.default_rng([number, ord(letter), int(text[1:])])
                t = np.arange(int(0.6 * 16000)) / 16000
                clip = 0.3 * np.sin(2 * np.pi * (hz + 10 * number) * t)
                clip += 0.02 * rng.standard_normal(len(t))
                path = root / "wav" / f"{speaker}{text}{letter}a.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, clip.astype(np.float32), 16000)
    return root


def test_demo_runs_on_a_laid_out_emodb_copy_and_prints_the_reference_rows(tmp_path):
    corpus = fake_emodb(tmp_path / "emodb")
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--corpus", str(corpus), "--encoder", "tiny",
                                 "--folds", "0", "--epochs", "1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"Corpus: {corpus} (emodb)." in output
    assert "Protocol: leave-one-speaker-out, speaker-independent" in output
    assert "Encoder probe (LR): UA " in output and "the bar a learned head has to clear." in output
    assert "Baseline (eGeMAPS + LR): UA " in output
    assert "openSMILE's eGeMAPSv02 functionals, no neural network." in output
    results = json.loads((out / "crossval" / "results.json").read_text())
    assert results["corpus"] == str(corpus.resolve()) and results["kind"] == "emodb"
    assert {r["fold"] for r in results["records"]} == {"fold00-emodb03"}


def test_demo_refuses_an_unknown_kind_and_an_unknown_corpus_before_any_work(tmp_path):
    corpus = fake_emodb(tmp_path / "emodb")
    wrong = runner.invoke(app, ["demo", "--corpus", str(corpus), "--kind", "nope",
                                "--out", str(tmp_path / "a")])  # fmt: skip
    assert wrong.exit_code != 0 and str(wrong.exception).startswith("--kind must be one of")
    unknown = runner.invoke(app, ["demo", "--corpus", "nowhere", "--out", str(tmp_path / "b")])
    assert unknown.exit_code != 0
    assert "neither an existing folder or manifest nor a corpus name" in str(unknown.exception)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_two_speaker_copy_runs_cross_speaker():
    from emoknn.corpora import Utterance
    from emoknn.demo import _scheme_of

    two = [Utterance(f"u{i}", Path("x.wav"), "sad", f"s{i % 2}", None) for i in range(4)]
    three = [Utterance(f"u{i}", Path("x.wav"), "sad", f"s{i % 3}", None) for i in range(6)]
    assert (_scheme_of(two), _scheme_of(three)) == ("cross-speaker", "speaker")


def test_reference_rows_give_figures_and_what_each_row_is():
    results = {"baseline_features": "eGeMAPSv02", "summary": [
        {"variant": "CE", "training": "ce", "ua_mean": 0.8, "ua_std": 0.1, "wa_mean": 0.8,
         "wa_std": 0.1, "folds": 10},
        {"variant": "Encoder probe (LR)", "training": "probe", "ua_mean": 0.884,
         "ua_std": 0.05, "wa_mean": 0.89, "wa_std": 0.04, "folds": 10},
        {"variant": "Baseline (eGeMAPS + LR)", "training": "baseline", "ua_mean": 0.601,
         "ua_std": 0.081, "wa_mean": 0.62, "wa_std": 0.07, "folds": 10},
    ]}  # fmt: skip
    probe_line, baseline_line = reference_rows(results)
    assert probe_line.startswith("Encoder probe (LR): UA 88.4 ± 5.0 %, WA 89.0 ± 4.0 % over 10 "
                                 "folds — a logistic regression on one layer")  # fmt: skip
    assert baseline_line.startswith("Baseline (eGeMAPS + LR): UA 60.1 ± 8.1 %")
    compare = reference_rows({**results, "baseline_features": "ComParE_2016"})[1]
    assert "openSMILE's ComParE_2016 functionals" in compare


@pytest.mark.real
@pytest.mark.pretrained
@pytest.mark.slow
def test_demo_on_the_real_emodb_copy_prints_both_rows(emodb_dir, whisper_base_dir, tmp_path):
    start = time.perf_counter()
    result = runner.invoke(app, ["demo", "--corpus", str(emodb_dir), "--encoder",
                                 str(whisper_base_dir), "--folds", "0,1",
                                 "--out", str(tmp_path / "demo")])  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "(emodb)." in output and "Baseline (eGeMAPS + LR): UA " in output
    assert time.perf_counter() - start < 900

from __future__ import annotations

import subprocess
import sys

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from emoknn.cli import app

runner = CliRunner()


def test_corpus_summarize_table(small_synthetic_corpus):
    result = runner.invoke(app, ["corpus", "summarize", str(small_synthetic_corpus)])
    assert result.exit_code == 0, result.output
    assert "not emotional speech" in result.output
    assert "72 utterances" in result.output
    assert "Syn03M" in result.output and "3 sessions" in result.output


def test_corpus_synth_writes_and_refuses_foreign_folders(tmp_path):
    out = tmp_path / "syn"
    result = runner.invoke(
        app, ["corpus", "synth", str(out), "--sessions", "2", "--per-class", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "Wrote 16 utterances of 4 speakers" in result.output
    assert (out / "manifest.csv").is_file()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emoknn", *args], capture_output=True, text=True, timeout=120
    )


def test_user_errors_are_one_line_without_traceback(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = run_cli("corpus", "synth", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "folder exists and is not empty" in result.stderr
    result = run_cli("corpus", "summarize", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nowhere: not found" in result.stderr
    assert run_cli("corpus", "summarize").returncode == 2  # usage error


def test_train_builds_datastore_and_add_extends_it(small_synthetic_corpus, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--corpus", str(small_synthetic_corpus), "--fold", "Syn02M", "--preset", "tiny",
        "--epochs", "1", "--augment", "none", "--max-seconds", "1.0", "--out", str(run),
        "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "Trained fold03-Syn02M" in result.output and "kNN datastore: 60 utterances" in result.output
    )
    assert (run / "datastore.npz").is_file() and (run / "knn.json").is_file()
    # The test speaker's own clips (Syn02M) are refused; new recordings are added ...
    test_clips = sorted((small_synthetic_corpus / "wav" / "Syn02M").glob("*sad*.wav"))[:2]
    result = runner.invoke(app, ["datastore", "add", str(run), *map(str, test_clips),
                                 "--label", "sad"])  # fmt: skip
    assert result.exit_code == 1 and "test speaker" in str(result.exception)
    rng = np.random.default_rng(0)
    clips = [tmp_path / f"mine{i}.wav" for i in range(2)]
    for clip in clips:
        sf.write(clip, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    result = runner.invoke(app, ["datastore", "add", str(run), *map(str, clips), "--label", "sad"])
    assert result.exit_code == 0, result.output
    assert "the datastore now holds 62" in result.output
    # ... and a rebuild keeps them.
    result = runner.invoke(app, ["datastore", "build", str(run)])
    assert result.exit_code == 0, result.output
    assert "kNN datastore: 62 utterances" in result.output

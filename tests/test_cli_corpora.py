"""The corpus commands: list, download (against a local server), verify, --label-map, and
training on a corpus's official split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from emoknn.cli import app
from test_corpus_download import Server, _ravdess_served, _ravdess_zip

runner = CliRunner()


def _wav(path: Path, seconds: float = 0.3, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)


def test_corpus_list_table():
    result = runner.invoke(app, ["corpus", "list"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for name in ("msp-podcast", "meld", "esd", "tess", "savee", "emovo", "shemo", "casia", "jl"):
        assert name in result.output
    assert "CC BY-NC-SA 4.0" in result.output and "official" in result.output


def test_download_of_a_gated_corpus_says_where_to_register(tmp_path):
    result = runner.invoke(app, ["corpus", "download", "esd", str(tmp_path / "esd")])
    assert result.exit_code == 1
    assert "HLTSingapore/Emotional-Speech-Data" in result.output
    assert "Emotion Speech Dataset/0001/Angry" in result.output
    assert "emoknn corpus verify esd DIR" in result.output
    assert not (tmp_path / "esd").exists()


def test_download_needs_the_licence_accepted_then_verifies(monkeypatch, tmp_path):
    server = Server()
    try:
        _ravdess_served(server, monkeypatch, _ravdess_zip())
        dest = tmp_path / "ravdess"
        refused = runner.invoke(app, ["corpus", "download", "ravdess", str(dest)])
        assert refused.exit_code == 1 and "--accept-licence" in str(refused.exception or "")
        assert not dest.exists() and not server.log
        result = runner.invoke(
            app, ["corpus", "download", "ravdess", str(dest), "--accept-licence"]
        )
        assert result.exit_code == 0, result.output
        assert "CC BY-NC-SA 4.0" in result.output
        assert "24 utterances" in result.output and "matches its published size" in result.output
        verify = runner.invoke(app, ["corpus", "verify", "ravdess", str(dest)])
        assert verify.exit_code == 0, verify.output
        assert "downloaded by emoknn" in verify.output and "every check passed" in verify.output
    finally:
        server.close()


def test_cli_errors_are_one_line(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emoknn", *args], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    result = run("corpus", "download", "ravdess", str(tmp_path / "r"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "accept it with --accept-licence" in result.stderr
    result = run("corpus", "verify", "savee", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a folder" in result.stdout
    result = run("corpus", "download", "nope", str(tmp_path / "x"))
    assert result.returncode == 1 and "NAME must be one of" in result.stderr


def test_verify_fails_on_a_wrong_count(tmp_path):
    for speaker in ("DC", "JE"):
        _wav(tmp_path / "AudioData" / speaker / "a01.wav")
    result = runner.invoke(app, ["corpus", "verify", "savee", str(tmp_path)])
    assert result.exit_code == 1
    assert "2 utterances, expected 480" in result.output


def test_summarize_with_kind_and_label_map(tmp_path):
    for i, stem in enumerate(("OAF_back_angry", "OAF_back_ps", "YAF_bite_sad", "YAF_bite_happy")):
        _wav(tmp_path / "tess" / f"{stem}.wav", seed=i)
    result = runner.invoke(app, ["corpus", "summarize", str(tmp_path / "tess"), "--label-map",
                                 "four"], env={"COLUMNS": "160"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 utterances" in result.output and "surprised" not in result.output
    result = runner.invoke(app, ["corpus", "summarize", str(tmp_path / "tess"), "--label-map",
                                 str(tmp_path / "missing.json")])  # fmt: skip
    assert result.exit_code == 1


def test_train_on_the_official_split_records_protocol_and_label_map(tmp_path, monkeypatch):
    root = tmp_path / "Emotion Speech Dataset"
    number = 0
    for speaker in ("0001", "0011"):
        for emotion in ("Angry", "Happy", "Neutral", "Sad", "Surprise"):
            for split in ("train", "train", "evaluation", "test"):
                number += 1
                _wav(root / speaker / emotion / split / f"{speaker}_{number:06d}.wav", seed=number)
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--corpus", str(tmp_path), "--kind", "esd", "--scheme", "official",
        "--label-map", "four", "--preset", "tiny", "--epochs", "1", "--augment", "none",
        "--max-seconds", "0.5", "--out", str(run), "--no-progress", "--no-knn",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Trained fold00-test" in result.output
    info = json.loads((run / "train_config.json").read_text())
    assert (info["scheme"], info["label_map"], info["fold"]) == ("official", "four", "fold00-test")
    assert (info["test_speaker"], info["val_speaker"]) == ("test", "evaluation")
    assert info["labels"] == ["angry", "happy", "neutral", "sad"]
    from emoknn.inference import fold_of_run

    fold = fold_of_run(run)  # rebuilt with the recorded label map and scheme
    assert fold.name == "fold00-test" and len(fold.train) == 16 and len(fold.test) == 8


@pytest.mark.slow
def test_demo_on_a_real_corpus_folder(tmp_path):
    for speaker in ("f1", "f2", "f3", "m1"):
        for i, emotion in enumerate(("neu", "rab", "tri", "gio")):
            for sentence in ("b1", "b2"):
                _wav(tmp_path / "EMOVO" / speaker / f"{emotion}-{speaker}-{sentence}.wav", seed=i)
    result = subprocess.run(
        [sys.executable, "-m", "emoknn", "demo", "--corpus", str(tmp_path / "EMOVO"), "--encoder",
         "tiny", "--folds", "0", "--epochs", "1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(emovo)" in result.stdout and "Demo finished" in result.stdout
    assert "leave-one-speaker-out" in (tmp_path / "out" / "crossval" / "report.md").read_text()


def test_licence_prompt_at_a_terminal(monkeypatch, tmp_path):
    from emoknn.cli import corpus as corpus_cli

    server = Server()
    try:
        _ravdess_served(server, monkeypatch, _ravdess_zip())
        monkeypatch.setattr(corpus_cli, "interactive", lambda: True)
        declined = runner.invoke(app, ["corpus", "download", "ravdess", str(tmp_path / "a")],
                                 input="n\n")  # fmt: skip
        assert declined.exit_code == 1 and "Do you accept these terms?" in declined.output
        assert not server.log and not (tmp_path / "a").exists()
        accepted = runner.invoke(app, ["corpus", "download", "ravdess", str(tmp_path / "b")],
                                 input="y\n")  # fmt: skip
        assert accepted.exit_code == 0, accepted.output
        assert (tmp_path / "b" / "emoknn-download.json").is_file()
    finally:
        server.close()

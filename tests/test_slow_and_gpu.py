"""Long and GPU-only checks, outside the default run: `pytest -m slow`, `pytest -m gpu`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from emoknn.config import make_config
from emoknn.corpora import FOUR_CLASSES, load_synthetic
from emoknn.folds import speaker_folds
from emoknn.train import train_fold


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's main job, as a user runs it with no encoder at hand (the tiny fallback)."""
    result = subprocess.run([sys.executable, "-m", "emoknn", "demo", "--out", str(tmp_path),
                             "--encoder", str(tmp_path / "no-encoder-here")],
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = " ".join(result.stdout.split())
    assert "not emotional speech" in output
    assert "Encoder: tiny (random weights, the fallback)" in output
    results = json.loads((tmp_path / "crossval" / "results.json").read_text())
    assert all(row["folds"] == 10 for row in results["summary"])
    assert {"baseline", "probe"} <= {row["training"] for row in results["summary"]}
    assert "the encoder probe (Encoder probe (LR) UA" in output
    assert all(c["sentence"] in output for c in results["comparisons"])
    best = max(row["ua_mean"] for row in results["summary"])
    assert best > 0.35  # above the 25 % of chance on 4 balanced classes
    assert "emoknn predict " in output and "emoknn serve --model " in output


@pytest.mark.slow
@pytest.mark.pretrained
def test_demo_with_whisper_base(tmp_path, whisper_base_dir):
    result = subprocess.run([sys.executable, "-m", "emoknn", "demo", "--out", str(tmp_path),
                             "--encoder", str(whisper_base_dir)],
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Encoder: {whisper_base_dir} (pretrained" in " ".join(result.stdout.split())
    results = json.loads((tmp_path / "crossval" / "results.json").read_text())
    assert all(row["folds"] == 10 for row in results["summary"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_training_on_gpu(small_synthetic_corpus, tmp_path):
    fold = speaker_folds(load_synthetic(small_synthetic_corpus))[0]
    config = make_config("tiny", max_epochs=1, accelerator="gpu", precision="bf16-mixed",
                         max_seconds=1.0, progress_bar=False)  # fmt: skip
    result = train_fold(config, fold.train, fold.val, list(FOUR_CLASSES), tmp_path)
    assert result.last_checkpoint.is_file()

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from emoknn.config import make_config
from emoknn.corpora import FOUR_CLASSES, load_synthetic
from emoknn.errors import ConfigError, EmoknnError
from emoknn.folds import speaker_folds
from emoknn.model_folder import load_checkpoint_model, load_model
from emoknn.train import read_metrics, train_fold

warnings.filterwarnings("ignore", ".*does not have many workers.*")


@pytest.fixture(scope="module")
def fold(small_synthetic_corpus):
    return speaker_folds(load_synthetic(small_synthetic_corpus))[0]


def quick_config(**overrides):
    settings = dict(
        max_epochs=2,
        augment="volume",
        progress_bar=False,
        batch_size=8,
        max_seconds=1.0,
        learning_rate=3e-3,
    )
    settings.update(overrides)
    return make_config("tiny", **settings)


def validation_losses(run_dir):
    return [float(row["val_loss"]) for row in read_metrics(run_dir) if row.get("val_loss")]


def test_smoke_training_reduces_validation_loss(fold, tmp_path):
    result = train_fold(
        quick_config(max_epochs=6, augment="mixed"),
        fold.train,
        fold.val,
        list(FOUR_CLASSES),
        tmp_path,
    )
    losses = validation_losses(tmp_path)
    assert len(losses) == 6
    assert min(losses[1:]) < losses[0]
    assert result.best_checkpoint.name == "best.ckpt" and result.best_checkpoint.is_file()
    assert result.best_score == pytest.approx(min(losses), rel=1e-5)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))  # atomic writes leave nothing behind
    stored = json.loads((tmp_path / "train_config.json").read_text())
    assert stored["train_config"]["augment"] == "mixed" and stored["labels"] == list(FOUR_CLASSES)


def test_model_file_rebuilds_the_model_alone(fold, tmp_path):
    result = train_fold(
        quick_config(max_epochs=1), fold.train, fold.val, list(FOUR_CLASSES), tmp_path
    )
    state = torch.load(result.best_checkpoint, weights_only=True)  # tensors and plain data only
    model_config = state["hyper_parameters"]["model_config"]
    assert model_config["labels"] == list(FOUR_CLASSES)
    assert model_config["encoder_config"]["hidden_size"] == 64
    model = load_model(tmp_path)
    from_checkpoint, max_seconds = load_checkpoint_model(result.best_checkpoint)
    assert max_seconds == 1.0
    waveforms = torch.randn(2, 8000) * 0.1
    lengths = torch.tensor([8000, 8000])
    again = load_model(tmp_path)
    torch.testing.assert_close(model(waveforms, lengths).logits, again(waveforms, lengths).logits)
    torch.testing.assert_close(
        model(waveforms, lengths).logits, from_checkpoint(waveforms, lengths).logits
    )
    with pytest.raises(EmoknnError, match="checkpoint not found"):
        load_checkpoint_model(tmp_path / "missing.ckpt")


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(fold, tmp_path):
    labels = list(FOUR_CLASSES)
    straight = train_fold(quick_config(max_epochs=3), fold.train, fold.val, labels, tmp_path / "a")
    train_fold(quick_config(max_epochs=1), fold.train, fold.val, labels, tmp_path / "b")
    with pytest.raises(EmoknnError, match="already holds a training run"):
        train_fold(quick_config(max_epochs=3), fold.train, fold.val, labels, tmp_path / "b")
    with pytest.raises(ConfigError, match="cannot resume with different settings"):
        train_fold(
            quick_config(max_epochs=3, learning_rate=1.0),
            fold.train,
            fold.val,
            labels,
            tmp_path / "b",
            resume=True,
        )
    resumed = train_fold(
        quick_config(max_epochs=3), fold.train, fold.val, labels, tmp_path / "b", resume=True
    )
    assert resumed.epochs == straight.epochs == 3
    assert len(validation_losses(tmp_path / "b")) == 3  # history of both attempts kept
    weights_a = torch.load(straight.last_checkpoint, weights_only=True)["state_dict"]
    weights_b = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    for name, value in weights_a.items():
        torch.testing.assert_close(weights_b[name], value, rtol=0, atol=1e-6, msg=name)


def test_ddp_on_cpu_with_two_processes_runs_a_step(small_synthetic_corpus, tmp_path):
    """The user's path: `emoknn train --devices 2` (Lightning relaunches itself per process)."""
    command = [
        sys.executable,
        "-m",
        "emoknn",
        "train",
        "--corpus",
        str(small_synthetic_corpus),
        "--fold",
        "0",
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--augment",
        "volume",
        "--batch-size",
        "8",
        "--max-seconds",
        "1.0",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size: 2" in result.stderr or "distributed_backend=gloo" in result.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert validation_losses(tmp_path / "run")


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        make_config("huge")
    with pytest.raises(ConfigError) as error:
        make_config("paper", contrastive_weight=2.0)
    # One line naming the setting, never a dump of the whole config.
    assert str(error.value) == "contrastive_weight must be a finite number in [0, 1], got 2.0"
    with pytest.raises(ConfigError, match="unknown training setting"):
        make_config("paper", learning_rat=1.0)
    paper = make_config("paper")
    assert (
        paper.batch_size,
        paper.max_seconds,
        paper.learning_rate,
        paper.lr_patience,
        paper.max_epochs,
        paper.contrastive_weight,
        paper.temperature,
    ) == (12, 7.5, 1e-4, 20, 150, 0.1, 0.07)


def test_tensorboard_without_the_package_is_a_clear_error(fold, tmp_path, monkeypatch):
    import lightning.pytorch as pl

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("Neither `tensorboard` nor `tensorboardX` is available.")

    monkeypatch.setattr(pl.loggers, "TensorBoardLogger", missing)
    with pytest.raises(EmoknnError, match="pip install tensorboard"):
        train_fold(
            quick_config(tensorboard=True), fold.train, fold.val, list(FOUR_CLASSES), tmp_path
        )

"""Nothing a user made is lost or silently mixed up: resume, crossval, datastore, temp files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emoknn.cli import app
from emoknn.config import make_config
from emoknn.corpora import FOUR_CLASSES, generate_synthetic_corpus, load_synthetic
from emoknn.errors import ConfigError, EmoknnError
from emoknn.experiments import crossval
from emoknn.files import write_text_atomic
from emoknn.folds import speaker_folds
from emoknn.model_folder import load_datastore
from emoknn.train import read_metrics, train_fold

warnings.filterwarnings("ignore", ".*does not have many workers.*")
runner = CliRunner()


def quick_config(**overrides):
    settings = dict(max_epochs=2, augment="volume", progress_bar=False, batch_size=8,
                    max_seconds=1.0, learning_rate=3e-3)  # fmt: skip
    return make_config("tiny", **{**settings, **overrides})


@pytest.fixture(scope="module")
def folds(small_synthetic_corpus):
    return speaker_folds(load_synthetic(small_synthetic_corpus))


def validation_losses(run_dir):
    return [float(row["val_loss"]) for row in read_metrics(run_dir) if row.get("val_loss")]


# ── item 5: resume into a moved or copied folder ────────────────────────────────────────────────


def test_resume_in_a_moved_folder_keeps_the_best_checkpoint_and_score(folds, tmp_path):
    fold = folds[0]
    labels = list(FOUR_CLASSES)
    first = train_fold(quick_config(max_epochs=2), fold.train, fold.val, labels, tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")
    # Nothing left to train: the resumed run must still know its best score (it printed nan).
    again = train_fold(quick_config(max_epochs=2), fold.train, fold.val, labels, tmp_path / "b",
                       resume=True)  # fmt: skip
    assert again.best_score == pytest.approx(first.best_score)
    # Training on: best.ckpt is replaced only by a better epoch.
    more = train_fold(quick_config(max_epochs=4), fold.train, fold.val, labels, tmp_path / "b",
                      resume=True)  # fmt: skip
    losses = validation_losses(tmp_path / "b")
    assert len(losses) == 4 and more.best_score == pytest.approx(min(losses), rel=1e-5)
    best = torch.load(more.best_checkpoint, weights_only=True)
    assert best["epoch"] == int(np.argmin(losses))
    assert str(tmp_path / "a") not in json.dumps(
        {k: v for k, v in best["callbacks"].items()}, default=str
    )


def test_resume_from_a_broken_checkpoint_says_which_file(folds, tmp_path):
    fold, labels, run = folds[0], list(FOUR_CLASSES), tmp_path / "run"
    train_fold(quick_config(max_epochs=1), fold.train, fold.val, labels, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(EmoknnError, match=r"last\.ckpt: not a readable checkpoint"):
        train_fold(quick_config(max_epochs=2), fold.train, fold.val, labels, run, resume=True)


def test_training_that_cannot_start_writes_nothing(folds, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Exception, match="accelerator"):
        train_fold(quick_config(accelerator="no-such-device"), folds[0].train, folds[0].val,
                   list(FOUR_CLASSES), run)  # fmt: skip
    assert not (run / "train_config.json").exists()


# ── item 6: --resume with another fold or corpus ────────────────────────────────────────────────


def test_resume_refuses_another_fold_or_corpus_before_writing(folds, tmp_path):
    labels = list(FOUR_CLASSES)
    run = tmp_path / "run"
    train_fold(quick_config(max_epochs=1), folds[0].train, folds[0].val, labels, run,
               extra_info={"fold": folds[0].name})  # fmt: skip
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="other utterances"):
        train_fold(quick_config(max_epochs=2), folds[1].train, folds[1].val, labels, run,
                   resume=True, extra_info={"fold": folds[1].name})  # fmt: skip
    with pytest.raises(ConfigError, match="other utterances"):  # same fold name, other data
        train_fold(quick_config(max_epochs=2), folds[0].train[:-1], folds[0].val, labels, run,
                   resume=True, extra_info={"fold": folds[0].name})  # fmt: skip
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before


# ── item 7: crossval into an existing folder ────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def finished_crossval(small_synthetic_corpus, tmp_path_factory):
    utterances = load_synthetic(small_synthetic_corpus)
    out = tmp_path_factory.mktemp("crossval")
    config = quick_config(max_epochs=1)
    crossval(utterances, speaker_folds(utterances)[:1], config, out, tables=["main"])
    return out, utterances, config


def test_crossval_refuses_other_settings_and_bad_tables_before_writing(finished_crossval,
                                                                       tmp_path):  # fmt: skip
    source, utterances, config = finished_crossval
    out = tmp_path / "cv"
    shutil.copytree(source, out)
    experiment = (out / "experiment.json").read_text()
    fold = speaker_folds(utterances)[:1]
    with pytest.raises(ConfigError, match=r"other settings.*max_epochs"):
        crossval(utterances, fold, quick_config(max_epochs=5), out, tables=["main"])
    with pytest.raises(ConfigError, match="unknown table"):
        crossval(utterances, fold, config, out, tables=["foo"])
    with pytest.raises(ConfigError, match="criterion"):
        crossval(utterances, fold, config, out, tables=["main"], criterion="f1")
    assert (out / "experiment.json").read_text() == experiment
    # The same settings continue it (nothing to do), and more tables may be added.
    # baseline, probe, CE, SCL
    assert len(crossval(utterances, fold, config, out, tables=["main"])) == 4


def test_crossval_cli_refuses_a_preset_over_another(finished_crossval, small_synthetic_corpus,
                                                    tmp_path):  # fmt: skip
    source, _, _ = finished_crossval
    out = tmp_path / "cv"
    shutil.copytree(source, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = runner.invoke(app, ["crossval", "--corpus", str(small_synthetic_corpus), "--out",
                                 str(out), "--preset", "tiny", "--folds", "0"])  # fmt: skip
    assert result.exit_code == 1 and "other settings" in str(result.exception)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_crossval_refuses_another_corpus(finished_crossval, tmp_path):
    source, _, config = finished_crossval
    out = tmp_path / "cv"
    shutil.copytree(source, out)
    other = generate_synthetic_corpus(
        tmp_path / "other", seed=1, num_sessions=3, utterances_per_class=2, max_seconds=1.0
    )
    with pytest.raises(ConfigError, match="other corpus"):
        crossval(other, speaker_folds(other)[:1], config, out, tables=["main"])


# ── item 8: datastore build / add ───────────────────────────────────────────────────────────────


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_datastore_build_keeps_added_entries(run, small_synthetic_corpus, tmp_path):
    clip = tmp_path / "mine.wav"
    import soundfile as sf

    rng = np.random.default_rng(3)
    sf.write(clip, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    result = runner.invoke(app, ["datastore", "add", str(run), str(clip), "--label", "sad"])
    assert result.exit_code == 0, result.output
    size = len(load_datastore(run))
    result = runner.invoke(app, ["datastore", "build", str(run)])
    assert result.exit_code == 0, result.output
    rebuilt = load_datastore(run)
    assert len(rebuilt) == size and any(i.startswith("added/") for i in rebuilt.ids)


def test_datastore_add_refuses_test_speaker_and_duplicates(run, folds):
    before = (run / "datastore.npz").read_bytes()
    test_clip = folds[0].test[0]
    result = runner.invoke(app, ["datastore", "add", str(run), str(test_clip.path), "--label",
                                 test_clip.label])  # fmt: skip
    assert result.exit_code == 1 and "test speaker" in str(result.exception)
    train_clip = folds[0].train[0]
    result = runner.invoke(app, ["datastore", "add", str(run), str(train_clip.path), "--label",
                                 train_clip.label])  # fmt: skip
    assert result.exit_code == 1 and "already in the datastore" in str(result.exception)
    other = folds[1].test[0]  # a speaker of this run's training data? no: fold 1's test speaker
    result = runner.invoke(app, ["datastore", "add", str(run), str(other.path), str(other.path),
                                 "--label", other.label])  # fmt: skip
    assert result.exit_code == 1 and "twice" in str(result.exception)
    assert (run / "datastore.npz").read_bytes() == before


def test_datastore_build_refuses_another_corpus_with_the_same_fold_name(run, tmp_path):
    other = tmp_path / "other"
    generate_synthetic_corpus(other, seed=5, num_sessions=3, utterances_per_class=2,
                              min_seconds=0.5, max_seconds=1.0)  # fmt: skip
    before = (run / "datastore.npz").read_bytes()
    result = runner.invoke(app, ["datastore", "build", str(run), "--corpus", str(other)])
    assert result.exit_code == 1 and "other train utterances" in str(result.exception)
    assert (run / "datastore.npz").read_bytes() == before


# ── item 18: a kill during an atomic write leaves no temporary file behind for good ─────────────


def test_a_killed_write_leaves_no_temporary_file_after_the_next_write(tmp_path):
    target = tmp_path / "last.ckpt"
    code = (
        "import os, sys\nfrom emoknn.files import atomic_path\n"
        f"with atomic_path({str(target)!r}) as t:\n"
        "    t.write_bytes(b'')\n    os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert [p.name for p in tmp_path.iterdir()] != []  # the killed process left its temporary
    write_text_atomic(target, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]

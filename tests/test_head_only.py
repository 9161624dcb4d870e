"""Head-only frozen runs: the head in the run folder, the encoder once in a store (or at its
source), resolved by fingerprint; pack and push make self-contained copies; the fill's precision
and thread settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from emoknn.cli import app
from emoknn.config import make_config
from emoknn.corpora import label_names, load_synthetic
from emoknn.errors import ConfigError
from emoknn.folds import speaker_folds
from emoknn.frozen import build_frozen_model, train_frozen_fold
from emoknn.knn import model_fingerprint, module_fingerprint
from emoknn.model import tiny_encoder_config
from emoknn.model_folder import (
    ENCODER_STORE_DIR,
    MODEL_FILE,
    EncoderNotFoundError,
    load_model,
    pack_model,
    read_model_meta,
    save_model,
)
from emoknn.predict import EmotionRecognizer

runner = CliRunner()


def tensor_names(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def probabilities(model_dir: Path, clips: list[Path], use_knn: bool = True) -> np.ndarray:
    recognizer = EmotionRecognizer.load(model_dir, device="cpu", use_knn=use_knn)
    labels = recognizer.labels
    return np.array([[p.probabilities[label] for label in labels]
                     for p in recognizer.predict(clips)])  # fmt: skip


def one_line_failure(capsys, *args: str) -> str:
    """`emoknn ARGS` fails with status 1 and one line on stderr, no traceback."""
    from emoknn.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def crossval_out(small_synthetic_corpus, tmp_path_factory) -> Path:
    """A frozen cross-validation of two folds (CE and CE+SCL) with the tiny encoder."""
    from emoknn.experiments import crossval

    out = tmp_path_factory.mktemp("headonly") / "cv"
    utterances = load_synthetic(small_synthetic_corpus)
    folds = speaker_folds(utterances)[:2]
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=3, cache_views=1)
    crossval(utterances, folds, config, out, with_baseline=False)
    return out


def test_crossval_folds_hold_the_head_and_share_one_encoder(crossval_out):
    folds = sorted(path.parent for path in crossval_out.glob("*/fold*/model.json"))
    assert len(folds) == 4  # 2 trainings (CE, CE+SCL) × 2 folds; the probe row keeps no model
    entries = list((crossval_out / ENCODER_STORE_DIR).iterdir())
    assert len(entries) == 1  # one encoder, written once for all of them
    encoder_file = entries[0] / "encoder.safetensors"
    encoder_bytes = encoder_file.stat().st_size
    for fold in folds:
        names = tensor_names(fold / MODEL_FILE)
        assert names and not any(name.startswith("encoder.") for name in names)
        meta = read_model_meta(fold)
        assert meta.head_only and meta.encoder.fingerprint == entries[0].name
        # The head's own floats (everything but the encoder), and a small header.
        head = load_model(fold).state_dict()
        floats = sum(t.numel() for n, t in head.items() if not n.startswith("encoder."))
        assert (fold / MODEL_FILE).stat().st_size < floats * 4 + 8_000
        stored = json.loads((fold / "model.json").read_text())
        assert stored["version"] == 2 and stored["encoder_reference"]["source"] == "tiny"
    assert encoder_bytes > 400_000  # the tiny encoder's 0.1 M floats are in the store alone


def test_a_fold_predicts_as_its_pack_and_the_pack_travels(crossval_out, small_synthetic_corpus,
                                                          tmp_path, capsys):  # fmt: skip
    fold = sorted(crossval_out.glob("scl/fold*"))[0]
    clips = [u.path for u in load_synthetic(small_synthetic_corpus)[:5]]
    result = runner.invoke(app, ["pack", str(fold), str(tmp_path / "packed")])
    assert result.exit_code == 0, result.output
    packed = tmp_path / "packed"
    assert read_model_meta(packed).fingerprint == read_model_meta(fold).fingerprint
    assert any(name.startswith("encoder.") for name in tensor_names(packed / MODEL_FILE))
    np.testing.assert_allclose(probabilities(packed, clips), probabilities(fold, clips),
                               atol=1e-6, rtol=0)  # fmt: skip
    # The pack alone, far from any store, loads and predicts the same.
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(packed, moved)
    np.testing.assert_allclose(probabilities(moved, clips), probabilities(fold, clips), atol=1e-6)
    # pack refuses to write into a folder that holds something, and leaves it as it was.
    line = one_line_failure(capsys, "pack", str(fold), str(moved))
    assert "not empty" in line and (moved / MODEL_FILE).is_file()


def test_a_fold_without_its_store_says_which_encoder_it_needs(crossval_out, small_synthetic_corpus,
                                                              tmp_path, capsys):  # fmt: skip
    fold = sorted(crossval_out.glob("ce/fold*"))[0]
    alone = tmp_path / "alone"
    shutil.copytree(fold, alone)
    fingerprint = read_model_meta(alone).encoder.fingerprint
    clip = str(load_synthetic(small_synthetic_corpus)[0].path)
    line = one_line_failure(capsys, "predict", clip, "--model", str(alone))
    assert fingerprint[:16] in line and "tiny" in line and "emoknn pack" in line
    with pytest.raises(EncoderNotFoundError):
        load_model(alone)
    # The output folder's store beside it (copied along) makes it whole again.
    shutil.copytree(crossval_out / ENCODER_STORE_DIR, tmp_path / ENCODER_STORE_DIR)
    assert load_model(alone).embedding_size == load_model(fold).embedding_size


@pytest.fixture
def encoder_folder(tmp_path) -> Path:
    """A tiny wav2vec2 saved as users save a pretrained encoder (save_pretrained)."""
    from transformers import AutoConfig, AutoModel

    settings = {k: v for k, v in tiny_encoder_config().items() if k != "model_type"}
    torch.manual_seed(3)
    folder = tmp_path / "my-encoder"
    AutoModel.from_config(AutoConfig.for_model("wav2vec2", **settings)).save_pretrained(folder)
    return folder


def train_on_folder(encoder: Path, corpus: Path, run: Path) -> Path:
    utterances = load_synthetic(corpus)
    fold = speaker_folds(utterances)[0]
    config = make_config("frozen", encoder=str(encoder), max_seconds=0.5, max_epochs=2,
                         cache_views=1)  # fmt: skip
    train_frozen_fold(config, fold.train, fold.val, label_names(utterances), run)
    return run


def test_an_encoder_folder_is_found_checked_and_packed(encoder_folder, small_synthetic_corpus,
                                                       tmp_path, capsys):  # fmt: skip
    run = train_on_folder(encoder_folder, small_synthetic_corpus, tmp_path / "runs" / "a")
    reference = read_model_meta(run).encoder
    assert reference.source == str(encoder_folder.resolve()) and reference.revision is None
    shutil.rmtree(tmp_path / "runs" / ENCODER_STORE_DIR)  # only the source folder is left
    clips = [u.path for u in load_synthetic(small_synthetic_corpus)[:3]]
    expected = probabilities(run, clips, use_knn=False)
    pack_model(run, tmp_path / "packed")
    # The encoder folder moves away: the head-only run cannot load, its pack can.
    encoder_folder.rename(tmp_path / "moved-encoder")
    line = one_line_failure(capsys, "predict", str(clips[0]), "--model", str(run), "--no-knn")
    assert "folder not found" in line and reference.fingerprint[:16] in line
    np.testing.assert_allclose(probabilities(tmp_path / "packed", clips, use_knn=False), expected,
                               atol=1e-6)  # fmt: skip
    # Another encoder at the source path: refused, naming the weights it found.
    from transformers import AutoModel

    other = AutoModel.from_pretrained(tmp_path / "moved-encoder")
    with torch.no_grad():
        other.encoder.layers[0].attention.q_proj.weight.add_(0.01)
    other.save_pretrained(encoder_folder)
    line = one_line_failure(capsys, "predict", str(clips[0]), "--model", str(run), "--no-knn")
    assert "holds other weights" in line and reference.fingerprint[:16] in line


def test_a_full_weight_frozen_folder_still_loads(small_synthetic_corpus, tmp_path):
    """Frozen runs of earlier versions hold the whole model (format version 1)."""
    utterances = load_synthetic(small_synthetic_corpus)
    config = make_config("frozen", encoder="tiny", max_seconds=0.5)
    model = build_frozen_model(config, label_names(utterances))
    save_model(tmp_path / "old", model, 0.5)
    assert json.loads((tmp_path / "old" / "model.json").read_text())["version"] == 1
    loaded = load_model(tmp_path / "old")
    assert model_fingerprint(loaded.state_dict()) == model_fingerprint(model.state_dict())
    clip = str(utterances[0].path)
    result = runner.invoke(app, ["predict", clip, "--model", str(tmp_path / "old"), "--no-knn"])
    assert result.exit_code == 0, result.output


def test_push_uploads_a_self_contained_copy(crossval_out, monkeypatch):
    import huggingface_hub

    from emoknn.hub import push_model

    uploaded = {}

    class Api:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            return f"https://huggingface.co/{repo_id}"

        def create_commit(self, repo_id, operations, **kwargs):
            files = {op.path_in_repo: op.path_or_fileobj for op in operations}
            uploaded["meta"] = json.loads(files["model.json"])
            uploaded["names"] = tensor_names(Path(files[MODEL_FILE]))  # read while it exists

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    fold = sorted(crossval_out.glob("scl/fold*"))[1]
    push_model(fold, "me/frozen", licence="cc-by-4.0")
    # The tiny encoder has no Hub id to stand for it: the upload carries its weights.
    assert uploaded["meta"]["version"] == 1 and "encoder_reference" not in uploaded["meta"]
    assert any(name.startswith("encoder.") for name in uploaded["names"])
    assert read_model_meta(fold).head_only  # the run folder itself is unchanged


def test_module_fingerprint_is_cached_until_a_weight_changes():
    from emoknn.model import EmotionModel, ModelConfig

    torch.manual_seed(0)
    encoder = EmotionModel(ModelConfig(encoder="tiny")).encoder
    first = module_fingerprint(encoder)
    assert first == model_fingerprint(encoder.state_dict()) == module_fingerprint(encoder)
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)  # in place: the version counter moves
    assert module_fingerprint(encoder) == model_fingerprint(encoder.state_dict()) != first


def test_bf16_entries_have_their_own_keys(small_synthetic_corpus, tmp_path):
    from emoknn.augment import make_augmentation
    from emoknn.features import FeatureCache, ViewSpec, bf16_supported
    from emoknn.model import EmotionModel, ModelConfig

    utterances = load_synthetic(small_synthetic_corpus)[:6]
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(encoder="tiny")).eval()
    spec = ViewSpec(make_augmentation("noise"), 0, 1)
    caches = {p: FeatureCache(tmp_path, model, 0.5, p) for p in ("fp32", "bf16-views", "bf16")}
    originals = {p: c.original_keys(utterances) for p, c in caches.items()}
    views = {p: c.view_keys(utterances, spec)[0] for p, c in caches.items()}
    assert originals["fp32"] == originals["bf16-views"] != originals["bf16"]
    assert views["fp32"] != views["bf16-views"] == views["bf16"]
    with pytest.raises(ConfigError, match="cache precision"):
        FeatureCache(tmp_path, model, 0.5, "fp16")
    if not bf16_supported("cpu"):
        with pytest.raises(ConfigError, match="no native bfloat16"):
            caches["bf16"].fill(utterances, spec)
        return
    fp32 = caches["fp32"].views(utterances, spec).astype(np.float32)
    bf16 = caches["bf16-views"].views(utterances, spec).astype(np.float32)
    assert 0 < np.abs(fp32 - bf16).max() < 0.1 * np.abs(fp32).max()
    np.testing.assert_array_equal(caches["bf16-views"].originals(utterances),
                                  caches["fp32"].originals(utterances))  # fmt: skip


def test_fill_threads_follow_the_environment(monkeypatch):
    from emoknn.features import available_cores, fill_threads

    monkeypatch.delenv("EMOKNN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.2, 0.2))  # an idle machine: every core
    assert fill_threads() == available_cores() >= 1
    monkeypatch.setattr("os.getloadavg", lambda: (40.0, 40.0, 40.0))  # a busy one: one thread
    assert fill_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert fill_threads() == 3
    monkeypatch.setenv("EMOKNN_THREADS", "2")
    assert fill_threads() == 2
    monkeypatch.setenv("EMOKNN_THREADS", "many")
    with pytest.raises(ConfigError, match="EMOKNN_THREADS"):
        fill_threads()


def test_adapt_reads_a_head_only_fold_and_writes_a_whole_model(
    crossval_out, small_synthetic_corpus, tmp_path
):
    from emoknn.adapt import adapt_model, load_source

    fold = sorted(crossval_out.glob("scl/fold*"))[0]
    labels = read_model_meta(fold).labels
    out = tmp_path / "adapted"
    adapt_model(load_source(fold), small_synthetic_corpus / "manifest.csv", out,
                {label: label for label in labels}, device="cpu", max_folds=3)  # fmt: skip
    assert not read_model_meta(out).head_only  # an adapted model travels whole
    clips = [u.path for u in load_synthetic(small_synthetic_corpus)[:2]]
    assert probabilities(out, clips).shape == (2, len(labels))

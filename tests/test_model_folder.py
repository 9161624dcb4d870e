"""The model folder: safe model file, strict validation of every file, legacy conversion."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emoknn.cli import app
from emoknn.errors import ModelFolderError
from emoknn.model import EmotionModel, ModelConfig
from emoknn.model_folder import (
    DATASTORE_FILE,
    KNN_SETTINGS_FILE,
    MODEL_FILE,
    MODEL_META_FILE,
    RUN_CONFIG_FILE,
    convert_checkpoint,
    fingerprint_of,
    load_datastore,
    load_model,
    read_checkpoint,
    read_model_meta,
    read_run_config,
    save_model,
)
from emoknn.predict import EmotionRecognizer, load_recognizer

runner = CliRunner()


class RunsCode:
    """Unpickling this touches a file: the stand-in for a crafted checkpoint's payload."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def legacy(run: pathlib.Path) -> pathlib.Path:
    """The folder as an earlier emoknn left it: checkpoints only, no model file."""
    (run / MODEL_FILE).unlink()
    (run / MODEL_META_FILE).unlink()
    return run


def plant_code(run: pathlib.Path, marker: pathlib.Path) -> None:
    """Replace best.ckpt with one that runs code when unpickled (its model state kept)."""
    path = run / "checkpoints" / "best.ckpt"
    state = torch.load(path, weights_only=True)
    state["payload"] = RunsCode(marker)
    torch.save(state, path)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(encoder="tiny", labels=["a", "b", "c"])).eval()
    meta = save_model(tmp_path, model, max_seconds=2.5)
    assert meta.fingerprint == fingerprint_of(model) and meta.max_seconds == 2.5
    loaded = load_model(tmp_path)
    assert fingerprint_of(loaded) == meta.fingerprint and loaded.labels == ["a", "b", "c"]
    stored = json.loads((tmp_path / MODEL_META_FILE).read_text())
    assert stored["format"] == "emoknn-model" and stored["version"] == 1
    assert stored["model_config"]["encoder_config"]["hidden_size"] == 64  # no download needed
    waveforms, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    torch.testing.assert_close(model(waveforms, lengths).logits, loaded(waveforms, lengths).logits)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_crafted_checkpoint_never_runs_on_any_loading_path(run, tmp_path):
    marker = tmp_path / "code-ran"
    plant_code(run, marker)
    # A folder with a model file: loading never reads the checkpoint.
    EmotionRecognizer.load(run, device="cpu")
    load_recognizer(run, device="cpu")
    result = runner.invoke(app, ["datastore", "build", str(run)])
    assert result.exit_code == 0, result.output
    # A folder of an earlier version: every loading path refuses and says what to do.
    legacy(run)
    for attempt in (
        lambda: EmotionRecognizer.load(run, device="cpu"),
        lambda: EmotionRecognizer.load(run / "checkpoints" / "best.ckpt", device="cpu"),
        lambda: read_checkpoint(run / "checkpoints" / "best.ckpt"),
        lambda: convert_checkpoint(run),
    ):
        with pytest.raises(ModelFolderError):
            attempt()
    for command in (
        ["predict", str(run), "--model", str(run)],
        ["export", "--model", str(run)],
        ["datastore", "build", str(run)],
        ["datastore", "add", str(run), str(run), "--label", "sad"],
        ["convert", str(run)],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, (command, result.output)
        assert "Traceback" not in result.output
    assert not marker.exists()
    # Only the explicit, warned conversion unpickles it.
    result = runner.invoke(app, ["convert", str(run), "--trust-pickle"])
    assert result.exit_code == 0 and "warning" in result.stderr
    assert marker.exists()


def test_legacy_folder_says_to_convert_and_converts_safely(run):
    expected = fingerprint_of(load_model(run))
    legacy(run)
    with pytest.raises(ModelFolderError, match="emoknn convert"):
        EmotionRecognizer.load(run, device="cpu")
    result = runner.invoke(app, ["convert", str(run)])  # plain tensors: no unpickling needed
    assert result.exit_code == 0, result.output
    assert read_model_meta(run).fingerprint == expected
    assert EmotionRecognizer.load(run, device="cpu").store is not None  # the datastore still fits


def test_predict_with_a_checkpoint_uses_the_runs_crop_and_says_model_only(run, trained_run):
    clip = sorted(pathlib.Path(read_run_config(run)["corpus"]).rglob("*.wav"))[0]
    recognizer = EmotionRecognizer.load(run / "checkpoints" / "best.ckpt", device="cpu")
    assert recognizer.store is None and recognizer.max_seconds == 1.0  # the run's crop, not 7.5
    result = runner.invoke(app, ["predict", str(clip), "--model",
                                 str(run / "checkpoints" / "best.ckpt")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model only" in result.stdout and "model + kNN" not in result.stdout


def corrupt(run: pathlib.Path, name: str, how: str) -> None:
    path = run / name
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00\x01 not what emoknn wrote")
    else:  # an edit of one JSON field
        key, value = how.split("=", 1)
        data = json.loads(path.read_text())
        target = data
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        if value == "DELETE":
            del target[last]
        else:
            target[last] = json.loads(value)
        path.write_text(json.dumps(data))


CORRUPTIONS = [
    (MODEL_FILE, "missing", "model.json describes it"),
    (MODEL_FILE, "empty", "empty"),
    (MODEL_FILE, "truncated", "safetensors"),
    (MODEL_FILE, "garbage", "safetensors"),
    (MODEL_META_FILE, "missing", "model.json: not found"),
    (MODEL_META_FILE, "empty", "empty"),
    (MODEL_META_FILE, "truncated", "not valid JSON"),
    (MODEL_META_FILE, 'format="other"', "'format'"),
    (MODEL_META_FILE, "version=99", "newer"),
    (MODEL_META_FILE, "max_seconds=-1", "max_seconds"),
    (MODEL_META_FILE, 'max_seconds="7"', "max_seconds"),
    (MODEL_META_FILE, 'labels=["a"]', "labels"),
    (MODEL_META_FILE, 'fingerprint="abc"', "fingerprint"),
    (MODEL_META_FILE, 'fingerprint="' + "0" * 64 + '"', "fingerprint differs"),
    (MODEL_META_FILE, "model_config.encoder_config=null", "encoder_config"),
    (MODEL_META_FILE, "model_config.encoder_config.hidden_size=32", "tensor"),
    (MODEL_META_FILE, 'model_config.head_dropout="x"', "head_dropout"),
    (MODEL_META_FILE, "model_config.surprise=1", "unknown field"),
    (MODEL_META_FILE, 'model_config.labels=["x","y","z","w"]', "labels differ"),
    (MODEL_META_FILE, 'model_config.encoder_config.model_type="bert"', "cannot build"),
    (DATASTORE_FILE, "missing", "no kNN datastore"),
    (DATASTORE_FILE, "empty", "empty"),
    (DATASTORE_FILE, "truncated", "datastore.npz: not a readable datastore"),
    (DATASTORE_FILE, "garbage", "datastore.npz: not a readable datastore"),
    (KNN_SETTINGS_FILE, "missing", "knn.json: not found"),
    (KNN_SETTINGS_FILE, "empty", "empty"),
    (KNN_SETTINGS_FILE, "truncated", "knn.json: not valid JSON"),
    (KNN_SETTINGS_FILE, "interpolated.alpha=1.5", "alpha must lie in"),
    (KNN_SETTINGS_FILE, "interpolated.k=0", "k must be"),
    (KNN_SETTINGS_FILE, 'interpolated.k="5"', "'interpolated.k' must be int"),
    (KNN_SETTINGS_FILE, "interpolated.temperature=-1", "temperature"),
    (KNN_SETTINGS_FILE, "knn_only=DELETE", "'knn_only' must be a JSON object"),
    (KNN_SETTINGS_FILE, 'interpolated.criterion="f1"', "criterion"),
]


@pytest.mark.parametrize(("name", "how", "message"), CORRUPTIONS,
                         ids=[f"{n}-{h}" for n, h, _ in CORRUPTIONS])  # fmt: skip
def test_every_broken_file_gives_one_line_naming_it(run, name, how, message):
    corrupt(run, name, how)
    with pytest.raises(ModelFolderError, match=message) as caught:
        EmotionRecognizer.load(run, device="cpu")
    assert "\n" not in str(caught.value) and str(run) in str(caught.value)
    result = runner.invoke(app, ["export", "--model", str(run)] if name == MODEL_FILE
                           else ["predict", str(run), "--model", str(run)])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_datastore_contents_are_checked(run):
    meta = read_model_meta(run)
    path = run / DATASTORE_FILE
    with np.load(path) as stored:
        arrays = dict(stored)

    def write(**changes):
        np.savez(path, **{**arrays, **changes})

    with_nan = arrays["keys"].copy()
    with_nan[0, 0] = np.nan
    cases = [
        ({"keys": arrays["keys"][:, :0]}, "keys must be"),
        ({"keys": with_nan}, "NaN"),
        ({"labels": arrays["labels"] + 10}, "labels must lie in"),
        ({"labels": arrays["labels"][:-1]}, "labels must be"),
        ({"ids": np.array(["same"] * len(arrays["ids"]))}, "ids repeat"),
        ({"label_names": np.array(["x", "y", "z", "w"])}, "not the model's"),
        ({"index_type": np.array("annoy")}, "index_type"),
        ({"ids": np.array([{"a": 1}] * len(arrays["ids"]), dtype=object)}, "not a readable"),
    ]
    for changes, message in cases:
        write(**changes)
        with pytest.raises(ModelFolderError, match=message):
            load_datastore(run, meta.fingerprint, meta.labels)
    np.savez(path, **{k: v for k, v in arrays.items() if k != "fingerprint"})
    with pytest.raises(ModelFolderError, match="missing fingerprint"):
        load_datastore(run)


def test_run_config_is_checked(run):
    path = run / RUN_CONFIG_FILE
    data = json.loads(path.read_text())
    for broken, message in [
        ("", "empty"),
        ("[1, 2]", "JSON object"),
        (json.dumps({**data, "train_config": 3}), "'train_config' must be dict"),
        (json.dumps({**data, "fold": 0}), "'fold' must be str"),
        (json.dumps({**data, "labels": "angry"}), "labels"),
    ]:
        path.write_text(broken)
        with pytest.raises(ModelFolderError, match=message):
            read_run_config(run)
        result = runner.invoke(app, ["datastore", "build", str(run)])
        assert result.exit_code == 1 and "Traceback" not in result.output

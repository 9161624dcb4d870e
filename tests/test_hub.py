"""Hub repo ids as models, and `emoknn push`, against a monkeypatched huggingface_hub (the Hub
cannot be reached from CI): what emoknn asks of it, and what it does with each answer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from typer.testing import CliRunner

from emoknn.cli import app
from emoknn.errors import EmoknnError
from emoknn.hub import DOWNLOAD_PATTERNS, UPLOAD_PATTERNS, push_model, resolve_model
from emoknn.model_folder import load_datastore
from emoknn.predict import EmotionRecognizer, load_recognizer
from tiny_hf import save_tiny_classifier


def fake_snapshots(monkeypatch, repos: dict[str, Path]) -> list[dict]:
    """snapshot_download that serves `repos` from local folders, copying only the files that
    match allow_patterns (as the Hub would); repos it does not hold are 'offline'."""
    import fnmatch

    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append({"repo_id": repo_id, "allow_patterns": list(allow_patterns or [])})
        if repo_id not in repos:
            raise LocalEntryNotFoundError("Got: ConnectError: cannot reach the Hub")
        cache = repos[repo_id].parent / f"cache--{repo_id.replace('/', '--')}"
        cache.mkdir(exist_ok=True)
        for path in repos[repo_id].iterdir():
            if any(fnmatch.fnmatch(path.name, pattern) for pattern in allow_patterns or ["*"]):
                shutil.copy(path, cache / path.name)
        return str(cache)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_a_hub_classifier_by_repo_id(tmp_path, monkeypatch):
    folder = save_tiny_classifier("hubert", tmp_path / "published")
    (folder / "pytorch_model.bin").write_bytes(b"not fetched: safetensors are there")
    calls = fake_snapshots(monkeypatch, {"someone/ser-hubert": folder})
    recognizer = load_recognizer("someone/ser-hubert", device="cpu")
    assert recognizer.labels == ["neu", "hap", "ang", "sad"] and recognizer.store is None
    assert calls == [{"repo_id": "someone/ser-hubert", "allow_patterns": DOWNLOAD_PATTERNS}]
    assert not (Path(resolve_model("someone/ser-hubert")) / "pytorch_model.bin").exists()
    # Offline and not cached: one clear line, at once.
    with pytest.raises(EmoknnError, match="cannot be reached"):
        EmotionRecognizer.load("someone/not-cached")
    # A local path is never taken for a repo id.
    assert resolve_model(folder) == folder


def test_a_bin_only_classifier_fetches_its_bin(tmp_path, monkeypatch):
    folder = save_tiny_classifier("wav2vec2", tmp_path / "old")
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    calls = fake_snapshots(monkeypatch, {"someone/old-ser": folder})
    recognizer = load_recognizer("someone/old-ser", device="cpu")
    assert recognizer.labels == ["neu", "hap", "ang", "sad"]
    assert calls[-1]["allow_patterns"] == [*DOWNLOAD_PATTERNS, "*.bin"]


class FakeApi:
    """HfApi's create_repo / upload_folder as the Hub answers them, recorded."""

    calls: ClassVar[list] = []
    fail_upload = False

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None):
        FakeApi.calls.append(("create_repo", repo_id, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message, repo_type):
        if FakeApi.fail_upload:
            import httpx

            request = httpx.Request("POST", "https://huggingface.co/api/models/x/commit/main")
            raise HfHubHTTPError("403 Forbidden: you cannot write to this repo",
                                 response=httpx.Response(403, request=request))  # fmt: skip
        FakeApi.calls.append(("upload_folder", repo_id, folder_path, list(allow_patterns)))

    def create_commit(self, repo_id, operations, commit_message, repo_type):
        if FakeApi.fail_upload:
            self.upload_folder(repo_id, None, [], commit_message, repo_type)
        FakeApi.uploaded = {
            op.path_in_repo: op.path_or_fileobj if isinstance(op.path_or_fileobj, bytes)
            else Path(op.path_or_fileobj).read_bytes() for op in operations
        }  # fmt: skip
        FakeApi.calls.append(("create_commit", repo_id, sorted(FakeApi.uploaded)))


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls, FakeApi.fail_upload = [], False
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_push_uploads_a_valid_folder(tmp_path, fake_api, trained_run):
    folder = tmp_path / "model"
    shutil.copytree(trained_run, folder)
    url = push_model(folder, "me/my-ser", private=True, licence="cc-by-4.0")
    card = (folder / "README.md").read_text()  # generated from the run's own files
    assert "license: cc-by-4.0" in card and "angry, happy, neutral, sad" in card
    assert url == "https://huggingface.co/me/my-ser"
    sent = sorted(name for name in UPLOAD_PATTERNS if (folder / name).is_file())
    assert fake_api.calls == [
        ("create_repo", "me/my-ser", True, True),
        ("create_commit", "me/my-ser", sent),
    ]
    assert fake_api.uploaded["README.md"] == card.encode()
    # The datastore goes up with its entries' source files by name, not by local path.
    import io

    with np.load(io.BytesIO(fake_api.uploaded["datastore.npz"])) as sent_store:
        names = sent_store["sources"].tolist()
    local = load_datastore(folder).sources
    assert all(Path(s).is_absolute() for s in local)
    assert names == [Path(s).name for s in local] and not any("/" in n for n in names)
    # A failed upload is an error, never a success.
    fake_api.fail_upload = True
    with pytest.raises(EmoknnError, match=r"push to me/my-ser failed .*403"):
        push_model(folder, "me/my-ser")
    result = CliRunner().invoke(app, ["push", str(folder), "me/my-ser"])
    assert isinstance(result.exception, EmoknnError) and "403" in str(result.exception)
    fake_api.fail_upload = False
    result = CliRunner().invoke(app, ["push", str(folder), "me/my-ser"])
    assert result.exit_code == 0 and "https://huggingface.co/me/my-ser" in result.output


def test_push_refuses_a_broken_folder(tmp_path, fake_api, trained_run):
    folder = tmp_path / "model"
    shutil.copytree(trained_run, folder)
    (folder / "train_config.json").unlink()  # not a training run: no card can be generated
    with pytest.raises(EmoknnError, match="no model card"):
        push_model(folder, "me/my-ser")
    (folder / "README.md").write_text("# my model\n")
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(EmoknnError, match="safetensors"):
        push_model(folder, "me/my-ser")
    with pytest.raises(EmoknnError, match="owner/name"):
        push_model(folder, "not a repo id")
    assert fake_api.calls == []

"""Model folders on the Hugging Face Hub: a repo id works wherever a model folder does.

`resolve_model` turns a repo id into a local folder, `push_model` uploads a model folder:

    resolve_model("owner/name")   → the local snapshot folder (huggingface_hub's cache), downloaded
                                    once; a local path is returned as it is
    push_model(folder, "owner/name")  → uploads a model folder's files (validated first)

A model repo is either an emoknn model folder (model.safetensors + model.json, datastore.npz,
knn.json, README.md) or a Hugging Face audio classifier (config.json + weights), which
`emoknn.hf_import` imports. Only the files those need are downloaded. Without network, a repo
already in the cache is used as it is; otherwise the error says so at once (huggingface_hub does
not retry a failed connection for snapshots).

Where a pretrained *encoder* comes from (local folder, cache, Hub, offline rules) is the lower
module `emoknn.sources`; this one needs the model folder and its card, so it sits at the top.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from emoknn.card import run_card, without_local_paths
from emoknn.errors import EmoknnError
from emoknn.files import write_text_atomic
from emoknn.model_folder import (
    load_knn,
    load_model,
    model_from_source,
    pack_model,
    read_model_meta,
)
from emoknn.sources import is_repo_id, looks_like_repo_id

# What a model needs from a repo: emoknn folders and HF classifiers alike (no pickles: `.bin`
# weights are fetched only for a classifier that has no safetensors, see `resolve_model`).
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.npz", "README.md"]
# What `push` uploads from a model folder (checkpoints, logs and exports stay home).
UPLOAD_PATTERNS = ["model.safetensors", "model.json", "datastore.npz", "knn.json", "README.md",
                   "adapt.json", "train_config.json"]  # fmt: skip


def resolve_model(model: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder for `model`: the path itself, or the Hub snapshot of repo id `model`."""
    path = Path(model)
    if path.exists() or not looks_like_repo_id(str(model)):
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = str(model)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision,
                                        allow_patterns=DOWNLOAD_PATTERNS))  # fmt: skip
        if (folder / "config.json").is_file() and not any(folder.glob("*.safetensors")):
            # A classifier published before safetensors: transformers reads its .bin with
            # torch.load(weights_only=True), which refuses anything but tensors.
            patterns = [*DOWNLOAD_PATTERNS, "*.bin"]
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except LocalEntryNotFoundError as error:
        raise EmoknnError(
            f"{repo_id}: not a local folder, and the Hugging Face Hub cannot be reached to "
            "download it (no network, and not in the local cache); give a local folder, or "
            "download it where there is network"
        ) from error
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise EmoknnError(f"{repo_id}: no such model on the Hugging Face Hub (or it is private: "
                          "log in with `hf auth login`)") from error  # fmt: skip
    except (HfHubHTTPError, OSError) as error:
        raise EmoknnError(f"{repo_id}: download failed ({str(error).splitlines()[0]})") from error
    return folder


def push_model(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    licence: str | None = None,
) -> str:
    """Upload a model folder to the Hub repo `repo_id` (created if absent); return its URL.

    The folder is validated first (model, datastore and settings load and agree), so a broken
    model is never published; only the files in UPLOAD_PATTERNS are sent. A folder needs a model
    card (README.md): `adapt` writes one, and for a training run one is generated from its files
    (with `licence` in it) when it has none.

    A head-only folder (a frozen run) is published as it is only when its encoder reference is a
    Hub id with a revision whose weights were checked to be the ones it needs (loaded from the Hub
    at that revision, fingerprint compared): whoever loads it gets the encoder from the Hub.
    Otherwise a self-contained copy (`emoknn.model_folder.pack_model`) is uploaded.
    """
    folder = Path(folder)
    if "/" not in repo_id or not is_repo_id(repo_id):
        raise EmoknnError(f"{repo_id!r}: a Hub repo id is owner/name")
    meta = read_model_meta(folder)
    model = load_model(folder)
    if (folder / "datastore.npz").is_file():
        load_knn(folder, meta.fingerprint, meta.labels, model.embedding_size)
    card_file = folder / "README.md"
    new_card = None  # a card to write into the folder once the upload has succeeded
    if card_file.is_file():
        card = card_file.read_text(encoding="utf-8")
        if licence is not None:
            card = with_licence(card, licence)
            new_card = card if card != card_file.read_text(encoding="utf-8") else None
    elif (folder / "train_config.json").is_file():
        # A training run: its card is generated from its own files (emoknn.card.run_card).
        card = new_card = run_card(folder, licence)
    else:
        raise EmoknnError(
            f"{folder}: no model card (README.md); describe the model (encoder, data, "
            "protocol, measured WA/UA, licence) before publishing it"
        )
    message = commit_message or f"Upload emoknn model from {folder.name}"
    if meta.encoder is None or hub_encoder_verified(folder):
        url = _upload(folder, repo_id, private, token, card, message)
    else:  # a head-only folder whose encoder the Hub cannot stand for: upload a packed copy
        with tempfile.TemporaryDirectory(prefix=".emoknn-push-", dir=folder.parent) as staging:
            packed = Path(staging) / folder.name
            pack_model(folder, packed)
            url = _upload(packed, repo_id, private, token, card, message)
    if new_card is not None:
        with contextlib.suppress(OSError):  # uploaded; the folder just keeps its old card
            write_text_atomic(card_file, new_card)
    return str(url)


def hub_encoder_verified(folder: str | os.PathLike) -> bool:
    """Whether a head-only folder's encoder reference can stand for its weights on the Hub: a Hub
    id with a revision, from which the weights with the recorded fingerprint load."""
    folder = Path(folder)
    meta = read_model_meta(folder)
    reference = meta.encoder
    if reference is None or reference.revision is None:
        return False
    if not looks_like_repo_id(reference.source):
        return False
    model, _ = model_from_source(meta, folder / "model.json")
    return model is not None


def with_licence(card: str, licence: str) -> str:
    """A model card whose front matter says `license: <licence>` (added or replaced)."""
    lines = card.split("\n")
    if lines and lines[0].strip() == "---" and "---" in (line.strip() for line in lines[1:]):
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
        for i in range(1, end):
            if lines[i].startswith("license:"):
                lines[i] = f"license: {licence}"
                return "\n".join(lines)
        return "\n".join([lines[0], f"license: {licence}", *lines[1:]])
    return "\n".join(["---", f"license: {licence}", "---", "", *lines])


def _datastore_without_local_paths(path: Path) -> bytes | str:
    """datastore.npz as published: the audio file each entry came from (`sources`, shown beside
    a prediction's neighbours) by its file name only, never a path on this machine. The file
    itself when it records none."""
    import io

    import numpy as np

    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    if "sources" not in arrays:
        return str(path)
    arrays["sources"] = np.array([Path(s).name for s in arrays["sources"].tolist()], dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _upload(folder: Path, repo_id: str, private: bool, token: str | None, card: str,
            message: str) -> str:  # fmt: skip
    """One commit of the folder's publishable files, `card` as README.md, and JSON files without
    local paths (emoknn.card.without_local_paths); one line on any failure."""
    import json

    from huggingface_hub import CommitOperationAdd, HfApi

    operations = [CommitOperationAdd("README.md", card.encode("utf-8"))]
    for name in UPLOAD_PATTERNS:
        path = folder / name
        if name == "README.md" or not path.is_file():
            continue
        if name.endswith(".json"):
            data = without_local_paths(json.loads(path.read_text(encoding="utf-8")))
            content: bytes | str = (json.dumps(data, indent=2) + "\n").encode("utf-8")
        elif name == "datastore.npz":
            content = _datastore_without_local_paths(path)
        else:
            content = str(path)
        operations.append(CommitOperationAdd(name, content))
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.create_commit(repo_id=repo_id, operations=operations, commit_message=message,
                          repo_type="model")  # fmt: skip
    except Exception as error:  # network, offline mode, authentication, HTTP: all one line
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EmoknnError(f"push to {repo_id} failed ({type(error).__name__}: {text}); "
                          "nothing was written to the model folder") from error  # fmt: skip
    return str(url)

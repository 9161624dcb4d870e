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

import os
from pathlib import Path

from emoknn.card import run_card
from emoknn.errors import EmoknnError
from emoknn.files import write_text_atomic
from emoknn.model_folder import load_knn, load_model, read_model_meta
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
    """
    folder = Path(folder)
    if "/" not in repo_id or not is_repo_id(repo_id):
        raise EmoknnError(f"{repo_id!r}: a Hub repo id is owner/name")
    meta = read_model_meta(folder)
    model = load_model(folder)
    if (folder / "datastore.npz").is_file():
        load_knn(folder, meta.fingerprint, meta.labels, model.embedding_size)
    if not (folder / "README.md").is_file():
        if not (folder / "train_config.json").is_file():
            raise EmoknnError(
                f"{folder}: no model card (README.md); describe the model (encoder, data, "
                "protocol, measured WA/UA, licence) before publishing it"
            )
        # A training run: its card is generated from its own files (emoknn.card.run_card).
        write_text_atomic(folder / "README.md", run_card(folder, licence))
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), allow_patterns=UPLOAD_PATTERNS,
            commit_message=commit_message or f"Upload emoknn model from {folder.name}",
            repo_type="model",
        )  # fmt: skip
    except (HfHubHTTPError, OSError) as error:
        raise EmoknnError(f"push to {repo_id} failed: {str(error).splitlines()[0]}") from error
    return str(url)

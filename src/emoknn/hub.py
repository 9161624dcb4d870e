"""Where a pretrained encoder comes from: a local folder, the Hugging Face cache, or the Hub.

`from_pretrained(name)` on its own is slow to fail without network: huggingface_hub retries each
request 5 times with back-off (1 + 2 + 4 + 8 + 8 s, ~23 s per file, ~77 s for the files emoknn
asks for), then says it could not connect. And a local folder that does not exist is taken for a
hub name, so a typo in a path reads as a Hub error. `pretrained_kwargs` decides first, in seconds:

- `name` is an existing folder → loaded from it (it must hold config.json);
- `name` looks like a path (`./x`, `/x`, `~/x`, or not a valid repo id) but is no folder →
  "folder not found";
- a hub name with `HF_HUB_OFFLINE=1` → the local HF cache only (`local_files_only=True`);
- a hub name otherwise → one request to the Hub endpoint (`HF_ENDPOINT`, proxies from the
  environment) with a `HUB_TIMEOUT_SECONDS` timeout. Reachable: the normal download/update path.
  Unreachable: the cached copy if there is one (`local_files_only=True`, no waiting on
  retries), else a one-line error saying how to work offline.

Nothing is faked: with network the real Hub is used exactly as transformers would.

Models, too: a Hub repo id works wherever a model folder does (`resolve_model`), and
`push_model` uploads a model folder:

    resolve_model("owner/name")   → the local snapshot folder (huggingface_hub's cache), downloaded
                                    once; a local path is returned as it is
    push_model(folder, "owner/name")  → uploads a model folder's files (validated first)

A model repo is either an emoknn model folder (model.safetensors + model.json, datastore.npz,
knn.json, README.md) or a Hugging Face audio classifier (config.json + weights), which
`emoknn.hf_import` imports. Only the files those need are downloaded. Without network, a repo
already in the cache is used as it is; otherwise the error says so at once (huggingface_hub does
not retry a failed connection for snapshots).
"""

from __future__ import annotations

import functools
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from emoknn.errors import ConfigError, EmoknnError

HUB_TIMEOUT_SECONDS = 5.0
OFFLINE_HINT = (
    "without network, save the model on a machine that has it "
    "(`AutoModel.from_pretrained(NAME).save_pretrained(DIR)`), copy DIR here and pass it as the "
    "encoder; or fill the Hugging Face cache there, copy it, and set HF_HUB_OFFLINE=1"
)


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or "\\" in name
        or name.endswith(("/", os.sep))
        or not _is_repo_id(name)
    )


def _in_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _offline_mode() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=4)
def hub_unreachable(endpoint: str | None = None) -> str | None:
    """Why the Hub cannot be reached (e.g. "Name or service not known"), or None if it answered.

    One HEAD request with a short timeout, through the environment's proxies. Any HTTP answer,
    even an error status, means reachable. Only failures that mean "no route" count as
    unreachable (no DNS, refused, timed out, no route to host); anything else (say, an SSL
    interception the stdlib does not trust) is left for huggingface_hub to judge.
    """
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    request = urllib.request.Request(endpoint.rstrip("/") + "/api/models", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_SECONDS):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as error:
        reason = error.reason
    except (TimeoutError, OSError) as error:
        reason = error
    if isinstance(reason, ssl.SSLError) or not isinstance(reason, OSError):
        return None
    # socket.gaierror (no DNS), ConnectionRefusedError, TimeoutError, no route to host, ...
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def pretrained_kwargs(name: str) -> dict[str, Any]:
    """Extra `from_pretrained` arguments for `name` ({} or local_files_only), or ConfigError
    saying in one line why it cannot be loaded (see the module docstring)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"encoder must be a hub name or a folder, got {name!r}", "encoder")
    what = f"cannot load the encoder {name!r}"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{what}: the folder has no config.json (expected a model saved with "
                "save_pretrained)"
            )
        return {}
    if path.exists():
        raise ConfigError(f"{what}: it is a file; expected a model folder or a hub name")
    if _looks_like_path(name):
        raise ConfigError(f"{what}: folder not found")
    cached = _in_cache(name)
    if _offline_mode():
        if cached:
            return {"local_files_only": True}
        raise ConfigError(
            f"{what}: no local folder of that name, not in the Hugging Face cache, and "
            f"HF_HUB_OFFLINE is set; {OFFLINE_HINT}"
        )
    why = hub_unreachable()
    if why is None:
        return {}
    if cached:
        return {"local_files_only": True}
    raise ConfigError(
        f"{what}: no local folder of that name, not in the Hugging Face cache, and the Hub is "
        f"unreachable ({why}); {OFFLINE_HINT}"
    )


def check_encoder_source(name: str) -> None:
    """Raise ConfigError now if `name` cannot be loaded (the tiny encoder always can)."""
    if name != "tiny":
        pretrained_kwargs(name)


# What a model needs from a repo: emoknn folders and HF classifiers alike (no pickles: `.bin`
# weights are fetched only for a classifier that has no safetensors, see `resolve_model`).
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.npz", "README.md"]
# What `push` uploads from a model folder (checkpoints, logs and exports stay home).
UPLOAD_PATTERNS = ["model.safetensors", "model.json", "datastore.npz", "knn.json", "README.md",
                   "adapt.json", "train_config.json"]  # fmt: skip


def looks_like_repo_id(name: str) -> bool:
    """`owner/name`, as the Hub spells repo ids, and not a path (existing or path-like)."""
    return "/" in name and not Path(name).exists() and not _looks_like_path(name)


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
    from emoknn.model_folder import load_knn, load_model, read_model_meta

    folder = Path(folder)
    if "/" not in repo_id or not _is_repo_id(repo_id):
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
        from emoknn.card import run_card
        from emoknn.files import write_text_atomic

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

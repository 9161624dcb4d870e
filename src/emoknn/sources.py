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

Model folders on the Hub (download, push, cards) are `emoknn.hub`, which builds on this module.
"""

from __future__ import annotations

import functools
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from emoknn.errors import ConfigError

HUB_TIMEOUT_SECONDS = 5.0
OFFLINE_HINT = (
    "without network, save the model on a machine that has it "
    "(`AutoModel.from_pretrained(NAME).save_pretrained(DIR)`), copy DIR here and pass it as the "
    "encoder; or fill the Hugging Face cache there, copy it, and set HF_HUB_OFFLINE=1"
)


def is_repo_id(name: str) -> bool:
    """`name` is a valid Hub repo id (as huggingface_hub validates it)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def looks_like_path(name: str) -> bool:
    """`name` reads as a file-system path rather than a Hub repo id."""
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or "\\" in name
        or name.endswith(("/", os.sep))
        or not is_repo_id(name)
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
    if looks_like_path(name):
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


def looks_like_repo_id(name: str) -> bool:
    """`owner/name`, as the Hub spells repo ids, and not a path (existing or path-like)."""
    return "/" in name and not Path(name).exists() and not looks_like_path(name)

"""One way of publishing paths: what leaves this machine (a packed or exported folder meant to be
shared, a pushed model, a served response) names a local file by its last component, never by
where it lay here (`/home/you/corpora/...`).

`published_json(data)`: JSON values with every local path replaced by its last component.
`published_datastore(path)`: datastore.npz's bytes with each entry's `sources` by file name.
`publish_folder(folder)`: both, in place, on every JSON file and the datastore of a folder that is
about to be shared (`pack`, `export` stage their output and call this before the rename).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from emoknn.files import atomic_path, write_json_atomic

DATASTORE_NAME = "datastore.npz"
# Keys of train_config.json that name folders of the machine that trained: no use elsewhere, and
# a bare folder name would be read relative to wherever the copy is used.
MACHINE_ONLY_SETTINGS = ("feature_cache",)


def local_name(value: Any) -> Any:
    """A local path as its last component (a card or a published file never shows where the
    files lay on the machine that made them); anything else unchanged."""
    if isinstance(value, str) and (value.startswith(("/", "~", "./", "../")) or (
            len(value) > 2 and value[1] == ":" and value[2] in "\\/")):  # fmt: skip
        return Path(value.replace("\\", "/")).name or value
    return value


def without_local_paths(data: Any) -> Any:
    """`data` (JSON values) with every local path replaced by its last component."""
    if isinstance(data, dict):
        return {key: without_local_paths(value) for key, value in data.items()}
    if isinstance(data, list):
        return [without_local_paths(value) for value in data]
    return local_name(data)


def published_json(data: Any) -> Any:
    """`data` (JSON values) with every local path replaced by its last component."""
    return without_local_paths(data)


def published_sources(sources: list[str]) -> list[str]:
    """Datastore `sources` as published: each audio file by its name only ("" stays "")."""
    return [Path(source).name if source else "" for source in sources]


def published_datastore(path: str | os.PathLike) -> bytes | None:
    """datastore.npz at `path` with its `sources` by file name; None when it records none."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    if "sources" not in arrays:
        return None
    arrays["sources"] = np.array(published_sources(arrays["sources"].tolist()), dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def publish_folder(folder: str | os.PathLike) -> None:
    """Rewrite, in place, the JSON files and datastore of `folder` (one level) without local
    paths; a run's machine-only settings (its feature cache) are dropped."""
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("train_config"), dict):
            data["train_config"] = {key: (None if key in MACHINE_ONLY_SETTINGS else value)
                                    for key, value in data["train_config"].items()}  # fmt: skip
        published = published_json(data)
        if published != data:
            write_json_atomic(published, path)
    store = folder / DATASTORE_NAME
    if store.is_file():
        content = published_datastore(store)
        if content is not None:
            with atomic_path(store) as temporary:
                temporary.write_bytes(content)

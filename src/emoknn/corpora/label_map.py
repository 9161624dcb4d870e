"""The user's label map (`--label-map`, `load_corpus(label_map=...)`) and how a run records it.

Semantics of a map given as a JSON file or a mapping, `{"class": "new class" or null}`:

- a class it names is renamed (two classes renamed to one are merged) or, with null, dropped;
- a class it does not name **keeps its name**: a map says what changes, never silently drops;
- a key that names no class of the corpus is refused (a misspelt `"angri"` would otherwise leave
  angry unchanged, or, with the old drop-the-rest rule, drop it).

`"four"` is a preset, not a map: it keeps the paper's four classes (angry, happy, neutral, sad)
and drops the rest. `"default"` (or None) keeps the corpus's standard classes.

A run records its map **by content** with its SHA-256 (`label_map_record`), never by path alone:
editing or deleting the JSON file after training cannot relabel a rebuilt datastore, and a stored
map that no longer matches its hash (a hand edit) is refused (`recorded_label_map`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from emoknn.corpora.filenames import FOUR_CLASS_LABELS
from emoknn.corpora.utterance import Utterance, apply_label_map, as_path
from emoknn.errors import CorpusError, FileFormatError

# Values of `label_map` (and --label-map) besides a mapping or a JSON file.
LABEL_MAP_CHOICES = ("default", "four")

LabelMap = Mapping[str, str | None]


def resolve_label_map(label_map: str | os.PathLike | LabelMap | None) -> LabelMap | None:
    """`None`/`"default"` → None (the corpus's standard classes), `"four"` → the paper's four
    classes, a mapping as is, or a path to a JSON object {"class": "new class" or null}."""
    if label_map is None or label_map == "default":
        return None
    if label_map == "four":
        return FOUR_CLASS_LABELS
    if isinstance(label_map, Mapping):
        mapping = dict(label_map)
        source = "label map"
    else:
        path = as_path(label_map, "label map")
        if not path.is_file():
            raise CorpusError(
                f"label map {str(label_map)!r}: expected default, four, or a JSON file "
                '{"native class": "class" or null}; no such file'
            )
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise CorpusError(f"{path}: cannot read label map ({error})") from error
        source = str(path)
    check_label_map(mapping, source)
    return mapping


def check_label_map(mapping: object, source: str) -> None:
    """Refuse anything but a non-empty object of class name → new class name or null."""
    if (
        not isinstance(mapping, dict)
        or not mapping
        or not all(
            isinstance(k, str) and k.strip() and (v is None or (isinstance(v, str) and v.strip()))
            for k, v in mapping.items()
        )
    ):
        raise CorpusError(
            f"{source}: a label map must be a non-empty object of class name → new class name "
            'or null (dropped), e.g. {"angry": "angry", "excited": "happy", "calm": null}'
        )


def apply_user_label_map(utterances: list[Utterance], label_map: LabelMap, corpus: str
                         ) -> list[Utterance]:  # fmt: skip
    """Rename the classes `label_map` names (null drops them); every other class keeps its name.
    A key naming no class present is refused: it is a typo or a map for another corpus."""
    present = sorted({u.label for u in utterances})
    unknown = sorted(set(label_map) - set(present))
    if unknown:
        raise CorpusError(
            f"{corpus}: the label map names {', '.join(map(repr, unknown))}, not a class of this "
            f"corpus (its classes: {', '.join(present)}); a misspelt key would change nothing"
        )
    kept = [replace(u, label=label_map.get(u.label, u.label)) for u in utterances
            if label_map.get(u.label, u.label) is not None]  # fmt: skip
    if utterances and not kept:
        raise CorpusError(
            f"{corpus}: the label map drops every class present ({', '.join(present)})"
        )
    return kept


def map_labels(utterances: list[Utterance], label_map: str | os.PathLike | LabelMap | None,
               corpus: str) -> list[Utterance]:  # fmt: skip
    """`utterances` with `label_map` applied by its kind's rule (see the module docstring)."""
    if label_map is None or label_map == "default":
        return utterances
    if label_map == "four":
        return apply_label_map(utterances, FOUR_CLASS_LABELS, corpus)
    mapping = resolve_label_map(label_map)
    assert mapping is not None
    return apply_user_label_map(utterances, mapping, corpus)


def label_map_digest(mapping: LabelMap) -> str:
    """SHA-256 of a map's canonical JSON (keys sorted): the same map always gives the same."""
    text = json.dumps(dict(mapping), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def label_map_record(label_map: str | os.PathLike | LabelMap | None) -> dict[str, Any]:
    """What a run records about its label map: `label_map` ("default", "four", or the JSON file's
    name, for people) and, for a map, `label_map_classes` (its content) and `label_map_sha256`."""
    if label_map is None or label_map in LABEL_MAP_CHOICES:
        return {"label_map": label_map or "default"}
    mapping = resolve_label_map(label_map)
    assert mapping is not None
    name = "mapping" if isinstance(label_map, Mapping) else Path(label_map).name
    return {"label_map": name, "label_map_classes": dict(mapping),
            "label_map_sha256": label_map_digest(mapping)}  # fmt: skip


def recorded_label_map(info: Mapping[str, Any], where: str | os.PathLike) -> str | LabelMap:
    """The label map a run recorded (`label_map_record`), checked against its hash: "default",
    "four" or the stored mapping. Refused: a stored map that differs from its hash, and a run of
    an earlier emoknn that recorded only the path of its JSON map (the file may have changed or
    gone since: the map the model was trained with cannot be known)."""
    setting = info.get("label_map", "default")
    classes, digest = info.get("label_map_classes"), info.get("label_map_sha256")
    if setting in LABEL_MAP_CHOICES and classes is None and digest is None:
        return setting
    if classes is None and digest is None:
        raise FileFormatError(
            f"{where}: records its label map only as the file {setting!r}, not its content (a "
            "run of an earlier emoknn); the file may have changed or gone since training, so the "
            "fold cannot be rebuilt with certainty: train the run again"
        )
    try:
        check_label_map(classes, f"{where}: label_map_classes")
    except CorpusError as error:
        raise FileFormatError(str(error)) from None
    if not isinstance(digest, str) or label_map_digest(classes) != digest:
        raise FileFormatError(
            f"{where}: label_map_classes does not match label_map_sha256 (edited after training?); "
            "the map the model was trained with is unknown: train the run again"
        )
    return classes

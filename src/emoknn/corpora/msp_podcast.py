"""MSP-Podcast (releases 1.11 and 1.12; older ones too) from the lab's release layout.

    ROOT/Audios/MSP-PODCAST_0001_0008.wav
    ROOT/Labels/labels_consensus.csv

`labels_consensus.csv` has `FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
Split_Set`. Older releases spell the file `labels_concensus.csv`, call the development set
`Validation`, and some copies name the audio folder `Audio/`: all three are accepted.

By default the 8 classes of the standard categorical protocol are kept (A S H U F D C N) and X (no
agreement) and O (other) are dropped; pass `label_map=MSP_PODCAST_ALL_CLASSES` to keep them as
`no-agreement` and `other`. The
arousal, valence and dominance ratings (1-7) are kept on every utterance. `Split_Set` is the
official split, lower-cased (`train`, `development`, `test1`, `test2`); rows without a class
(the hidden Test3 labels) are left out. A turn whose `SpkrID` is `Unknown` gets a speaker of its
own (`mspUnknown/<id>`): it cannot be matched to any other turn.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path

from emoknn.corpora.utterance import (
    Utterance,
    apply_label_map,
    as_path,
    check_unique_ids,
    require_files,
)
from emoknn.errors import CorpusError

MSP_PODCAST_CLASSES = {
    "A": "angry", "H": "happy", "S": "sad", "N": "neutral", "U": "surprised",
    "F": "fearful", "D": "disgust", "C": "contempt",
}  # fmt: skip
MSP_PODCAST_NATIVE = {**MSP_PODCAST_CLASSES, "O": "other", "X": "no-agreement"}
# Label maps over the class names: the standard 8 classes (the default), or all 10.
MSP_PODCAST_EIGHT_CLASSES = {name: name for name in MSP_PODCAST_CLASSES.values()}
MSP_PODCAST_ALL_CLASSES = {name: name for name in MSP_PODCAST_NATIVE.values()}
LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")
AUDIO_DIRS = ("Audios", "Audio")
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Split_Set")


def msp_podcast_labels_file(root: Path) -> Path | None:
    """The consensus-label CSV of a release at `root`, or None."""
    for name in LABEL_FILES:
        if (root / "Labels" / name).is_file():
            return root / "Labels" / name
    return None


def load_msp_podcast(
    root: str | os.PathLike,
    label_map: Mapping[str, str | None] | None = None,
    skip_missing: bool = False,
) -> list[Utterance]:
    """Read an MSP-Podcast release.

    Args:
        root: the release folder (holding `Labels/` and `Audios/`).
        label_map: class name → new name or None (dropped); defaults to the 8-class protocol
            (`MSP_PODCAST_EIGHT_CLASSES`); `MSP_PODCAST_ALL_CLASSES` keeps `other` (O) and
            `no-agreement` (X) too.
        skip_missing: leave out rows whose audio file is missing instead of raising.
    """
    root = as_path(root, "MSP-Podcast root")
    if not root.is_dir():
        raise CorpusError(f"{root}: MSP-Podcast root is not a directory")
    labels_file = msp_podcast_labels_file(root)
    if labels_file is None:
        raise CorpusError(
            f"{root}: no Labels/labels_consensus.csv; expected an MSP-Podcast release "
            "(Audios/, Labels/labels_consensus.csv)"
        )
    audio_dir = next((root / d for d in AUDIO_DIRS if (root / d).is_dir()), root / AUDIO_DIRS[0])
    label_map = MSP_PODCAST_EIGHT_CLASSES if label_map is None else label_map
    utterances = []
    try:
        with labels_file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in columns]
            if missing:
                raise CorpusError(
                    f"{labels_file}: lacks column(s) {', '.join(missing)}; expected "
                    f"{', '.join(COLUMNS)}"
                )
            for row_number, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                utterance = _row_utterance(row, audio_dir, f"{labels_file}:{row_number}")
                if utterance is not None:
                    utterances.append(utterance)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CorpusError(f"{labels_file}: cannot read ({error})") from error
    if not utterances:
        raise CorpusError(f"{labels_file}: no labelled rows")
    check_unique_ids(utterances, str(labels_file))
    kept = apply_label_map(utterances, label_map, f"MSP-Podcast at {root}")
    return require_files(kept, f"MSP-Podcast at {root}", skip_missing)


def _row_utterance(row: dict[str, str], audio_dir: Path, where: str) -> Utterance | None:
    name, emotion = row["FileName"], row["EmoClass"]
    if not name:
        raise CorpusError(f"{where}: empty FileName")
    if not emotion:  # Test3: labels withheld
        return None
    if emotion not in MSP_PODCAST_NATIVE:
        raise CorpusError(
            f"{where}: EmoClass {emotion!r} is not one of {', '.join(MSP_PODCAST_NATIVE)}"
        )
    if not row["Split_Set"]:
        raise CorpusError(f"{where}: empty Split_Set for {name}")
    attributes = []
    for column in ("EmoAct", "EmoVal", "EmoDom"):
        text = row[column]
        try:
            value = float(text) if text else None
        except ValueError:
            raise CorpusError(f"{where}: {column} {text!r} is not a number") from None
        if value is not None and not math.isfinite(value):
            value = None  # `nan` in a release: no rating
        attributes.append(value)
    utterance_id = Path(name).stem
    speaker_id = row["SpkrID"]
    speaker = (
        f"mspUnknown/{utterance_id}"
        if speaker_id.lower() in ("", "unknown", "nan")
        else f"msp{speaker_id}"
    )
    split = row["Split_Set"].lower()
    label = MSP_PODCAST_NATIVE[emotion]
    return Utterance(utterance_id, audio_dir / name, label, speaker, None, split, *attributes)

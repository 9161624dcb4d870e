"""MELD (Friends TV dialogue) from its official CSVs and the mp4 clips of `MELD.Raw.tar.gz`.

    ROOT/train_sent_emo.csv  dev_sent_emo.csv  test_sent_emo.csv   (or ROOT/data/MELD/...)
    ROOT/train_splits/dia0_utt0.mp4
    ROOT/dev_splits_complete/dia0_utt0.mp4
    ROOT/output_repeated_splits_test/dia0_utt0.mp4

The CSV rows are the utterances (columns `Sr No., Utterance, Speaker, Emotion, Sentiment,
Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime`); clips without a row are
ignored. Stems repeat across splits, so an id is `meld/<split>/dia<D>_utt<U>`. The split is the
official one (`train`, `dev`, `test`). Audio is decoded from the mp4 by `emoknn.audio` (PyAV); a
`.wav` beside or instead of the mp4 is used when present.

Known-bad clips are skipped with a message: `train dia125_utt3` is corrupt and `dev dia110_utt7`
is missing from the release (declare-lab/MELD issues 39, 52, 22, 27).
"""

from __future__ import annotations

import csv
import logging
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

logger = logging.getLogger("emoknn.corpora")

MELD_EMOTIONS = {
    "neutral": "neutral", "joy": "happy", "surprise": "surprised", "anger": "angry",
    "sadness": "sad", "disgust": "disgust", "fear": "fearful",
}  # fmt: skip
MELD_SPLITS = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
MELD_KNOWN_BAD = {
    ("train", "dia125_utt3"): "corrupt mp4 in the release",
    ("dev", "dia110_utt7"): "missing from the release",
}
COLUMNS = ("Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def _find(root: Path, name: str, want_dir: bool) -> Path | None:
    """`root/name`, else the shallowest match below root (an archive's extra top folder)."""
    direct = root / name
    if direct.is_dir() if want_dir else direct.is_file():
        return direct
    matches = [
        p for p in root.rglob(name)
        if (p.is_dir() if want_dir else p.is_file()) and "__MACOSX" not in p.parts
    ]  # fmt: skip
    return min(matches, key=lambda p: (len(p.parts), str(p))) if matches else None


def meld_csv_files(root: Path) -> dict[str, Path]:
    """The official CSVs found under `root`, by split."""
    found = {}
    for split, (csv_name, _) in MELD_SPLITS.items():
        path = _find(root, csv_name, want_dir=False)
        if path is not None:
            found[split] = path
    return found


def load_meld(
    root: str | os.PathLike,
    label_map: Mapping[str, str | None] | None = None,
    skip_missing: bool = False,
) -> list[Utterance]:
    """Read MELD: every split whose CSV is present (all three in a full release).

    Args:
        root: the extracted `MELD.Raw` folder (CSVs and the three clip folders).
        label_map: class name → new name or None (dropped); None keeps all 7 classes.
        skip_missing: leave out rows whose clip is missing (beyond the known-bad ones).
    """
    root = as_path(root, "MELD root")
    if not root.is_dir():
        raise CorpusError(f"{root}: MELD root is not a directory")
    csv_files = meld_csv_files(root)
    if not csv_files:
        raise CorpusError(
            f"{root}: no MELD CSVs (train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv); "
            "expected the extracted MELD.Raw folder"
        )
    utterances: list[Utterance] = []
    skipped = []
    for split, csv_path in csv_files.items():
        clip_dir = _find(root, MELD_SPLITS[split][1], want_dir=True)
        if clip_dir is None:
            raise CorpusError(
                f"{root}: no {MELD_SPLITS[split][1]}/ folder for the {split} clips; extract "
                f"{split}.tar.gz from MELD.Raw.tar.gz"
            )
        for utterance in _read_split(csv_path, split, clip_dir):
            stem = utterance.path.stem
            if (split, stem) in MELD_KNOWN_BAD:
                skipped.append(f"{split} {stem} ({MELD_KNOWN_BAD[(split, stem)]})")
                continue
            utterances.append(utterance)
    if skipped:
        logger.warning("MELD at %s: skipped known-bad clip(s): %s", root, "; ".join(skipped))
    check_unique_ids(utterances, str(root))
    kept = apply_label_map(utterances, label_map, f"MELD at {root}")
    return require_files(kept, f"MELD at {root}", skip_missing)


def _read_split(csv_path: Path, split: str, clip_dir: Path) -> list[Utterance]:
    utterances = []
    try:
        # The CSVs carry mis-encoded quotes in the Utterance text; only ids and labels are read.
        with csv_path.open(newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in columns]
            if missing:
                raise CorpusError(
                    f"{csv_path}: lacks column(s) {', '.join(missing)}; expected MELD's "
                    f"{', '.join(COLUMNS)}, ..."
                )
            for row_number, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                where = f"{csv_path}:{row_number}"
                emotion = row["Emotion"].lower()
                if emotion not in MELD_EMOTIONS:
                    raise CorpusError(
                        f"{where}: Emotion {row['Emotion']!r} is not one of "
                        f"{', '.join(MELD_EMOTIONS)}"
                    )
                if not (row["Dialogue_ID"].isdigit() and row["Utterance_ID"].isdigit()):
                    raise CorpusError(
                        f"{where}: Dialogue_ID/Utterance_ID must be whole numbers, got "
                        f"{row['Dialogue_ID']!r}/{row['Utterance_ID']!r}"
                    )
                stem = f"dia{int(row['Dialogue_ID'])}_utt{int(row['Utterance_ID'])}"
                path = clip_dir / f"{stem}.mp4"
                if not path.is_file() and (clip_dir / f"{stem}.wav").is_file():
                    path = clip_dir / f"{stem}.wav"
                speaker = " ".join(row["Speaker"].split()) or "unknown"
                utterances.append(
                    Utterance(f"meld/{split}/{stem}", path, MELD_EMOTIONS[emotion],
                              f"meld/{speaker}", None, split)
                )  # fmt: skip
    except (OSError, csv.Error) as error:
        raise CorpusError(f"{csv_path}: cannot read ({error})") from error
    return utterances

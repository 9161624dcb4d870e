"""Public corpora whose labels and speakers are encoded in file names: RAVDESS, CREMA-D, EmoDB.

Each loader walks its root recursively, parses every audio file name it recognises, and maps the
native emotion through a label map: by default every native emotion under a common English name;
pass `FOUR_CLASS_LABELS` (or your own dict) to choose or merge classes. None of these corpora has
recording sessions, so folds use the rule for session-less corpora (see `emoknn.folds`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from emoknn.corpora.utterance import Utterance, apply_label_map, as_path, check_unique_ids
from emoknn.errors import CorpusError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

# Common names → the paper's four classes; other emotions are dropped.
FOUR_CLASS_LABELS: dict[str, str | None] = {
    "angry": "angry",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
}

# RAVDESS: 03-01-05-01-02-01-12.wav = modality-channel-emotion-intensity-statement-repetition-actor
# modality 03 = audio only; channel 01 = speech, 02 = song.
RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

# CREMA-D: 1001_DFA_ANG_XX.wav = actor_sentence_emotion_level
CREMAD_EMOTIONS = {
    "ANG": "angry", "DIS": "disgust", "FEA": "fearful",
    "HAP": "happy", "NEU": "neutral", "SAD": "sad",
}  # fmt: skip
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")

# EmoDB: 03a01Fa.wav = speaker(2) text(3) emotion(1, German initial) version(1)
EMODB_EMOTIONS = {
    "W": "angry",  # Ärger (Wut)
    "L": "bored",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fearful",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}
_EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])$")


def _parse_ravdess(stem: str, include_song: bool) -> tuple[str, str] | None:
    match = _RAVDESS_NAME.match(stem)
    if match is None:
        return None
    modality, channel, emotion, _, _, _, actor = match.groups()
    if (
        modality != "03"
        or (channel == "02" and not include_song)
        or emotion not in RAVDESS_EMOTIONS
    ):
        return None
    return RAVDESS_EMOTIONS[emotion], f"ravdess{actor}"


def _parse_cremad(stem: str) -> tuple[str, str] | None:
    match = _CREMAD_NAME.match(stem)
    if match is None or match[3] not in CREMAD_EMOTIONS:
        return None
    return CREMAD_EMOTIONS[match[3]], f"cremad{match[1]}"


def _parse_emodb(stem: str) -> tuple[str, str] | None:
    match = _EMODB_NAME.match(stem)
    if match is None:
        return None
    return EMODB_EMOTIONS[match[3]], f"emodb{match[1]}"


def _load_by_filename(
    root: str | os.PathLike,
    corpus: str,
    parse: Callable[[str], tuple[str, str] | None],
    label_map: Mapping[str, str | None] | None,
) -> list[Utterance]:
    root = as_path(root, f"{corpus} root")
    if not root.is_dir():
        raise CorpusError(f"{root}: {corpus} root is not a directory")
    utterances = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or path.name.startswith("."):
            continue
        parsed = parse(path.stem)
        if parsed is None:
            continue
        label, speaker = parsed
        utterances.append(Utterance(f"{corpus}/{path.stem}", path, label, speaker, None))
    if not utterances:
        raise CorpusError(f"{root}: no {corpus} audio files with recognisable names found")
    check_unique_ids(utterances, str(root))
    return apply_label_map(utterances, label_map, f"{corpus} at {root}")


def load_ravdess(
    root: str | os.PathLike,
    label_map: Mapping[str, str | None] | None = None,
    include_song: bool = False,
) -> list[Utterance]:
    """RAVDESS audio-only files (speech; song too with `include_song`). Speaker = actor."""
    return _load_by_filename(
        root, "ravdess", lambda stem: _parse_ravdess(stem, include_song), label_map
    )


def load_cremad(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """CREMA-D (`AudioWAV/1001_DFA_ANG_XX.wav`). Speaker = actor number."""
    return _load_by_filename(root, "cremad", _parse_cremad, label_map)


def load_emodb(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """Berlin EmoDB (`wav/03a01Fa.wav`). Speaker = the two-digit speaker code."""
    return _load_by_filename(root, "emodb", _parse_emodb, label_map)

"""Acted corpora whose labels and speakers sit in file or folder names.

    TESS     OAF_angry/OAF_back_angry.wav             2 speakers (OAF, YAF), 7 classes, 2,800
    SAVEE    AudioData/DC/a01.wav  or  ALL/DC_a01.wav 4 speakers, 7 classes, 480
    EMOVO    EMOVO/f1/dis-f1-b1.wav                   6 speakers, 7 classes, 588
    ShEMO    female/F01A01.wav, male/M01N03.wav       87 speakers, 6 classes, 3,000
    CASIA    wangzhe/angry/201.wav                    4 speakers, 6 classes, 1,200
    JL       female1_angry_01a_1.wav                  4 speakers, 10 classes, 2,400
    ESD      0011/Angry/train/0011_000001.wav         20 speakers, 5 classes, 35,000, official split

Each loader walks its root recursively, so an archive's extra top folder, or a copy nested inside
another (the Kaggle TESS copy holds the corpus twice), is fine: a clip whose id was already seen
is a copy and is counted once. Ids include whatever disambiguates a repeated stem (SAVEE's
`a01.wav` exists once per speaker; CASIA's `201.wav` once per speaker and emotion).

Labels are the common English names used by every loader (angry, happy, neutral, sad, fearful,
disgust, surprised, ...); `FOUR_CLASS_LABELS` keeps the paper's four.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from emoknn.corpora.utterance import Utterance, apply_label_map, as_path, check_unique_ids
from emoknn.errors import CorpusError

logger = logging.getLogger("emoknn.corpora")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

# A parser turns one audio file into (id, native label, speaker, split) or None when the file is
# not one of the corpus's clips.
Parsed = tuple[str, str, str, str | None]
Parser = Callable[[Path], Parsed | None]

TESS_EMOTIONS = {
    "angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
    "neutral": "neutral", "ps": "surprised", "sad": "sad",
}  # fmt: skip
# OAF = older adult female (64), YAF = younger adult female (26); a few copies shorten to OA/YA.
_TESS_SPEAKERS = {"OAF": "OAF", "OA": "OAF", "YAF": "YAF", "YA": "YAF"}

SAVEE_EMOTIONS = {
    "a": "angry", "d": "disgust", "f": "fearful", "h": "happy",
    "n": "neutral", "sa": "sad", "su": "surprised",
}  # fmt: skip
SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
_SAVEE_OFFICIAL = re.compile(r"^(a|d|f|h|n|sa|su)(\d\d)$")
_SAVEE_FLAT = re.compile(r"^(DC|JE|JK|KL)_(a|d|f|h|n|sa|su)(\d\d)$")

EMOVO_EMOTIONS = {
    "dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fearful",
    "rab": "angry", "sor": "surprised", "tri": "sad",
}  # fmt: skip
_EMOVO_NAME = re.compile(r"^(dis|gio|neu|pau|rab|sor|tri)-([fm][1-3])-([bdln][1-5])$")

SHEMO_EMOTIONS = {
    "A": "angry", "F": "fearful", "H": "happy", "N": "neutral", "S": "sad", "W": "surprised",
}  # fmt: skip
_SHEMO_NAME = re.compile(r"^([FM]\d\d)([AFHNSW])(\d\d)$")

CASIA_EMOTIONS = {
    "angry": "angry", "fear": "fearful", "happy": "happy", "neutral": "neutral",
    "sad": "sad", "surprise": "surprised",
}  # fmt: skip
CASIA_SPEAKERS = ("liuchanhg", "wangzhe", "zhaoquanyin", "zhaozuoxiang")

JL_PRIMARY = ("angry", "sad", "neutral", "happy", "excited")
JL_SECONDARY = ("anxious", "apologetic", "assertive", "concerned", "encouraging")
_JL_NAME = re.compile(r"^(female1|female2|male1|male2)_([a-z]+)_(\d+[ab])_(\d)$")

ESD_EMOTIONS = {
    "angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad",
    "surprise": "surprised",
}  # fmt: skip
ESD_SPLITS = ("train", "evaluation", "test")
_ESD_NAME = re.compile(r"^(00(?:0[1-9]|1\d|20))_(\d{6})$")


def _parse_tess(path: Path) -> Parsed | None:
    parts = path.stem.split("_")
    if len(parts) < 3:
        return None
    prefix, emotion = parts[0].upper(), parts[-1].lower()
    if prefix not in _TESS_SPEAKERS or emotion not in TESS_EMOTIONS:
        return None
    speaker = _TESS_SPEAKERS[prefix]
    word = "_".join(parts[1:-1]).lower()
    return f"tess/{speaker}_{word}_{emotion}", emotion, f"tess{speaker}", None


def _parse_savee(path: Path) -> Parsed | None:
    flat = _SAVEE_FLAT.match(path.stem)
    if flat is not None:
        speaker, emotion, number = flat.groups()
    else:
        official = _SAVEE_OFFICIAL.match(path.stem)
        if official is None or path.parent.name not in SAVEE_SPEAKERS:
            return None
        speaker, (emotion, number) = path.parent.name, official.groups()
    return f"savee/{speaker}_{emotion}{number}", emotion, f"savee{speaker}", None


def _parse_emovo(path: Path) -> Parsed | None:
    match = _EMOVO_NAME.match(path.stem)
    if match is None:
        return None
    emotion, speaker, _ = match.groups()
    return f"emovo/{path.stem}", emotion, f"emovo{speaker}", None


def _parse_shemo(path: Path) -> Parsed | None:
    match = _SHEMO_NAME.match(path.stem)
    if match is None:
        return None
    speaker, emotion, _ = match.groups()
    return f"shemo/{path.stem}", emotion, f"shemo{speaker}", None


def _parse_casia(path: Path) -> Parsed | None:
    emotion, speaker = path.parent.name, path.parent.parent.name
    if speaker not in CASIA_SPEAKERS or emotion not in CASIA_EMOTIONS or not path.stem.isdigit():
        return None
    return f"casia/{speaker}/{emotion}/{path.stem}", emotion, f"casia{speaker}", None


def _parse_jl(path: Path) -> Parsed | None:
    match = _JL_NAME.match(path.stem)
    if match is None or match[2] not in JL_PRIMARY + JL_SECONDARY:
        return None
    return f"jl/{path.stem}", match[2], f"jl{match[1]}", None


def _parse_esd(path: Path) -> Parsed | None:
    match = _ESD_NAME.match(path.stem)
    if match is None:
        return None
    # 0011/Angry/train/0011_000001.wav, or without the split folder (the Kaggle copy).
    split = path.parent.name.lower()
    emotion_dir = path.parent.parent if split in ESD_SPLITS else path.parent
    if split not in ESD_SPLITS:
        split = None
    emotion = emotion_dir.name.lower()
    if emotion not in ESD_EMOTIONS or emotion_dir.parent.name != match[1]:
        return None
    return f"esd/{path.stem}", emotion, f"esd{match[1]}", split


def load_by_parser(
    root: str | os.PathLike,
    corpus: str,
    parse: Parser,
    native_names: Mapping[str, str],
    label_map: Mapping[str, str | None] | None,
) -> list[Utterance]:
    """Walk `root`, parse every audio file, name labels via `native_names`, keep one copy per id,
    then apply `label_map` (None keeps every class)."""
    root = as_path(root, f"{corpus} root")
    if not root.is_dir():
        raise CorpusError(f"{root}: {corpus} root is not a directory")
    seen: dict[str, Utterance] = {}
    copies = 0
    for path in sorted(root.rglob("*")):
        if (
            path.suffix.lower() not in AUDIO_SUFFIXES
            or path.name.startswith(".")  # macOS `._x.wav` resource forks
            or "__MACOSX" in path.parts
        ):
            continue
        parsed = parse(path)
        if parsed is None:
            continue
        utterance_id, native, speaker, split = parsed
        if utterance_id in seen:
            copies += 1
            continue
        seen[utterance_id] = Utterance(
            utterance_id, path, native_names[native], speaker, None, split
        )
    if not seen:
        raise CorpusError(f"{root}: no {corpus} audio files with recognisable names found")
    if copies:
        logger.warning(
            "%s: %d clip(s) appear more than once (a nested copy of the corpus?); each id is "
            "counted once",
            root,
            copies,
        )
    utterances = sorted(seen.values(), key=lambda u: u.id)
    check_unique_ids(utterances, str(root))
    return apply_label_map(utterances, label_map, f"{corpus} at {root}")


def load_tess(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """TESS: `OAF_<word>_<emotion>.wav` / `YAF_...`; 2 speakers, so every split but 2-fold
    leave-one-speaker-out is speaker-dependent. Nested copies are counted once (by stem)."""
    return load_by_parser(root, "tess", _parse_tess, TESS_EMOTIONS, label_map)


def load_savee(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """SAVEE: official `AudioData/<speaker>/<e><NN>.wav` or the flat `<speaker>_<e><NN>.wav`."""
    return load_by_parser(root, "savee", _parse_savee, SAVEE_EMOTIONS, label_map)


def load_emovo(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """EMOVO: `<f1..m3>/<emo>-<speaker>-<sentence>.wav` (Italian)."""
    return load_by_parser(root, "emovo", _parse_emovo, EMOVO_EMOTIONS, label_map)


def load_shemo(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """ShEMO: `female/F01A01.wav`, `male/M01N03.wav` = speaker, emotion letter, index (Persian)."""
    return load_by_parser(root, "shemo", _parse_shemo, SHEMO_EMOTIONS, label_map)


def load_casia(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """CASIA (public 1,200-clip subset): `<speaker>/<emotion>/<n>.wav` (Mandarin)."""
    return load_by_parser(root, "casia", _parse_casia, CASIA_EMOTIONS, label_map)


def load_jl(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """JL-Corpus: `<speaker>_<emotion>_<NN><a|b>_<1|2>.wav`; 5 primary + 5 secondary emotions."""
    names = {e: e for e in JL_PRIMARY + JL_SECONDARY}
    return load_by_parser(root, "jl", _parse_jl, names, label_map)


def load_esd(
    root: str | os.PathLike, label_map: Mapping[str, str | None] | None = None
) -> list[Utterance]:
    """ESD: `00SS/<Emotion>/<train|evaluation|test>/00SS_NNNNNN.wav`; the split sub-folder is the
    official split (None when a copy has no split folders). Transcripts are not read (their
    encodings differ per speaker)."""
    return load_by_parser(root, "esd", _parse_esd, ESD_EMOTIONS, label_map)

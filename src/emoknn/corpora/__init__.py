"""Corpora: each turns a directory (or a manifest) into a list of `Utterance`.

load_iemocap(root)          IEMOCAP release layout, the paper's 4 classes
load_manifest(csv)          any corpus, via path,label,speaker[,session]
load_ravdess / load_cremad / load_emodb(root)   labels in file names
load_tess / load_savee / load_emovo / load_shemo / load_casia / load_jl / load_esd(root)
load_msp_podcast(root) / load_meld(root)        official splits (Utterance.split)
generate_synthetic_corpus(out_dir) / load_synthetic(root)   offline demo data
load_corpus(path, kind="auto", label_map=None)  any of the above by name or detection
CORPORA / corpus_info(name)                     licence, access, size, protocol of each corpus
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from emoknn.corpora.acted import (
    load_casia,
    load_emovo,
    load_esd,
    load_jl,
    load_savee,
    load_shemo,
    load_tess,
)
from emoknn.corpora.catalog import CORPORA, CorpusInfo, corpus_info
from emoknn.corpora.filenames import FOUR_CLASS_LABELS, load_cremad, load_emodb, load_ravdess
from emoknn.corpora.iemocap import IEMOCAP_FOUR_CLASS_MAP, load_iemocap
from emoknn.corpora.label_map import (
    LABEL_MAP_CHOICES,
    label_map_record,
    map_labels,
    recorded_label_map,
    resolve_label_map,
)
from emoknn.corpora.manifest import load_manifest, write_manifest
from emoknn.corpora.meld import load_meld, meld_csv_files
from emoknn.corpora.msp_podcast import load_msp_podcast, msp_podcast_labels_file
from emoknn.corpora.synthetic import (
    HONESTY_NOTE,
    generate_synthetic_corpus,
    is_synthetic_corpus,
    load_synthetic,
)
from emoknn.corpora.utterance import (
    FOUR_CLASSES,
    Utterance,
    apply_label_map,
    as_path,
    check_distinct_audio,
    label_names,
    refuse_lfs_stubs,
)
from emoknn.errors import CorpusError

CORPUS_KINDS = (
    "auto", "iemocap", "manifest", "synthetic", "ravdess", "cremad", "emodb", "msp-podcast",
    "meld", "esd", "tess", "savee", "emovo", "shemo", "casia", "jl",
)  # fmt: skip

_FILE_LOADERS = {
    "ravdess": load_ravdess, "cremad": load_cremad, "emodb": load_emodb, "tess": load_tess,
    "savee": load_savee, "emovo": load_emovo, "shemo": load_shemo, "casia": load_casia,
    "jl": load_jl, "esd": load_esd,
}  # fmt: skip
_DETECT_MAX_FILES = 2000  # audio files sampled when detecting a corpus from its file names


def detect_corpus_kind(path: str | os.PathLike) -> str:
    """Guess a corpus kind from what is at `path` (a CSV file, or a folder's layout).

    Marker files decide first (synthetic, IEMOCAP's Session folders, manifest.csv, MSP-Podcast's
    Labels/labels_consensus.csv, MELD's *_sent_emo.csv); otherwise the names of up to 2,000 audio
    files: the kind is detected only when exactly one corpus's naming matches.
    """
    path = as_path(path, "corpus path")
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    if not path.is_dir():
        raise CorpusError(f"{path}: not found; expected a corpus folder or a manifest .csv file")
    if is_synthetic_corpus(path):
        return "synthetic"
    if (path / "Session1").is_dir() or any(path.glob("Session[0-9]")):
        return "iemocap"
    if (path / "manifest.csv").is_file():
        return "manifest"
    if msp_podcast_labels_file(path) is not None:
        return "msp-podcast"
    if any(
        next(path.glob(pattern), None) is not None
        for pattern in ("*_sent_emo.csv", "*/*_sent_emo.csv", "data/MELD/*_sent_emo.csv")
    ):
        return "meld"
    matches = _kinds_by_file_names(path)
    if len(matches) == 1:
        return matches[0]
    found = f"file names of {' and '.join(matches)} both match" if matches else "nothing matches"
    raise CorpusError(
        f"{path}: cannot tell which corpus this is ({found}); pass --kind "
        f"({', '.join(CORPUS_KINDS[1:])}) or give a manifest .csv"
    )


def _kinds_by_file_names(root: Path) -> list[str]:
    from emoknn.corpora import acted, filenames

    parsers = {
        "ravdess": lambda p: filenames._parse_ravdess(p.stem, include_song=False),
        "cremad": lambda p: filenames._parse_cremad(p.stem),
        "emodb": lambda p: filenames._parse_emodb(p.stem),
        "tess": acted._parse_tess, "savee": acted._parse_savee, "emovo": acted._parse_emovo,
        "shemo": acted._parse_shemo, "casia": acted._parse_casia, "jl": acted._parse_jl,
        "esd": acted._parse_esd,
    }  # fmt: skip
    matched: dict[str, int] = {}
    seen = 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(acted.AUDIO_SUFFIXES) or name.startswith("."):
                continue
            seen += 1
            file_path = Path(folder) / name
            for kind, parse in parsers.items():
                if parse(file_path) is not None:
                    matched[kind] = matched.get(kind, 0) + 1
            if seen >= _DETECT_MAX_FILES:
                return sorted(matched)
    return sorted(matched)


def load_corpus(
    path: str | os.PathLike,
    kind: str = "auto",
    skip_missing: bool = False,
    label_map: str | os.PathLike | Mapping[str, str | None] | None = None,
) -> list[Utterance]:
    """Load a corpus by kind (`auto` detects it where the layout is unambiguous).

    `label_map` is applied to the loader's own class names: None or "default" keeps the corpus's
    standard classes, "four" keeps the paper's four (angry, happy, neutral, sad), or pass a
    mapping / JSON file of class → new class: null drops a class, a class not named keeps its
    name, a key naming no class of the corpus is refused (`emoknn.corpora.label_map`).
    """
    resolve_label_map(label_map)  # a bad map is refused before the corpus is read
    utterances, where = load_native(path, kind, skip_missing)
    # Checked on every load: audio that is not there (an LFS stub), and two rows on one audio file
    # (a clip trained and tested on). Byte copies are looked for before folds are made
    # (`check_distinct_audio`, called by train, crossval and corpus verify).
    utterances = map_labels(refuse_lfs_stubs(utterances, where, skip_missing), label_map, where)
    check_distinct_audio(utterances, where, contents=False)
    return utterances


def load_native(path: str | os.PathLike, kind: str = "auto", skip_missing: bool = False
                ) -> tuple[list[Utterance], str]:  # fmt: skip
    """(the corpus's utterances as its loader gives them, "KIND corpus at PATH"): no label map
    and none of `load_corpus`'s checks (`corpus verify` reports them one by one)."""
    path = as_path(path, "corpus path")
    if kind not in CORPUS_KINDS:
        raise CorpusError(
            f"unknown corpus kind {kind!r}; expected one of {', '.join(CORPUS_KINDS)}"
        )
    if kind == "auto":
        kind = detect_corpus_kind(path)
    if kind == "iemocap":
        utterances = load_iemocap(path, skip_missing=skip_missing)
    elif kind == "manifest":
        csv_path = path / "manifest.csv" if path.is_dir() else path
        utterances = load_manifest(csv_path, skip_missing=skip_missing)
    elif kind == "synthetic":
        utterances = load_synthetic(path)
    elif kind == "msp-podcast":
        utterances = load_msp_podcast(path, skip_missing=skip_missing)
    elif kind == "meld":
        utterances = load_meld(path, skip_missing=skip_missing)
    else:
        utterances = _FILE_LOADERS[kind](path)
    return utterances, f"{kind} corpus at {path}"


__all__ = [
    "CORPORA",
    "CORPUS_KINDS",
    "FOUR_CLASSES",
    "FOUR_CLASS_LABELS",
    "HONESTY_NOTE",
    "IEMOCAP_FOUR_CLASS_MAP",
    "LABEL_MAP_CHOICES",
    "CorpusInfo",
    "Utterance",
    "apply_label_map",
    "check_distinct_audio",
    "corpus_info",
    "detect_corpus_kind",
    "generate_synthetic_corpus",
    "is_synthetic_corpus",
    "label_map_record",
    "label_names",
    "load_casia",
    "load_corpus",
    "load_cremad",
    "load_emodb",
    "load_emovo",
    "load_esd",
    "load_iemocap",
    "load_jl",
    "load_manifest",
    "load_meld",
    "load_msp_podcast",
    "load_native",
    "load_ravdess",
    "load_savee",
    "load_shemo",
    "load_synthetic",
    "load_tess",
    "meld_csv_files",
    "recorded_label_map",
    "resolve_label_map",
    "write_manifest",
]

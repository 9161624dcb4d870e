"""Corpora: each turns a directory (or a manifest) into a list of `Utterance`.

load_iemocap(root)          IEMOCAP release layout, the paper's 4 classes
load_manifest(csv)          any corpus, via path,label,speaker[,session]
load_ravdess / load_cremad / load_emodb(root)   labels in file names
generate_synthetic_corpus(out_dir) / load_synthetic(root)   offline demo data
load_corpus(path, kind="auto")                  any of the above by name or detection
"""

from __future__ import annotations

import os

from emoknn.corpora.filenames import FOUR_CLASS_LABELS, load_cremad, load_emodb, load_ravdess
from emoknn.corpora.iemocap import IEMOCAP_FOUR_CLASS_MAP, load_iemocap
from emoknn.corpora.manifest import load_manifest, write_manifest
from emoknn.corpora.synthetic import (
    HONESTY_NOTE,
    generate_synthetic_corpus,
    is_synthetic_corpus,
    load_synthetic,
)
from emoknn.corpora.utterance import FOUR_CLASSES, Utterance, apply_label_map, as_path, label_names
from emoknn.errors import CorpusError

CORPUS_KINDS = ("auto", "iemocap", "manifest", "synthetic", "ravdess", "cremad", "emodb")


def detect_corpus_kind(path: str | os.PathLike) -> str:
    """Guess a corpus kind from what is at `path` (a CSV file, or a folder's layout)."""
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
    raise CorpusError(
        f"{path}: cannot tell which corpus this is; pass --kind "
        f"({', '.join(CORPUS_KINDS[1:])}) or give a manifest .csv"
    )


def load_corpus(
    path: str | os.PathLike, kind: str = "auto", skip_missing: bool = False
) -> list[Utterance]:
    """Load a corpus by kind; `auto` detects IEMOCAP, synthetic and manifest corpora."""
    path = as_path(path, "corpus path")
    if kind not in CORPUS_KINDS:
        raise CorpusError(
            f"unknown corpus kind {kind!r}; expected one of {', '.join(CORPUS_KINDS)}"
        )
    if kind == "auto":
        kind = detect_corpus_kind(path)
    if kind == "iemocap":
        return load_iemocap(path, skip_missing=skip_missing)
    if kind == "manifest":
        csv_path = path / "manifest.csv" if path.is_dir() else path
        return load_manifest(csv_path, skip_missing=skip_missing)
    if kind == "synthetic":
        return load_synthetic(path)
    loaders = {"ravdess": load_ravdess, "cremad": load_cremad, "emodb": load_emodb}
    return loaders[kind](path)


__all__ = [
    "CORPUS_KINDS",
    "FOUR_CLASSES",
    "FOUR_CLASS_LABELS",
    "HONESTY_NOTE",
    "IEMOCAP_FOUR_CLASS_MAP",
    "Utterance",
    "apply_label_map",
    "detect_corpus_kind",
    "generate_synthetic_corpus",
    "is_synthetic_corpus",
    "label_names",
    "load_corpus",
    "load_cremad",
    "load_emodb",
    "load_iemocap",
    "load_manifest",
    "load_ravdess",
    "load_synthetic",
    "write_manifest",
]

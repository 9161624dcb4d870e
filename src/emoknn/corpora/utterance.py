"""The record every corpus produces: one labelled utterance of one speaker."""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from emoknn.errors import CorpusError
from emoknn.files import file_sha256

# What a Git LFS pointer stub (a small text file checked out in place of the data) begins with.
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"

# The paper's label set (IEMOCAP, excited merged into happy), in a fixed order.
FOUR_CLASSES: tuple[str, ...] = ("angry", "happy", "neutral", "sad")


@dataclass(frozen=True)
class Utterance:
    """One labelled recording.

    Attributes:
        id: unique within the corpus (e.g. `Ses01F_impro01_M003`).
        path: the audio file.
        label: emotion class name, e.g. `angry`.
        speaker: speaker id, unique across the corpus (e.g. `Ses01M`).
        session: recording session, or None when the corpus has none; folds use it to pick the
            validation speaker.
        split: the corpus's own official split, lower-cased (`train`, `development`, `test1` for
            MSP-Podcast; `train`, `dev`, `test` for MELD; `train`, `evaluation`, `test` for ESD),
            or None when the corpus has no official split.
        arousal, valence, dominance: the corpus's own attribute ratings (its own scale, e.g. 1-7
            for MSP-Podcast, 1-5 for IEMOCAP), or None where the corpus gives none.
    """

    id: str
    path: Path
    label: str
    speaker: str
    session: str | None = None
    split: str | None = None
    arousal: float | None = None
    valence: float | None = None
    dominance: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.path, str):  # a str path is accepted and kept as a Path
            object.__setattr__(self, "path", Path(self.path))
        if not isinstance(self.path, Path):
            raise CorpusError(f"utterance {self.id!r}: path must be a path, got {self.path!r}")
        for name in ("id", "label", "speaker"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise CorpusError(f"utterance {self.id!r}: {name} must be a non-empty string, "
                                  f"got {value!r}")  # fmt: skip
        if self.session is not None and not isinstance(self.session, str):
            raise CorpusError(f"utterance {self.id!r}: session must be a string or None, got "
                              f"{self.session!r}")  # fmt: skip
        if self.split is not None and (not isinstance(self.split, str) or not self.split.strip()):
            raise CorpusError(f"utterance {self.id!r}: split must be a non-empty string or None, "
                              f"got {self.split!r}")  # fmt: skip
        for name in ("arousal", "valence", "dominance"):
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise CorpusError(f"utterance {self.id!r}: {name} must be a finite number or "
                                  f"None, got {value!r}")  # fmt: skip
            object.__setattr__(self, name, float(value))


def as_path(value: object, what: str) -> Path:
    """`value` as a Path, or CorpusError when it is not a path at all (None, a number, ...)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise CorpusError(f"{what} must be a path, got {value!r}")
    return Path(value)


def label_names(utterances: Iterable[Utterance]) -> list[str]:
    """The sorted class names present; the index of a name is its class id everywhere."""
    return sorted({utterance.label for utterance in utterances})


def apply_label_map(
    utterances: Iterable[Utterance], label_map: Mapping[str, str | None] | None, corpus: str
) -> list[Utterance]:
    """Rename labels through `label_map`; labels mapped to None, or absent from it, are dropped.

    `label_map=None` keeps every label unchanged.
    """
    utterances = list(utterances)
    if label_map is None:
        return utterances
    kept = [
        replace(u, label=label_map[u.label])
        for u in utterances
        if label_map.get(u.label) is not None
    ]
    if utterances and not kept:
        present = ", ".join(sorted({u.label for u in utterances}))
        raise CorpusError(
            f"{corpus}: the label map keeps none of the labels present ({present}); "
            f"it maps {dict(label_map)}"
        )
    return kept


def check_unique_ids(utterances: Iterable[Utterance], corpus: str) -> None:
    """Raise CorpusError if two utterances share an id (results are keyed by id)."""
    counts = Counter(u.id for u in utterances)
    repeated = [uid for uid, n in counts.items() if n > 1]
    if repeated:
        raise CorpusError(f"{corpus}: utterance ids are not unique, e.g. {repeated[:3]}")


def require_files(utterances: list[Utterance], corpus: str, skip_missing: bool) -> list[Utterance]:
    """Check every audio file exists; raise naming the missing ones, or drop them if asked."""
    missing = [u for u in utterances if not u.path.is_file()]
    if missing and not skip_missing:
        examples = "\n  ".join(str(u.path) for u in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CorpusError(
            f"{corpus}: {len(missing)} of {len(utterances)} audio files are missing:\n  "
            f"{examples}{more}\n(pass skip_missing=True / --skip-missing to leave them out)"
        )
    missing_ids = {u.id for u in missing}
    return [u for u in utterances if u.id not in missing_ids]


def is_lfs_stub(path: Path) -> bool:
    """True for a Git LFS pointer stub: under 1 KiB and starting with the LFS header."""
    try:
        if path.stat().st_size >= 1024:
            return False
        with path.open("rb") as handle:
            return handle.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX
    except OSError:
        return False


def refuse_lfs_stubs(utterances: list[Utterance], corpus: str, skip_missing: bool
                     ) -> list[Utterance]:  # fmt: skip
    """Git LFS pointer stubs are audio that is not there: refused naming them, or (`skip_missing`)
    left out like missing files."""
    stubs = {u.id for u in utterances if is_lfs_stub(u.path)}
    if stubs and not skip_missing:
        example = next(u.path for u in utterances if u.id in stubs)
        raise CorpusError(
            f"{corpus}: {len(stubs)} of {len(utterances)} audio files are Git LFS pointer stubs, "
            f"not audio (e.g. {example}); fetch the real files (git lfs pull), or pass "
            "--skip-missing to leave them out"
        )
    return [u for u in utterances if u.id not in stubs]


def check_distinct_audio(utterances: list[Utterance], corpus: str, contents: bool = True) -> None:
    """Refuse two utterances on one audio file: the same file by two spellings or through a link
    (resolved paths), and with `contents` a byte copy under another speaker, class or split (same
    SHA-256; only files of equal size are hashed). One clip under two rows sits in the training
    and the test split of some fold, and each copy is the other's nearest neighbour."""
    first_of: dict[Path, Utterance] = {}
    for u in utterances:
        real = u.path.resolve()
        other = first_of.setdefault(real, u)
        if other is not u:
            raise CorpusError(
                f"{corpus}: {other.path} ({other.id}) and {u.path} ({u.id}) are the same audio "
                "file; one clip under two rows would be trained and tested on: keep one row"
            )
    if not contents:
        return
    by_size: dict[int, list[Path]] = defaultdict(list)
    for real in first_of:
        try:
            by_size[real.stat().st_size].append(real)
        except OSError:
            continue  # unreadable: reported where the audio is read
    for paths in by_size.values():
        if len(paths) < 2:
            continue
        seen: dict[str, Path] = {}
        for real in paths:
            try:
                digest = file_sha256(real)
            except OSError:
                continue
            if digest in seen:
                a, b = first_of[seen[digest]], first_of[real]
                if (a.speaker, a.label, a.split) == (b.speaker, b.label, b.split):
                    # Same speaker, class and split: always in the same fold, so no leak (the
                    # RAVDESS 16 kHz copy holds such pairs of identical takes).
                    continue
                raise CorpusError(
                    f"{corpus}: {a.path} ({a.id}) and {b.path} ({b.id}) hold the same bytes; a "
                    "copy of one clip under two rows would be trained and tested on: keep one"
                )
            seen[digest] = real

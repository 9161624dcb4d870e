"""A generic CSV manifest, so that any corpus can be used.

    path,label,speaker,session
    clips/a.wav,angry,spk1,s1
    clips/b.flac,calm,spk2,s1

`path` is relative to the CSV file (absolute paths work too); `session` is optional. Any label set
works. The utterance id is the path relative to the CSV, without its extension.

An optional column `split` gives the corpus's own split (`train`, a validation set `dev` /
`development` / `validation`, and `test...` sets) for `--scheme official`; empty = none.

Optional columns `arousal`, `valence`, `dominance` give dimensional ratings (numbers in the
corpus's own scale; an empty cell = no rating for that utterance).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from emoknn.corpora.utterance import Utterance, as_path, check_unique_ids, require_files
from emoknn.errors import CorpusError

REQUIRED_COLUMNS = ("path", "label", "speaker")
ATTRIBUTE_COLUMNS = ("arousal", "valence", "dominance")  # optional


def parse_attribute(row: dict[str, str], name: str, where: str) -> float | None:
    """The rating in column `name` of a manifest row: a finite number, or None when empty."""
    text = row.get(name) or ""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise CorpusError(f"{where}: {name} must be a finite number or empty, got {text!r:.40}")
    return value


def load_manifest(csv_path: str | os.PathLike, skip_missing: bool = False) -> list[Utterance]:
    """Read a `path,label,speaker[,session]` CSV into utterances (in file order).

    Raises:
        CorpusError: the file is missing, lacks a required column, has an empty field on some row,
            or names audio files that do not exist (unless `skip_missing`).
    """
    csv_path = as_path(csv_path, "manifest")
    if not csv_path.is_file():
        raise CorpusError(f"{csv_path}: manifest file not found")
    base = csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise CorpusError(
                    f"{csv_path}: manifest lacks column(s) {', '.join(missing)}; expected a header "
                    f"with path,label,speaker[,session], found {columns or 'no header'}"
                )
            utterances = []
            for row_number, raw_row in enumerate(reader, start=2):
                if None in raw_row:  # csv puts fields beyond the header under None, as a list
                    raise CorpusError(f"{csv_path}:{row_number}: more fields than the header "
                                      f"({', '.join(columns)}); a comma inside a field must be "
                                      "quoted")  # fmt: skip
                row = {(k or "").strip(): (v or "").strip() for k, v in raw_row.items()}
                empty = [c for c in REQUIRED_COLUMNS if not row.get(c)]
                if empty:
                    raise CorpusError(f"{csv_path}:{row_number}: empty {', '.join(empty)}")
                relative = Path(row["path"])
                path = relative if relative.is_absolute() else base / relative
                utterance_id = relative.with_suffix("").as_posix()
                session = row.get("session") or None
                split = row.get("split", "").lower() or None
                where = f"{csv_path}:{row_number}"
                ratings = {name: parse_attribute(row, name, where) for name in ATTRIBUTE_COLUMNS}
                utterances.append(
                    Utterance(utterance_id, path, row["label"], row["speaker"], session, split,
                              **ratings)
                )
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CorpusError(f"{csv_path}: cannot read manifest ({error})") from error
    if not utterances:
        raise CorpusError(f"{csv_path}: manifest has a header but no rows")
    check_unique_ids(utterances, str(csv_path))
    return require_files(utterances, f"manifest {csv_path}", skip_missing)


def write_manifest(utterances: list[Utterance], csv_path: str | os.PathLike) -> None:
    """Write utterances as a manifest with paths relative to the CSV's folder where possible."""
    csv_path = as_path(csv_path, "manifest")
    base = csv_path.parent.resolve()
    # The attribute columns that any utterance has a rating in (none: the plain four columns).
    rated = [n for n in ATTRIBUTE_COLUMNS if any(getattr(u, n) is not None for u in utterances)]
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        splits = ["split"] if any(u.split is not None for u in utterances) else []
        writer.writerow(["path", "label", "speaker", "session", *splits, *rated])
        for u in utterances:
            path = u.path.resolve()
            shown = path.relative_to(base) if path.is_relative_to(base) else path
            ratings = ["" if getattr(u, n) is None else repr(getattr(u, n)) for n in rated]
            split = [u.split or ""] if splits else []
            writer.writerow([shown.as_posix(), u.label, u.speaker, u.session or "", *split,
                             *ratings])

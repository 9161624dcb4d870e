"""Check a user's copy of a corpus: it loads, its counts, layout, official splits, no Git LFS
pointer stubs in place of audio, every audio file readable and non-empty (its header read, a WAV
as long as its header says), no audio file under two utterances, known-bad files, and (CREMA-D)
every file's sha256.

`verify_corpus("esd", "data/ESD")` returns a report of checks, each `ok`, `warn` or `fail`;
`emoknn corpus verify NAME DIR` prints it and exits non-zero on any failure.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from emoknn.corpora.catalog import corpus_info
from emoknn.corpora.download import RECORD_FILE, read_file_manifest
from emoknn.corpora.utterance import Utterance, as_path, check_distinct_audio, is_lfs_stub
from emoknn.errors import AudioError, CorpusError


@dataclass(frozen=True)
class Check:
    status: str  # "ok" | "warn" | "fail"
    text: str


@dataclass
class VerifyReport:
    corpus: str
    root: Path
    utterances: list[Utterance] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def add(self, status: str, text: str) -> None:
        self.checks.append(Check(status, text))


def verify_corpus(name: str, root: str | os.PathLike, checksums: bool = True) -> VerifyReport:
    """Check the copy of corpus `name` at `root` (see the module docstring).

    `checksums=False` skips hashing every file where a per-file manifest exists (CREMA-D).
    """
    from emoknn.corpora import load_native

    info = corpus_info(name)
    root = as_path(root, f"{name} folder")
    report = VerifyReport(name, root)
    if not root.is_dir():
        report.add("fail", f"{root}: not a folder; expected:\n  {info.tree}")
        return report
    try:
        utterances, where = load_native(root, name)
    except CorpusError as error:
        report.add("fail", f"does not load as {name}: {error}")
        report.add("warn", f"expected layout:\n  {info.tree}")
        return report
    report.utterances = utterances
    _check_counts(report, info.utterances, info.speakers, utterances)
    if info.official_split:
        _check_splits(report, info.official_split, utterances)
    stubs = _check_stubs(report, utterances)
    _check_audio(report, [u for u in utterances if u.path not in stubs])
    try:
        check_distinct_audio(utterances, where)
        report.add("ok", "no audio file under two utterances")
    except CorpusError as error:
        report.add("fail", str(error))
    if name == "cremad":
        _check_cremad(report, root, checksums)
    if name == "shemo":
        _check_shemo_json(report, root, utterances)
    for note in info.known_bad:
        report.add("ok", f"known issue handled: {note}")
    record = root / RECORD_FILE
    if record.is_file():
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            verified = "verified" if saved.get("verified") else "not verifiable at download"
            report.add("ok", f"downloaded by emoknn at {saved.get('downloaded_at')} ({verified})")
        except (OSError, ValueError, AttributeError) as error:
            report.add("warn", f"{record}: unreadable ({error})")
    return report


def _check_counts(
    report: VerifyReport, expected: int | None, speakers: int | None, utterances: list[Utterance]
) -> None:
    found = len(utterances)
    if expected is None:
        report.add("ok", f"{found} utterances (no single expected count is published)")
    elif found == expected:
        report.add("ok", f"{found} utterances, as expected")
    else:
        report.add("fail", f"{found} utterances, expected {expected}")
    num_speakers = len({u.speaker for u in utterances if not u.speaker.startswith("mspUnknown/")})
    if speakers is None or num_speakers == speakers:
        report.add("ok", f"{num_speakers} speakers")
    else:
        report.add("warn", f"{num_speakers} speakers, the corpus has {speakers}")
    classes = Counter(u.label for u in utterances)
    report.add("ok", "classes: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())))


def _check_splits(report: VerifyReport, official: tuple[str, ...], utterances: list[Utterance]):
    splits = Counter(u.split for u in utterances)
    if None in splits:
        report.add(
            "warn",
            f"{splits[None]} utterances have no official split (a copy without split folders?); "
            "--scheme official will refuse this copy",
        )
    shown = ", ".join(f"{k} {v}" for k, v in sorted(splits.items(), key=lambda kv: str(kv[0])))
    present = set(splits) | ({"development"} if "validation" in splits else set())
    missing = [s for s in official if s not in present]
    report.add("warn" if missing else "ok", f"official splits: {shown}"
               + (f"; missing {', '.join(missing)}" if missing else ""))  # fmt: skip


def _check_stubs(report: VerifyReport, utterances: list[Utterance]) -> set[Path]:
    stubs = [u.path for u in utterances if is_lfs_stub(u.path)]
    if stubs:
        report.add(
            "fail",
            f"{len(stubs)} audio files are Git LFS pointer stubs, not audio (e.g. {stubs[0]}); "
            "a repository's 'Download ZIP' gives these: fetch the real files",
        )
    else:
        report.add("ok", "no Git LFS pointer stubs")
    return set(stubs)


def _check_audio(report: VerifyReport, utterances: list[Utterance]) -> None:
    """Every file's header read (no decoding): readable audio, at least one sample, and a WAV
    as long as its header says. A count or a checksum cannot see a zero-byte or garbage file."""
    from emoknn.audio import audio_duration, check_complete_wav

    bad: list[str] = []
    for u in utterances:
        try:
            if audio_duration(u.path) <= 0:
                raise AudioError(f"{u.path}: no samples")
            check_complete_wav(u.path)
        except (AudioError, OSError) as error:
            bad.append(str(error).splitlines()[0] if str(error) else str(u.path))
    if bad:
        report.add("fail", f"{len(bad)} audio files are empty or unreadable (e.g. {bad[0]})")
    else:
        report.add("ok", f"all {len(utterances)} audio files are readable, non-empty audio")


def _check_cremad(report: VerifyReport, root: Path, checksums: bool) -> None:
    if any(root.rglob("1040_ITH_SAD_X.wav")):
        report.add("warn", "1040_ITH_SAD_X.wav is the misnamed copy of 1040_ITH_SAD_XX.wav from "
                           "before October 2022: an old clone")  # fmt: skip
    if not checksums:
        return
    bad, missing = [], []
    audio_dirs = [p for p in root.rglob("AudioWAV") if p.is_dir()]
    base = audio_dirs[0].parent if audio_dirs else root
    for relative, size, digest in read_file_manifest("cremad_audiowav_lfs_sha256.tsv.gz"):
        path = base / relative
        if not path.is_file():
            missing.append(relative)
            continue
        if path.stat().st_size != size or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(relative)
    if bad or missing:
        report.add(
            "fail",
            f"sha256 check against the LFS manifest: {len(bad)} differ"
            + (f" (e.g. {bad[0]})" if bad else "")
            + f", {len(missing)} missing"
            + (f" (e.g. {missing[0]})" if missing else ""),
        )
    else:
        report.add("ok", "every AudioWAV file matches its sha256 in the LFS manifest")


def _check_shemo_json(report: VerifyReport, root: Path, utterances: list[Utterance]) -> None:
    found = sorted(root.rglob("shemo.json"))
    if not found:
        return
    try:
        keys = set(json.loads(found[0].read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        report.add("warn", f"{found[0]}: unreadable ({error})")
        return
    stems = {u.path.stem for u in utterances}
    absent = sorted(keys - stems)
    report.add(
        "warn" if absent else "ok",
        f"shemo.json lists {len(keys)} clips; {len(absent)} of them have no audio file here"
        + (f" (e.g. {absent[0]})" if absent else ""),
    )

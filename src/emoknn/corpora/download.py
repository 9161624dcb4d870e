"""Fetch an openly downloadable corpus, verify it, and publish a complete tree or nothing.

`download_corpus("ravdess", "data/ravdess", accept_licence=True)`:

1. refuses a licence-gated corpus (it says where to register and which tree to build, for
   `verify_corpus`), and a restrictive licence unless `accept_licence`;
2. streams each file into a work folder beside DEST (`.DEST.emoknn-download/`), resuming a cut or
   interrupted transfer with an HTTP Range request (within a call, and by running it again);
3. refuses a Git LFS pointer stub (a small text file served instead of the data);
4. checks the byte size and the md5/sha256 published for the file; where none is published it
   records the sha256 it saw and says that nothing could be verified;
5. extracts archives safely: no absolute paths, no `..`, no links or devices, a cap on bytes and
   members — a member that would escape refuses the whole archive;
6. loads the extracted tree with the corpus's own loader and checks the utterance count;
7. writes `emoknn-download.json` into the tree and renames it to DEST in one step.

Any refusal deletes what was downloaded: DEST is never created half-way. `url` points at a
mirror the user trusts; the size and checksum checks still apply to what it serves.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import json
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from emoknn.corpora.catalog import Archive, CorpusInfo, corpus_info
from emoknn.corpora.utterance import LFS_POINTER_PREFIX, as_path
from emoknn.errors import ConfigError, CorpusError
from emoknn.files import check_writable_folder

RECORD_FILE = "emoknn-download.json"
CHUNK_BYTES = 1 << 20
UNSIZED_LIMIT_BYTES = 64 << 30  # a file with no published size may not exceed this
MAX_MEMBERS = 1_000_000
USER_AGENT = "emoknn-corpus-download"

# (what, bytes done, bytes in all or None): called as the transfer goes.
Progress = Callable[[str, int, int | None], None]


class DownloadError(CorpusError):
    """A download, its verification or its extraction failed; nothing was published."""


class LicenceNotAcceptedError(DownloadError):
    """The corpus's licence restricts its use and was not accepted."""


@dataclass
class DownloadReport:
    dest: Path
    verified: bool  # every file matched a published size and checksum
    utterances: int
    lines: list[str] = field(default_factory=list)  # what to tell the user
    record: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Remote:
    url: str
    name: str  # file name in the work folder, or relative path in the tree (per-file corpora)
    size: int | None
    checksums: tuple[tuple[str, str], ...]  # (hashlib name, hex digest)


def licence_text(info: CorpusInfo) -> str:
    """What is printed before a download: the licence and where the corpus comes from."""
    return f"{info.title}: licence {info.licence}. Source: {info.where}."


def manual_instructions(info: CorpusInfo) -> str:
    """For a licence-gated corpus: where to get it, the tree to build, and how to check it."""
    return (
        f"{info.title} is not downloaded by emoknn ({info.licence}). Get it from {info.where}, "
        f"then place it as:\n  {info.tree.replace(chr(10), chr(10) + '  ')}\n"
        f"and check your copy with `emoknn corpus verify {info.name} DIR`."
    )


def download_corpus(
    name: str,
    dest: str | os.PathLike,
    url: str | None = None,
    accept_licence: bool = False,
    progress: Progress | None = None,
    retries: int = 3,
    timeout_s: float = 60.0,
) -> DownloadReport:
    """Download corpus `name` into the new folder `dest` (see the module docstring).

    Args:
        url: a mirror: for a one-archive corpus the archive's URL; for a corpus of several
            archives or of single files, the base URL they sit under.
        accept_licence: required for corpora whose licence restricts use.
        retries: resumed attempts (HTTP Range) after a transfer is cut, per file.

    Raises:
        DownloadError: not downloadable, licence not accepted, DEST not empty, network failure
            (what was fetched is kept for a resume), LFS stub, size or checksum mismatch, unsafe
            archive, or an unexpected utterance count (nothing is kept).
    """
    info = corpus_info(name)
    if info.access != "download":
        raise DownloadError(manual_instructions(info))
    if info.accept and not accept_licence:
        raise LicenceNotAcceptedError(
            f"{licence_text(info)} Accept it with --accept-licence (download_corpus("
            f"accept_licence=True)) to download."
        )
    # One check of the destination before any download: a link to a folder is followed, `.` is
    # named, and a place that cannot be written (a file on the path, /sys, read-only) refused.
    dest = as_path(dest, "download folder").resolve()
    try:
        check_writable_folder(dest, "the download folder")
    except ConfigError as error:
        raise DownloadError(str(error)) from None
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        already = (dest / RECORD_FILE).is_file()
        raise DownloadError(
            f"{dest}: exists and is not empty"
            + (
                f" (a {RECORD_FILE} says it is a finished download; check it with "
                f"`emoknn corpus verify {name} {dest}`)"
                if already
                else "; choose a new folder so nothing is overwritten"
            )
        )
    work = dest.parent / f".{dest.name}.emoknn-download"
    tree = work / "tree"
    if tree.exists():  # a previous attempt died while extracting: extraction restarts
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    fetch = _Fetcher(progress, retries, timeout_s)
    try:
        if info.archives:
            sources = _fetch_archives(info, url, work, tree, fetch)
        else:
            sources = _fetch_files(info, url, tree, fetch)
        report = _check_and_publish(info, tree, dest, sources, accept_licence)
    except DownloadError as error:
        if not getattr(error, "resumable", False):
            shutil.rmtree(work, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tree, ignore_errors=True)  # downloads stay for a resume; the tree does not
        raise
    shutil.rmtree(work, ignore_errors=True)
    return report


# ── fetching ─────────────────────────────────────────────────────────────────────────────────


class _Fetcher:
    def __init__(self, progress: Progress | None, retries: int, timeout_s: float) -> None:
        self.progress = progress
        self.retries = retries
        self.timeout_s = timeout_s
        self.total: int | None = None  # bytes of the whole job, for per-file corpora
        self.done = 0

    def get_bytes(self, url: str, limit: int = 64 << 20) -> bytes:
        """A small document (a file listing) in one piece."""
        with self._open(url, 0) as response:
            data = response.read(limit + 1)
        if len(data) > limit:
            raise DownloadError(f"{url}: listing larger than {limit} bytes; refused")
        return data

    def _open(self, url: str, offset: int):  # -> http.client.HTTPResponse
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:
                return error  # the caller checks: the range starts at the end of the file
            raise DownloadError(
                f"{url}: the server answered HTTP {error.code} {error.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            failure = DownloadError(
                f"{url}: cannot connect ({reason}); offline? a mirror can be given with --url"
            )
            failure.resumable = True  # type: ignore[attr-defined]
            raise failure from None

    def fetch(self, remote: _Remote, part: Path) -> None:
        """Stream `remote` into `part`, resuming what `part` already holds."""
        _check_url(remote.url)
        limit = remote.size if remote.size is not None else UNSIZED_LIMIT_BYTES
        attempt = 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            if remote.size is not None and have == remote.size:
                return
            if have > limit:
                part.unlink()
                have = 0
            try:
                self._transfer(remote, part, have, limit)
                return
            except _CutError as cut:
                attempt += 1
                if attempt > self.retries:
                    failure = DownloadError(
                        f"{remote.url}: the connection was cut ({cut}); {part.stat().st_size} "
                        "bytes are kept: run the same command again to resume"
                    )
                    failure.resumable = True  # type: ignore[attr-defined]
                    raise failure from None
                time.sleep(min(2.0**attempt, 10.0) * 0.05)

    def _transfer(self, remote: _Remote, part: Path, have: int, limit: int) -> None:
        response = self._open(remote.url, have)
        with response:
            status = getattr(response, "status", None) or response.getcode()
            if status == 416:  # nothing after `have`: the part is already whole
                return
            if have and status != 206:  # the server ignored the Range: start again
                have = 0
            length = response.headers.get("Content-Length")
            expected = have + int(length) if length and length.isdigit() else None
            if expected is not None and expected > limit:
                raise DownloadError(
                    f"{remote.url}: the server offers {expected} bytes, more than {_limit(remote)}"
                    "; refused"
                )
            received = have
            with part.open("ab" if have else "wb") as out:
                while True:
                    try:
                        chunk = response.read(CHUNK_BYTES)
                    except (OSError, ValueError) as error:  # IncompleteRead, reset, timeout
                        raise _CutError(str(error) or type(error).__name__) from None
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > limit:
                        raise DownloadError(f"{remote.url}: more than {_limit(remote)}; refused")
                    out.write(chunk)
                    self._report(remote, len(chunk), received)
            if expected is not None and received < expected:
                raise _CutError(f"closed after {received} of {expected} bytes")

    def _report(self, remote: _Remote, new: int, received: int) -> None:
        self.done += new
        if self.progress is not None:
            if self.total is not None:
                self.progress("download", self.done, self.total)
            else:
                self.progress(remote.name, received, remote.size)


def _limit(remote: _Remote) -> str:
    """The size a transfer may not pass, in words: the published size, or the cap on a file
    with none."""
    if remote.size is not None:
        return f"the {remote.size} bytes published for it"
    return f"the {UNSIZED_LIMIT_BYTES >> 30} GiB allowed for a file with no published size"


class _CutError(Exception):
    """A transfer stopped before its end (resumable)."""


def _check_url(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http:// and https:// URLs are fetched")


def _fetch_archives(
    info: CorpusInfo, url: str | None, work: Path, tree: Path, fetch: _Fetcher
) -> list[dict]:
    sources = []
    for archive in info.archives:
        remote_url = archive.url
        if url is not None:
            remote_url = url if len(info.archives) == 1 else _join(url, archive.filename)
        remote = _Remote(remote_url, archive.filename, archive.size, _checksums(archive))
        part = work / f"{archive.filename}.part"
        fetch.fetch(remote, part)
        sources.append(_verify_file(remote, part, mirror=url is not None))
        limit = max(4 * part.stat().st_size, 1 << 30)
        extract_archive(part, tree, max_bytes=limit)
        for inner in archive.inner:
            for nested in sorted(tree.rglob(inner)):
                if nested.is_file():
                    extract_archive(nested, nested.parent, max_bytes=limit)
                    nested.unlink()
        part.unlink()
    return sources


def _checksums(archive: Archive) -> tuple[tuple[str, str], ...]:
    pairs = [("sha256", archive.sha256), ("md5", archive.md5)]
    return tuple((name, value.lower()) for name, value in pairs if value)


def _join(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(relative)


def _verify_file(remote: _Remote, path: Path, mirror: bool) -> dict:
    """Check a fetched file (LFS stub, size, checksums); the record of what was seen."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(len(LFS_POINTER_PREFIX))
    if size < 1024 and head == LFS_POINTER_PREFIX:
        path.unlink()
        raise DownloadError(
            f"{remote.url}: served a Git LFS pointer stub ({size} bytes), not the file; the "
            "host did not resolve LFS (its LFS quota may be spent): use --url with a mirror"
        )
    if remote.size is not None and size != remote.size:
        path.unlink()
        raise DownloadError(
            f"{remote.url}: {size} bytes, expected {remote.size}; deleted, nothing was kept"
        )
    digests = _digests(path, {"sha256", *(name for name, _ in remote.checksums)})
    for algorithm, expected in remote.checksums:
        if digests[algorithm] != expected:
            path.unlink()
            raise DownloadError(
                f"{remote.url}: {algorithm} {digests[algorithm]} does not match the published "
                f"{expected}; deleted, nothing was kept"
            )
    return {
        "url": remote.url,
        "name": remote.name,
        "bytes": size,
        "sha256": digests["sha256"],
        "expected": {"bytes": remote.size, **dict(remote.checksums)},
        "verified": bool(remote.checksums),
        "mirror": mirror,
    }


def _digests(path: Path, algorithms: set[str]) -> dict[str, str]:
    hashers = {name: hashlib.new(name) for name in algorithms}
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


# ── corpora fetched file by file ─────────────────────────────────────────────────────────────


_HASH_NAMES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


def _file_list(info: CorpusInfo, url: str | None, fetch: _Fetcher) -> tuple[list[_Remote], dict]:
    assert info.files is not None
    base = (url or info.files.base_url).rstrip("/")
    if info.files.source == "manifest":
        assert info.files.manifest is not None
        remotes = [
            _Remote(_join(base, path), path, size, (("sha256", digest),))
            for path, size, digest in read_file_manifest(info.files.manifest)
        ]
        return remotes, {"manifest": info.files.manifest, "base_url": base}
    listing_url = (
        f"{base}/api/datasets/:persistentId/?persistentId="
        f"{urllib.parse.quote(info.files.dataset or '', safe=':/')}"
    )
    _check_url(listing_url)
    listing = fetch.get_bytes(listing_url)
    remotes = _dataverse_files(listing, base, listing_url)
    record = {"listing": listing_url, "listing_sha256": hashlib.sha256(listing).hexdigest()}
    return remotes, record


def read_file_manifest(resource: str) -> Iterator[tuple[str, int, str]]:
    """(relative path, bytes, sha256) of each file of a manifest shipped in corpora/data."""
    data = importlib.resources.files("emoknn.corpora").joinpath("data", resource).read_bytes()
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        path, size, digest = line.split("\t")
        yield path, int(size), digest


def _dataverse_files(listing: bytes, base: str, where: str) -> list[_Remote]:
    """Audio files of a Dataverse dataset listing (native API), with their published checksums."""
    try:
        files = json.loads(listing)["data"]["latestVersion"]["files"]
        remotes = []
        for entry in files:
            data_file = entry["dataFile"]
            name = data_file.get("filename") or entry["label"]
            if not name.lower().endswith(".wav"):
                continue
            folder = entry.get("directoryLabel") or ""
            checksum = data_file.get("checksum") or {}
            algorithm = _HASH_NAMES.get(str(checksum.get("type", "")).upper())
            digest = checksum.get("value") or data_file.get("md5")
            algorithm = algorithm or ("md5" if data_file.get("md5") else None)
            remotes.append(
                _Remote(
                    f"{base}/api/access/datafile/{int(data_file['id'])}",
                    f"{folder}/{name}" if folder else name,
                    int(data_file["filesize"]) if data_file.get("filesize") else None,
                    ((algorithm, str(digest).lower()),) if algorithm and digest else (),
                )
            )
    except (ValueError, KeyError, TypeError) as error:
        raise DownloadError(
            f"{where}: not a Dataverse dataset listing ({type(error).__name__}: {error})"
        ) from None
    if not remotes:
        raise DownloadError(f"{where}: the listing names no .wav files")
    names = [str(_safe_relative(r.name, where)).lower() for r in remotes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DownloadError(f"{where}: the listing names {twice[0]!r} twice; refused")
    return remotes


def _fetch_files(info: CorpusInfo, url: str | None, tree: Path, fetch: _Fetcher) -> list[dict]:
    remotes, record = _file_list(info, url, fetch)
    # Kept between attempts: files fetched and verified by an interrupted run are not fetched
    # again. They live beside the tree (which is rebuilt on every attempt).
    store = tree.parent / "files"
    fetch.total = sum(r.size for r in remotes if r.size is not None) or None
    verified = 0
    for remote in remotes:
        relative = _safe_relative(remote.name, remote.url)
        target = store / relative
        part = target.with_name(target.name + ".part")
        if not target.is_file():
            part.parent.mkdir(parents=True, exist_ok=True)
            fetch.fetch(remote, part)
            _verify_file(remote, part, mirror=url is not None)
            os.replace(part, target)
        else:
            fetch.done += target.stat().st_size
        verified += bool(remote.checksums)
        destination = tree / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if _same_device(store, tree):
            os.link(target, destination)
        else:
            shutil.copy2(target, destination)
    return [
        {
            **record,
            "files": len(remotes),
            "files_verified": verified,
            "bytes": sum((tree / _safe_relative(r.name, r.url)).stat().st_size for r in remotes),
            "verified": verified == len(remotes),
            "mirror": url is not None,
        }
    ]


def _same_device(a: Path, b: Path) -> bool:
    a.mkdir(parents=True, exist_ok=True)
    return a.stat().st_dev == b.stat().st_dev


# ── safe extraction ──────────────────────────────────────────────────────────────────────────


def _shown(archive: Path) -> str:
    """An archive's name in messages (without the `.part` of a download in progress)."""
    return archive.name.removesuffix(".part")


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def _safe_relative(name: str, source: str) -> PurePosixPath:
    """`name` as a relative path that stays inside its folder, or DownloadError."""
    cleaned = name.replace("\\", "/")
    path = PurePosixPath(cleaned)
    if (
        not cleaned.strip("/")
        or cleaned.startswith("/")
        or _WINDOWS_DRIVE.match(cleaned)
        or any(part in ("..",) for part in path.parts)
        or "\x00" in cleaned
    ):
        raise DownloadError(
            f"{source}: member {name!r} would be written outside the destination; the archive "
            "is refused"
        )
    return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])


def extract_archive(
    archive: Path, into: Path, max_bytes: int, max_members: int = MAX_MEMBERS
) -> int:
    """Extract a zip or (compressed) tar `archive` into `into`; the number of files written.

    Refuses (DownloadError) a member with an absolute path or `..`, a link, a device or FIFO,
    more than `max_members` members, or more than `max_bytes` bytes once uncompressed (counted
    while writing, not trusted from headers). The caller deletes `into` on failure.
    """
    with archive.open("rb") as handle:
        magic = handle.read(262)
    if magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _extract_zip(archive, into, max_bytes, max_members)
    if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic[257:262] == b"ustar":
        return _extract_tar(archive, into, max_bytes, max_members)
    if magic[:6] == b"\xfd7zXZ\x00":
        return _extract_tar(archive, into, max_bytes, max_members)
    raise DownloadError(f"{_shown(archive)}: neither a zip nor a tar archive")


class _Budget:
    def __init__(self, archive: Path, max_bytes: int, max_members: int) -> None:
        self.archive, self.max_bytes, self.max_members = archive, max_bytes, max_members
        self.bytes = self.members = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise DownloadError(
                f"{_shown(self.archive)}: more than {self.max_members} members; refused"
            )

    def copy(self, source, target: Path) -> None:  # source: a binary file object
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            while chunk := source.read(CHUNK_BYTES):
                self.bytes += len(chunk)
                if self.bytes > self.max_bytes:
                    raise DownloadError(
                        f"{_shown(self.archive)}: unpacks to more than {self.max_bytes} bytes; "
                        "refused (an archive bomb, or not the archive expected)"
                    )
                out.write(chunk)


def _skip(relative: PurePosixPath) -> bool:
    return bool(relative.parts) and relative.parts[0] == "__MACOSX"


def _extract_zip(archive: Path, into: Path, max_bytes: int, max_members: int) -> int:
    budget = _Budget(archive, max_bytes, max_members)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for member in members:  # every name is checked before anything is written
                _safe_relative(member.filename, _shown(archive))
                kind = stat.S_IFMT(member.external_attr >> 16)  # 0: no type recorded
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    raise DownloadError(
                        f"{_shown(archive)}: member {member.filename!r} is a link or special file; "
                        "the archive is refused"
                    )
            seen: set[PurePosixPath] = set()
            for member in members:
                relative = _safe_relative(member.filename, _shown(archive))
                if relative in seen and not member.is_dir():
                    raise DownloadError(f"{_shown(archive)}: member {member.filename!r} appears "
                                        "twice; the archive is refused")  # fmt: skip
                seen.add(relative)
            written = 0
            for member in members:
                budget.member()
                relative = _safe_relative(member.filename, _shown(archive))
                if member.is_dir() or _skip(relative):
                    continue
                with zipped.open(member) as source:
                    budget.copy(source, into / relative)
                written += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise DownloadError(f"{_shown(archive)}: broken zip archive ({error})") from None
    return written


def _extract_tar(archive: Path, into: Path, max_bytes: int, max_members: int) -> int:
    budget = _Budget(archive, max_bytes, max_members)
    written = 0
    try:
        with tarfile.open(archive, mode="r|*") as tarred:  # streamed: no seeking in 10 GB
            for member in tarred:
                budget.member()
                relative = _safe_relative(member.name, _shown(archive))
                if member.isdir():
                    continue
                if not member.isfile():
                    raise DownloadError(
                        f"{_shown(archive)}: member {member.name!r} is a link or special file; "
                        "the archive is refused"
                    )
                if _skip(relative):
                    continue
                source = tarred.extractfile(member)
                if source is None:
                    raise DownloadError(f"{_shown(archive)}: cannot read member {member.name!r}")
                budget.copy(source, into / relative)
                written += 1
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DownloadError(f"{_shown(archive)}: broken tar archive ({error})") from None
    return written


# ── final checks and publication ─────────────────────────────────────────────────────────────


def _check_and_publish(
    info: CorpusInfo, tree: Path, dest: Path, sources: list[dict], accepted: bool
) -> DownloadReport:
    from emoknn.corpora import load_corpus

    try:
        utterances = load_corpus(tree, info.name)
    except CorpusError as error:
        raise DownloadError(
            f"the downloaded {info.title} does not load as {info.name}: "
            f"{str(error).replace(str(tree), '<download>')}"
        ) from None
    if info.utterances is not None and len(utterances) != info.utterances:
        raise DownloadError(
            f"the downloaded {info.title} holds {len(utterances)} utterances, expected "
            f"{info.utterances}; nothing was kept"
        )
    verified = all(source["verified"] for source in sources)
    record = {
        "corpus": info.name,
        "title": info.title,
        "licence": info.licence,
        "licence_accepted": accepted if info.accept else None,
        "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": sources,
        "utterances": len(utterances),
        "expected_utterances": info.utterances,
        "verified": verified,
    }
    (tree / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if dest.exists():
        dest.rmdir()  # empty (checked before downloading)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tree, dest)
    lines = [f"{info.title}: {len(utterances)} utterances in {dest}"]
    for source in sources:
        if source["verified"] and "files" in source:
            lines.append(f"verified: all {source['files']} files match their published size and "
                         "checksum")  # fmt: skip
        elif source["verified"]:
            lines.append(f"verified: {source['name']} matches its published size and checksum")
        elif "sha256" in source:
            lines.append(
                f"nothing could be verified: no checksum is published for {source['name']}; "
                f"the sha256 seen ({source['sha256']}) is recorded in {dest / RECORD_FILE}"
            )
        else:
            lines.append(
                f"only {source['files_verified']} of {source['files']} files had a published "
                "checksum to verify"
            )
    return DownloadReport(dest, verified, len(utterances), lines, record)

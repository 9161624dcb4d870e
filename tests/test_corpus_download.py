"""`emoknn corpus download` against a local HTTP server on 127.0.0.1 serving generated archives.

No test reaches the internet: every URL is the local server's, given as a mirror (`url=`) or
patched into the catalogue entry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoknn.corpora import CORPORA, load_corpus
from emoknn.corpora import download as dl
from emoknn.corpora import verify as vf
from emoknn.corpora.catalog import Archive, FileList
from emoknn.corpora.download import (
    RECORD_FILE,
    DownloadError,
    LicenceNotAcceptedError,
    download_corpus,
    extract_archive,
)
from emoknn.errors import CorpusError


class Server:
    """Serves `files` (path → bytes) with HTTP Range support; paths in `cut` have their first
    response cut half-way (the connection closes early). `log` records (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                server.log.append((self.path, self.headers.get("Range")))
                key = self.path if self.path in server.files else path
                if key not in server.files:
                    self.send_error(404)
                    return
                data = server.files[key]
                start = 0
                ranged = self.headers.get("Range")
                if ranged:
                    start = int(ranged.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if key in server.cut:
                    server.cut.discard(key)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _wav_bytes(seed: int, seconds: float = 0.05, rate: int = 16000) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    samples = (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _ravdess_zip(actors: int = 3, extra: dict[str, bytes] | None = None) -> bytes:
    """Audio_Speech_Actors_01-24.zip in miniature: Actor_NN/03-01-EE-01-01-01-NN.wav."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for actor in range(1, actors + 1):
            for emotion in range(1, 9):
                name = f"Actor_{actor:02d}/03-01-{emotion:02d}-01-01-01-{actor:02d}.wav"
                zipped.writestr(name, _wav_bytes(actor * 10 + emotion))
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def _patch(monkeypatch, name: str, **changes) -> None:
    monkeypatch.setitem(CORPORA, name, replace(CORPORA[name], **changes))


def _ravdess_served(server: Server, monkeypatch, data: bytes, **archive) -> str:
    server.files["/ravdess.zip"] = data
    url = f"{server.url}/ravdess.zip"
    checks = {"size": len(data), "md5": hashlib.md5(data).hexdigest(), **archive}
    _patch(monkeypatch, "ravdess", utterances=24,
           archives=(Archive(url, "Audio_Speech_Actors_01-24.zip", **checks),))  # fmt: skip
    return url


def _nothing_left(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists()
    assert not (dest.parent / f".{dest.name}.emoknn-download").exists()


def test_download_verifies_extracts_and_records(server, monkeypatch, tmp_path):
    data = _ravdess_zip()
    _ravdess_served(server, monkeypatch, data)
    seen = []
    report = download_corpus(
        "ravdess", tmp_path / "ravdess", accept_licence=True,
        progress=lambda what, done, total: seen.append((done, total)),
    )  # fmt: skip
    dest = tmp_path / "ravdess"
    assert report.verified and report.utterances == 24
    assert "matches its published size and checksum" in report.lines[1]
    assert len(load_corpus(dest, "ravdess")) == 24 and (dest / "Actor_03").is_dir()
    record = json.loads((dest / RECORD_FILE).read_text())
    assert record["sources"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["verified"] is True and record["licence_accepted"] is True
    assert seen[-1] == (len(data), len(data))
    assert not (tmp_path / ".ravdess.emoknn-download").exists()
    with pytest.raises(DownloadError, match=r"finished download"):
        download_corpus("ravdess", dest, accept_licence=True)


def test_download_resumes_after_a_cut_within_the_call(server, monkeypatch, tmp_path):
    data = _ravdess_zip()
    _ravdess_served(server, monkeypatch, data)
    server.cut.add("/ravdess.zip")
    download_corpus("ravdess", tmp_path / "r", accept_licence=True)
    ranges = [r for _, r in server.log]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"
    assert len(server.log) == 2  # the second request fetched only the missing half


def test_download_resumes_on_the_next_run(server, monkeypatch, tmp_path):
    data = _ravdess_zip()
    _ravdess_served(server, monkeypatch, data)
    server.cut.add("/ravdess.zip")
    dest = tmp_path / "r"
    with pytest.raises(DownloadError, match=r"run the same command again to resume"):
        download_corpus("ravdess", dest, accept_licence=True, retries=0)
    assert not dest.exists()
    part = tmp_path / ".r.emoknn-download" / "Audio_Speech_Actors_01-24.zip.part"
    assert part.stat().st_size == len(data) // 2
    download_corpus("ravdess", dest, accept_licence=True, retries=0)
    assert server.log[-1][1] == f"bytes={len(data) // 2}-"
    assert len(load_corpus(dest, "ravdess")) == 24


def test_checksum_mismatch_is_refused_and_nothing_is_left(server, monkeypatch, tmp_path):
    data = _ravdess_zip()
    _ravdess_served(server, monkeypatch, data, md5="0" * 32)
    dest = tmp_path / "r"
    with pytest.raises(DownloadError, match=r"md5 .* does not match the published 0000"):
        download_corpus("ravdess", dest, accept_licence=True)
    _nothing_left(tmp_path, dest)
    # A mirror serving other bytes is refused by the real catalogue's size check too.
    monkeypatch.undo()
    server.files["/mirror.zip"] = data
    with pytest.raises(DownloadError, match=r"more than the 208468073|expected 208468073"):
        download_corpus("ravdess", dest, url=f"{server.url}/mirror.zip", accept_licence=True)
    _nothing_left(tmp_path, dest)


def test_path_escaping_archive_is_refused(server, monkeypatch, tmp_path):
    data = _ravdess_zip(extra={"../escaped.wav": b"RIFF"})
    _ravdess_served(server, monkeypatch, data)
    dest = tmp_path / "downloads" / "r"
    with pytest.raises(DownloadError, match=r"'../escaped.wav' would be written outside"):
        download_corpus("ravdess", dest, accept_licence=True)
    _nothing_left(tmp_path, dest)
    assert not (tmp_path / "downloads" / "escaped.wav").exists()
    assert not list(tmp_path.rglob("escaped.wav"))


def test_lfs_pointer_stub_is_detected(server, monkeypatch, tmp_path):
    stub = (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:747670d0d918e59d5e5020cf66610242890b093d42968c467c4f02eb5e6a6b1a\n"
        b"size 496606401\n"
    )
    server.files["/male.zip"] = stub
    server.files["/female.zip"] = stub
    with pytest.raises(DownloadError, match=r"Git LFS pointer stub"):
        download_corpus("shemo", tmp_path / "shemo", url=server.url, accept_licence=True)
    _nothing_left(tmp_path, tmp_path / "shemo")
    assert server.log[0][0] == "/female.zip"  # --url is the base of a several-archive corpus


def test_unpublished_checksum_is_recorded_and_said(server, monkeypatch, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for stem in ("03a01Fa", "03a01Nc", "08b02Wa", "16a05Tb"):
            zipped.writestr(f"wav/{stem}.wav", _wav_bytes(len(stem) + ord(stem[-2])))
        zipped.writestr("erkennung.txt", "Satz\terkannt\n".encode("latin-1"))
    data = buffer.getvalue()
    server.files["/download.zip"] = data
    _patch(monkeypatch, "emodb", utterances=4)
    report = download_corpus("emodb", tmp_path / "emodb", url=f"{server.url}/download.zip")
    assert report.verified is False
    assert "nothing could be verified" in report.lines[1]
    assert hashlib.sha256(data).hexdigest() in report.lines[1]
    record = json.loads((tmp_path / "emodb" / RECORD_FILE).read_text())
    assert record["sources"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["sources"][0]["mirror"] is True and record["verified"] is False


def test_expected_count_checked(server, monkeypatch, tmp_path):
    data = _ravdess_zip(actors=2)  # 16 clips, 24 expected
    _ravdess_served(server, monkeypatch, data)
    with pytest.raises(DownloadError, match=r"holds 16 utterances, expected 24"):
        download_corpus("ravdess", tmp_path / "r", accept_licence=True)
    _nothing_left(tmp_path, tmp_path / "r")


def test_licence_gate_manual_corpora_and_non_empty_dest(tmp_path):
    with pytest.raises(LicenceNotAcceptedError, match=r"CC BY-NC-SA 4.0.*--accept-licence"):
        download_corpus("ravdess", tmp_path / "r")
    with pytest.raises(DownloadError, match=r"(?s)labels_consensus.csv.*corpus verify msp-podcast"):
        download_corpus("msp-podcast", tmp_path / "m", accept_licence=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(DownloadError, match=r"exists and is not empty"):
        download_corpus("emodb", tmp_path / "full")
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()


def test_offline_network_error_keeps_nothing_but_says_so(tmp_path):
    with pytest.raises(DownloadError, match=r"cannot connect .*--url"):
        download_corpus("emodb", tmp_path / "e", url="http://127.0.0.1:9/download.zip")
    assert not (tmp_path / "e").exists()
    with pytest.raises(DownloadError, match=r"only http:// and https://"):
        download_corpus("emodb", tmp_path / "e", url="file:///etc/passwd")


def test_per_file_corpus_from_shipped_manifest(server, monkeypatch, tmp_path):
    names = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TIE_SAD_LO", "1003_MTI_NEU_XX"]
    manifest = []
    for i, name in enumerate(names):
        data = _wav_bytes(i)
        server.files[f"/mirror/AudioWAV/{name}.wav"] = data
        manifest.append((f"AudioWAV/{name}.wav", len(data), hashlib.sha256(data).hexdigest()))
    monkeypatch.setattr(dl, "read_file_manifest", lambda resource: iter(manifest))
    _patch(monkeypatch, "cremad", utterances=4)
    server.cut.add(f"/mirror/AudioWAV/{names[2]}.wav")
    report = download_corpus("cremad", tmp_path / "c", url=f"{server.url}/mirror/",
                             accept_licence=True)  # fmt: skip
    assert report.verified and report.utterances == 4
    assert report.lines[1] == "verified: all 4 files match their published size and checksum"
    assert sorted(p.name for p in (tmp_path / "c" / "AudioWAV").iterdir()) == [
        f"{n}.wav" for n in sorted(names)
    ]
    assert (
        f"/mirror/AudioWAV/{names[2]}.wav",
        f"bytes={len(server.files[f'/mirror/AudioWAV/{names[2]}.wav']) // 2}-",
    ) in server.log
    # One file altered on the mirror: refused, nothing kept.
    server.files[f"/mirror/AudioWAV/{names[1]}.wav"] = _wav_bytes(99)
    with pytest.raises(DownloadError, match=r"sha256 [0-9a-f]+ does not match"):
        download_corpus("cremad", tmp_path / "c2", url=f"{server.url}/mirror",
                        accept_licence=True)  # fmt: skip
    _nothing_left(tmp_path, tmp_path / "c2")


def test_shipped_cremad_manifest_matches_corpora_md():
    rows = list(dl.read_file_manifest("cremad_audiowav_lfs_sha256.tsv.gz"))
    assert len(rows) == 7442 and sum(size for _, size, _ in rows) == 605_899_936
    assert all(path.startswith("AudioWAV/") and len(digest) == 64 for path, _, digest in rows)


def test_dataverse_listing_with_md5(server, monkeypatch, tmp_path):
    files = {101: ("OAF_angry", "OAF_back_angry.wav"), 102: ("YAF_sad", "YAF_bite_sad.wav"),
             103: (None, "OAF_food_fear.wav")}  # fmt: skip
    entries = []
    for file_id, (folder, name) in files.items():
        data = _wav_bytes(file_id)
        server.files[f"/api/access/datafile/{file_id}"] = data
        entry = {"label": name, "dataFile": {
            "id": file_id, "filename": name, "filesize": len(data),
            "checksum": {"type": "MD5", "value": hashlib.md5(data).hexdigest()}}}  # fmt: skip
        if folder:
            entry["directoryLabel"] = folder
        entries.append(entry)
    entries.append({"label": "README.txt", "dataFile": {"id": 9, "filename": "README.txt"}})
    listing = json.dumps({"status": "OK", "data": {"latestVersion": {"files": entries}}})
    server.files["/api/datasets/:persistentId/?persistentId=doi:10.5683/SP2/E8H2MF"] = (
        listing.encode()
    )
    _patch(monkeypatch, "tess", utterances=3)
    report = download_corpus("tess", tmp_path / "t", url=server.url, accept_licence=True)
    assert report.verified
    assert (tmp_path / "t" / "OAF_angry" / "OAF_back_angry.wav").is_file()
    assert sorted(u.label for u in load_corpus(tmp_path / "t")) == ["angry", "fearful", "sad"]
    escaping = json.dumps({"data": {"latestVersion": {"files": [{**entries[0],
                          "directoryLabel": "../.."}]}}})  # fmt: skip
    server.files["/api/datasets/:persistentId/?persistentId=doi:10.5683/SP2/E8H2MF"] = (
        escaping.encode()
    )
    with pytest.raises(DownloadError, match=r"outside the destination"):
        download_corpus("tess", tmp_path / "t2", url=server.url, accept_licence=True)
    _nothing_left(tmp_path, tmp_path / "t2")


def _tar_gz(members: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tarred:
        for member in members:
            data = payloads.get(member.name)
            tarred.addfile(member, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def test_extract_refuses_links_absolute_paths_and_bombs(tmp_path):
    link = tarfile.TarInfo("Actor_01/link.wav")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    (tmp_path / "links.tar.gz").write_bytes(_tar_gz([link], {}))
    with pytest.raises(DownloadError, match=r"link or special file"):
        extract_archive(tmp_path / "links.tar.gz", tmp_path / "out1", max_bytes=1 << 20)
    absolute = tarfile.TarInfo("/tmp/evil.wav")
    absolute.size = 4
    (tmp_path / "abs.tar.gz").write_bytes(_tar_gz([absolute], {"/tmp/evil.wav": b"RIFF"}))
    with pytest.raises(DownloadError, match=r"outside the destination"):
        extract_archive(tmp_path / "abs.tar.gz", tmp_path / "out2", max_bytes=1 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("big.wav", b"\0" * (4 << 20))  # 4 MiB of zeros: a few KiB zipped
        info = zipfile.ZipInfo("Actor_01/link.wav")
        info.external_attr = 0o120777 << 16  # a symlink
        zipped.writestr(info, "/etc/passwd")
    (tmp_path / "bomb.zip").write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match=r"link or special file"):
        extract_archive(tmp_path / "bomb.zip", tmp_path / "out3", max_bytes=1 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("big.wav", b"\0" * (4 << 20))
    (tmp_path / "bomb2.zip").write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match=r"unpacks to more than 1048576 bytes"):
        extract_archive(tmp_path / "bomb2.zip", tmp_path / "out4", max_bytes=1 << 20)
    (tmp_path / "junk.bin").write_bytes(b"not an archive")
    with pytest.raises(DownloadError, match=r"neither a zip nor a tar"):
        extract_archive(tmp_path / "junk.bin", tmp_path / "out5", max_bytes=1 << 20)


def test_nested_tar_archives_like_meld(server, monkeypatch, tmp_path):
    pytest.importorskip("av")
    from test_corpus_loaders import MELD_HEADER, _mp4

    clip = _mp4(tmp_path / "clip.mp4").read_bytes()
    inner = {}
    for split, folder in (("train", "train_splits"), ("dev", "dev_splits_complete"),
                          ("test", "output_repeated_splits_test")):  # fmt: skip
        member = tarfile.TarInfo(f"{folder}/dia0_utt0.mp4")
        member.size = len(clip)
        inner[split] = _tar_gz([member], {member.name: clip})
    outer_members, payloads = [], {}
    for split, data in inner.items():
        member = tarfile.TarInfo(f"MELD.Raw/{split}.tar.gz")
        member.size = len(data)
        outer_members.append(member)
        payloads[member.name] = data
        csv_member = tarfile.TarInfo(f"MELD.Raw/{split}_sent_emo.csv")
        text = (MELD_HEADER + '1,"Hi.",Joey,joy,positive,0,0,1,1,"0","1"\n').encode()
        csv_member.size = len(text)
        outer_members.append(csv_member)
        payloads[csv_member.name] = text
    outer = _tar_gz(outer_members, payloads)
    server.files["/MELD.Raw.tar.gz"] = outer
    archive = replace(CORPORA["meld"].archives[0], size=len(outer),
                      sha256=hashlib.sha256(outer).hexdigest())  # fmt: skip
    _patch(monkeypatch, "meld", archives=(archive,), utterances=3)
    report = download_corpus("meld", tmp_path / "meld", url=f"{server.url}/MELD.Raw.tar.gz")
    assert report.verified and report.utterances == 3
    assert not list((tmp_path / "meld").rglob("*.tar.gz"))
    ids = sorted(u.id for u in load_corpus(tmp_path / "meld"))
    assert ids == ["meld/dev/dia0_utt0", "meld/test/dia0_utt0", "meld/train/dia0_utt0"]


def test_gzip_manifest_resource_is_what_corpora_md_ships():
    shipped = (
        Path(__file__).parents[1] / "src/emoknn/corpora/data/cremad_audiowav_lfs_sha256.tsv.gz"
    )
    text = gzip.decompress(shipped.read_bytes()).decode()
    assert text.startswith("# CREMA-D AudioWAV per-file Git LFS pointers")
    assert FileList("manifest", "x", manifest=shipped.name).manifest == shipped.name


# --- corpus verify -------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_verify_counts_stubs_and_cremad_checksums(monkeypatch, tmp_path):
    names = ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TIE_SAD_LO"]
    manifest = []
    for i, name in enumerate(names):
        data = _wav_bytes(i)
        _write(tmp_path / "CREMA-D" / "AudioWAV" / f"{name}.wav", data)
        manifest.append((f"AudioWAV/{name}.wav", len(data), hashlib.sha256(data).hexdigest()))
    monkeypatch.setattr(vf, "read_file_manifest", lambda resource: iter(manifest))
    _patch(monkeypatch, "cremad", utterances=3, speakers=2)
    report = vf.verify_corpus("cremad", tmp_path / "CREMA-D")
    assert report.ok, report.checks
    assert any("matches its sha256" in c.text for c in report.checks)
    # A 'Download ZIP' copy: one file replaced by its LFS pointer.
    _write(
        tmp_path / "CREMA-D" / "AudioWAV" / f"{names[1]}.wav",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 72862\n",
    )
    report = vf.verify_corpus("cremad", tmp_path / "CREMA-D")
    failures = [c.text for c in report.checks if c.status == "fail"]
    assert not report.ok and len(failures) == 2
    assert "1 audio files are Git LFS pointer stubs" in failures[0]
    assert "1 differ (e.g. AudioWAV/1001_IEO_HAP_HI.wav), 0 missing" in failures[1]


def test_verify_reports_wrong_counts_missing_splits_and_bad_layout(tmp_path):
    for seed, speaker in enumerate(("DC", "JE")):
        _write(tmp_path / "savee" / "AudioData" / speaker / "a01.wav", _wav_bytes(seed))
    report = vf.verify_corpus("savee", tmp_path / "savee")
    assert not report.ok
    assert [c.text for c in report.checks if c.status == "fail"] == ["2 utterances, expected 480"]
    _write(tmp_path / "esd" / "0001" / "Angry" / "0001_000001.wav", _wav_bytes(2))
    esd = vf.verify_corpus("esd", tmp_path / "esd")
    assert any(c.status == "warn" and "no official split" in c.text for c in esd.checks)
    empty = vf.verify_corpus("msp-podcast", tmp_path / "savee")
    assert not empty.ok and "does not load as msp-podcast" in empty.checks[0].text
    assert "Labels/labels_consensus.csv" in empty.checks[1].text


# --- emoknn demo --corpus ------------------------------------------------------------------------


def test_demo_corpus_downloads_once_says_how_to_get_a_copy_offline_and_refuses_gated(
    server, monkeypatch, tmp_path
):
    from emoknn.demo import demo_corpus

    with pytest.raises(DownloadError) as offline:
        demo_corpus("emodb", tmp_path, accept_licence=False, url="http://127.0.0.1:9/download.zip")
    line = str(offline.value)
    assert line.startswith("--corpus emodb: Berlin EmoDB could not be downloaded (")
    assert "Get a copy from http://emodb.bilderbar.info/" in line and "\n" not in line
    assert line.endswith("then run `emoknn demo --corpus PATH`")
    assert not (tmp_path / "corpora" / "emodb").exists()
    _ravdess_served(server, monkeypatch, _ravdess_zip())
    first = demo_corpus("ravdess", tmp_path, accept_licence=True)
    assert (first.path, first.kind, first.scheme) == (tmp_path / "corpora" / "ravdess",
                                                      "ravdess", "speaker")  # fmt: skip
    requests = len(server.log)
    again = demo_corpus("ravdess", tmp_path, accept_licence=True)
    assert again.path == first.path and len(server.log) == requests  # not downloaded twice
    by_path = demo_corpus(str(first.path), tmp_path, accept_licence=False)
    assert (by_path.kind, by_path.scheme) == ("ravdess", "speaker")
    with pytest.raises(LicenceNotAcceptedError):
        demo_corpus("ravdess", tmp_path / "x", accept_licence=False)
    with pytest.raises(DownloadError, match="not downloaded by emoknn"):
        demo_corpus("esd", tmp_path, accept_licence=True)
    with pytest.raises(CorpusError, match="neither an existing folder"):
        demo_corpus("nope", tmp_path, accept_licence=True)

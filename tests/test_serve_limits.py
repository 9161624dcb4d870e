"""What one request can cost the service: body size, segments, and what errors reveal."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from emoknn.corpora import load_synthetic
from emoknn.errors import ConfigError
from emoknn.predict import EmotionRecognizer
from emoknn.segments import window_segments
from emoknn.serve import count_windows, create_app

LIMIT_MB = 1.0
LIMIT_BYTES = int(LIMIT_MB * 2**20)


@pytest.fixture(scope="module")
def recognizer(trained_run):
    return EmotionRecognizer.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def app(recognizer):
    return create_app(recognizer, max_upload_mb=LIMIT_MB, max_seconds=30.0, max_segments=20)


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV")
    return buffer.getvalue()


def call_asgi(app, headers: list[tuple[bytes, bytes]], chunks, max_chunks: int = 200):
    """Drive the ASGI app directly with a streamed body; return (status, body, chunks read)."""
    read = 0
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read >= max_chunks:  # bounded: a server that never stops reading fails the test
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], body, read


def test_declared_content_length_over_the_limit_is_refused_before_reading(app):
    headers = [(b"content-type", b"multipart/form-data; boundary=x"),
               (b"content-length", str(300 * 2**20).encode())]  # fmt: skip
    status, body, read = call_asgi(app, headers, iter(lambda: b"x" * 65536, None))
    assert status == 413 and read == 0  # not one byte of the body was asked for
    assert b"upload is 300.0 MB; the limit is 1 MB" in body


def test_streamed_body_is_cut_off_as_soon_as_it_passes_the_limit(app):
    """Chunked upload (no Content-Length): reading stops at the first chunk past the limit."""
    chunk = 64 * 1024
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'

    def body():
        yield head
        while True:
            yield b"\0" * chunk

    headers = [(b"content-type", b"multipart/form-data; boundary=x")]
    status, payload, read = call_asgi(app, headers, body(), max_chunks=200)
    assert status == 413, payload
    assert b"the limit is 1 MB" in payload
    # The app saw at most the limit: the first chunk past it raised instead of being passed on.
    assert (read - 1) * chunk <= LIMIT_BYTES + len(head)
    assert read < 200


def test_upload_over_the_limit_gets_413_in_process(client):
    response = client.post("/predict", files={"file": ("big.wav", b"x" * (2 * LIMIT_BYTES))})
    assert response.status_code == 413
    assert "the limit is 1 MB" in response.json()["detail"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_live_server_refuses_a_huge_declared_upload_at_once(app):
    """A real uvicorn on 127.0.0.1: headers announcing 300 MB get 413 with no body sent."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(400):  # at most ~20 s
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: multipart/form-data; boundary=x\r\n"
                + f"Content-Length: {300 * 2**20}\r\n\r\n".encode()
            )
            reply = b""
            while b"\r\n\r\n" not in reply or b"limit" not in reply:
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"the limit is 1 MB" in reply
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_health_states_the_limits(client, recognizer):
    limits = client.get("/health").json()["limits"]
    assert limits == {
        "max_upload_mb": 1.0, "max_seconds": 30.0, "max_segments": 20, "max_queue": 8,
        "window_seconds": [0.5, 30.0], "default_window_seconds": recognizer.max_seconds,
    }  # fmt: skip


def test_segments_per_request_are_bounded_before_any_work(client, recognizer, monkeypatch):
    calls = []
    monkeypatch.setattr(recognizer, "score", lambda *a, **k: calls.append(1))
    audio = wav_bytes(np.random.default_rng(0).normal(0, 0.1, 16000 * 25).astype(np.float32))
    response = client.post("/predict", files={"file": ("long.wav", audio)},
                           params={"hop_seconds": 0.001})  # fmt: skip
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "long.wav" in detail and "the limit is 20 per request" in detail
    assert calls == []  # refused from the header alone
    for params in ({"window_seconds": 100}, {"window_seconds": 0.1}, {"hop_seconds": 0},
                   {"hop_seconds": 5, "window_seconds": 1}):  # fmt: skip
        response = client.post("/predict", files={"file": ("a.wav", audio)}, params=params)
        assert response.status_code == 422, params
    assert calls == []


def test_vad_segments_are_bounded_while_running(recognizer, monkeypatch):
    """Segments VAD finds are not known in advance: scoring stops at the bound."""
    scored = []
    original = recognizer.score

    def counting_score(clips, batch_size=16, neighbours=0, statistics=None):
        scored.append(len(clips))
        return original(clips, batch_size, neighbours, statistics)

    monkeypatch.setattr(recognizer, "score", counting_score)
    rng = np.random.default_rng(1)
    bursts = [np.concatenate([rng.normal(0, 0.2, 8000), np.zeros(16000)]) for _ in range(12)]
    audio = np.concatenate(bursts).astype(np.float32)  # 12 bursts of speech-level noise
    with pytest.raises(ConfigError, match="needs more than 5 segments"):
        recognizer.predict(audio, segmentation="vad", max_segments=5)
    assert sum(scored) <= 5
    assert len(recognizer.predict(audio, segmentation="vad", max_segments=12)[0].segments) == 12


@pytest.mark.parametrize("seconds", [0.3, 1.0, 1.2, 2.0, 2.45, 2.6, 7.9])
@pytest.mark.parametrize(("window", "hop"), [(1.0, 1.0), (1.0, 0.25), (2.0, 0.7)])
def test_count_windows_bounds_what_window_segments_cuts(seconds, window, hop):
    samples = round(seconds * 16000)
    cut = list(window_segments([np.zeros(samples, np.float32)], round(window * 16000),
                               round(hop * 16000)))  # fmt: skip
    assert len(cut) <= count_windows(samples, round(window * 16000), round(hop * 16000))
    assert count_windows(samples, round(window * 16000), round(hop * 16000)) <= len(cut) + 1


@pytest.mark.parametrize(
    ("name", "shown"),
    [("notes.txt", "notes.txt"), ("../../etc/passwd.wav", "passwd.wav"),
     ("odd\x00name.wav", "odd%00name.wav"), ("tab[1].w@v", "tab[1].w@v"), ("é🎤.wav", "é🎤.wav")],
)  # fmt: skip
def test_errors_name_the_upload_never_a_server_path(client, name, shown):
    response = client.post("/predict", files={"file": (name, b"definitely not audio")})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "cannot decode audio" in detail
    assert "/tmp" not in detail and "emoknn-" not in detail and "upload." not in detail
    assert detail.startswith(f"{shown}: cannot decode audio (Format not recognised")


def test_too_short_and_empty_uploads_name_the_client_file(client):
    blip = wav_bytes(np.full(100, 0.1, dtype=np.float32))
    detail = client.post("/predict", files={"file": ("blip.wav", blip)}).json()["detail"]
    assert detail.startswith("blip.wav: audio is 6.2 ms long") and "/tmp" not in detail
    wav = wav_bytes(np.zeros(16000, dtype=np.float32))
    truncated = wav[: len(wav) // 3]  # header says 1 s, the data stops early
    response = client.post("/predict", files={"file": ("cut.wav", truncated)})
    assert response.status_code in (200, 422)
    assert "/tmp" not in response.text and "emoknn-" not in response.text


def test_silence_is_flagged_over_http(client, small_synthetic_corpus):
    silent = client.post("/predict", files={"file": ("quiet.wav", wav_bytes(np.zeros(16000)))})
    assert silent.status_code == 200, silent.text
    assert silent.json()["no_speech"] is True and silent.json()["level_dbfs"] == -120.0
    clip = load_synthetic(small_synthetic_corpus)[0].path.read_bytes()
    voiced = client.post("/predict", files={"file": ("voice.wav", clip)}).json()
    assert voiced["no_speech"] is False and voiced["level_dbfs"] > -45

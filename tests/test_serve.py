from __future__ import annotations

import io
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from emoknn.audio import load_audio
from emoknn.corpora import load_synthetic
from emoknn.predict import EmotionRecognizer
from emoknn.serve import create_app


@pytest.fixture(scope="module")
def recognizer(trained_run):
    return EmotionRecognizer.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def client(recognizer):
    return TestClient(create_app(recognizer, max_upload_mb=1.0, max_seconds=20.0,
                                 model_name="tiny-test"))  # fmt: skip


@pytest.fixture(scope="module")
def clip_bytes(small_synthetic_corpus) -> bytes:
    return load_synthetic(small_synthetic_corpus)[0].path.read_bytes()


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV")
    return buffer.getvalue()


def test_health_and_schema(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["knn"] is True
    assert health["labels"] == ["angry", "happy", "neutral", "sad"]
    schema = client.get("/openapi.json").json()
    assert "/predict" in schema["paths"] and "/health" in schema["paths"]
    assert "emoknn" in client.get("/").text


def test_predict_upload(client, clip_bytes, recognizer, small_synthetic_corpus):
    response = client.post("/predict", files={"file": ("clip.wav", clip_bytes, "audio/wav")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "clip.wav" and body["label"] in body["probabilities"]
    direct = recognizer.predict(load_synthetic(small_synthetic_corpus)[0].path)[0]
    assert body["probabilities"] == pytest.approx(direct.probabilities, abs=1e-6)


def test_long_upload_has_a_timeline(client, small_synthetic_corpus):
    samples = np.concatenate(
        [load_audio(u.path) for u in load_synthetic(small_synthetic_corpus)[:5]]
    )
    response = client.post("/predict", files={"file": ("long.wav", wav_bytes(samples[:48000]))},
                           params={"segmentation": "window"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert len(response.json()["segments"]) == 3  # 3 s in 1 s windows


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"", 422, "the upload is empty"),
        (b"definitely not audio", 422, "cannot decode audio"),
        (b"x" * (2 * 1024 * 1024), 413, "the limit is 1 MB"),
    ],
)
def test_bad_uploads_get_clear_errors(client, payload, status, message):
    response = client.post("/predict", files={"file": ("bad.wav", payload)})
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_too_long_and_too_short_audio(client):
    long_audio = np.zeros(16000 * 25, dtype=np.float32) + 0.01
    response = client.post("/predict", files={"file": ("long.wav", wav_bytes(long_audio, 8000))})
    assert response.status_code == 413 and "the limit is 20 s" in response.json()["detail"]
    blip = wav_bytes(np.full(100, 0.1, dtype=np.float32))
    response = client.post("/predict", files={"file": ("blip.wav", blip)})
    assert response.status_code == 422
    assert "blip.wav: audio is 6.2 ms long" in response.json()["detail"]
    response = client.post(
        "/predict", files={"file": ("a.wav", blip)}, params={"segmentation": "x"}
    )
    assert response.status_code == 422


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(recognizer):
    import uvicorn

    port = free_port()
    config = uvicorn.Config(create_app(recognizer, model_name="tiny-test"), host="127.0.0.1",
                            port=port, log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)"
)
def test_web_page_in_a_real_browser(live_server, small_synthetic_corpus, tmp_path):
    """Upload a file and record from the (fake) microphone in headless Chromium."""
    from playwright.sync_api import sync_playwright

    clip = load_synthetic(small_synthetic_corpus)[0].path
    arguments = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=arguments
        )
        context = browser.new_context()
        context.grant_permissions(["microphone"], origin=live_server.rstrip("/"))
        page = context.new_page()
        page.goto(live_server)
        page.wait_for_function("document.getElementById('model-info').textContent.length > 0")
        assert "tiny-test" in page.inner_text("#model-info")

        page.set_input_files("#file", str(clip))
        page.click("#predict")
        page.wait_for_selector("#result:not([hidden])")
        assert page.inner_text("#verdict") in ("angry", "happy", "neutral", "sad")
        assert page.locator(".bar-row").count() == 4
        widths = page.eval_on_selector_all(
            ".bar", "bars => bars.map(b => parseFloat(b.style.width))"
        )
        assert sum(widths) == pytest.approx(100, abs=0.5)
        page.screenshot(path=str(tmp_path / "upload.png"))

        page.click("#record")
        page.wait_for_selector("#record.recording")
        page.wait_for_timeout(1500)  # the fake microphone plays a beep
        page.click("#record")
        page.wait_for_function(
            "document.getElementById('source').textContent.startsWith('recording.wav')"
        )
        assert not page.is_visible("#error")

        bad = tmp_path / "notes.wav"
        bad.write_text("not audio")
        page.set_input_files("#file", str(bad))
        page.click("#predict")
        page.wait_for_selector("#error", state="visible")
        assert "cannot decode audio" in page.inner_text("#error")
        browser.close()

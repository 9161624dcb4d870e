from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from emoknn.audio import load_audio
from emoknn.corpora import load_synthetic
from emoknn.predict import EmotionRecognizer
from emoknn.serve import create_app
from live_page import (
    needs_chromium,
    page_with_fake_microphone,
    record_then_upload_a_non_audio_file,
    served,
)


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


@pytest.fixture(scope="module")
def live_server(recognizer):
    with served(create_app(recognizer, model_name="tiny-test")) as url:
        yield url


@needs_chromium
def test_web_page_in_a_real_browser(live_server, small_synthetic_corpus, tmp_path):
    """Upload a file and record from the (fake) microphone in headless Chromium."""
    from playwright.sync_api import sync_playwright

    clip = load_synthetic(small_synthetic_corpus)[0].path
    with sync_playwright() as playwright:
        browser, page = page_with_fake_microphone(playwright, live_server)
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

        record_then_upload_a_non_audio_file(page, tmp_path)
        browser.close()

"""The web page in a real headless browser (Chromium, driven by Playwright).

`render` is called directly with results for the page's own logic; a live server with the tiny
trained model takes an upload end to end: waveform, time axis, timeline, segmentation control,
playback cursor, the nearest training clips and the model header.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from live_page import (
    ARGUMENTS,
    CHROMIUM,
    needs_chromium,
    page_with_fake_microphone,
    record_then_upload_a_non_audio_file,
    served,
)

PAGE = resources.files("emoknn.web").joinpath("index.html").read_text(encoding="utf-8")
# Screenshots go here when set (to look at them), else to the test's temporary folder.
SCREENSHOTS = os.environ.get("EMOKNN_SCREENSHOTS")


@pytest.fixture(scope="module")
def playwright():
    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser(playwright):
    launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGUMENTS)
    yield launched
    launched.close()


def neighbour(label: str, weight: float, index: int) -> dict:
    return {"id": f"clips/{label}_{index}", "label": label, "distance": 0.1 * (index + 1),
            "weight": weight, "source": None}  # fmt: skip


def result(no_speech: bool, label: str = "angry") -> dict:
    probabilities = {label: 0.95, "sad": 0.05}
    segment = {"start_s": 0.0, "end_s": 1.0, "label": label, "probabilities": probabilities,
               "no_speech": no_speech, "neighbours": [neighbour("sad", 1.0, 9)]}  # fmt: skip
    return {"source": "a.wav", "label": label, "probabilities": probabilities,
            "duration_s": 2.0, "segments": [segment, {**segment, "start_s": 1.0, "end_s": 2.0,
                                                      "no_speech": False}],
            "no_speech": no_speech, "level_dbfs": -120.0 if no_speech else -12.0,
            "neighbours": [neighbour(label, 0.7, 0), neighbour("sad", 0.3, 1)]}  # fmt: skip


def rendered(browser, data: dict):
    page = browser.new_page()
    page.route(
        "**/health",
        lambda route: route.fulfill(
            json={
                "status": "ok",
                "model": "m",
                "labels": list(data["probabilities"]),
                "knn": True,
                "max_upload_mb": 50,
                "max_seconds": 600,
                "neighbours": {"max": 32, "audio": False},
            }
        ),
    )
    page.set_content(PAGE)
    page.evaluate("(result) => render(result)", data)
    return page


@needs_chromium
def test_page_says_no_speech_instead_of_an_emotion(browser):
    page = rendered(browser, result(no_speech=True))
    assert page.inner_text("#verdict") == "No speech detected (loudest -120 dBFS)"
    assert "no-speech" in page.get_attribute("#verdict", "class")
    assert page.locator("#timeline .segment").all_inner_texts() == ["no speech", "angry"]
    page.close()
    page = rendered(browser, result(no_speech=False))
    assert page.inner_text("#verdict") == "angry"
    page.close()


@needs_chromium
def test_neighbours_are_listed_and_a_segment_shows_its_own(browser):
    page = rendered(browser, result(no_speech=False))
    items = page.locator("#neighbours li")
    assert items.count() == 2
    assert items.nth(0).locator(".chip").inner_text() == "angry"
    assert items.nth(0).locator(".weight").inner_text() == "70.0%"
    assert "clips/angry_0" in items.nth(0).inner_text()
    assert page.locator(".play-neighbour").count() == 0  # the server does not serve their audio
    page.click("#timeline .segment >> nth=1")
    assert page.inner_text("#neighbours-title") == "Nearest training clips of 1.0–2.0 s"
    assert page.locator("#neighbours li").count() == 1
    # The time axis spans the input: ticks from 0 s to its duration.
    ticks = page.locator("#axis .tick").all_inner_texts()
    assert ticks[0] == "0 s" and ticks[-1] == "2 s"
    page.close()


@needs_chromium
def test_labels_from_a_model_folder_are_text_not_html(browser):
    label = "<img src=x onerror=\"document.title='pwned'\">"
    data = result(no_speech=False, label=label)
    page = rendered(browser, data)
    assert label in page.inner_text("#bars") and page.inner_text("#verdict") == label
    assert label in page.inner_text("#neighbours")
    assert page.locator("#bars img, #neighbours img, #timeline img").count() == 0
    assert page.title() != "pwned"
    page.close()


def test_page_never_assigns_html_from_data():
    assert "innerHTML" not in PAGE and "insertAdjacentHTML" not in PAGE


# ── end to end, against a live server ───────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def live_server(trained_run):
    from emoknn.model_info import describe_model
    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    recognizer = EmotionRecognizer.load(trained_run, device="cpu")
    info = describe_model(trained_run)
    app = create_app(recognizer, model_name=trained_run.name, model_info=info,
                     serve_neighbour_audio=True)  # fmt: skip
    with served(app) as url:
        yield url


@needs_chromium
def test_upload_shows_waveform_axis_timeline_neighbours_and_plays(
    browser, live_server, small_synthetic_corpus, tmp_path
):
    from emoknn.audio import load_audio
    from emoknn.corpora import load_synthetic

    utterances = load_synthetic(small_synthetic_corpus)
    long = np.concatenate([load_audio(u.path) for u in utterances[:5]])  # ≈ 4 s
    upload = tmp_path / "long.wav"
    sf.write(upload, long, 16000)
    page = browser.new_page(viewport={"width": 1000, "height": 1100})
    page.goto(live_server)
    page.wait_for_function("document.getElementById('model-info').textContent.length > 0")
    header = page.inner_text("#model-info")
    # The model is what its folder says: the tiny encoder, fine-tuned, on the synthetic corpus.
    assert "encoder tiny" in header and "fine-tuned encoder" in header
    assert "trained on synthetic" in header and "angry, happy, neutral, sad" in header
    # The segmentation control maps to the query options.
    assert page.locator("#segmentation option").all_inner_texts() == [
        "fixed windows",
        "voice activity",
    ]
    page.fill("#window-seconds", "1")
    page.fill("#neighbour-count", "4")
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/predict" in r.url else None)
    page.set_input_files("#file", str(upload))
    page.click("#predict")
    page.wait_for_function("document.body.dataset.rendered === '1'")
    assert "segmentation=window" in requests[-1] and "window_seconds=1" in requests[-1]
    assert "neighbours=4" in requests[-1]
    segments = page.locator("#timeline .segment")
    assert segments.count() == 4  # 4.x s in 1 s windows (the short rest is dropped or kept)
    assert page.get_attribute("#waveform", "data-drawn") == "true"
    inked = page.evaluate("""() => { const c = document.getElementById('waveform');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n / (c.width * c.height); }""")
    assert 0.05 < inked < 0.95  # a drawn waveform: neither blank nor a filled box
    ticks = page.locator("#axis .tick").all_inner_texts()
    assert ticks[0] == "0 s" and len(ticks) >= 4
    items = page.locator("#neighbours li")
    assert items.count() == 4
    assert items.nth(0).locator(".chip").inner_text() in ("angry", "happy", "neutral", "sad")
    assert page.locator(".play-neighbour").count() == 4  # audio served: each can be played
    # A neighbour's audio comes from the server, by its id.
    first_id = items.nth(0).locator(".entry-id").inner_text()
    status = page.evaluate("(id) => fetch('neighbour-audio?id=' + encodeURIComponent(id))"
                           ".then(r => r.status)", first_id)  # fmt: skip
    assert status == 200
    # Clicking a segment plays it: the player moves to its start and the cursor appears.
    page.click("#timeline .segment >> nth=2")
    page.wait_for_function("document.getElementById('player').currentTime >= 2.0")
    assert page.inner_text("#neighbours-title").startswith("Nearest training clips of 2.0–3.0 s")
    page.wait_for_function("document.getElementById('cursor').style.display === 'block'")
    cursor_left = float(page.evaluate("document.getElementById('cursor').style.left")[:-1])
    assert 40 <= cursor_left <= 80  # 2–3 s of ≈ 4.3 s
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "page-long-upload.png"), full_page=True)
    # Voice activity: the same control, another query.
    page.select_option("#segmentation", "vad")
    assert page.is_hidden("#hop-option")
    page.click("#predict")
    page.wait_for_function("document.body.dataset.rendered === '2'")
    assert "segmentation=vad" in requests[-1] and "hop_seconds" not in requests[-1]
    assert not page.is_visible("#error")
    page.close()


@needs_chromium
def test_record_from_the_fake_microphone(playwright, live_server, tmp_path):
    browser, page = page_with_fake_microphone(playwright, live_server)
    record_then_upload_a_non_audio_file(page, tmp_path)
    browser.close()


def test_health_json_is_what_the_page_reads(trained_run):
    from fastapi.testclient import TestClient

    from emoknn.model_info import describe_model
    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    recognizer = EmotionRecognizer.load(trained_run, device="cpu")
    client = TestClient(create_app(recognizer, model_info=describe_model(trained_run)))
    health = client.get("/health").json()
    assert health["neighbours"] == {"max": 32, "audio": False}
    assert health["model_info"]["training"] == "fine-tuned encoder"
    json.dumps(health)

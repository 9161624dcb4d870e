"""The page as the issue looked at it: a whisper-base model (frozen encoder) and a 31 s recording,
in headless Chromium. Needs the real whisper-base (marked `pretrained`; skipped without it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from live_page import CHROMIUM, served

pytestmark = pytest.mark.pretrained


@pytest.fixture(scope="module")
def whisper_run(whisper_base_dir, small_synthetic_corpus, tmp_path_factory) -> Path:
    from emoknn.cli import app

    out = tmp_path_factory.mktemp("whisper-frozen") / "run"
    result = CliRunner().invoke(app, [
        "train", "--corpus", str(small_synthetic_corpus), "--fold", "0", "--out", str(out),
        "--preset", "frozen", "--encoder", str(whisper_base_dir), "--epochs", "3",
        "--cache-views", "1", "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_whisper_base_page_on_a_31_s_recording(whisper_run, small_synthetic_corpus, tmp_path):
    from emoknn.audio import load_audio
    from emoknn.corpora import load_synthetic
    from emoknn.model_info import describe_model
    from emoknn.predict import EmotionRecognizer
    from emoknn.serve import create_app

    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    recognizer = EmotionRecognizer.load(whisper_run, device="cpu")
    app = create_app(recognizer, model_name=whisper_run.name,
                     model_info=describe_model(whisper_run))  # fmt: skip
    clips = [load_audio(u.path) for u in load_synthetic(small_synthetic_corpus)]
    pause = np.zeros(4000, dtype=np.float32)
    audio = np.concatenate([piece for clip in clips for piece in (clip, pause)])[: 31 * 16000]
    assert len(audio) == 31 * 16000
    upload = tmp_path / "thirty-one.wav"
    sf.write(upload, audio, 16000)
    with served(app, startup_seconds=30) as url, sync_playwright() as playwright:
        arguments = ["--no-sandbox", "--disable-gpu"]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=arguments)  # fmt: skip
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        page.goto(url)
        page.wait_for_function("document.getElementById('model-info').textContent.length > 0")
        header = page.inner_text("#model-info")
        assert "whisper-base" in header and "frozen encoder" in header
        assert "fine-tuned" not in header
        page.set_input_files("#file", str(upload))
        page.click("#predict")
        page.wait_for_function("document.body.dataset.rendered === '1'", timeout=300_000)
        assert page.locator("#timeline .segment").count() == 5  # 4 × 7.5 s + 1 s
        assert page.get_attribute("#waveform", "data-drawn") == "true"
        ticks = page.locator("#axis .tick").all_inner_texts()
        assert ticks[0] == "0 s" and ticks[-1] == "30 s"
        assert page.locator("#neighbours li").count() == 5
        shots = Path(os.environ.get("EMOKNN_SCREENSHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page-whisper-base-31s.png"), full_page=True)
        browser.close()

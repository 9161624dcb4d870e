"""What the browser tests share: Debian's Chromium, a live server in a thread, and the page's
microphone and bad-file steps (`test_serve`, `test_web_page`, `test_web_page_pretrained`)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)"
)
ARGUMENTS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync",
             "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
FAKE_MICROPHONE = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@contextmanager
def served(app, startup_seconds: float = 20.0) -> Iterator[str]:
    """Run the ASGI `app` with uvicorn in a thread on a free port; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + startup_seconds
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def record_then_upload_a_non_audio_file(page, tmp_path: Path) -> None:
    """Record from the fake microphone (it plays a beep), then upload a file that is not audio:
    the recording becomes the source with no error, the bad file gets the decoder's message."""
    page.click("#record")
    page.wait_for_selector("#record.recording")
    page.wait_for_timeout(1500)
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


def page_with_fake_microphone(playwright, url: str):
    """Headless Chromium with a fake microphone it may use, on the page at `url` once the page
    has read the model's header: (browser, page)."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=[*ARGUMENTS, *FAKE_MICROPHONE]
    )
    context = browser.new_context()
    context.grant_permissions(["microphone"], origin=url.rstrip("/"))
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('model-info').textContent.length > 0")
    return browser, page

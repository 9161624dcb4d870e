"""`serve`: neighbours in /predict, and neighbour audio that never leaves the datastore's list."""

from __future__ import annotations

import io
import urllib.parse
from pathlib import Path

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


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """Files no request may ever get: a text file and an audio file not in the datastore."""
    folder = tmp_path_factory.mktemp("secret")
    (folder / "passwords.txt").write_text("hunter2")
    sf.write(folder / "private.wav", np.full(16000, 0.1, dtype=np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def open_client(recognizer, secret):
    """A server with neighbour audio on, over a copy of the datastore in which one entry lists a
    text file disguised as .wav, and one lists nothing."""
    store = recognizer.store.subset(range(len(recognizer.store)))
    store.sources[1] = str(secret / "passwords.txt")
    fake = secret / "fake.wav"
    fake.write_text("hunter2")
    store.sources[2] = str(fake)
    store.sources[3] = ""
    store.sources[4] = Path(store.sources[4]).name  # a published datastore: a name, no path
    served = EmotionRecognizer(recognizer.model, store, recognizer.knn_settings,
                               recognizer.max_seconds)  # fmt: skip
    return TestClient(create_app(served, serve_neighbour_audio=True)), store


def test_predict_lists_neighbours_when_asked(recognizer, small_synthetic_corpus):
    client = TestClient(create_app(recognizer))
    clips = [load_audio(u.path) for u in load_synthetic(small_synthetic_corpus)[:4]]
    long = wav_bytes(np.concatenate(clips))
    response = client.post("/predict", files={"file": ("long.wav", long)},
                           params={"neighbours": 3, "window_seconds": 1.0})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["neighbours"]) == 3 and len(body["segments"]) >= 2
    assert all(len(s["neighbours"]) == 3 for s in body["segments"])
    first = body["neighbours"][0]
    assert set(first) == {"id", "label", "distance", "weight", "source"}
    direct = recognizer.predict(np.concatenate(clips), window_seconds=1.0, neighbours=3)[0]
    assert [n["id"] for n in body["neighbours"]] == [n.id for n in direct.neighbours]
    plain = client.post("/predict", files={"file": ("long.wav", long)}).json()
    assert plain["neighbours"] == [] and plain["probabilities"] == body["probabilities"]
    for bad in (-1, 33, "x"):
        response = client.post("/predict", files={"file": ("a.wav", long)},
                               params={"neighbours": bad})  # fmt: skip
        assert response.status_code == 422


def test_neighbour_audio_is_off_by_default(recognizer):
    client = TestClient(create_app(recognizer))
    entry = recognizer.store.ids[0]
    response = client.get("/neighbour-audio", params={"id": entry})
    assert response.status_code == 404 and "--serve-neighbour-audio" in response.json()["detail"]
    assert client.get("/health").json()["neighbours"]["audio"] is False


def test_neighbour_audio_serves_listed_files_only(open_client, secret):
    client, store = open_client
    assert client.get("/health").json()["neighbours"]["audio"] is True
    entry = store.ids[0]
    response = client.get("/neighbour-audio", params={"id": entry})
    assert response.status_code == 200
    with open(store.sources[0], "rb") as handle:
        assert response.content == handle.read()
    # Listed, but not audio (a text file, a text file named .wav), no source, or a bare file name
    # (a published datastore): not served.
    for row in (1, 2, 3, 4):
        response = client.get("/neighbour-audio", params={"id": store.ids[row]})
        assert response.status_code == 404 and b"hunter2" not in response.content


@pytest.mark.parametrize(
    "attempt",
    [
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "wav/../../../../etc/passwd",
        "SECRET/private.wav",
        "SECRET/passwords.txt",
        "file://SECRET/private.wav",
        "",
        "\x00",
    ],
)
def test_no_request_reaches_a_path_outside_the_datastore(open_client, secret, attempt):
    client, store = open_client
    attempt = attempt.replace("SECRET", str(secret))
    for params in ({"id": attempt}, {"id": urllib.parse.quote(attempt)}):
        response = client.get("/neighbour-audio", params=params)
        assert response.status_code in (404, 422)
        assert b"root:" not in response.content and b"hunter2" not in response.content
        assert not response.content.startswith(b"RIFF")
    # Nor through the path: the route takes no path segments.
    response = client.get("/neighbour-audio/" + urllib.parse.quote(attempt, safe=""))
    assert response.status_code in (404, 405, 422) and not response.content.startswith(b"RIFF")
    # A listed source path given as the id is not an id.
    response = client.get("/neighbour-audio", params={"id": store.sources[0]})
    assert response.status_code == 404

"""An HTTP service around `EmotionRecognizer`: `emoknn serve --model RUN_DIR`.

    GET  /          a page to upload or record audio and see the emotion: the waveform with a
                    timeline of segments on a time axis, playback, bars, and the nearest
                    training clips behind the prediction
    GET  /health    {"status": "ok", "labels": [...], "knn": true, "limits": {...},
                     "model_info": {...} (encoder, frozen or fine-tuned, corpus: what the model
                     folder says), "neighbours": {"max": 32, "audio": false}}
    POST /predict   multipart upload (field "file") → the Prediction as JSON
                    query: segmentation=window|vad, window_seconds, hop_seconds, neighbours=N,
                    speaker=NAME (a model trained with --speaker-norm: the statistics of the
                    unlabelled clips enrolled as NAME in the model folder, `emoknn enrol`; the
                    server's `--speaker` when the request names none; the JSON's
                    `normalisation` says which were used)
    GET  /neighbour-audio?id=ID   the audio file of datastore entry ID, only when the server was
                    started with `serve_neighbour_audio` (`--serve-neighbour-audio`): it exposes
                    training audio. The id is looked up in the datastore; only the file the
                    datastore lists for it is ever served (and only if it reads as audio), so no
                    request can name any other path.
    GET  /docs      the OpenAPI schema, browsable

Limits, each stated in `/health` (what one request can cost the server):
- request body ≤ `max_upload_mb` (413): a declared Content-Length over it is refused before any
  byte is read, and a body sent without one (chunked) is cut off as soon as it passes the limit,
  so no more than the limit is ever received or stored;
- audio ≤ `max_seconds` long (413), read from the file header before decoding;
- ≤ `max_segments` segments (model forward passes) per request, and windows of 0.5–30 s (422):
  with a hop of 1 ms a 600 s upload would otherwise mean 600,000 windows.
Audio that cannot be decoded, is empty or too short gives 422 with the reason. Error messages name
the upload by the client's file name only, never a server path. Predictions run one at a time (a
lock), in FastAPI's thread pool, so the event loop stays responsive.
"""

from __future__ import annotations

import math
import re
import socket
import tempfile
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from emoknn.audio import MIN_SAMPLES, SAMPLE_RATE, decoder_reason
from emoknn.checks import check_int, check_number
from emoknn.errors import ConfigError, EmoknnError
from emoknn.inputs import AUDIO_SUFFIXES
from emoknn.knn import MAX_NEIGHBOURS
from emoknn.model_folder import list_enrolments
from emoknn.predict import EmotionRecognizer, load_recognizer
from emoknn.publish import published_json
from emoknn.segments import SEGMENTATIONS
from emoknn.speaker_stats import SpeakerStatistics

try:
    from fastapi import FastAPI, File, HTTPException, Query, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
except ImportError as error:  # pragma: no cover - exercised only without the extra installed
    raise EmoknnError("the HTTP service needs FastAPI: pip install 'emoknn[serve]'") from error

READ_CHUNK = 1 << 20
MAX_WINDOW_SECONDS = 30.0  # per-forward cost grows with the window (attention is quadratic)
MIN_WINDOW_SECONDS = 0.5
# The suffix of the client's file name is kept for the decoder's sake only when it is plain.
PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


class UploadLimit:
    """ASGI middleware: no request body over `max_bytes` is read.

    A declared Content-Length over the limit gets 413 before the application runs. A body without
    one (chunked transfer), or longer than declared, is counted as it arrives and cut off with 413
    at the first chunk that passes the limit: the application (and the multipart parser that
    spools uploads to disk) never receives more than `max_bytes`.
    """

    def __init__(self, app: Any, max_bytes: int, limit_text: str) -> None:
        self.app, self.max_bytes, self.limit_text = app, max_bytes, limit_text

    def _too_large(self, size_text: str) -> HTTPException:
        return HTTPException(413, f"upload is {size_text}; the limit is {self.limit_text}")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = self._too_large(f"{int(declared) / 2**20:.1f} MB")
            await JSONResponse({"detail": error.detail}, 413)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI turns an HTTPException raised while reading the body into this
                    # response; Starlette closes (and so deletes) the partial upload.
                    raise self._too_large("over the limit")
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as error:
            if error.status_code != 413 or started:
                raise
            await JSONResponse({"detail": error.detail}, 413)(scope, receive, send)


def count_windows(num_samples: int, window: int, hop: int) -> int:
    """How many segments `window_segments` cuts `num_samples` into (an upper bound by at most one,
    for the short last window it may drop): 1 if it fits one window, else
    1 + ceil((num_samples − window) / hop)."""
    if num_samples <= window:
        return 1
    return 1 + math.ceil((num_samples - window) / hop)


def create_app(
    recognizer: EmotionRecognizer,
    max_upload_mb: float = 50.0,
    max_seconds: float = 600.0,
    model_name: str = "model",
    max_segments: int = 256,
    max_queue: int = 8,
    model_info: dict[str, Any] | None = None,
    serve_neighbour_audio: bool = False,
    enrolments: dict[str, SpeakerStatistics] | None = None,
    default_speaker: str | None = None,
) -> FastAPI:
    """The FastAPI application serving `recognizer` (see the module docstring). `model_info`:
    `emoknn.model_info.describe_model` of the model folder, shown by the page. `enrolments`: the
    speaker (or domain) statistics a request may name (`speaker=NAME`), `default_speaker` the one
    used when it names none (a model trained with --speaker-norm needs one or the other)."""
    import soundfile as sf

    check_number(max_upload_mb, "max_upload_mb", 0.0, strict_minimum=True)
    check_number(max_seconds, "max_seconds", 0.0, strict_minimum=True)
    check_int(max_segments, "max_segments", 1)
    check_int(max_queue, "max_queue", 0)
    enrolments = dict(enrolments or {})
    for statistics in enrolments.values():
        recognizer._check_statistics(statistics)  # of this model's features, or refused now
    if default_speaker is not None and default_speaker not in enrolments:
        raise ConfigError(f"--speaker {default_speaker!r}: not enrolled in the model folder "
                          f"(enrolled: {', '.join(enrolments) or 'none'})")  # fmt: skip
    app = FastAPI(
        title="emoknn",
        description="Speech emotion recognition (SupCon fine-tuning + kNN inference).",
        version=__import__("emoknn").__version__,
    )
    lock = threading.Lock()
    line_lock = threading.Lock()
    in_line = 0  # predictions running (one at most) or waiting for the lock
    max_bytes = int(max_upload_mb * 1024 * 1024)
    app.add_middleware(UploadLimit, max_bytes=max_bytes, limit_text=f"{max_upload_mb:g} MB")
    page = resources.files("emoknn.web").joinpath("index.html").read_text(encoding="utf-8")
    limits = {
        "max_upload_mb": max_upload_mb,
        "max_seconds": max_seconds,
        "max_segments": max_segments,
        "max_queue": max_queue,
        "window_seconds": [MIN_WINDOW_SECONDS, MAX_WINDOW_SECONDS],
        "default_window_seconds": recognizer.max_seconds,
    }

    # The only files /neighbour-audio can serve: the datastore's own list, fixed at start-up, of
    # absolute paths (a published datastore keeps file names only; nothing is resolved against the
    # server's working folder).
    store = recognizer.store
    audio_of: dict[str, Path] = {}
    if serve_neighbour_audio and store is not None:
        audio_of = {id_: Path(source) for id_, source in zip(store.ids, store.sources, strict=True)
                    if source and Path(source).is_absolute()
                    and Path(source).suffix.lower() in AUDIO_SUFFIXES}  # fmt: skip

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/neighbour-audio")
    def neighbour_audio(
        entry: Annotated[
            str, Query(alias="id", description="A datastore entry id, as /predict lists it")
        ],
    ) -> FileResponse:
        if not serve_neighbour_audio:
            raise HTTPException(
                404, "neighbour audio is off (start the server with --serve-neighbour-audio)"
            )
        source = audio_of.get(entry)
        if source is None:
            raise HTTPException(404, "no audio recorded for that datastore entry")
        try:
            sf.info(str(source))  # a listed file that is not (or no longer) audio is not served
        except (sf.LibsndfileError, RuntimeError, OSError):
            raise HTTPException(404, "the audio of that datastore entry is not available") from None
        return FileResponse(source, media_type="audio/" + source.suffix.lower().lstrip("."))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "labels": recognizer.labels,
            "knn": recognizer.store is not None,
            # A dimensional model: its attributes, whether it gives classes, and each attribute's
            # training mean ± 2.5 standard deviations (the page's valence-arousal plane).
            "task": "categorical"
            if recognizer.attributes is None
            else ("both" if recognizer.predicts_classes else "dimensional"),
            "attributes": recognizer.attributes,
            "attribute_axes": recognizer.attribute_axes(),
            "model_info": model_info or {"name": model_name},
            "neighbours": {
                "max": MAX_NEIGHBOURS if recognizer.store is not None else 0,
                "audio": bool(audio_of),
            },
            # A model trained with --speaker-norm, and the enrolments a request may name.
            "speaker_norm": recognizer.speaker_norm,
            "enrolments": [
                {"name": name, "kind": e.kind, "clips": e.clips} for name, e in enrolments.items()
            ],
            "default_speaker": default_speaker,
            "max_upload_mb": max_upload_mb,  # kept at the top level for earlier clients
            "max_seconds": max_seconds,
            "limits": limits,
        }

    @app.post("/predict")
    def predict(
        file: Annotated[UploadFile, File(description="An audio file (wav, flac, ogg, mp3, ...)")],
        segmentation: Annotated[str, Query(description="window or vad, for long audio")] = "window",
        window_seconds: Annotated[
            float | None, Query(ge=MIN_WINDOW_SECONDS, le=MAX_WINDOW_SECONDS)
        ] = None,
        hop_seconds: Annotated[float | None, Query(gt=0)] = None,
        neighbours: Annotated[
            int, Query(ge=0, le=MAX_NEIGHBOURS, description="List the N nearest training clips")
        ] = 0,
        speaker: Annotated[
            str | None,
            Query(description="Speaker-normalised models: an enrolled speaker or domain"),
        ] = None,
    ) -> dict[str, Any]:
        nonlocal in_line
        statistics = _statistics(speaker)  # before the upload is read
        with line_lock:
            if in_line > max_queue:  # one running and max_queue waiting: come back later
                raise HTTPException(
                    503, f"busy: {in_line - 1} request(s) already wait; the limit is {max_queue}",
                    headers={"Retry-After": "1"},
                )
            in_line += 1
        try:
            return _predict(file, segmentation, window_seconds, hop_seconds, neighbours,
                            statistics)  # fmt: skip
        finally:
            with line_lock:
                in_line -= 1

    def _statistics(speaker: str | None) -> SpeakerStatistics | None:
        """The statistics a request names (or the server's default), or 422 saying why not."""
        name = speaker if speaker is not None else default_speaker
        if name is None:
            if recognizer.speaker_norm:
                enrolled = ", ".join(enrolments) or "none"
                raise HTTPException(422, "this model was trained with speaker normalisation: name "
                                    f"an enrolled speaker (speaker=NAME; enrolled: {enrolled})")
            return None
        if not recognizer.speaker_norm:
            raise HTTPException(422, "speaker: this model was trained without speaker "
                                     "normalisation; leave speaker out")  # fmt: skip
        if name not in enrolments:
            raise HTTPException(422, f"speaker {name[:64]!r} is not enrolled (enrolled: "
                                     f"{', '.join(enrolments) or 'none'})")  # fmt: skip
        return enrolments[name]

    def _predict(file: UploadFile, segmentation: str, window_seconds: float | None,
                 hop_seconds: float | None, neighbours: int,
                 statistics: SpeakerStatistics | None) -> dict[str, Any]:  # fmt: skip
        if neighbours and recognizer.store is None:
            raise HTTPException(422, "neighbours: this model has no kNN datastore")
        if segmentation not in SEGMENTATIONS:
            raise HTTPException(422, f"segmentation must be one of {', '.join(SEGMENTATIONS)}")
        window = window_seconds if window_seconds is not None else recognizer.max_seconds
        if hop_seconds is not None and hop_seconds > window:
            raise HTTPException(422, f"hop_seconds must be ≤ window_seconds ({window:g} s)")
        name = Path(file.filename or "upload").name or "upload"
        suffix = Path(name).suffix
        suffix = suffix.lower() if PLAIN_SUFFIX.fullmatch(suffix) else ".audio"
        with tempfile.TemporaryDirectory(prefix="emoknn-") as folder:
            path = Path(folder) / f"upload{suffix}"

            def client_message(error: Exception) -> str:
                """The error in the client's terms: its file name, never a server path."""
                return str(error).replace(str(path), name).replace(folder, "")

            size = 0
            with path.open("wb") as handle:
                while chunk := file.file.read(READ_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:  # UploadLimit stops the body first; this is a backstop
                        raise HTTPException(413, f"{name}: the limit is {max_upload_mb:g} MB")
                    handle.write(chunk)
            file.file.close()  # the parser's spooled copy goes now, not at the end of the request
            if size == 0:
                raise HTTPException(422, f"{name}: the upload is empty")
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError) as error:
                reason = client_message(RuntimeError(decoder_reason(error)))
                raise HTTPException(422, f"{name}: cannot decode audio ({reason})") from error
            if info.duration > max_seconds:
                raise HTTPException(413, f"{name}: audio is {info.duration:.1f} s long; the "
                                         f"limit is {max_seconds:g} s")  # fmt: skip
            if segmentation == "window":  # known before any work; VAD is bounded as it runs
                hop = hop_seconds if hop_seconds is not None else window
                samples = max(MIN_SAMPLES, math.ceil(info.duration * SAMPLE_RATE))
                needed = count_windows(samples, round(window * SAMPLE_RATE),
                                       max(1, round(hop * SAMPLE_RATE)))  # fmt: skip
                if needed > max_segments:
                    raise HTTPException(
                        422,
                        f"{name}: {info.duration:.1f} s in {window:g} s windows every {hop:g} s "
                        f"is {needed} segments; the limit is {max_segments} per request (use a "
                        "larger hop_seconds)",
                    )
            try:
                with lock:
                    result = recognizer.predict(path, window_seconds=window_seconds,
                                                hop_seconds=hop_seconds, segmentation=segmentation,
                                                max_segments=max_segments,
                                                neighbours=neighbours,
                                                statistics=statistics)[0]  # fmt: skip
            except EmoknnError as error:
                raise HTTPException(422, client_message(error)) from error
        result.source = name
        # A client never learns where files lie here: each neighbour's source by its name.
        return published_json(result.to_dict())

    return app


def check_listen_address(host: str, port: int) -> None:
    """Fail at once, before the model loads, when `host:port` cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"--host {host!r}: not an address of this machine ({error})") from None
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({error.strerror or error}); choose another "
                "--port or --host"
            ) from None


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, use_knn: bool = True,
          max_upload_mb: float = 50.0, max_seconds: float = 600.0, precision: str = "fp32",
          int8: bool = False, max_segments: int = 256, max_queue: int = 8,
          serve_neighbour_audio: bool = False,
          announce: Callable[[str], None] | None = None,
          default_speaker: str | None = None) -> None:  # fmt: skip
    """Load the model (see `load_recognizer`) and run the service with uvicorn until interrupted;
    `announce` is told where it serves once the model has loaded (not before: a model that fails
    to load is never announced).

    `serve_neighbour_audio` lets the page play the datastore's training clips (off by default:
    it exposes that audio to whoever can reach the server)."""
    import uvicorn

    from emoknn.hub import resolve_model
    from emoknn.model_info import describe_model

    recognizer = load_recognizer(model_dir, use_knn=use_knn, precision=precision, int8=int8)
    info = describe_model(resolve_model(Path(model_dir)))
    enrolments = {}
    if recognizer.speaker_norm and recognizer.folder is not None:  # every one, checked now
        names = list_enrolments(recognizer.folder)
        enrolments = {name: recognizer.enrolment(name) for name in names}
    app = create_app(recognizer, max_upload_mb, max_seconds, model_name=Path(model_dir).name,
                     max_segments=max_segments, max_queue=max_queue, model_info=info,
                     serve_neighbour_audio=serve_neighbour_audio, enrolments=enrolments,
                     default_speaker=default_speaker)  # fmt: skip
    if announce is not None:
        announce(f"emoknn serving {model_dir} on http://{host}:{port}/ (API docs: /docs)")
        if getattr(recognizer, "note", None):
            announce(f"note: {recognizer.note}")
        if recognizer.speaker_norm:
            announce(f"speaker-normalised model: {len(enrolments)} enrolled speaker(s) or "
                     "domain(s) a request may name (unlabelled target audio)")  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="info")

"""An HTTP service around `EmotionRecognizer`: `emoknn serve --model RUN_DIR`.

    GET  /          a page to upload or record audio and see the emotion (bars, and a timeline
                    for long audio)
    GET  /health    {"status": "ok", "labels": [...], "knn": true, ...}
    POST /predict   multipart upload (field "file") → the Prediction as JSON
                    query: segmentation=window|vad, window_seconds, hop_seconds
    GET  /docs      the OpenAPI schema, browsable

Limits (413 when exceeded): upload size (`max_upload_mb`) and audio duration (`max_seconds`).
Audio that cannot be decoded, is empty or too short gives 422 with the reason. Predictions run
one at a time (a lock), in FastAPI's thread pool, so the event loop stays responsive.
"""

from __future__ import annotations

import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from emoknn.errors import AudioError, ConfigError, EmoknnError
from emoknn.predict import SEGMENTATIONS, EmotionRecognizer, load_recognizer

try:
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.responses import HTMLResponse
except ImportError as error:  # pragma: no cover - exercised only without the extra installed
    raise EmoknnError("the HTTP service needs FastAPI: pip install 'emoknn[serve]'") from error

READ_CHUNK = 1 << 20


def create_app(
    recognizer: EmotionRecognizer,
    max_upload_mb: float = 50.0,
    max_seconds: float = 600.0,
    model_name: str = "model",
) -> FastAPI:
    """The FastAPI application serving `recognizer` (see the module docstring)."""
    import soundfile as sf

    app = FastAPI(
        title="emoknn",
        description="Speech emotion recognition (SupCon fine-tuning + kNN inference).",
        version=__import__("emoknn").__version__,
    )
    lock = threading.Lock()
    max_bytes = int(max_upload_mb * 1024 * 1024)
    page = resources.files("emoknn.web").joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "labels": recognizer.labels,
            "knn": recognizer.store is not None,
            "max_upload_mb": max_upload_mb,
            "max_seconds": max_seconds,
        }

    @app.post("/predict")
    def predict(
        request: Request,
        file: Annotated[UploadFile, File(description="An audio file (wav, flac, ogg, mp3, ...)")],
        segmentation: Annotated[str, Query(description="window or vad, for long audio")] = "window",
        window_seconds: Annotated[float | None, Query(gt=0)] = None,
        hop_seconds: Annotated[float | None, Query(gt=0)] = None,
    ) -> dict[str, Any]:
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_bytes + 64 * 1024:  # multipart framing adds a little
            raise HTTPException(413, f"upload is {declared / 2**20:.1f} MB; the limit is "
                                     f"{max_upload_mb:g} MB")  # fmt: skip
        if segmentation not in SEGMENTATIONS:
            raise HTTPException(422, f"segmentation must be one of {SEGMENTATIONS}")
        name = Path(file.filename or "upload").name
        suffix = Path(name).suffix.lower() or ".audio"
        with tempfile.TemporaryDirectory(prefix="emoknn-") as folder:
            path = Path(folder) / f"upload{suffix}"
            size = 0
            with path.open("wb") as handle:
                while chunk := file.file.read(READ_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise HTTPException(
                            413, f"upload exceeds the limit of {max_upload_mb:g} MB"
                        )
                    handle.write(chunk)
            if size == 0:
                raise HTTPException(422, f"{name}: the upload is empty")
            try:
                duration = sf.info(str(path)).duration
            except (sf.LibsndfileError, RuntimeError) as error:
                raise HTTPException(422, f"{name}: cannot decode audio ({error})") from error
            if duration > max_seconds:
                raise HTTPException(413, f"{name}: audio is {duration:.1f} s long; the limit is "
                                         f"{max_seconds:g} s")  # fmt: skip
            try:
                with lock:
                    result = recognizer.predict(path, window_seconds=window_seconds,
                                                hop_seconds=hop_seconds,
                                                segmentation=segmentation)[0]  # fmt: skip
            except (AudioError, ConfigError) as error:
                raise HTTPException(422, str(error).replace(str(path), name)) from error
        result.source = name
        return result.to_dict()

    return app


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, use_knn: bool = True,
          max_upload_mb: float = 50.0, max_seconds: float = 600.0, precision: str = "fp32",
          int8: bool = False) -> None:  # fmt: skip
    """Load the model (see `load_recognizer`) and run the service with uvicorn until interrupted."""
    import uvicorn

    recognizer = load_recognizer(model_dir, use_knn=use_knn, precision=precision, int8=int8)
    app = create_app(recognizer, max_upload_mb, max_seconds, model_name=Path(model_dir).name)
    uvicorn.run(app, host=host, port=port, log_level="info")

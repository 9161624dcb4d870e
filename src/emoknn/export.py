"""ONNX export of a trained model, and prediction with onnxruntime on top of the same kNN stage.

    emoknn export --model RUN_DIR --format onnx [--quantize]

writes `RUN_DIR/onnx/` (or `--out`):

    model.onnx          encoder + head for ONE utterance: waveform (1, T) float32 at 16 kHz, any
                        T ≥ 400 → embedding (1, D), logits (1, C). One utterance per call means
                        no padding, so it is exact for every encoder family.
    model.int8.onnx     with --quantize: weights of MatMul/Gemm dynamically quantised to int8
    datastore.npz, knn.json   copied from the run: the kNN step works unchanged on ONNX outputs
    export.json         labels, crop length, the PyTorch model's fingerprint, and the measured
                        parity (ONNX vs PyTorch) and int8 accuracy difference

`OnnxEmotionRecognizer.load(export_dir)` predicts like `EmotionRecognizer` (same segmentation,
same kNN interpolation), running the ONNX model with onnxruntime on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import softmax

from emoknn.errors import ConfigError, EmoknnError
from emoknn.inference import (
    DATASTORE_FILE,
    KNN_SETTINGS_FILE,
    fingerprint_of,
    fold_of_run,
    run_max_seconds,
)
from emoknn.knn import Datastore, TuningResult
from emoknn.predict import EmotionRecognizer

if TYPE_CHECKING:
    import torch

    from emoknn.model import EmotionModel

EXPORT_META_FILE = "export.json"
# ONNX must reproduce PyTorch this closely (max |Δ| of logits) or the export is refused.
PARITY_TOLERANCE = 1e-3


def _load_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise EmoknnError(
            "ONNX export needs onnx and onnxruntime: pip install 'emoknn[export]'"
        ) from error
    return onnxruntime


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session whose worker threads sleep between runs rather than spin:
    prediction shares the CPU with decoding, the kNN search and, in `serve`, the web server (no
    throughput lost in `bench/predict_throughput.py`)."""
    ort = _load_onnxruntime()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _reference_clips(run_dir: Path, max_seconds: float, count: int = 24) -> list[np.ndarray]:
    """Validation-speaker clips of the run's fold (for parity checks), else generated audio."""
    from emoknn.audio import center_crop, load_audio, max_samples

    try:
        val = fold_of_run(run_dir).val
        chosen = val[:: max(1, len(val) // count)][:count]
        return [center_crop(load_audio(u.path), max_samples(max_seconds)) for u in chosen]
    except EmoknnError:
        rng = np.random.default_rng(0)  # the corpus moved: a fixed set of noise-like clips
        return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32)
                for s in np.linspace(0.5, max_seconds, count)]  # fmt: skip


def write_onnx(model: EmotionModel, path: Path) -> torch.nn.Module:
    """Write `model` (an EmotionModel) as a one-utterance ONNX graph with a dynamic length:
    waveform (1, T) → embedding (1, D), logits (1, C). Returns the exported wrapper module."""
    import torch

    class SingleUtterance(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, waveform: torch.Tensor):  # (1, T)
            lengths = torch.ones(1, dtype=torch.long) * waveform.shape[1]
            output = self.model(waveform, lengths)
            return output.embeddings, output.logits

    wrapper = SingleUtterance(model.eval()).eval()
    example = torch.zeros(1, 16000) + 0.01
    samples = torch.export.Dim("samples", min=400, max=16000 * 600)
    # The exporter narrates its steps on stdout and logs about absent torchvision ops: keep the
    # user's terminal for what matters (failures still raise).
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["waveform"],
            output_names=["embedding", "logits"], dynamic_shapes={"waveform": {1: samples}},
            dynamo=True, verbose=False, external_data=False,  # one self-contained file
        )  # fmt: skip
    return wrapper


def write_int8(onnx_path: Path, quantized_path: Path) -> None:
    """Dynamic int8 quantisation of the transformer's linear layers (MatMul/Gemm); the convs keep
    float weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class DropPreprocessingAdvice(logging.Filter):  # logged on the root logger at every call
        def filter(self, record: logging.LogRecord) -> bool:
            return "consider to run pre-processing" not in record.getMessage()

    advice = DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(str(onnx_path), str(quantized_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])  # fmt: skip
    except (ValueError, RuntimeError) as error:
        raise EmoknnError(f"int8 quantization of {onnx_path} failed: {error}") from error
    finally:
        logging.getLogger().removeFilter(advice)


def export_onnx(
    model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, quantize: bool = False
) -> dict[str, Any]:
    """Export a run's best model to ONNX (see the module docstring); return export.json's data."""
    import torch

    from emoknn.train import load_trained_model

    _load_onnxruntime()  # before the slow export: a clear error if the extra is missing
    model_dir = Path(model_dir)
    checkpoint = model_dir / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        raise EmoknnError(f"{model_dir}: not a trained model folder (no checkpoints/best.ckpt)")
    out_dir = Path(out_dir) if out_dir else model_dir / "onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_trained_model(checkpoint, device="cpu")
    max_seconds = run_max_seconds(model_dir)
    onnx_path = out_dir / "model.onnx"
    wrapper = write_onnx(model, onnx_path)

    clips = _reference_clips(model_dir, max_seconds)
    session = onnx_session(onnx_path)
    torch_logits, onnx_logits = [], []
    with torch.inference_mode():
        for clip in clips:
            x = torch.from_numpy(clip)[None]
            torch_logits.append(wrapper(x)[1].numpy()[0])
            onnx_logits.append(session.run(None, {"waveform": clip[None]})[1][0])
    parity = float(np.abs(np.array(torch_logits) - np.array(onnx_logits)).max())
    if parity > PARITY_TOLERANCE:
        raise EmoknnError(
            f"ONNX output differs from PyTorch by {parity:.2e} (> {PARITY_TOLERANCE})"
        )

    for name in (DATASTORE_FILE, KNN_SETTINGS_FILE):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    meta: dict[str, Any] = {
        "labels": model.labels,
        "max_seconds": max_seconds,
        "embedding_size": model.embedding_size,
        "fingerprint": fingerprint_of(model),
        "source": str(model_dir),
        "parity_max_abs_logit_difference": parity,
        "parity_clips": len(clips),
    }
    if quantize:
        quantized_path = out_dir / "model.int8.onnx"
        write_int8(onnx_path, quantized_path)
        quantized = onnx_session(quantized_path)
        int8_logits = np.array([quantized.run(None, {"waveform": c[None]})[1][0] for c in clips])
        fp32 = np.array(onnx_logits)
        meta["int8"] = {
            "file": quantized_path.name,
            "prediction_agreement": float(np.mean(fp32.argmax(1) == int8_logits.argmax(1))),
            "max_abs_probability_difference": float(
                np.abs(softmax(fp32) - softmax(int8_logits)).max()
            ),
            "size_mb": round(quantized_path.stat().st_size / 2**20, 2),
            "fp32_size_mb": round(onnx_path.stat().st_size / 2**20, 2),
            "clips": len(clips),
        }
    (out_dir / EXPORT_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


class OnnxEmotionRecognizer(EmotionRecognizer):
    """`EmotionRecognizer` running an exported ONNX model with onnxruntime (CPU)."""

    def __init__(self, session, labels: list[str], store: Datastore | None,
                 knn_settings, max_seconds: float) -> None:  # fmt: skip
        if (store is None) != (knn_settings is None):
            raise ConfigError("give both a datastore and kNN settings, or neither")
        self.session, self._labels = session, list(labels)
        self.store, self.knn_settings = store, knn_settings
        self.max_seconds, self.device, self.precision = max_seconds, "cpu", "fp32"

    @classmethod
    def load(cls, export_dir: str | os.PathLike, quantized: bool = False,  # type: ignore[override]
             use_knn: bool = True) -> OnnxEmotionRecognizer:  # fmt: skip
        export_dir = Path(export_dir)
        meta_file = export_dir / EXPORT_META_FILE
        if not meta_file.is_file():
            raise EmoknnError(f"{export_dir}: not an emoknn ONNX export (no {EXPORT_META_FILE})")
        meta = json.loads(meta_file.read_text())
        model_file = export_dir / ("model.int8.onnx" if quantized else "model.onnx")
        if not model_file.is_file():
            hint = " (export with --quantize)" if quantized else ""
            raise EmoknnError(f"{model_file}: not found{hint}")
        session = onnx_session(model_file)
        store = settings = None
        if use_knn:
            store = Datastore.load(export_dir / DATASTORE_FILE, meta["fingerprint"])
            settings = TuningResult.load(export_dir / KNN_SETTINGS_FILE).interpolated
        return cls(session, meta["labels"], store, settings, meta["max_seconds"])

    @property
    def labels(self) -> list[str]:
        return self._labels

    def forward_clips(
        self, clips: Sequence[np.ndarray], batch_size: int = 16
    ) -> tuple[np.ndarray, np.ndarray]:
        embeddings, probabilities = [], []
        for clip in clips:
            embedding, logits = self.session.run(None, {"waveform": clip[None].astype(np.float32)})
            exponent = np.exp(logits[0] - logits[0].max())
            probabilities.append(exponent / exponent.sum())
            embeddings.append(embedding[0])
        width = self.session.get_outputs()[0].shape[-1]
        if not clips:
            return np.zeros((0, len(self.labels))), np.zeros((0, width), dtype=np.float32)
        return np.array(probabilities), np.array(embeddings, dtype=np.float32)

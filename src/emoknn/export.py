"""ONNX export of a trained model, and prediction with onnxruntime on top of the same kNN stage.

    emoknn export --model RUN_DIR --format onnx [--quantize]

writes `RUN_DIR/onnx/` (or `--out`):

    model.onnx          encoder + head for ONE utterance: waveform (1, T) float32 at 16 kHz, any
                        T ≥ 400 → embedding (1, D), logits (1, C), and for a dimensional model
                        attributes (1, A) in its corpus's scale. One utterance per call means
                        no padding, so it is exact for every encoder family.
    model.int8.onnx     with --quantize: weights of MatMul/Gemm dynamically quantised to int8
    datastore.npz, knn.json   copied from the run: the kNN step works unchanged on ONNX outputs
    export.json         labels, crop length, the PyTorch model's fingerprint, and the measured
                        parity (ONNX vs PyTorch) and int8 accuracy difference

`OnnxEmotionRecognizer.load(export_dir)` (in emoknn.predict, re-exported here) predicts like
`EmotionRecognizer` (same segmentation, same kNN interpolation), running the ONNX model with
onnxruntime on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import softmax

from emoknn.errors import ConfigError, EmoknnError
from emoknn.files import check_writable_folder
from emoknn.inference import fold_of_run
from emoknn.model_folder import (
    CALIBRATION_FILE,
    DATASTORE_FILE,
    EXPORT_META_FILE,
    INT8_ONNX_FILE,
    KNN_SETTINGS_FILE,
    ONNX_FILE,
    load_knn,
    load_model,
    predictable_labels,
    read_model_meta,
    write_export_meta,
)
from emoknn.model_info import export_origin
from emoknn.onnx_runtime import load_onnxruntime, onnx_session
from emoknn.predict import OnnxEmotionRecognizer
from emoknn.publish import publish_folder, published_json

if TYPE_CHECKING:
    import torch

    from emoknn.model import EmotionModel

__all__ = ["EXPORT_META_FILE", "OnnxEmotionRecognizer", "export_onnx", "write_int8", "write_onnx"]
# ONNX must reproduce PyTorch this closely (max |Δ| of logits) or the export is refused.
PARITY_TOLERANCE = 1e-3


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
    waveform (1, T) → embedding (1, D), logits (1, C) (+ attributes (1, A) for a dimensional
    model). Returns the exported wrapper module."""
    import torch

    class SingleUtterance(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, waveform: torch.Tensor):  # (1, T)
            lengths = torch.ones(1, dtype=torch.long) * waveform.shape[1]
            output = self.model(waveform, lengths)
            if output.attributes is not None:
                return output.embeddings, output.logits, output.attributes
            return output.embeddings, output.logits

    wrapper = SingleUtterance(model.eval()).eval()
    example = torch.zeros(1, 16000) + 0.01
    # Any length up to 10 minutes, or up to what the encoder takes at once (Whisper: 30 s; the
    # graph slices its positional table to the frame count, so longer inputs cannot exist).
    limit = model.max_input_seconds
    longest = 16000 * 600 if limit is None else round(16000 * limit)
    samples = torch.export.Dim("samples", min=400, max=longest)
    # The exporter narrates its steps on stdout and logs about absent torchvision ops: keep the
    # user's terminal for what matters (failures still raise).
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["waveform"],
            output_names=["embedding", "logits"] + (["attributes"] if model.attributes else []),
            dynamic_shapes={"waveform": {1: samples}},
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
    """Export a run's model to ONNX (see the module docstring); return export.json's data."""
    load_onnxruntime()  # before the slow export: a clear error if the extra is missing
    model_dir = Path(model_dir)
    # Everything is read and validated before anything is written.
    model_meta = read_model_meta(model_dir)
    if model_meta.model_config.get("speaker_norm"):
        raise ConfigError(
            f"{model_dir}: trained with speaker normalisation, which the ONNX graph cannot apply "
            "(it takes a waveform, not a speaker's statistics); predict and serve it from the "
            "model folder"
        )
    model = load_model(model_dir, device="cpu")
    has_knn = (model_dir / DATASTORE_FILE).is_file()
    if has_knn:
        load_knn(model_dir, model_meta.fingerprint, model_meta.labels, model.embedding_size)
    out_dir = check_writable_folder(Path(out_dir) if out_dir else model_dir / "onnx",
                                    "the export folder")  # fmt: skip
    # Built in a staging folder and moved into place only when complete and checked, so that a
    # failed or interrupted export never leaves a mix of an old export and a new model.
    staging = out_dir / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        meta = _export_into(model, model_meta, model_dir, staging, quantize, has_knn)
        publish_folder(staging)  # an export is for elsewhere: no path of this machine in it
        meta = published_json(meta)
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def _export_into(model: EmotionModel, model_meta, model_dir: Path, out_dir: Path, quantize: bool,
                 has_knn: bool) -> dict[str, Any]:  # fmt: skip
    import torch

    max_seconds = model_meta.max_seconds
    onnx_path = out_dir / ONNX_FILE
    wrapper = write_onnx(model, onnx_path)

    clips = _reference_clips(model_dir, max_seconds)
    session = onnx_session(onnx_path)
    torch_logits, onnx_logits = [], []
    torch_attributes, onnx_attributes = [], []
    with torch.inference_mode():
        for clip in clips:
            x = torch.from_numpy(clip)[None]
            expected = wrapper(x)
            got = session.run(None, {"waveform": clip[None]})
            torch_logits.append(expected[1].numpy()[0])
            onnx_logits.append(got[1][0])
            if model.attributes:  # the regression output, in the corpus's scale
                torch_attributes.append(expected[2].numpy()[0])
                onnx_attributes.append(got[2][0])
    parity = float(np.abs(np.array(torch_logits) - np.array(onnx_logits)).max())
    if model.attributes:
        parity = max(parity, float(np.abs(np.array(torch_attributes)
                                          - np.array(onnx_attributes)).max()))  # fmt: skip
    if parity > PARITY_TOLERANCE:
        raise EmoknnError(
            f"ONNX output differs from PyTorch by {parity:.2e} (> {PARITY_TOLERANCE})"
        )

    for name in (DATASTORE_FILE, KNN_SETTINGS_FILE) if has_knn else ():
        shutil.copy2(model_dir / name, out_dir / name)
    if (model_dir / CALIBRATION_FILE).is_file():  # the probabilities' temperatures
        shutil.copy2(model_dir / CALIBRATION_FILE, out_dir / CALIBRATION_FILE)
    meta: dict[str, Any] = {
        "labels": model.labels,
        "max_seconds": max_seconds,
        "embedding_size": model.embedding_size,
        "max_input_seconds": model.max_input_seconds,
        "fingerprint": model_meta.fingerprint,
        "task": model.config.task,
        "attributes": model.attributes,
        "attribute_statistics": None
        if model.attributes is None
        else {"mean": model.config.attribute_mean, "std": model.config.attribute_std},
        "model_labels": predictable_labels(model_meta.model_config),
        "source": str(model_dir.resolve()),  # published as its name (emoknn.publish)
        "origin": export_origin(model_dir),
        "parity_max_abs_logit_difference": parity,
        "parity_clips": len(clips),
    }
    if quantize:
        quantized_path = out_dir / INT8_ONNX_FILE
        write_int8(onnx_path, quantized_path)
        quantized = onnx_session(quantized_path)
        int8_logits = np.array([quantized.run(None, {"waveform": c[None]})[1][0] for c in clips])
        fp32 = np.array(onnx_logits)
        meta["int8"] = {
            "file": quantized_path.name,
            "prediction_agreement": float(np.mean(fp32.argmax(1) == int8_logits.argmax(1))),
            "max_abs_probability_difference": float(
                # per clip: softmax over each row's C logits, not over the whole (N, C) matrix
                np.abs(softmax(fp32, axis=1) - softmax(int8_logits, axis=1)).max()
            ),
            "size_mb": round(quantized_path.stat().st_size / 2**20, 2),
            "fp32_size_mb": round(onnx_path.stat().st_size / 2**20, 2),
            "clips": len(clips),
        }
    write_export_meta(out_dir, meta)
    return meta


def _publish(staging: Path, out_dir: Path) -> None:
    """Move a finished export into `out_dir`: export.json (what marks an export folder) goes
    first and comes back last, and files of an earlier export that this one lacks are removed."""
    (out_dir / EXPORT_META_FILE).unlink(missing_ok=True)
    for name in (ONNX_FILE, INT8_ONNX_FILE, DATASTORE_FILE, KNN_SETTINGS_FILE, CALIBRATION_FILE):
        if (staging / name).is_file():
            os.replace(staging / name, out_dir / name)
        else:
            (out_dir / name).unlink(missing_ok=True)
    os.replace(staging / EXPORT_META_FILE, out_dir / EXPORT_META_FILE)

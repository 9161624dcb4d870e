"""ONNX Runtime, for exported models: the optional dependency, a CPU session, and the check that a
graph is the one export.json describes. Used by `emoknn.export` (writing and checking an export)
and `emoknn.predict` (`OnnxEmotionRecognizer`, which predicts with an export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emoknn.errors import EmoknnError, ModelFolderError


def load_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError as error:
        raise EmoknnError(
            "ONNX models need onnx and onnxruntime: pip install 'emoknn[export]'"
        ) from error
    return onnxruntime


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session whose worker threads sleep between runs rather than spin:
    prediction shares the CPU with decoding, the kNN search and, in `serve`, the web server (no
    throughput lost in `bench/predict_throughput.py`)."""
    ort = load_onnxruntime()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for a bad model file
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ModelFolderError(f"{path}: not a usable ONNX model ({message})") from error


def check_onnx_outputs(session, meta: dict, path: Path) -> None:
    """The graph maps `waveform` to (embedding (1, D), logits (1, C)) (+ attributes (1, A) for a
    dimensional model) as export.json says."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = session.get_outputs()
    expected = ["embedding", "logits"] + (["attributes"] if meta.get("attributes") else [])
    if inputs != ["waveform"] or [o.name for o in outputs] != expected:
        raise ModelFolderError(
            f"{path}: expected input waveform and outputs {', '.join(expected)}; got {inputs} "
            f"and {[o.name for o in outputs]}"
        )
    width, classes = outputs[0].shape[-1], outputs[1].shape[-1]
    if width != meta["embedding_size"] or classes != len(meta["labels"]):
        raise ModelFolderError(
            f"{path}: gives {width}-wide embeddings and {classes} classes; export.json says "
            f"{meta['embedding_size']} and {len(meta['labels'])}"
        )

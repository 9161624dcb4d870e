"""What a model folder holds, in words a page can show truthfully: `describe_model(path)`.

    {"name": "fold00-Ses01F", "kind": "run", "encoder": "whisper-base", "encoder_type": "whisper",
     "training": "frozen encoder", "corpus": "iemocap", "fold": "fold00-Ses01F",
     "labels": [...], "summary": "whisper-base (whisper), frozen encoder, trained on iemocap ..."}

Only what the folder's own files say is reported; what they do not say is left out (never
guessed). Reading never fails: a file that cannot be read leaves its fields out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emoknn.errors import EmoknnError
from emoknn.model_folder import read_export_meta, read_model_meta, read_run_config

ADAPT_REPORT_FILE = "adapt.json"  # written by emoknn.adapt


def _encoder_name(encoder: str) -> str:
    """A hub name as it is; a local folder by its name (not the machine's path)."""
    if not encoder:
        return ""
    if os.sep in encoder or encoder.startswith((".", "~")):
        return Path(encoder).name or encoder
    return encoder


# What an export records of the model folder it came from (`export_origin`).
EXPORT_ORIGIN_KEYS = ("encoder", "encoder_type", "training", "corpus", "corpus_kind", "fold")


def export_origin(folder: str | os.PathLike) -> dict[str, Any]:
    """The description of a model folder an export carries, so that it describes itself without
    naming where that folder lies."""
    origin: dict[str, Any] = {}
    _from_model_folder(Path(folder), origin)
    return {key: origin[key] for key in EXPORT_ORIGIN_KEYS if key in origin}


def _from_model_folder(folder: Path, info: dict[str, Any]) -> None:
    try:
        meta = read_model_meta(folder)
    except EmoknnError:
        return
    config = meta.model_config
    info["labels"] = list(meta.labels)
    info["encoder"] = _encoder_name(str(config.get("encoder", "")))
    encoder_config = config.get("encoder_config") or {}
    if isinstance(encoder_config, dict) and encoder_config.get("model_type"):
        info["encoder_type"] = str(encoder_config["model_type"])
    info["max_seconds"] = meta.max_seconds
    try:
        run = read_run_config(folder)
    except EmoknnError:
        run = None
    if run is not None:
        train_config = run.get("train_config", {})
        info["kind"] = "run"
        info["training"] = (
            "frozen encoder (only the head was trained)"
            if train_config.get("freeze_encoder")
            else "fine-tuned encoder"
        )
        if run.get("corpus"):
            info["corpus"] = Path(str(run["corpus"])).name
        for key in ("kind", "fold"):
            if run.get(key):
                info["corpus_kind" if key == "kind" else key] = str(run[key])
        return
    adapt = folder / ADAPT_REPORT_FILE
    if adapt.is_file():
        try:
            report = json.loads(adapt.read_text(encoding="utf-8"))
            source = report.get("source", {})
            info["kind"] = "adapted"
            info["training"] = (
                f"adapted from {_encoder_name(str(source.get('name', '?')))} with a kNN datastore "
                "of the user's clips (encoder weights not trained)"
            )
            if report.get("data", {}).get("path"):
                info["corpus"] = Path(str(report["data"]["path"])).name
        except (OSError, ValueError, AttributeError):
            info["kind"] = "adapted"


def describe_model(path: str | os.PathLike) -> dict[str, Any]:
    """A truthful description of the model at `path` (a run, an export, an adapted model, a
    Hugging Face classifier, a checkpoint); see the module docstring."""
    path = Path(path)
    info: dict[str, Any] = {"name": path.name or str(path)}
    if (path / "export.json").is_file():
        try:
            meta = read_export_meta(path)
        except EmoknnError:
            meta = {}
        info["kind"] = "export"
        info["labels"] = list(meta.get("labels", []))
        origin = meta.get("origin")  # what the run it came from said, recorded at export
        source = meta.get("source")
        if not isinstance(origin, dict):
            origin = {}
            if source and Path(source).is_absolute() and Path(source).is_dir():  # older exports
                _from_model_folder(Path(source), origin)
        for key in EXPORT_ORIGIN_KEYS:
            if isinstance(origin.get(key), str):
                info[key] = origin[key]
        info["runtime"] = "ONNX Runtime"
    elif path.is_file() and path.suffix == ".ckpt":
        info["kind"] = "checkpoint"
    elif (path / "model.json").is_file():
        _from_model_folder(path, info)
        info.setdefault("kind", "model")
    elif (path / "config.json").is_file():
        info["kind"] = "huggingface"
        info["training"] = "a published classifier, imported as it is (not trained here)"
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            info["encoder_type"] = str(config.get("model_type", ""))
            info["labels"] = [config["id2label"][k] for k in sorted(config.get("id2label", {}),
                                                                  key=int)]  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            pass
    info["summary"] = summary(info)
    return info


def summary(info: dict[str, Any]) -> str:
    """One sentence from `describe_model`'s fields, naming only what is known."""
    parts = []
    encoder = info.get("encoder") or ""
    if encoder and info.get("encoder_type") and info["encoder_type"] not in encoder.lower():
        encoder = f"{encoder} ({info['encoder_type']})"
    elif not encoder and info.get("encoder_type"):
        encoder = info["encoder_type"]
    if encoder:
        parts.append(f"encoder {encoder}")
    if info.get("training"):
        parts.append(info["training"])
    if info.get("corpus"):
        corpus = f"trained on {info['corpus']}"
        if info.get("corpus_kind") and info["corpus_kind"] not in ("auto", info["corpus"]):
            corpus += f" ({info['corpus_kind']})"
        if info.get("fold"):
            corpus += f", {info['fold']}"
        parts.append(corpus)
    if info.get("runtime"):
        parts.append(f"exported, runs on {info['runtime']}")
    return "; ".join(parts) if parts else "no description recorded in the model folder"

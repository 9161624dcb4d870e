"""Every file of a model folder, damaged every way a disk, a hand edit or an attacker can: each
load gives one clean error (an EmoknnError, one line, naming the file), never a traceback and
never a silently wrong model (issue #22)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from emoknn.errors import EmoknnError

DEEP = "[" * 100_000 + "]" * 100_000


def _json_mutations(data: dict) -> list[tuple[str, object]]:
    """(name, new content) pairs: content is a dict to dump, or raw text."""
    out: list[tuple[str, object]] = [("deep nesting", DEEP), ("a list", "[1, 2]"),
                                     ("extra key", {**data, "zzz_unknown": 1})]  # fmt: skip
    for key, value in data.items():
        out.append((f"missing {key}", {k: v for k, v in data.items() if k != key}))
        wrong = [1.5, "text", None, True, [1], {"a": 1}]
        for other in wrong:
            if type(other) is not type(value) and not (
                isinstance(value, (int, float)) and isinstance(other, (int, float))
                and not isinstance(other, bool)
            ):
                out.append((f"{key} as {type(other).__name__}", {**data, key: other}))
                break
        out.append((f"{key} nested deeply", json.dumps({**data, key: 0}).replace(
            f'"{key}": 0', f'"{key}": {DEEP}')))  # fmt: skip
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((f"{key} NaN", json.dumps({**data, key: float("nan")})))
        if isinstance(value, dict):
            for inner, inner_value in value.items():
                if isinstance(inner_value, (int, float)) and not isinstance(inner_value, bool):
                    out.append((f"{key}.{inner} NaN", json.dumps(
                        {**data, key: {**value, inner: float("nan")}})))  # fmt: skip
                    out.append((f"{key}.{inner} as text",
                                {**data, key: {**value, inner: "text"}}))  # fmt: skip
            out.append((f"{key} extra key", {**data, key: {**value, "zzz_unknown": 1}}))
    return out


def _npz_mutations(path: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    out = [("extra array", {**arrays, "zzz": np.zeros(3)})]
    for name, value in arrays.items():
        out.append((f"missing {name}", {k: v for k, v in arrays.items() if k != name}))
        if value.dtype.kind != "f":
            out.append((f"{name} as floats", {**arrays, name: np.zeros(value.shape or (2,))}))
        out.append((f"{name} as text", {**arrays, name: np.full(value.shape, "x")}))
        out.append((f"{name} empty", {**arrays, name: value[:0] if value.shape else
                                      np.zeros(0)}))  # fmt: skip
        if value.dtype.kind == "f":
            poisoned = value.copy()
            poisoned.flat[0] = np.nan
            out.append((f"{name} NaN", {**arrays, name: poisoned}))
    return out


def _safetensors_mutations(path: Path) -> list[tuple[str, dict]]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    first = next(name for name, t in tensors.items() if t.is_floating_point())
    poisoned = tensors[first].clone()
    poisoned.view(-1)[0] = float("nan")
    import torch

    return [
        ("NaN weight", {**tensors, first: poisoned}),
        ("missing tensor", {k: v for k, v in tensors.items() if k != first}),
        ("extra tensor", {**tensors, "zzz": torch.zeros(2)}),
        ("wrong shape", {**tensors, first: torch.zeros(3)}),
        ("wrong dtype", {**tensors, first: tensors[first].double()}),
    ]


def _mutations(run: Path) -> list[tuple[str, str, object]]:
    """(file, mutation, how to write it) for every file of the folder."""
    cases: list[tuple[str, str, object]] = []
    for path in sorted(p for p in run.iterdir() if p.is_file()):
        name = path.name
        size = path.stat().st_size
        cases.append((name, "empty", b""))
        cases.append((name, "truncated", path.read_bytes()[: size // 2]))
        cases.append((name, "garbage", b"\x00\x01garbage" * 10))
        if name.endswith(".json"):
            for label, content in _json_mutations(json.loads(path.read_text())):
                text = content if isinstance(content, str) else json.dumps(content)
                cases.append((name, label, text.encode()))
        elif name.endswith(".npz"):
            cases += [(name, label, ("npz", arrays)) for label, arrays in _npz_mutations(path)]
        elif name.endswith(".safetensors"):
            cases += [(name, label, ("safetensors", tensors))
                      for label, tensors in _safetensors_mutations(path)]  # fmt: skip
    return cases


def _write(path: Path, how: object) -> None:
    if isinstance(how, bytes):
        path.write_bytes(how)
    elif how[0] == "npz":
        with path.open("wb") as handle:
            np.savez(handle, **how[1])
    else:
        from safetensors.torch import save_file

        save_file(how[1], str(path))


def _load_everything(run: Path) -> None:
    """What reads each file: the recognizer (model, datastore, knn.json) and the run config."""
    from emoknn.model_folder import read_run_config
    from emoknn.predict import EmotionRecognizer

    EmotionRecognizer.load(run, device="cpu")
    read_run_config(run)


# Mutations a reader may accept, because the file still says the same thing to it.
HARMLESS = {
    # Top-level extras are metadata this version does not read (a newer emoknn may add some);
    # an extra field *inside* a setting (model_config, knn settings) is refused.
    ("datastore.npz", "extra array"),
    # Where each entry came from (file, speaker): optional (datastores written before
    # `--neighbours` have none) and free text, shown beside a neighbour, never computed with.
    ("datastore.npz", "missing sources"),
    ("datastore.npz", "missing speakers"),
    ("datastore.npz", "sources as text"),
    ("datastore.npz", "speakers as text"),
    ("knn.json", "extra key"),
    ("model.json", "extra key"),
    ("train_config.json", "extra key"),
    ("train_config.json", "train_config extra key"),
    # What produced the file, for people reading it: not read back.
    ("model.json", "missing emoknn_version"),
    ("model.json", "emoknn_version as float"),
    # calibration.json's record of how the temperatures were fitted (clips, speakers, NLL before
    # → after) is for reports and never computed with; `fitted_for` is (required).
    ("calibration.json", "extra key"),
    ("calibration.json", "missing clips"),
    ("calibration.json", "missing speakers"),
    ("calibration.json", "missing nll"),
    ("calibration.json", "nll extra key"),
}
# train_config.json's run information (corpus, fold, speakers, digests of the split) is optional:
# runs written by `train_fold` for a custom split have none; a resume compares what is there.
OPTIONAL_RUN_INFO = ("corpus", "kind", "scheme", "fold", "test_speaker", "val_speaker",
                     "train_ids_sha256", "val_ids_sha256")
HARMLESS |= {("train_config.json", f"missing {key}") for key in OPTIONAL_RUN_INFO}


def _harmless(name: str, label: str) -> bool:
    # train_config.json's training settings are a record: no loader reads them as numbers except
    # the crop length (validated), and a resume refuses any setting that differs from its own.
    setting_as_text = (name == "train_config.json" and label.startswith("train_config.")
                       and label.endswith(" as text") and "max_seconds" not in label)  # fmt: skip
    return (name, label) in HARMLESS or setting_as_text


def test_every_damaged_file_gives_one_clean_error(trained_run, tmp_path):
    pristine = tmp_path / "pristine"
    shutil.copytree(trained_run, pristine, ignore=shutil.ignore_patterns("checkpoints", "logs",
                                                                         "*.csv", "*.npy"))
    _load_everything(pristine)
    cases = _mutations(pristine)
    assert len({name for name, _, _ in cases}) >= 5 and len(cases) > 100
    failures = []
    work = tmp_path / "work"
    for name, label, how in cases:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        _write(work / name, how)
        try:
            _load_everything(work)
        except EmoknnError as error:
            message = str(error)
            if "\n" in message or name not in message:
                failures.append(f"{name} {label}: unclear message {message[:200]!r}")
        except Exception as error:
            failures.append(f"{name} {label}: {type(error).__name__}: {str(error)[:200]}")
        else:
            if not _harmless(name, label):
                failures.append(f"{name} {label}: accepted")
    assert not failures, "\n".join(failures)

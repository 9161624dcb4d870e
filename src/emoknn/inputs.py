"""What the recognizer accepts as input: audio files (and folders of them), 1-D arrays of 16 kHz
samples, or `(array, sample_rate)` pairs; each checked before any model work.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from emoknn.audio import SAMPLE_RATE, prepare_samples
from emoknn.errors import AudioError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64")
AudioInput = str | os.PathLike | np.ndarray | tuple[np.ndarray, int]


def is_one_input(item: object) -> bool:
    """A path, an array, or an `(array, sample_rate)` pair (not a pair of paths)."""
    if isinstance(item, (str, os.PathLike, np.ndarray, np.generic)):
        return True
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and not isinstance(item[0], (str, os.PathLike))
        and isinstance(item[1], numbers.Number)
    )


def as_input_list(inputs: object) -> list:
    """`inputs` as a list of single inputs (one input becomes a list of one)."""
    if is_one_input(inputs):
        return [inputs]
    if isinstance(inputs, (bytes, dict)) or not isinstance(inputs, Iterable):
        raise AudioError(
            "expected a path, a 1-D array of 16 kHz samples, an (array, sample_rate) pair, or a "
            f"list of those; got {type(inputs).__name__}"
        )
    return list(inputs)


def check_input(item: object) -> Path | tuple[str, np.ndarray]:
    """One input as a Path, or as ("<array>", checked mono 16 kHz samples)."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    if isinstance(item, np.generic):
        raise AudioError(f"<array>: got a numpy scalar ({item!r}); expected a 1-D array of samples")
    if isinstance(item, np.ndarray):
        return "<array>", prepare_samples(item, SAMPLE_RATE)
    if is_one_input(item):
        samples, rate = item  # type: ignore[misc]
        return "<array>", prepare_samples(samples, rate)
    raise AudioError(
        "expected a path, a 1-D array of 16 kHz samples or an (array, sample_rate) pair; got "
        f"{type(item).__name__}" + (f" of length {len(item)}" if isinstance(item, tuple) else "")
    )


def find_audio_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (recursively) into audio files; return (files, problems)."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                problems.append(
                    f"{path}: folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})"
                )
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{path}: file not found")
    return files, problems

"""A second synthetic corpus, shifted from the first: other speakers (seed 1), every clip's pitch
and formants raised 12 % (resampled), and one class the models trained on the first lack:
its `sad` clips are labelled `calm`. Labels are written as another corpus might spell them
(`anger`, `joy`), so they meet the first corpus's classes only through the shared vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from emoknn.corpora import generate_synthetic_corpus, write_manifest

SPELLING = {"angry": "anger", "happy": "joy", "neutral": "neutral", "sad": "calm"}
SHIFT = 1.12  # playback-speed factor: pitch and formants × 1.12, duration ÷ 1.12


def make_shifted_corpus(root: Path) -> Path:
    """2 sessions × 2 speakers × 4 classes × 2 clips (32) of 0.5–1 s; returns its manifest."""
    source = generate_synthetic_corpus(root / "source", seed=1, num_sessions=2,
                                       utterances_per_class=2, min_seconds=0.5,
                                       max_seconds=1.0)  # fmt: skip
    shifted = []
    for utterance in source:
        samples, rate = sf.read(utterance.path, dtype="float32")
        positions = np.arange(0, len(samples) - 1, SHIFT)
        path = root / "wav" / f"{utterance.id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.interp(positions, np.arange(len(samples)), samples), rate)
        shifted.append(type(utterance)(utterance.id, path, SPELLING[utterance.label],
                                       utterance.speaker, utterance.session))  # fmt: skip
    write_manifest(shifted, root / "shifted.csv")
    return root / "shifted.csv"

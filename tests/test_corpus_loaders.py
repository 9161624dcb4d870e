"""Loaders of the widely used public corpora, each on its real layout in miniature."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from emoknn.corpora import Utterance, apply_label_map
from emoknn.errors import CorpusError


def test_utterance_optional_split_and_attributes():
    u = Utterance("a", Path("a.wav"), "angry", "s1")
    assert (u.split, u.arousal, u.valence, u.dominance) == (None, None, None, None)
    v = Utterance("b", Path("b.wav"), "angry", "s1", None, "train", 4, 2.5, 3.25)
    assert v.split == "train" and v.arousal == 4.0 and isinstance(v.arousal, float)
    mapped = apply_label_map([v], {"angry": "mad"}, "test")
    assert mapped[0].label == "mad" and mapped[0].split == "train" and mapped[0].dominance == 3.25
    with pytest.raises(CorpusError, match="split"):
        Utterance("c", Path("c.wav"), "angry", "s1", split="")
    with pytest.raises(CorpusError, match="arousal"):
        Utterance("c", Path("c.wav"), "angry", "s1", arousal=math.nan)
    with pytest.raises(CorpusError, match="valence"):
        Utterance("c", Path("c.wav"), "angry", "s1", valence="high")

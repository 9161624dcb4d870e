"""Manifests and label maps, mutated at random (seeded): every load is either the utterances the
rules promise or one EmoknnError line, never a traceback (issue #32). No hypothesis: a seeded
generator keeps the cases the same on every run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoknn.corpora import load_corpus
from emoknn.errors import EmoknnError

LABELS = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    for speaker in range(3):
        for number, label in enumerate(LABELS):
            path = root / "wav" / f"s{speaker}" / f"{label}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            noise = np.random.default_rng(speaker * 10 + number).uniform(-0.3, 0.3, 1600)
            sf.write(path, noise.astype(np.float32), 16000)
    return root


def _rows(root: Path) -> list[list[str]]:
    return [[f"wav/s{s}/{label}.wav", label, f"s{s}"] for s in range(3) for label in LABELS]


def _mutate(rows: list[list[str]], rng: random.Random) -> list[list[str]]:
    rows = [list(r) for r in rows]
    row = rng.randrange(len(rows))
    kind = rng.randrange(7)
    if kind == 0:  # the same file by another spelling
        rows.append([rows[row][0].replace("wav/", "wav/../wav/", 1), rng.choice(LABELS), "s9"])
    elif kind == 1:  # an empty field
        rows[row][rng.randrange(3)] = ""
    elif kind == 2:  # a missing file
        rows[row][0] = "wav/ghost.wav"
    elif kind == 3:  # a path escaping the folder, absolute or odd characters
        rows[row][0] = rng.choice(["../../etc/passwd", "/dev/null", "wav/\x00.wav", "wav/s0"])
    elif kind == 4:  # a quote or comma inside a field
        rows[row][1] = rng.choice(['an"gry', "a,b", " angry "])
    elif kind == 5:  # a repeated row
        rows.append(list(rows[row]))
    return rows


def _label_map(rng: random.Random) -> object:
    keys = [*LABELS, "angri", "", "calm"]
    values = [*LABELS, None, "", 3, "merged"]
    if rng.random() < 0.1:
        return rng.choice([[], "text", {}, {"angry": {"nested": 1}}])
    return {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(1, 4))}


def test_random_manifests_and_label_maps_load_or_give_one_line(clips, tmp_path):
    rng = random.Random(32)
    failures = []
    for case in range(150):
        rows = _mutate(_rows(clips), rng) if case % 3 else _rows(clips)
        csv = clips / "manifest.csv"
        csv.write_text("path,label,speaker\n" + "\n".join(",".join(r) for r in rows) + "\n")
        mapping = _label_map(rng) if case % 2 else None
        map_file = tmp_path / "map.json"
        map_file.write_text(json.dumps(mapping))
        try:
            loaded = load_corpus(csv, label_map=map_file if mapping is not None else None)
        except EmoknnError as error:
            if "\n" in str(error).split("\n(pass")[0].split(":\n")[0]:
                failures.append(f"case {case}: unclear {str(error)[:120]!r}")
            continue
        except Exception as error:
            failures.append(f"case {case}: {type(error).__name__}: {error}")
            continue
        paths = [u.path.resolve() for u in loaded]
        if len(set(paths)) != len(paths):
            failures.append(f"case {case}: one file under two utterances was accepted")
        if isinstance(mapping, dict):
            named = {k for k in mapping}
            kept = {u.label for u in loaded}
            # every class not named keeps its name; a class mapped to null is gone
            for label in set(LABELS) - named:
                if label not in kept:
                    failures.append(f"case {case}: {label} dropped though {mapping} names it not")
            for key, value in mapping.items():
                if value is None and key in kept and key not in mapping.values():
                    failures.append(f"case {case}: {key} kept though mapped to null")
    assert not failures, "\n".join(failures[:20])

"""bench/adaptation.py on tiny features: every remedy is measured, and no test speaker's clip is
ever drawn as a labelled clip (its figures come from bench/, on whisper-base features)."""

from __future__ import annotations

import numpy as np

import adaptation  # bench/ is on pytest's pythonpath (pyproject.toml)
from emoknn.corpora import generate_synthetic_corpus
from emoknn.refit import RefitSettings

CLASSES = ("angry", "happy", "neutral", "sad")


def test_labelled_clips_come_from_the_pool_only():
    labels = np.repeat(np.arange(4), 10)
    pool = np.arange(0, 40, 2)  # every other clip: the non-test speakers'
    rows = adaptation.draw_clips(labels, pool, 3, np.random.default_rng(0))
    assert set(rows) <= set(pool)
    assert np.bincount(labels[rows]).tolist() == [3, 3, 3, 3]


def test_speaker_statistics_standardise_each_speaker_with_its_own_clips():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 2, 3)).astype(np.float32)
    speakers = np.array(list("aaaabbbb"))
    corpus = adaptation.Corpus("c", features, np.zeros(8, int), speakers)
    normalised = adaptation.normalised(corpus, "speaker").features
    for speaker in "ab":
        part = normalised[speakers == speaker]
        np.testing.assert_allclose(part.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(part.std(axis=0), 1, atol=1e-4)
    # Another speaker's clips never move a speaker's normalised features.
    changed = features.copy()
    changed[speakers == "b"] += 5
    moved = adaptation.normalised(adaptation.Corpus("c", changed, corpus.labels, speakers),
                                  "speaker").features  # fmt: skip
    np.testing.assert_allclose(moved[speakers == "a"], normalised[speakers == "a"])


def test_the_bench_measures_every_remedy_on_tiny_features(tmp_path):
    corpora = []
    for seed in (0, 1):
        root = tmp_path / f"corpus{seed}"
        generate_synthetic_corpus(root, seed=seed, num_sessions=3, utterances_per_class=3,
                                  min_seconds=0.5, max_seconds=0.8)  # fmt: skip
        corpora.append(adaptation.load_features(str(root), "tiny", str(tmp_path / "cache"),
                                                CLASSES))  # fmt: skip
    source, target = corpora
    records = adaptation.run_direction(source, target, [1, 2], draws=1, folds=3,
                                       settings=RefitSettings((1,), 0.1), select_folds=3,
                                       log=lambda message: None)  # fmt: skip
    remedies = {r["remedy"] for r in records}
    assert {"zero-shot", "knn", "refit", "refit+knn", "alone", "in-corpus"} <= remedies
    assert {r["normalisation"] for r in records} == set(adaptation.NORMALISATIONS)
    assert all(0.0 <= r["ua"] <= 1.0 for r in records)
    # adapt's choice is one of the four candidates, and its figure is that candidate's.
    for record in (r for r in records if r["remedy"] == "adapted"):
        assert record["chosen"] in adaptation.CANDIDATES
    table = adaptation.summarise(records)
    lines: list[str] = []
    adaptation.print_table(table, [1, 2], "tiny", log=lines.append)
    assert any(line.startswith("| none | refit |") for line in lines)
    adaptation.plot({"tiny": table}, [1, 2], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0

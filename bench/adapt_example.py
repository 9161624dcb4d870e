"""Adaptation across corpora, measured: a model trained on one corpus, adapted with the labelled
clips of another (`emoknn adapt`), before and after, on held-out speakers of the new corpus.

    python bench/adapt_example.py [--out DIR] [--clips-per-class N] [--epochs E]

1. Source corpus: `emoknn corpus synth --seed 0` (10 speakers); target corpus: `--seed 1`, a
   different set of synthetic voices (the speaker ids repeat, the voices do not).
2. Train the `tiny` preset on fold 0 of the source corpus, with its kNN stage (source datastore).
3. Adapt it to the target corpus's clips (speakers given: speaker-grouped folds).
4. Print, side by side on the same held-out target speakers: the trained model alone, the trained
   model with its own (source) kNN — both "before" — and after adaptation: the kNN over target
   clips alone and the adapted interpolation.

The synthetic corpus is not emotional speech (see docs/getting-started.md): the figures say what
adaptation does to a model moved to voices it was not trained on, not what it does for real SER.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("emoknn-adapt-example"))
    parser.add_argument("--clips-per-class", type=int, default=10, help="per speaker")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    from emoknn.adapt import INFERENCES, adapt_model, load_source
    from emoknn.audio import load_audio
    from emoknn.config import make_config
    from emoknn.corpora import generate_synthetic_corpus, label_names, load_synthetic
    from emoknn.folds import speaker_folds
    from emoknn.inference import fit_run_knn
    from emoknn.knn import knn_predict_probs
    from emoknn.predict import EmotionRecognizer
    from emoknn.train import train_fold

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    source = generate_synthetic_corpus(out / "source", seed=0,
                                       utterances_per_class=args.clips_per_class)  # fmt: skip
    target = generate_synthetic_corpus(out / "target", seed=1,
                                       utterances_per_class=args.clips_per_class)  # fmt: skip
    fold = speaker_folds(source)[0]
    config = make_config("tiny", max_epochs=args.epochs, progress_bar=False)
    run = out / "trained"
    train_fold(config, fold.train, fold.val, label_names(source), run)
    fit_run_knn(run, fold.train, fold.val, config.max_seconds, device="cpu")
    trained_s = time.perf_counter() - started

    started = time.perf_counter()
    result = adapt_model(load_source(run), out / "target" / "manifest.csv", out / "adapted",
                         device="cpu")  # fmt: skip
    adapt_s = time.perf_counter() - started

    # "Before" with the source kNN, on the very same held-out folds: the trained model's own
    # datastore and settings, applied to each fold's target clips.
    recognizer = EmotionRecognizer.load(run, device="cpu")
    utterances = {u.id: u for u in load_synthetic(out / "target")}
    speaker_fold = {s: r["fold"] for r in result.per_fold for s in r["speakers"]}
    ids = sorted(utterances)
    clips = [load_audio(utterances[i].path) for i in ids]
    model_probs, embeddings = recognizer.forward_clips(clips)
    mixed = knn_predict_probs(embeddings, model_probs, recognizer.store, recognizer.knn_settings)
    labels = np.array([recognizer.labels.index(utterances[i].label) for i in ids])
    folds = np.array([speaker_fold[utterances[i].speaker] for i in ids])
    source_knn = [_ua(labels[folds == f], mixed[folds == f]) for f in range(result.folds)]

    print(f"# emoknn adapt: synthetic seed 0 → seed 1 ({platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(f"source: {len(source)} clips; trained tiny model on {len(fold.train)} "
          f"({trained_s:.0f} s incl. kNN fit)")  # fmt: skip
    print(f"target: {len(target)} clips, {result.folds} speaker-grouped folds; adapt took "
          f"{adapt_s:.0f} s")  # fmt: skip
    print(f"\n{'held-out target speakers':<44} {'UA % mean ± std':>16} {'WA % mean ± std':>16}")
    rows = [
        ("before: trained model alone", "model"),
        ("before: trained model + its source kNN", None),
        ("after: kNN over target clips alone", "knn"),
        ("after: adapted (model + target kNN)", "interpolated"),
    ]
    for title, name in rows:
        if name is None:
            ua = np.array(source_knn)
            print(f"{title:<44} {100 * ua.mean():>9.1f} ± {100 * ua.std():4.1f} {'':>16}")
            continue
        row = result.summary[name]
        print(f"{title:<44} {100 * row['ua_mean']:>9.1f} ± {100 * row['ua_std']:4.1f} "
              f"{100 * row['wa_mean']:>9.1f} ± {100 * row['wa_std']:4.1f}")  # fmt: skip
    print()
    for comparison in result.comparisons:
        print(comparison["sentence"])
    chosen = result.tuning.interpolated
    print(f"shipped settings: k = {chosen.k}, α = {chosen.alpha}, T = {chosen.temperature:.3g}")
    assert set(INFERENCES) == set(result.summary)


def _ua(labels: np.ndarray, probabilities: np.ndarray) -> float:
    from emoknn.metrics import unweighted_accuracy

    return unweighted_accuracy(labels, probabilities.argmax(axis=1))


if __name__ == "__main__":
    main()

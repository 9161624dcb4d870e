"""The encoder probe (`emoknn.probe`) on every leave-one-speaker-out fold: its time once the
feature cache holds the originals, its UA, and which layers it picks.

    python bench/probe_speed.py --encoder tiny|DIR [--corpus DIR] [--work DIR]

Without `--corpus` it generates the demo's synthetic corpus (320 utterances, 10 speakers) in
`--work`. The originals are cached in `--work/emoknn-features` (the fill is timed on its own;
a second run reads them); then each fold's probe (every layer × C_GRID on the training speakers,
chosen on the validation speaker, refit, test speaker predicted) is timed. Prints one line per
fold and a summary: total wall and CPU seconds for the folds, mean ± std test UA, mean
validation UA per layer. Each fold's probe is also fitted with the BLAS libraries' default
threads (a thread per core; what `EncoderProbe` did before `emoknn.threads`), right after the
product's one-thread fit, on the same features: both times and whether the predictions agree.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("emoknn-bench-probe"))
    parser.add_argument("--max-seconds", type=float, default=7.5)
    args = parser.parse_args()

    from emoknn import demo, probe
    from emoknn.config import make_config
    from emoknn.corpora import generate_synthetic_corpus, label_names, load_corpus
    from emoknn.features import FeatureCache
    from emoknn.folds import speaker_folds
    from emoknn.frozen import build_frozen_model

    corpus = args.corpus
    if corpus is None:
        corpus = args.work / "corpus"
        if not (corpus / "manifest.csv").is_file():
            generate_synthetic_corpus(corpus, **demo.CORPUS_SETTINGS)
    utterances = load_corpus(corpus)
    folds = speaker_folds(utterances)
    labels = label_names(utterances)
    config = make_config("frozen", encoder=args.encoder, max_seconds=args.max_seconds)
    model = build_frozen_model(config, labels)
    cache = FeatureCache(args.work / "emoknn-features", model, config.max_seconds)
    filled = cache.fill(utterances, None)
    print(f"load {os.getloadavg()[0]:.1f}; {len(utterances)} utterances, {len(folds)} folds, "
          f"{args.encoder}: {model.num_layers + 1} layers × {model.hidden_size}; fill "
          f"{filled.computed} computed in {filled.seconds:.0f} s")  # fmt: skip
    rows = cache.gather(cache.original_keys(utterances))
    position = {u.id: i for i, u in enumerate(utterances)}

    def features_of(group):
        return rows[[position[u.id] for u in group]]

    index = {label: i for i, label in enumerate(labels)}

    def default_threads(fold) -> tuple[float, np.ndarray]:
        """The same probe with the BLAS default threads (the methods without their decorator)."""
        began = time.perf_counter()
        y = lambda group: np.array([index[u.label] for u in group])  # noqa: E731
        fitted = probe.EncoderProbe.fit.__wrapped__(
            probe.EncoderProbe(), features_of(fold.train), y(fold.train),
            features_of(fold.val), y(fold.val),
        )  # fmt: skip
        predicted = probe.EncoderProbe.predict.__wrapped__(fitted, features_of(fold.test))
        return time.perf_counter() - began, predicted

    total, cpu = 0.0, 0.0
    scores, layers, default_seconds, agree = [], [], 0.0, True
    for fold in folds:
        start, began_cpu = time.perf_counter(), time.process_time()
        fitted = probe.fit_fold(fold.train, fold.val, fold.test, labels, features_of)
        total += time.perf_counter() - start
        cpu += time.process_time() - began_cpu
        seconds, predicted = default_threads(fold)
        default_seconds += seconds
        agree = agree and bool(np.array_equal(predicted, fitted.predicted))
        ua = float(np.mean([np.mean(fitted.predicted[fitted.truth == c] == c)
                            for c in np.unique(fitted.truth)]))  # fmt: skip
        scores.append(ua)
        layers.append(fitted.probe.scores_.max(axis=1))
        print(f"  {fold.name}: layer {fitted.probe.layer_}, C {fitted.probe.c_:g}, val UA "
              f"{100 * fitted.probe.val_ua_:.1f}, test UA {100 * ua:.1f}, "
              f"{fitted.seconds:.2f} s (default BLAS threads: {seconds:.2f} s)")  # fmt: skip
    per_layer = ", ".join(f"{100 * v:.1f}" for v in np.mean(layers, axis=0))
    print(f"probe over {len(folds)} folds: {total:.1f} s wall, {cpu:.1f} s CPU (load "
          f"{os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
          f"test UA {100 * np.mean(scores):.1f} ± {100 * np.std(scores, ddof=1):.1f}; "
          f"validation UA by layer (best C, mean over folds): {per_layer}")  # fmt: skip
    print(f"one BLAS thread {total:.1f} s vs the default threads {default_seconds:.1f} s: "
          f"{default_seconds / total:.1f}× faster; same test predictions: {agree}")  # fmt: skip


if __name__ == "__main__":
    main()

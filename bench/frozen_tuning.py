"""How the `frozen` preset's head settings were chosen: validation speakers only.

    python bench/frozen_tuning.py --encoder ~/.cache/emoknn-dev/whisper-base [--corpus DIR]

For every fold of a corpus (the synthetic one by default, generated if absent), the head is
trained on the fold's training speakers with each candidate setting and scored on the fold's
*validation* speaker (UA of the epoch kept by early stopping); the test speaker is never looked
at. Candidates change one setting at a time from the preset; the table prints the mean ± std of
validation UA over folds, for CE+SCL (λ = 0.1, mixed views) as the preset trains it. Encoder
features come from the feature cache (filled first; reused on later runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from emoknn.config import TrainConfig, make_config
from emoknn.corpora import generate_synthetic_corpus, label_names, load_corpus
from emoknn.features import FeatureCache
from emoknn.folds import speaker_folds
from emoknn.frozen import build_frozen_model, fit_head, fold_features, view_spec

CANDIDATES: dict[str, dict] = {
    "preset": {},
    "lr 3e-4": {"learning_rate": 3e-4},
    "lr 3e-3": {"learning_rate": 3e-3},
    "batch 32": {"batch_size": 32},
    "batch 256": {"batch_size": 256},
    "no projection": {"projection_size": 0},
    "projection 128": {"projection_size": 128},
    "no dropout": {"head_dropout": 0.0, "projection_dropout": 0.0},
    "dropout 0.5/0.3": {"head_dropout": 0.5, "projection_dropout": 0.3},
    "weight decay 0.1": {"weight_decay": 0.1},
    "last layer only": {"layer_weighting": False},
    "normalize layers": {"normalize_layers": True},
    "patience 30": {"early_stopping_patience": 30, "max_epochs": 200},
    "monitor val_ua": {"monitor": "val_ua"},
    "CE only (λ = 0)": {"contrastive_weight": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("bench-out/emoknn-features"))
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--max-seconds", type=float, default=7.5)
    args = parser.parse_args()
    corpus = args.corpus or Path("bench-out/synthetic-800")
    if args.corpus is None and not corpus.is_dir():
        generate_synthetic_corpus(corpus, seed=0, num_sessions=5, utterances_per_class=20)
    utterances = load_corpus(corpus)
    labels = label_names(utterances)
    folds = speaker_folds(utterances)
    base = make_config("frozen", encoder=args.encoder, max_seconds=args.max_seconds,
                       contrastive_weight=0.1)  # fmt: skip
    model = build_frozen_model(base, labels)
    cache = FeatureCache(args.cache, model, base.max_seconds)
    start = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  cache: {done}/{total} in {last[0] - start:.0f} s", flush=True)

    filled = cache.fill(utterances, view_spec(base), progress=progress)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; {args.encoder}; {corpus} ({len(utterances)} utterances, "
          f"{len(folds)} folds); cache: {filled.computed} of {filled.entries} entries computed in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    data = [fold_features(cache, f.train, f.val, labels, view_spec(base)) for f in folds]
    print(f"{'candidate':<20} {'val UA mean ± std':>18} {'epochs':>7} {'s/fold':>7}")
    for name in args.candidates.split(","):
        config = TrainConfig(**{**asdict(base), **CANDIDATES[name]})
        scores, epochs, start = [], [], time.perf_counter()
        for fold_data in data:
            head = build_frozen_model(config, labels, encoder=model.encoder)
            fit = fit_head(head, fold_data, config)
            scores.append(fit.history[fit.best_epoch]["val_ua"])
            epochs.append(len(fit.history))
        seconds = (time.perf_counter() - start) / len(data)
        print(f"{name:<20} {100 * np.mean(scores):>9.1f} ± {100 * np.std(scores, ddof=1):>5.1f} "
              f"{np.mean(epochs):>7.0f} {seconds:>7.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Adapting a dimensional model, measured: a `frozen` tiny model trained with `--task dimensional`
on fold 0 of one synthetic corpus (seed 0), adapted with the rated clips of another (seed 1, other
voices; 3 sessions × 2 speakers × 4 classes × 3 clips), held-out CCC per attribute.

    python bench/adapt_dimensional_example.py [--out DIR]

The synthetic corpus is not emotional speech and its ratings are synthetic: the figures show that
the regression adapt path runs and what it reports, not what it does for real SER.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from emoknn.adapt import adapt_model, load_source
from emoknn.config import make_config
from emoknn.corpora import label_names, load_synthetic
from emoknn.corpora.synthetic import generate_synthetic_corpus
from emoknn.folds import speaker_folds
from emoknn.frozen import train_frozen_fold
from emoknn.inference import fit_run_knn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: temp)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="adapt-dimensional-"))
    corpus = dict(num_sessions=3, utterances_per_class=3, min_seconds=0.5, max_seconds=1.0)
    generate_synthetic_corpus(root / "source", seed=0, **corpus)
    generate_synthetic_corpus(root / "target", seed=1, **corpus)
    utterances = load_synthetic(root / "source")
    fold = speaker_folds(utterances)[0]
    config = make_config("frozen", encoder="tiny", max_seconds=0.5, max_epochs=8, cache_views=1,
                         task="dimensional", progress_bar=False)  # fmt: skip
    train_frozen_fold(config, fold.train, fold.val, label_names(utterances), root / "run",
                      extra_info={"fold": fold.name})  # fmt: skip
    fit_run_knn(root / "run", fold.train, fold.val, config.max_seconds)
    start = time.time()
    result = adapt_model(load_source(root / "run"), root / "target" / "manifest.csv",
                         root / "adapted", device="cpu")  # fmt: skip
    print(f"adapt: {time.time() - start:.1f} s, {result.folds} {result.grouping} folds")
    dimensional = result.report["dimensional"]
    for name, row in dimensional["summary"].items():
        pooled = {k: round(v, 3) for k, v in row["pooled"].items()}
        print(f"{name:>12}: pooled CCC {json.dumps(pooled)}; per-fold mean CCC "
              f"{row['ccc_mean']:.3f} ± {row['ccc_std']:.3f}")  # fmt: skip
    for c in dimensional["comparisons"]:
        print(f"{c['name']}: {c['mean']:+.3f} (95 % CI {c['ci_low']:+.3f} to {c['ci_high']:+.3f}, "
              f"p = {c['p_value']:.2f}, {c['test']})")
    print("shipped regression stage:", result.report["tuning"]["regression"]["interpolated"])


if __name__ == "__main__":
    main()

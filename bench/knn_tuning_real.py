"""The kNN stage on real speech: k, α, T tuned on the validation speaker (the paper's, α ∈ (0, 1))
against tuned over inner folds of the training speakers (`--knn-tuning speakers`, α ∈ [0, 1)),
and the calibration error of each variant before and after temperature scaling.

    python bench/knn_tuning_real.py --corpus /work/shared/corpora/emodb --out OUT \
        --encoder /root/.cache/emoknn-dev/whisper-base --feature-cache /work/cache/features \
        [--knn-tuning speakers] [--baseline-results /work/runs/emodb-frozen/results.json]

Runs the frozen preset's folds (`emoknn.experiments.run_fold`: no classical baseline, no probe,
which do not depend on the kNN stage; `--trainings scl` for CE+SCL alone) into OUT, resuming the
folds it finished, then prints per variant UA and ECE (calibrated, raw),
and the paired comparisons of `emoknn.stats`: + kNN vs the model alone, in this run and, given
`--baseline-results` (a results.json of the same corpus, folds and preset tuned the other way), in
that one, and this run's + kNN against that one's. The models alone are the same in both (the
head's training does not depend on the kNN stage): the script checks it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from emoknn.config import make_config
from emoknn.corpora import label_names, load_corpus
from emoknn.experiments import prepare_frozen, result_records, run_fold, summarize, trainings_for
from emoknn.folds import speaker_folds
from emoknn.stats import paired_test


def by_fold(records, variant, key="ua"):
    return {r["fold"]: r[key] for r in records if r["variant"] == variant}


def comparison(name, a: dict, b: dict) -> str:
    folds = sorted(set(a) & set(b))
    result = paired_test(np.array([a[f] for f in folds]), np.array([b[f] for f in folds]))
    low = "—" if result.ci_low is None else f"{100 * result.ci_low:+.2f}"
    high = "—" if result.ci_high is None else f"{100 * result.ci_high:+.2f}"
    return (f"{name:52s} {100 * result.mean:+6.2f} UA (95 % CI {low} to {high}, "
            f"{result.test} p = {result.p_value:.3f}, {len(folds)} folds)")


def print_fold(result: dict) -> None:
    model, mixed = result["scores"]["model"], result["scores"]["interpolated"]
    print(f"  {result['fold']} {result['label']:7s} UA {100 * model['ua']:.1f} (+kNN "
          f"{100 * mixed['ua']:.1f}, k {mixed['k']}, α {mixed['alpha']:g})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--feature-cache", required=True)
    parser.add_argument("--knn-tuning", default="speakers", choices=("speakers", "validation"))
    parser.add_argument("--baseline-results", type=Path)
    parser.add_argument("--trainings", default="ce,scl", help="ce,scl (default) or one of them")
    parser.add_argument("--folds", type=int, help="only the first N folds")
    args = parser.parse_args()

    utterances = load_corpus(args.corpus)
    folds = speaker_folds(utterances)[: args.folds]
    labels = label_names(utterances)
    specs = [spec for spec in trainings_for(["main"]) if spec.name in args.trainings.split(",")]
    config = make_config("frozen", encoder=args.encoder, feature_cache=args.feature_cache,
                         progress_bar=False)  # fmt: skip
    start = time.perf_counter()
    config, frozen = prepare_frozen(folds, labels, config, ["main"], args.out)
    results = []
    for fold in folds:
        for spec in specs:
            results.append(run_fold(spec, fold, labels, config, args.out,
                                    {"corpus": str(args.corpus)}, "ua", frozen,
                                    args.knn_tuning))  # fmt: skip
            print_fold(results[-1])
    seconds = time.perf_counter() - start
    records = result_records(results)
    print(f"\n{args.corpus.name}: {len(folds)} folds, knn tuning {args.knn_tuning}, "
          f"{seconds:.0f} s\n")  # fmt: skip
    print(f"{'variant':28s} {'UA %':>7s} {'ECE %':>7s} {'raw ECE %':>9s}")
    for row in summarize(records):
        print(f"{row['variant']:28s} {100 * row['ua_mean']:7.2f} "
              f"{100 * row.get('ece_mean', np.nan):7.2f} "
              f"{100 * row.get('ece_raw_mean', np.nan):9.2f}")  # fmt: skip
    print()
    trained = [spec.label for spec in specs]
    for label in trained:
        print(comparison(f"{label} + kNN vs {label} ({args.knn_tuning})",
                         by_fold(records, f"{label} + kNN"), by_fold(records, label)))  # fmt: skip
    if args.baseline_results:
        other = json.loads(args.baseline_results.read_text())["records"]
        for label in trained:
            mine, theirs = by_fold(records, label), by_fold(other, label)
            same = all(abs(mine[f] - theirs[f]) < 1e-12 for f in set(mine) & set(theirs))
            print(f"{label} alone identical in both runs: {same}")
            print(comparison(f"{label} + kNN vs {label} (baseline results)",
                             by_fold(other, f"{label} + kNN"), theirs))  # fmt: skip
            print(comparison(f"{label} + kNN: {args.knn_tuning} vs baseline results",
                             by_fold(records, f"{label} + kNN"),
                             by_fold(other, f"{label} + kNN")))  # fmt: skip


if __name__ == "__main__":
    main()

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
from emoknn.experiments import (
    collect_fold_results,
    prepare_frozen,
    result_records,
    run_fold,
    summarize,
    trainings_for,
)
from emoknn.folds import speaker_folds
from emoknn.stats import paired_test


def by_fold(records, variant, key="ua"):
    return {r["fold"]: r[key] for r in records if r["variant"] == variant and key in r}


def comparison(name, a: dict, b: dict) -> str:
    folds = sorted(set(a) & set(b))
    if not folds:
        return f"{name:52s} (no folds with both)"
    result = paired_test(np.array([a[f] for f in folds]), np.array([b[f] for f in folds]))
    low = "—" if result.ci_low is None else f"{100 * result.ci_low:+.2f}"
    high = "—" if result.ci_high is None else f"{100 * result.ci_high:+.2f}"
    return (
        f"{name:52s} {100 * result.mean:+6.2f} UA (95 % CI {low} to {high}, "
        f"{result.test} p = {result.p_value:.3f}, {len(folds)} folds)"
    )


def print_fold(result: dict) -> None:
    model, mixed = result["scores"]["model"], result["scores"]["interpolated"]
    print(
        f"  {result['fold']} {result['label']:7s} UA {100 * model['ua']:.1f} (+kNN "
        f"{100 * mixed['ua']:.1f}, k {mixed['k']}, α {mixed['alpha']:g})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--encoder")
    parser.add_argument("--feature-cache")
    parser.add_argument("--knn-tuning", default="speakers", choices=("speakers", "validation"))
    parser.add_argument("--baseline-results", type=Path)
    parser.add_argument("--trainings", default="ce,scl", help="ce,scl (default) or one of them")
    parser.add_argument("--folds", type=int, help="only the first N folds")
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="last fold first (a second process can share the folds)",
    )
    parser.add_argument("--results", type=Path,
                        help="print the figures of this results.json (e.g. of `emoknn crossval`), "
                        "or of the finished folds of this output folder, instead of running "
                        "folds")  # fmt: skip
    args = parser.parse_args()

    if args.results:
        if args.results.is_dir():
            records = result_records(collect_fold_results([args.results]))
        else:
            records = json.loads(args.results.read_text())["records"]
        records = [r for r in records if r["training"] in ("ce", "scl")]
        trained = sorted({r["variant"] for r in records if r["inference"] == "model"})
        print(f"{args.results}: {len({r['fold'] for r in records})} folds\n")
    else:
        if not (args.corpus and args.out and args.encoder and args.feature_cache):
            parser.error("give --corpus, --out, --encoder and --feature-cache (or --results)")
        records, trained = run(args)
    print_figures(records, trained, args.knn_tuning, args.baseline_results)


def run(args) -> tuple[list[dict], list[str]]:
    """Run (or resume) the folds; their records and the labels of the trainings run."""
    utterances = load_corpus(args.corpus)
    folds = speaker_folds(utterances)[: args.folds]
    labels = label_names(utterances)
    specs = [spec for spec in trainings_for(["main"]) if spec.name in args.trainings.split(",")]
    config = make_config("frozen", encoder=args.encoder, feature_cache=args.feature_cache,
                         progress_bar=False)  # fmt: skip
    start = time.perf_counter()
    config, frozen = prepare_frozen(folds, labels, config, ["main"], args.out)
    results = []
    for fold in reversed(folds) if args.reverse else folds:
        for spec in specs:
            results.append(run_fold(spec, fold, labels, config, args.out,
                                    {"corpus": str(args.corpus)}, "ua", frozen,
                                    args.knn_tuning))  # fmt: skip
            print_fold(results[-1])
    seconds = time.perf_counter() - start
    print(f"\n{args.corpus.name}: {len(folds)} folds, knn tuning {args.knn_tuning}, "
          f"{seconds:.0f} s\n")  # fmt: skip
    return result_records(results), [spec.label for spec in specs]


def print_figures(records: list[dict], trained: list[str], tuning: str,
                  baseline_results: Path | None) -> None:  # fmt: skip
    print(f"{'variant':28s} {'UA %':>7s} {'ECE %':>7s} {'raw ECE %':>9s}")
    for row in summarize(records):
        print(f"{row['variant']:28s} {100 * row['ua_mean']:7.2f} "
              f"{100 * row.get('ece_mean', np.nan):7.2f} "
              f"{100 * row.get('ece_raw_mean', np.nan):9.2f}")  # fmt: skip
    print()
    for label in trained:
        print(comparison(f"{label} + kNN vs {label} ({tuning})",
                         by_fold(records, f"{label} + kNN"), by_fold(records, label)))  # fmt: skip
        for variant in (label, f"{label} + kNN"):
            print(
                comparison(
                    f"ECE of {variant}: calibrated vs raw",
                    by_fold(records, variant, "ece"),
                    by_fold(records, variant, "ece_raw"),
                ).replace(" UA ", " pts ")
            )
    if baseline_results is None:
        return
    mine_folds = {r["fold"] for r in records}
    other = [r for r in json.loads(baseline_results.read_text())["records"]
             if r["fold"] in mine_folds]  # fmt: skip
    for label in trained:
        mine, theirs = by_fold(records, label), by_fold(other, label)
        same = all(abs(mine[f] - theirs[f]) < 1e-12 for f in set(mine) & set(theirs))
        print(f"{label} alone identical in both runs: {same}")
        print(comparison(f"{label} + kNN vs {label} (baseline results)",
                         by_fold(other, f"{label} + kNN"), theirs))  # fmt: skip
        print(comparison(f"{label} + kNN: {tuning} vs baseline results",
                         by_fold(records, f"{label} + kNN"),
                         by_fold(other, f"{label} + kNN")))  # fmt: skip


if __name__ == "__main__":
    main()

"""Partial fine-tuning (`--preset finetune-cpu`) against the frozen encoder, on real speech.

    run:    python bench/finetune_real.py run --corpus /work/shared/corpora/emodb \
                --encoder /root/.cache/emoknn-dev/whisper-base --out OUT/emodb-n2 \
                [--tune-layers 2] [--tune-lr 5e-5] [--views 2] [--only ce|scl] [--folds 0-9]
    report: python bench/finetune_real.py report --frozen RUNS/emodb-frozen OUT/emodb-n2 ...

`run` cross-validates leave-one-speaker-out (the folds `emoknn crossval` uses) with the given
settings, fold by fold, resumable (a finished fold is read back): per fold the encoder probe and
the trainings asked for (CE and CE+SCL, or one of them with `--only`, so two processes can share
the work), each scored as the model, kNN only and model + kNN. It prints the fill and the time of
every fold. `report` reads finished folds of any number of `run` folders and the frozen
cross-validation's results.json (its probe and CE+SCL + kNN rows are the baseline, on the same
folds), and prints UA per variant with paired tests (`emoknn.stats.paired_test`, over the folds
both have) against the probe and against the frozen CE+SCL + kNN, plus each fold's seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from emoknn.config import make_config  # noqa: E402
from emoknn.corpora import label_names, load_corpus  # noqa: E402
from emoknn.experiments import (  # noqa: E402
    CE,
    CE_SCL,
    prepare_partial,
    read_fold_result,
    run_fold,
    run_probe_fold,
)
from emoknn.folds import speaker_folds  # noqa: E402
from emoknn.stats import paired_test  # noqa: E402


def run(args: argparse.Namespace) -> None:
    utterances = load_corpus(args.corpus)
    labels = label_names(utterances)
    folds = speaker_folds(utterances)
    if args.folds:
        first, _, last = args.folds.partition("-")
        folds = folds[int(first) : int(last or first) + 1]
    config = make_config(
        "finetune-cpu", encoder=args.encoder, tune_layers=args.tune_layers,
        tune_learning_rate=args.tune_lr, cache_views=args.views, feature_cache=args.cache,
        max_epochs=args.epochs, cut_layer=args.cut_layer,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load {os.getloadavg()[0]:.1f}; threads {os.environ.get('OMP_NUM_THREADS', '?')}; "
          f"{len(folds)} folds of {len(utterances)} clips; N={args.tune_layers}, tune lr "
          f"{args.tune_lr:g}, views {args.views}, cut {args.cut_layer or 'auto'}", flush=True)
    start = time.perf_counter()
    say = lambda message: print(message, flush=True)  # noqa: E731
    config, context = prepare_partial(folds, labels, config, out, log=say)
    print(f"prepared (fill included) in {time.perf_counter() - start:.0f} s", flush=True)
    specs = {"ce": [CE], "scl": [CE_SCL], "both": [CE, CE_SCL]}[args.only]
    for fold in folds:
        if args.only != "ce":
            run_probe_fold(fold, labels, out, context.features.originals, config.encoder)
        for spec in specs:
            began = time.perf_counter()
            result = run_fold(spec, fold, labels, config, out, {"corpus": args.corpus},
                              frozen=context)  # fmt: skip
            scores = result["scores"]
            print(f"{fold.name} {spec.name}: UA model {scores['model']['ua']:.3f} knn "
                  f"{scores['knn']['ua']:.3f} interpolated {scores['interpolated']['ua']:.3f} "
                  f"{result.get('partial')} ({time.perf_counter() - began:.0f} s, load "
                  f"{os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


def _fold_scores(folder: Path) -> dict[str, dict[str, float]]:
    """variant → {fold: UA} from the fold_result.json files of a run folder."""
    found: dict[str, dict[str, float]] = {}
    for path in sorted(folder.glob("*/fold*/fold_result.json")):
        result = read_fold_result(path)
        for inference, score in result["scores"].items():
            if isinstance(score, dict) and "ua" in score:
                name = result["training"] + ("" if inference == "model" else f"+{inference}")
                found.setdefault(name, {})[result["fold"]] = score["ua"]
    return found


def _frozen_scores(results: Path) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for record in json.loads(results.read_text())["records"]:
        inference = record["inference"]
        name = record["training"] + ("" if inference == "model" else f"+{inference}")
        found.setdefault(f"frozen {name}", {})[record["fold"]] = record["ua"]
    return found


def _seconds(folder: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for path in sorted(folder.glob("*/fold*/fold_result.json")):
        result = json.loads(path.read_text())
        if "partial" in result:
            found.setdefault(result["training"], []).append(result["partial"]["seconds"])
    return found


def report(args: argparse.Namespace) -> None:
    frozen = _frozen_scores(Path(args.frozen) / "results.json")
    baselines = {"probe": frozen["frozen probe"],
                 "frozen CE+SCL+kNN": frozen["frozen scl+interpolated"]}  # fmt: skip
    print(f"baseline: {args.frozen}")
    for name, scores in frozen.items():
        if name.startswith("frozen baseline"):
            continue
        print(f"  {name:28s} UA {100 * np.mean(list(scores.values())):.1f} ({len(scores)} folds)")
    for folder in map(Path, args.runs):
        print(f"\n{folder}")
        for training, seconds in _seconds(folder).items():
            print(f"  {training}: {np.mean(seconds):.0f} s per fold (train + fill share), "
                  f"{len(seconds)} folds")  # fmt: skip
        for name, scores in sorted(_fold_scores(folder).items()):
            if name.startswith("probe"):
                continue
            line = f"  {name:22s} UA {100 * np.mean(list(scores.values())):.1f} ({len(scores)})"
            for base, base_scores in baselines.items():
                common = sorted(set(scores) & set(base_scores))
                if len(common) < 2:
                    continue
                a = np.array([scores[f] for f in common])
                b = np.array([base_scores[f] for f in common])
                test = paired_test(a, b)
                line += (f" | vs {base} {100 * (a.mean() - b.mean()):+.1f} "
                         f"p={test.p_value:.3f}")  # fmt: skip
            print(line)
        scores = _fold_scores(folder)
        if "ce+interpolated" in scores and "scl+interpolated" in scores:
            common = sorted(set(scores["ce"]) & set(scores["scl"]))
            for suffix in ("", "+interpolated"):
                a = np.array([scores["scl" + suffix][f] for f in common])
                b = np.array([scores["ce" + suffix][f] for f in common])
                test = paired_test(a, b)
                print(f"  SCL vs CE{suffix}: {100 * (a.mean() - b.mean()):+.1f} "
                      f"p={test.p_value:.3f} ({len(common)} folds)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run")
    runner.add_argument("--corpus", required=True)
    runner.add_argument("--encoder", required=True)
    runner.add_argument("--out", required=True)
    runner.add_argument("--cache", default="/work/cache/features")
    runner.add_argument("--tune-layers", type=int, default=2)
    runner.add_argument("--cut-layer", type=int, default=0)
    runner.add_argument("--tune-lr", type=float, default=5e-5)
    runner.add_argument("--views", type=int, default=2)
    runner.add_argument("--epochs", type=int, default=8)
    runner.add_argument("--only", choices=("ce", "scl", "both"), default="both")
    runner.add_argument("--folds", default="")
    reporter = commands.add_parser("report")
    reporter.add_argument("--frozen", required=True)
    reporter.add_argument("runs", nargs="+")
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()

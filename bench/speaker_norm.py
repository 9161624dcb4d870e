"""Speaker statistics from unlabelled clips across corpora: a model trained on one corpus with
and without `--speaker-norm`, scored on another corpus's clips of the classes both share.

    OMP_NUM_THREADS=1 python bench/speaker_norm.py \
        --source /work/shared/corpora/emodb --target /work/shared/corpora/ravdess-16k \
        --encoder ~/.cache/emoknn-dev/whisper-base --cache /work/cache/features [--seeds 0,1,2]

For each seed, two `frozen`-preset models are trained on the source corpus (every speaker but
one validation speaker, the first fold's; `emoknn.frozen.train_frozen_fold`, kNN stage fitted by
`emoknn.inference.fit_run_knn`): one plain, one with `--speaker-norm`. Every target clip of a
shared class is then predicted, and UA is computed over those classes (argmax over the shared
classes; `UA (all classes)` lets the model answer a class the target lacks, counted wrong):

* plain model, raw features (the zero-shot baseline);
* speaker-norm model, per-speaker statistics from each target speaker's clips (all of them,
  every class the target has: no label is read), from `--enrol K` random clips of that speaker
  (draws over seeds), and domain statistics (all target clips as one domain).

Target features come from the product's feature cache (the centred crops `predict` encodes live,
equal to 1e-5; `--live-check` compares one speaker's statistics with
`EmotionRecognizer.speaker_statistics` on the audio). Statistics are `SpeakerStatistics`, applied
before the head exactly as `EmotionRecognizer.predict(statistics=...)` does. All of it uses
unlabelled *target* audio: the figures say what normalising by a user's own recordings does.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emoknn.config import make_config
from emoknn.corpora import label_names, load_corpus
from emoknn.features import FeatureCache
from emoknn.folds import speaker_folds
from emoknn.frozen import train_frozen_fold
from emoknn.inference import fit_run_knn
from emoknn.knn import store_knn_search
from emoknn.metrics import unweighted_accuracy
from emoknn.model_folder import load_knn, read_model_meta
from emoknn.speaker_stats import SpeakerStatistics


def scores(model, store, settings, pooled: np.ndarray, truth: list[str],
           shared: list[str]) -> dict[str, float]:  # fmt: skip
    """UA over the shared classes of the model alone and model + kNN."""
    with torch.no_grad():
        output = model.head(torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)))
    p_model = torch.softmax(output.logits, dim=1).numpy()
    search = store_knn_search(output.embeddings.numpy(), store, settings)
    p_final = settings.interpolate(search.p_knn, p_model, store.label_names)
    labels = model.labels
    columns = [labels.index(name) for name in shared]
    y = np.array([shared.index(t) for t in truth])
    result = {}
    for name, probs in (("model", p_model), ("model + kNN", p_final)):
        result[name] = unweighted_accuracy(y, probs[:, columns].argmax(axis=1))
        anything = np.array([labels[i] for i in probs.argmax(axis=1)])
        result[name + " (all classes)"] = _ua_all(truth, anything, shared)
    return result


def normalised(pooled: np.ndarray, speakers: np.ndarray, chosen: dict[str, np.ndarray],
               kind: str, min_clips: int) -> np.ndarray:  # fmt: skip
    """Every clip standardised with its group's statistics, computed from the rows `chosen`
    names for that group (a speaker's, or one domain's over every clip); no label is read."""
    out = np.empty_like(pooled)
    for name, rows in chosen.items():
        stats = SpeakerStatistics.from_features(pooled[rows], name, kind, "cache", min_clips)
        members = np.flatnonzero(speakers == name) if kind == "speaker" else np.arange(len(pooled))
        out[members] = stats.apply(pooled[members])
    return out


def _ua_all(truth: list[str], predicted: np.ndarray, shared: list[str]) -> float:
    """Mean recall over the shared classes, predictions of any model class (others are wrong)."""
    truth_array = np.array(truth)
    return float(np.mean([np.mean(predicted[truth_array == c] == c) for c in shared]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--enrol", default="10,20", help="enrolment sizes K (clips per speaker)")
    parser.add_argument("--live-check", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sizes = [int(k) for k in args.enrol.split(",") if k]
    started = time.perf_counter()

    source = load_corpus(args.source)
    target_all = load_corpus(args.target)
    source_labels = label_names(source)
    shared = sorted(set(source_labels) & {u.label for u in target_all})
    fold = speaker_folds(source)[0]
    val = [u for u in source if u.speaker == fold.val_speaker]
    train = [u for u in source if u.speaker != fold.val_speaker]
    test_rows = [i for i, u in enumerate(target_all) if u.label in shared]
    truth = [target_all[i].label for i in test_rows]
    speakers = np.array([u.speaker for u in target_all])
    print(f"source {args.source.name}: {len(train)} training clips, validation speaker "
          f"{fold.val_speaker} ({len(val)}); target {args.target.name}: {len(test_rows)} clips of "
          f"{len(shared)} shared classes ({', '.join(shared)}), {len(set(speakers))} speakers; "
          f"seeds {seeds}")  # fmt: skip

    rows: dict[str, list[dict[str, float]]] = {}

    def add(name: str, result: dict[str, float]) -> None:
        rows.setdefault(name, []).append(result)

    with tempfile.TemporaryDirectory(prefix="spk-bench-") as out:
        for seed in seeds:
            models = {}
            for norm in (False, True):
                config = make_config("frozen", encoder=args.encoder, seed=seed,
                                     speaker_norm=norm, feature_cache=str(args.cache))  # fmt: skip
                run = Path(out) / f"seed{seed}-{'norm' if norm else 'plain'}"
                trained = train_frozen_fold(config, train, val, source_labels, run)
                fit_run_knn(run, train, val, config.max_seconds, device="cpu")
                meta = read_model_meta(run)
                store, tuning = load_knn(run, meta.fingerprint, meta.labels,
                                         trained.model.embedding_size)  # fmt: skip
                models[norm] = (trained.model, store, tuning.interpolated, run, config)
            model, store, settings, _, config = models[False]
            cache = FeatureCache(args.cache, model, config.max_seconds, config.cache_precision)
            pooled = cache.originals(target_all)  # (N, L + 1, P), every target clip
            add("plain model, raw features (zero-shot)",
                scores(model, store, settings, pooled[test_rows], truth, shared))  # fmt: skip
            model, store, settings, run, config = models[True]
            min_clips = model.config.speaker_norm_min_clips

            everyone = {s: np.flatnonzero(speakers == s) for s in sorted(set(speakers))}
            add("speaker-norm model, raw features (no statistics)",
                scores(model, store, settings, pooled[test_rows], truth, shared))  # fmt: skip
            add("speaker-norm model, each target speaker's clips (all)",
                scores(model, store, settings,
                       normalised(pooled, speakers, everyone, "speaker", min_clips)[test_rows],
                       truth, shared))
            add("speaker-norm model, domain statistics (all target clips)",
                scores(model, store, settings,
                       normalised(pooled, speakers, {"domain": np.arange(len(pooled))}, "domain",
                                  min_clips)[test_rows], truth, shared))
            rng = np.random.default_rng(seed)
            for k in sizes:
                drawn = {s: rng.choice(r, size=min(k, len(r)), replace=False)
                         for s, r in everyone.items()}  # fmt: skip
                add(f"speaker-norm model, {k} random clips per target speaker",
                    scores(model, store, settings,
                           normalised(pooled, speakers, drawn, "speaker", min_clips)[test_rows],
                           truth, shared))
            if args.live_check and seed == seeds[0]:
                from emoknn.predict import EmotionRecognizer

                recognizer = EmotionRecognizer.load(run, device="cpu")
                first = sorted(everyone)[0]
                paths = [target_all[i].path for i in everyone[first]]
                live = recognizer.speaker_statistics(paths, first)
                cached = SpeakerStatistics.from_features(pooled[everyone[first]], first,
                                                         "speaker", "cache", min_clips)  # fmt: skip
                print(f"live check, speaker {first}: max |Δ mean| "
                      f"{np.abs(live.mean - cached.mean).max():.2e}, max |Δ scale| "
                      f"{np.abs(live.scale - cached.scale).max():.2e}")  # fmt: skip

    print(f"\n{args.source.name} → {args.target.name}, UA % over {len(shared)} shared classes "
          f"(mean ± std over {len(seeds)} seeds; 'all classes': the model may answer any of its "
          "classes)")  # fmt: skip
    columns = list(next(iter(rows.values()))[0])
    print("| variant | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, results in rows.items():
        cells = [f"{100 * np.mean([r[c] for r in results]):.1f} ± "
                 f"{100 * np.std([r[c] for r in results]):.1f}" for c in columns]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{time.perf_counter() - started:.0f} s on {platform.machine()} "
          f"({os.cpu_count()} cores, load average {load:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()

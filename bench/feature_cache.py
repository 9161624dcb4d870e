"""The frozen-encoder fast path: cache fill rate against the bare encoder, and cross-validation
time once the cache is filled, with peak memory.

    python bench/feature_cache.py [--encoder tiny|DIR] [--clips 48] [--utterances 800]

1. Fill rate: `FeatureCache.fill` (decode, crop, `mixed` augmentation of K = 4 views, every
   layer pooled, shards written) on `--clips` utterances of the synthetic corpus, against the bare
   encoder (`EmotionModel.hidden_states`, last layer only) on the very same clips already in
   memory, in the same length-sorted batches of 8. Each round times both; the ratio is the
   median over rounds of same-round ratios (this shared machine's speed drifts within minutes).
2. Cross-validation: `crossval --preset frozen --tables main` (10 folds × CE and CE+SCL, kNN fit,
   three evaluations each, and the classical baseline) on a synthetic corpus of `--utterances`,
   timed after the cache fill (the fill is timed too); each phase runs in its own process, so
   its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def fill_rate(encoder: str, clips: int, rounds: int, views: int) -> dict:
    import torch

    from emoknn.augment import make_augmentation
    from emoknn.config import make_config
    from emoknn.corpora import generate_synthetic_corpus, label_names, load_synthetic
    from emoknn.data import pad_batch
    from emoknn.features import FeatureCache, ViewSpec, _clip_batches
    from emoknn.frozen import build_frozen_model

    work = Path(tempfile.mkdtemp(prefix="emoknn-bench-"))
    try:
        generate_synthetic_corpus(work / "corpus", seed=1, num_sessions=1,
                                  utterances_per_class=max(1, clips // 8))  # fmt: skip
        utterances = load_synthetic(work / "corpus")[:clips]
        config = make_config("frozen", encoder=encoder)
        model = build_frozen_model(config, label_names(utterances))
        spec = ViewSpec(make_augmentation("mixed"), 0, views)
        jobs = [(u, [(f"{u.id}/o", None)] + [(f"{u.id}/{k}", k) for k in range(views)])
                for u in utterances]  # fmt: skip
        batches = [[clip for _, _, clip in batch] for batch in
                   _clip_batches(jobs, model_max(config), spec.augmentation, 0, 8)]  # fmt: skip
        count = sum(len(batch) for batch in batches)

        def bare() -> None:
            with torch.inference_mode():
                for batch in batches:
                    model.hidden_states(*pad_batch(batch), all_layers=False)

        def fill(round_index: int) -> None:
            FeatureCache(work / f"cache{round_index}", model, config.max_seconds).fill(
                utterances, spec
            )

        bare()  # warm-up: first calls allocate, the RIR bank and librosa load
        fill(-1)
        fill_times, bare_times = [], []
        for index in range(rounds):
            start = time.perf_counter()
            fill(index)
            fill_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            bare()
            bare_times.append(time.perf_counter() - start)
        ratios = [b / f for f, b in zip(fill_times, bare_times, strict=True)]
        return {
            "clips": count,
            "fill_clips_per_s": count / statistics.median(fill_times),
            "bare_clips_per_s": count / statistics.median(bare_times),
            "ratio": statistics.median(ratios),
            "audio_seconds": float(sum(len(c) for b in batches for c in b) / 16000),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def model_max(config) -> int:
    from emoknn.audio import max_samples

    return max_samples(config.max_seconds)


def crossval_time(encoder: str, utterances: int, corpus: Path | None, out: Path) -> dict:
    from emoknn.config import make_config
    from emoknn.corpora import generate_synthetic_corpus, label_names, load_corpus
    from emoknn.experiments import crossval, prepare_frozen
    from emoknn.folds import speaker_folds

    if corpus is None:
        corpus = out / f"synthetic-{utterances}"
        if not corpus.is_dir():
            generate_synthetic_corpus(corpus, seed=0, num_sessions=5,
                                      utterances_per_class=utterances // 40)  # fmt: skip
    items = load_corpus(corpus)
    folds = speaker_folds(items)
    config = make_config("frozen", encoder=encoder, feature_cache=str(out / "emoknn-features"))
    start = time.perf_counter()
    prepare_frozen(folds, label_names(items), config, ["main"], out / "cv")
    fill_seconds = time.perf_counter() - start
    shutil.rmtree(out / "cv", ignore_errors=True)
    start = time.perf_counter()
    crossval(items, folds, config, out / "cv", ["main"], with_baseline=False)
    frozen_seconds = time.perf_counter() - start
    start = time.perf_counter()
    crossval(items, folds, config, out / "cv", ["main"])  # the trainings are done: baseline only
    baseline_seconds = time.perf_counter() - start
    cache_files = [p for p in (out / "emoknn-features").rglob("*") if p.is_file()]
    return {
        "utterances": len(items),
        "fill_seconds": fill_seconds,
        "crossval_seconds": frozen_seconds,
        "baseline_seconds": baseline_seconds,
        "cache_mb": sum(p.stat().st_size for p in cache_files) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_phase(arguments: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, *arguments], check=True,
                            capture_output=True, text=True)  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--utterances", type=int, default=800)
    parser.add_argument("--corpus", type=Path, default=None, help="instead of a synthetic one")
    parser.add_argument("--out", type=Path, default=Path("bench-out/feature-cache"))
    parser.add_argument("--skip-crossval", action="store_true")
    parser.add_argument("--phase", choices=["fill", "crossval"], default=None)
    args = parser.parse_args()
    if args.phase == "fill":
        print(json.dumps(fill_rate(args.encoder, args.clips, args.rounds, args.views)))
        return
    if args.phase == "crossval":
        out = args.out / Path(args.encoder).name
        print(json.dumps(crossval_time(args.encoder, args.utterances, args.corpus, out)))
        return

    print(f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"encoder {args.encoder}")  # fmt: skip
    common = ["--encoder", args.encoder]
    fill = run_phase(["--phase", "fill", "--clips", str(args.clips), "--rounds",
                      str(args.rounds), "--views", str(args.views), *common])  # fmt: skip
    print(
        f"cache fill, {fill['clips']} clips ({args.views} mixed views + original of "
        f"{args.clips} utterances, {fill['audio_seconds']:.0f} s of audio):"
    )
    print(f"  fill        {fill['fill_clips_per_s']:7.1f} clips/s")
    print(f"  bare encoder {fill['bare_clips_per_s']:6.1f} clips/s (same clips, in memory)")
    print(f"  fill / bare  {fill['ratio']:6.2f}×   (target ≥ 0.9×); peak RSS "
          f"{fill['peak_rss_mb']:.0f} MB")  # fmt: skip
    if args.skip_crossval:
        return
    extra = ["--utterances", str(args.utterances), "--out", str(args.out)]
    if args.corpus is not None:
        extra += ["--corpus", str(args.corpus)]
    cv = run_phase(["--phase", "crossval", *common, *extra])
    print(f"crossval --preset frozen --tables main, {cv['utterances']} utterances, 10 folds:")
    print(f"  cache fill {cv['fill_seconds']:7.1f} s (0 if it was filled by an earlier run); "
          f"cache {cv['cache_mb']:.1f} MB")  # fmt: skip
    print(f"  CE and CE+SCL × 10 folds after the fill {cv['crossval_seconds']:6.1f} s "
          f"(target < 120 s); baseline {cv['baseline_seconds']:.1f} s")  # fmt: skip
    print(f"  peak RSS {cv['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()

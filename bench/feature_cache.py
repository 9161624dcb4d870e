"""The frozen-encoder fast path: cache fill rate against the bare encoder, the faster fill options
(their speed, feature difference and UA change), cross-validation time once the cache is filled,
and the disk a cross-validation uses (head-only folders against the full-weight ones before).

    python bench/feature_cache.py [--encoder tiny|DIR] [--clips 48] [--ua-corpus DIR]

1. Fill rate: `FeatureCache.fill` (decode, crop, `mixed` augmentation of K = 4 views, every
   layer pooled, shards written) on `--clips` utterances of the synthetic corpus, against the bare
   fp32 encoder (`EmotionModel.hidden_states`, last layer only) on the very same clips already in
   memory, in the same length-sorted batches of 8. Each round times both; the ratio is the
   median over rounds of same-round ratios (this shared machine's speed drifts within minutes).
   Then each precision option (`bf16-views`, `bf16`) fills the same entries: its speed-up over
   the fp32 fill (same-round ratios again) and the largest absolute difference of its features
   from the fp32 ones (originals, views).
2. UA per option: `crossval --preset frozen --tables main` (10 folds, leave one speaker out; CE
   and CE+SCL, kNN) on `--ua-corpus` (or a synthetic corpus), `--ua-per-class` utterances per
   speaker and class, once per option: fp32 with K = 4 views (the reference), bf16-views,
   bf16, and fp32 with K = 2 views. Per option: the fill time, the cross-validation time after
   the fill, the mean UA of CE+SCL (model and interpolated) and its paired change against fp32
   over the folds (mean ± standard error: the noise to judge it by).
3. Disk: the fp32 cross-validation's folder (head-only fold folders + its encoders/ store)
   against what the same folds took before (every fold folder with the full model: its size
   measured by packing one fold with `emoknn pack`).

Each phase runs in its own process, so its peak RSS is its own. The load (`os.getloadavg`) is
printed with each phase: on a shared machine the figures drift with it.
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
    import numpy as np
    import torch

    from emoknn.augment import make_augmentation
    from emoknn.config import make_config
    from emoknn.corpora import generate_synthetic_corpus, label_names, load_synthetic
    from emoknn.data import pad_batch
    from emoknn.features import (
        FeatureCache,
        ViewSpec,
        _clip_batches,
        bf16_supported,
        fill_threads,
        torch_threads,
    )
    from emoknn.frozen import build_frozen_model

    work = Path(tempfile.mkdtemp(prefix="emoknn-bench-"))
    try:
        generate_synthetic_corpus(work / "corpus", seed=1, num_sessions=1,
                                  utterances_per_class=max(1, clips // 8))  # fmt: skip
        utterances = load_synthetic(work / "corpus")[:clips]
        config = make_config("frozen", encoder=encoder)
        model = build_frozen_model(config, label_names(utterances))
        options = ["bf16-views", "bf16"] if bf16_supported("cpu") else []
        spec = ViewSpec(make_augmentation("mixed"), 0, views)
        jobs = [(u, [(f"{u.id}/o", None)] + [(f"{u.id}/{k}", k) for k in range(views)])
                for u in utterances]  # fmt: skip
        batches = [[clip for _, _, clip in batch] for batch in
                   _clip_batches(jobs, model_max(config), spec.augmentation, 0, 8)]  # fmt: skip
        count = sum(len(batch) for batch in batches)

        def bare() -> None:
            with torch.inference_mode(), torch_threads(fill_threads()):
                for batch in batches:
                    model.hidden_states(*pad_batch(batch), all_layers=False)

        def fill(round_index: int) -> None:
            FeatureCache(work / f"cache{round_index}", model, config.max_seconds).fill(
                utterances, spec
            )

        def fill_with(precision: str, name: str) -> FeatureCache:
            cache = FeatureCache(work / name, model, config.max_seconds, precision)
            cache.fill(utterances, spec)
            return cache

        bare()  # warm-up: first calls allocate, the RIR bank and librosa load
        fill(-1)
        fill_times, bare_times = [], []
        option_times: dict[str, list[float]] = {p: [] for p in options}
        for index in range(rounds):
            start = time.perf_counter()
            fill(index)
            fill_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            bare()
            bare_times.append(time.perf_counter() - start)
            for precision in options:
                start = time.perf_counter()
                fill_with(precision, f"{precision}-{index}")
                option_times[precision].append(time.perf_counter() - start)
        ratios = [b / f for f, b in zip(fill_times, bare_times, strict=True)]
        reference = FeatureCache(work / "cache0", model, config.max_seconds)
        fp32 = (reference.originals(utterances), reference.views(utterances, spec))
        differences = {}
        for precision in options:
            cache = FeatureCache(work / f"{precision}-0", model, config.max_seconds, precision)
            got = (cache.originals(utterances), cache.views(utterances, spec))
            speedups = [f / o for f, o in zip(fill_times, option_times[precision], strict=True)]
            differences[precision] = {
                "speedup": statistics.median(speedups),
                "originals_max_abs": float(np.abs(got[0] - fp32[0]).max()),
                "views_max_abs": float(np.abs(got[1].astype(np.float32)
                                              - fp32[1].astype(np.float32)).max()),
                "feature_scale": float(np.abs(fp32[0]).max()),
            }  # fmt: skip
        return {
            "clips": count,
            "fill_clips_per_s": count / statistics.median(fill_times),
            "bare_clips_per_s": count / statistics.median(bare_times),
            "ratio": statistics.median(ratios),
            "audio_seconds": float(sum(len(c) for b in batches for c in b) / 16000),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "fill_threads": fill_threads(),
            "options": differences,
            "load": os.getloadavg()[0],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def model_max(config) -> int:
    from emoknn.audio import max_samples

    return max_samples(config.max_seconds)


OPTIONS = {  # name: (cache_precision, cache_views)
    "fp32, K=4": ("fp32", 4),
    "bf16-views, K=4": ("bf16-views", 4),
    "bf16, K=4": ("bf16", 4),
    "fp32, K=2": ("fp32", 2),
}


def subset(items: list, per_class: int) -> list:
    """The first `per_class` utterances of each (speaker, label)."""
    kept, seen = [], {}
    for item in items:
        key = (item.speaker, item.label)
        if seen.get(key, 0) < per_class:
            seen[key] = seen.get(key, 0) + 1
            kept.append(item)
    return kept


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def options_ua(encoder: str, corpus: Path | None, per_class: int, option: str, out: Path) -> dict:
    """One option's fill and cross-validation (phase 2), and the disk it used (phase 3)."""
    from emoknn.config import make_config
    from emoknn.corpora import generate_synthetic_corpus, label_names, load_corpus
    from emoknn.experiments import crossval, prepare_frozen, result_records
    from emoknn.folds import speaker_folds

    if corpus is None:
        corpus = out / "synthetic"
        if not corpus.is_dir():
            generate_synthetic_corpus(corpus, seed=0, num_sessions=5,
                                      utterances_per_class=per_class)  # fmt: skip
    items = subset(load_corpus(corpus), per_class)
    folds = speaker_folds(items)
    precision, views = OPTIONS[option]
    config = make_config("frozen", encoder=encoder, feature_cache=str(out / "emoknn-features"),
                         cache_precision=precision, cache_views=views)  # fmt: skip
    cv = out / ("cv-" + option.replace(", ", "-").replace("=", ""))
    shutil.rmtree(cv, ignore_errors=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    prepare_frozen(folds, label_names(items), config, ["main"], cv)
    fill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = crossval(items, folds, config, cv, ["main"], with_baseline=False)
    crossval_seconds = time.perf_counter() - start
    ua = {}
    for record in result_records(results):
        if record["training"] == "scl":
            ua.setdefault(record["inference"], {})[record["fold"]] = record["ua"]
    disk = {}
    if option == "fp32, K=4":
        from emoknn.model_folder import MODEL_FILE, pack_model

        fold_dirs = sorted(p.parent for p in cv.glob("*/*/model.json"))
        pack_model(fold_dirs[0], out / "packed")
        full = (out / "packed" / MODEL_FILE).stat().st_size
        shutil.rmtree(out / "packed")
        heads = sum((d / MODEL_FILE).stat().st_size for d in fold_dirs)
        after = folder_bytes(cv)
        disk = {"folds": len(fold_dirs), "after_mb": after / 2**20,
                "before_mb": (after - folder_bytes(cv / "encoders") - heads
                              + full * len(fold_dirs)) / 2**20,
                "head_kb": heads / len(fold_dirs) / 1024, "full_mb": full / 2**20,
                "store_mb": folder_bytes(cv / "encoders") / 2**20}  # fmt: skip
    return {
        "option": option,
        "utterances": len(items),
        "folds": len(folds),
        "fill_seconds": fill_seconds,
        "crossval_seconds": crossval_seconds,
        "ua": ua,
        "disk": disk,
        "load": [load, os.getloadavg()[0]],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def paired(reference: dict[str, float], other: dict[str, float]) -> tuple[float, float]:
    """Mean and standard error of the per-fold differences other − reference."""
    differences = [other[fold] - reference[fold] for fold in reference]
    mean = statistics.mean(differences)
    error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else 0
    return mean, error


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
    parser.add_argument(
        "--ua-corpus",
        type=Path,
        default=None,
        help="corpus for the UA phase (default: a synthetic one)",
    )
    parser.add_argument(
        "--ua-per-class",
        type=int,
        default=8,
        help="utterances per speaker and class in the UA phase",
    )
    parser.add_argument(
        "--ua-options",
        default=";".join(OPTIONS),
        help=f"';'-separated subset of: {'; '.join(OPTIONS)}",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/feature-cache"))
    parser.add_argument("--skip-ua", action="store_true")
    parser.add_argument("--phase", choices=["fill", "ua"], default=None)
    parser.add_argument("--option", default=None)
    args = parser.parse_args()
    out = args.out / Path(args.encoder).name
    if args.phase == "fill":
        print(json.dumps(fill_rate(args.encoder, args.clips, args.rounds, args.views)))
        return
    if args.phase == "ua":
        print(json.dumps(options_ua(args.encoder, args.ua_corpus, args.ua_per_class, args.option,
                                    out)))  # fmt: skip
        return

    print(f"{platform.machine()}, {os.cpu_count()} cores (shared), load "
          f"{os.getloadavg()[0]:.1f}; encoder {args.encoder}", flush=True)  # fmt: skip
    common = ["--encoder", args.encoder]
    fill = run_phase(["--phase", "fill", "--clips", str(args.clips), "--rounds",
                      str(args.rounds), "--views", str(args.views), *common])  # fmt: skip
    print(
        f"cache fill, {fill['clips']} clips ({args.views} mixed views + original of "
        f"{args.clips} utterances, {fill['audio_seconds']:.0f} s of audio), load "
        f"{fill['load']:.1f}, {fill['fill_threads']} torch threads:"
    )
    print(f"  fill (fp32)  {fill['fill_clips_per_s']:6.1f} clips/s")
    print(f"  bare encoder {fill['bare_clips_per_s']:6.1f} clips/s (fp32, same clips, in memory)")
    print(f"  fill / bare  {fill['ratio']:6.2f}×   (target ≥ 0.9×); peak RSS "
          f"{fill['peak_rss_mb']:.0f} MB")  # fmt: skip
    for precision, option in fill["options"].items():
        print(f"  {precision:11s}  {option['speedup']:5.2f}× the fp32 fill; max |Δ| vs fp32: "
              f"originals {option['originals_max_abs']:.3g}, views {option['views_max_abs']:.3g} "
              f"(features up to {option['feature_scale']:.3g})")  # fmt: skip
    if not fill["options"]:
        print("  bf16: this CPU has no native bfloat16; not measured")
    if args.skip_ua:
        return
    extra = ["--ua-per-class", str(args.ua_per_class), "--out", str(args.out)]
    if args.ua_corpus is not None:
        extra += ["--ua-corpus", str(args.ua_corpus)]
    names = [name.strip() for name in args.ua_options.split(";") if name.strip()]
    if "fp32, K=4" not in names:
        names.insert(0, "fp32, K=4")
    runs = {}
    for name in names:
        runs[name] = run_phase(["--phase", "ua", "--option", name, *common, *extra])
        run = runs[name]
        print(f"{name}: {run['utterances']} utterances, {run['folds']} folds, load "
              f"{run['load'][0]:.1f}→{run['load'][1]:.1f}: fill {run['fill_seconds']:.0f} s, "
              f"crossval after the fill {run['crossval_seconds']:.0f} s", flush=True)  # fmt: skip
    reference = runs["fp32, K=4"]["ua"]
    print("UA of CE+SCL, mean over folds (change vs fp32 K=4: mean ± s.e. of per-fold changes):")
    for name, run in runs.items():
        cells = []
        for inference in ("model", "interpolated"):
            scores = run["ua"][inference]
            mean = statistics.mean(scores.values())
            if name == "fp32, K=4":
                cells.append(f"{inference} {mean:.3f}")
            else:
                change, error = paired(reference[inference], scores)
                cells.append(f"{inference} {mean:.3f} ({change:+.3f} ± {error:.3f})")
        print(f"  {name:16s} " + "; ".join(cells))
    disk = runs["fp32, K=4"]["disk"]
    print(f"disk per crossval ({disk['folds']} fold folders): before (full weights in every "
          f"fold) {disk['before_mb']:.1f} MB, now {disk['after_mb']:.1f} MB (heads "
          f"{disk['head_kb']:.0f} KB each + one encoder store of {disk['store_mb']:.1f} MB; a "
          f"full model is {disk['full_mb']:.1f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()

"""kNN tuning time: the full (T, k, α) grid for a 5,500 × 768 datastore and 550 queries.

    python bench/knn_tuning.py

Compares emoknn's tuning (one k=32 search, cumulative sums over neighbour rank, every α scored
by broadcasting) with the straightforward loop that searches again for every (T, k) and
interpolates every α — measured in the same run, on the same data. Also times the datastore
build (exact index).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from emoknn.knn import (
    DEFAULT_ALPHAS,
    MAX_K,
    TEMPERATURE_FACTORS,
    Datastore,
    interpolate,
    knn_probs,
    tune_knn,
)
from emoknn.metrics import unweighted_accuracy


def synthetic_problem(size: int, queries: int, dimension: int, classes: int = 4):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((classes, dimension))
    labels = rng.integers(0, classes, size + queries)
    points = (centers[labels] + rng.standard_normal((size + queries, dimension)) * 9).astype(
        np.float32
    )
    model_probs = rng.dirichlet(np.ones(classes), queries)
    return points[:size], labels[:size], points[size:], labels[size:], model_probs


def naive_tuning(store, queries, labels, model_probs):
    """Re-query for every (T, k); interpolate every α. Returns the best UA."""
    scale = float(np.median(store.search(queries, 1)[0]))
    best = -1.0
    for temperature in [f * scale for f in TEMPERATURE_FACTORS] + [np.inf]:
        for k in range(1, MAX_K + 1):
            distances, indices = store.search(queries, k)
            p_knn = knn_probs(distances, store.labels[indices], len(store.label_names), temperature)
            for alpha in DEFAULT_ALPHAS:
                predictions = interpolate(p_knn, model_probs, alpha).argmax(1)
                best = max(best, unweighted_accuracy(labels, predictions))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=5500)
    parser.add_argument("--queries", type=int, default=550)
    parser.add_argument("--dimension", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keys, key_labels, queries, labels, model_probs = synthetic_problem(
        args.size, args.queries, args.dimension
    )
    grid = (len(TEMPERATURE_FACTORS) + 1) * MAX_K * len(DEFAULT_ALPHAS)
    print(
        f"# kNN tuning: datastore {args.size} × {args.dimension}, {args.queries} queries, "
        f"grid {len(TEMPERATURE_FACTORS) + 1} T × {MAX_K} k × {len(DEFAULT_ALPHAS)} α = {grid} "
        f"settings; {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )

    start = time.perf_counter()
    store = Datastore(keys, key_labels, list("abcd"), [str(i) for i in range(args.size)], "bench")
    build = time.perf_counter() - start

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = tune_knn(queries, labels, model_probs, store)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    naive_best = naive_tuning(store, queries, labels, model_probs)
    naive = time.perf_counter() - start
    assert abs(naive_best - result.interpolated.score) < 1e-12, (naive_best, result)

    print(f"{'step':>34}  {'seconds':>8}")
    print(f"{'datastore build (exact index)':>34}  {build:8.3f}")
    print(f"{'emoknn tune_knn (median of ' + str(args.repeats) + ')':>34}  {np.median(times):8.3f}")
    print(f"{'baseline: re-query per (T, k)':>34}  {naive:8.3f}")
    print(f"{'speed-up':>34}  {naive / np.median(times):7.1f}x")
    print(
        f"chosen: k={result.interpolated.k} α={result.interpolated.alpha} "
        f"T={result.interpolated.temperature:.3g} UA={result.interpolated.score:.4f} "
        f"(baseline best UA {naive_best:.4f}: same)"
    )


if __name__ == "__main__":
    main()

"""Augmentation throughput: clips/s per augmentation on 7.5 s clips, one process, one core.

    python bench/augment_throughput.py [--clips 40]

Also prints the rate a training step consumes, so one can see how many loader workers keep the
GPU fed: a paper-preset step takes 12 originals and 12 views.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from emoknn.augment import AUGMENTATION_NAMES, make_augmentation
from emoknn.corpora.synthetic import _make_speakers, synthesize_utterance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=7.5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    speaker = _make_speakers(1, rng)[0]
    clips = [synthesize_utterance(speaker, "neutral", args.seconds, rng) for _ in range(8)]
    print(
        f"# augmentation throughput, {args.seconds} s clips, 1 process "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(f"{'augmentation':>12}  {'clips/s':>8}  {'ms/clip':>8}  {'x real time':>11}")
    for name in AUGMENTATION_NAMES:
        augment = make_augmentation(name)  # builds (or loads the cached) RIR bank outside timing
        augment(clips[0], np.random.default_rng(0))  # warm-up (imports, FFT plans)
        start = time.perf_counter()
        for i in range(args.clips):
            augment(clips[i % len(clips)], np.random.default_rng(i))
        elapsed = time.perf_counter() - start
        rate = args.clips / elapsed
        print(f"{name:>12}  {rate:8.1f}  {1000 / rate:8.1f}  {rate * args.seconds:11.0f}")


if __name__ == "__main__":
    main()

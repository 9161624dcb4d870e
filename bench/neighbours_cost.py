"""What `--neighbours 5` costs: prediction throughput with and without it.

    python bench/neighbours_cost.py [--clips 24] [--rounds 5] [--whisper-base DIR]

The same clips (synthetic speech-like audio, 2–7 s) go through `EmotionRecognizer.predict` with
neighbours=0 and neighbours=5, in interleaved rounds (both once per round, order alternating);
the cost is the median over rounds of the ratio of the two times of a round, so a slow spell of a
shared machine hits both sides. Models: the tiny test encoder (where the kNN part weighs most)
and, when its folder is given or found at ~/.cache/emoknn-dev/whisper-base, the real whisper-base
encoder. The datastore is IEMOCAP-sized (5,531 entries, random keys of the model's embedding
size: search time does not depend on the values), exact index, k = 16.

Also the kNN step alone (`store_knn_search` for 64 queries), where any extra cost would show.
Prints one JSON object; state the machine's load (`uptime`) beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from emoknn.corpora.synthetic import _make_speakers, synthesize_utterance
from emoknn.knn import Datastore, KnnSettings, store_knn_search
from emoknn.model import EmotionModel, ModelConfig
from emoknn.predict import EmotionRecognizer

STORE_SIZE = 5531
SETTINGS = KnnSettings(k=16, alpha=0.5, temperature=1.0, score=0.0, criterion="ua")


def make_clips(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    speaker = _make_speakers(1, rng)[0]
    labels = ("angry", "happy", "neutral", "sad")
    return [synthesize_utterance(speaker, labels[i % 4], float(rng.uniform(2.0, 7.0)), rng)
            for i in range(count)]  # fmt: skip


def recognizer_for(encoder: str) -> EmotionRecognizer:
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(encoder=encoder)).eval()
    rng = np.random.default_rng(0)
    store = Datastore(rng.standard_normal((STORE_SIZE, model.embedding_size)).astype(np.float32),
                      rng.integers(0, 4, STORE_SIZE), model.labels,
                      [f"clip{i:05d}" for i in range(STORE_SIZE)], "bench",
                      sources=[f"/data/clip{i:05d}.wav" for i in range(STORE_SIZE)])  # fmt: skip
    return EmotionRecognizer(model, store, SETTINGS, max_seconds=7.5, device="cpu")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def compare(recognizer: EmotionRecognizer, clips: list[np.ndarray], rounds: int) -> dict:
    recognizer.predict(clips[:2], neighbours=5)  # warm-up
    times: dict[int, list[float]] = {0: [], 5: []}
    for round_ in range(rounds):
        for count in (0, 5) if round_ % 2 == 0 else (5, 0):
            times[count].append(timed(lambda c=count: recognizer.predict(clips, neighbours=c)))
    ratios = [with_ / without for with_, without in zip(times[5], times[0], strict=True)]
    return {
        "clips": len(clips),
        "audio_seconds": round(sum(len(c) for c in clips) / 16000, 1),
        "clips_per_s_without": round(len(clips) / float(np.median(times[0])), 2),
        "clips_per_s_with_neighbours_5": round(len(clips) / float(np.median(times[5])), 2),
        "time_ratio_median": round(float(np.median(ratios)), 3),
        "time_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }


def knn_step(dimension: int, repeats: int = 30) -> dict:
    rng = np.random.default_rng(1)
    store = Datastore(rng.standard_normal((STORE_SIZE, dimension)).astype(np.float32),
                      rng.integers(0, 4, STORE_SIZE), ["a", "b", "c", "d"],
                      [str(i) for i in range(STORE_SIZE)], "bench")  # fmt: skip
    queries = rng.standard_normal((64, dimension)).astype(np.float32)

    def step(count: int) -> None:
        search = store_knn_search(queries, store, SETTINGS, count)
        if count:
            [search.neighbours(row, count, store) for row in range(len(queries))]

    step(5)
    times: dict[int, list[float]] = {0: [], 5: []}
    for repeat in range(repeats):  # interleaved, order alternating
        for count in (0, 5) if repeat % 2 == 0 else (5, 0):
            times[count].append(timed(lambda c=count: step(c)))
    return {f"ms_per_64_queries_neighbours_{count}": round(1000 * float(np.median(t)), 3)
            for count, t in times.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--whisper-base", type=Path,
                        default=Path("~/.cache/emoknn-dev/whisper-base").expanduser())  # fmt: skip
    args = parser.parse_args()
    clips = make_clips(args.clips)
    report: dict = {"machine": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(),
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    report["tiny"] = compare(recognizer_for("tiny"), clips, args.rounds)
    if (args.whisper_base / "config.json").is_file():
        report["whisper-base"] = compare(recognizer_for(str(args.whisper_base)), clips,
                                         args.rounds)  # fmt: skip
    report["knn_step_512_wide"] = knn_step(512)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""The classical baseline's feature extraction: openSMILE eGeMAPSv02 (today's `emoknn.baseline`)
against the hand-written librosa statistics it replaced, on the same clips in the same run.

    python bench/baseline_features.py --corpus DIR [--limit N] [--old-commit REV]

The old extractor is not kept in the package: it is read from the project's git history
(`git show REV:src/emoknn/baseline.py`, REV defaulting to the last commit that had it) and run
from memory, so both are measured by one script on one machine under one load. Every clip is
decoded once first (`load_audio`, timed on its own); then each extractor runs over all clips
in turn, interleaved in rounds of 50 clips so a busy spell on the shared machine slows both
sides alike. Prints per extractor the wall seconds (clips per second) and the CPU seconds of
this process (all its threads; per audio hour) — on a shared, loaded machine the CPU time is the
fairer figure — the feature count, and the machine's load average. Both extractors run in this
one process with the same BLAS/OpenMP thread settings (set OMP_NUM_THREADS=1 on shared machines).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import types
from pathlib import Path

import numpy as np

OLD_COMMIT = "b9c6a88"  # the last commit whose emoknn.baseline computed the librosa statistics
ROUND = 50  # clips per interleaved round


def old_extractor(commit: str):
    """`utterance_features` of emoknn.baseline as it was at `commit` (read from git)."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:src/emoknn/baseline.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("emoknn_baseline_old")
    exec(compile(source, f"{commit}:src/emoknn/baseline.py", "exec"), module.__dict__)
    return module.utterance_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--kind", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="the first N clips (sorted ids)")
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    args = parser.parse_args()

    from emoknn import baseline
    from emoknn.audio import SAMPLE_RATE, load_audio
    from emoknn.corpora import load_corpus

    utterances = sorted(load_corpus(args.corpus, args.kind), key=lambda u: u.id)[: args.limit]
    start = time.perf_counter()
    clips = [load_audio(u.path) for u in utterances]
    decode = time.perf_counter() - start
    hours = sum(len(c) for c in clips) / SAMPLE_RATE / 3600
    extractors = {
        "openSMILE eGeMAPSv02": lambda clip: baseline.utterance_features(clip),
        f"hand-written librosa ({args.old_commit})": old_extractor(args.old_commit),
    }
    for extract in extractors.values():  # warm-up: imports, openSMILE's config, librosa caches
        extract(clips[0])
    seconds = dict.fromkeys(extractors, 0.0)
    cpu = dict.fromkeys(extractors, 0.0)
    sizes = {}
    for first in range(0, len(clips), ROUND):
        for name, extract in extractors.items():
            begin, begin_cpu = time.perf_counter(), time.process_time()
            rows = [extract(clip) for clip in clips[first : first + ROUND]]
            seconds[name] += time.perf_counter() - begin
            cpu[name] += time.process_time() - begin_cpu
            sizes[name] = rows[0].shape[0]
            assert all(np.isfinite(row).all() for row in rows), name
    print(f"{args.corpus}: {len(clips)} clips, {hours * 60:.1f} min of audio; decoding "
          f"{decode:.1f} s (not counted below); load average {os.getloadavg()[0]:.2f}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")  # fmt: skip
    reference = next(iter(extractors))
    for name, total in seconds.items():
        print(f"  {name:<32} {sizes[name]:>4} features  wall {total:7.1f} s "
              f"({len(clips) / total:5.1f} clips/s, ×{total / seconds[reference]:.2f} of "
              f"openSMILE's)  CPU {cpu[name]:7.1f} s ({cpu[name] / hours:5.0f} s per audio "
              f"hour, ×{cpu[name] / cpu[reference]:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()

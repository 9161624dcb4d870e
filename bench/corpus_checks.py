"""What the corpus checks of issue #32 cost on a real corpus (default: RAVDESS 16 kHz, 1,440
clips): the loader alone (the baseline, as before the checks) beside the load with the new checks
(LFS stubs, label map, one file per row), the byte-copy check made before folds, and corpus
verify's header read of every clip. Best of `--repeats` runs, in seconds.

    python bench/corpus_checks.py [CORPUS] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from emoknn.corpora import check_distinct_audio, load_corpus, load_native
    from emoknn.corpora.verify import VerifyReport, _check_audio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default="/work/shared/corpora/ravdess-16k")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    utterances = load_corpus(args.corpus)
    rows = [
        ("loader alone (baseline)", lambda: load_native(args.corpus)),
        ("load_corpus with its checks", lambda: load_corpus(args.corpus)),
        ("byte-copy check (before folds)",
         lambda: check_distinct_audio(utterances, "bench")),
        ("verify: every header read", lambda: _check_audio(VerifyReport("x", args.corpus),
                                                           utterances)),
    ]
    print(f"{args.corpus}: {len(utterances)} clips; load average {os.getloadavg()[0]:.1f}")
    for name, work in rows:
        print(f"  {name:<34} {best_of(args.repeats, work):.3f} s")


if __name__ == "__main__":
    main()

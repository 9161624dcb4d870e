"""Time `emoknn demo` from an empty output folder: the tiny fallback and a pretrained encoder.

    python bench/demo_time.py [--encoder DIR] [--keep OUT]

Each run starts from nothing (corpus generation, feature cache, every fold), as on a fresh clone.
Prints, side by side, the wall time, the CPU time of the process tree and the load average before
and after each run (the target is under 5 minutes on a 2-core CPU; on a shared machine the wall
time overstates it), then each demo's table row means and the best-learned-vs-baseline sentence.
The pretrained run is skipped when the encoder folder is absent (default: EMOKNN_WHISPER_BASE or
~/.cache/emoknn-dev/whisper-base).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_demo(out: Path, encoder: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "emoknn", "demo", "--out", str(out), "--encoder", encoder],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"demo with {encoder} failed:\n{completed.stderr[-3000:]}")
    results = json.loads((out / "crossval" / "results.json").read_text())
    return {
        "encoder": encoder,
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "load": (load_before, os.getloadavg()[0]),
        "summary": results["summary"],
        "comparisons": [c["sentence"] for c in results["comparisons"]],
        "encoder_line": next(
            (line for line in completed.stdout.splitlines() if line.startswith("Encoder:")), "?"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("EMOKNN_WHISPER_BASE", "~/.cache/emoknn-dev/whisper-base")
    parser.add_argument("--encoder", default=default)
    parser.add_argument("--keep", type=Path, help="write the demo folders here (else a temp dir)")
    args = parser.parse_args()
    encoder = str(Path(args.encoder).expanduser())
    # the tiny fallback as a user without the encoder meets it: a name that cannot load
    runs = [("tiny fallback", "./no-encoder-here")]
    if (Path(encoder) / "config.json").is_file():
        runs.append(("pretrained", encoder))
    else:
        print(f"(no encoder at {encoder}: pretrained run skipped)")
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        results = [(name, run_demo(root / name.replace(" ", "-"), enc)) for name, enc in runs]
    print(f"{'run':<15} {'wall s':>8} {'CPU s':>8}  load before → after")
    for name, r in results:
        print(f"{name:<15} {r['wall_s']:8.0f} {r['cpu_s']:8.0f}  {r['load'][0]:.1f} → "
              f"{r['load'][1]:.1f}   (target: wall < 300 s)")  # fmt: skip
    for name, r in results:
        print(f"\n{name}: {r['encoder_line']}")
        for row in r["summary"]:
            print(f"  {row['variant']:<26} UA {100 * row['ua_mean']:5.1f} ± "
                  f"{100 * row['ua_std']:4.1f}  WA {100 * row['wa_mean']:5.1f}")  # fmt: skip
        for sentence in r["comparisons"]:
            print(f"  - {sentence}")


if __name__ == "__main__":
    main()

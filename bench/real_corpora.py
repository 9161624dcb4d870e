"""The method on real speech: the frozen cross-validation of each corpus copy given, its
speaker-normalised variant, the encoder probe and the eGeMAPS baseline, in one table.

    OMP_NUM_THREADS=1 python bench/real_corpora.py CORPUS_DIR... --encoder DIR
        [--feature-cache DIR] [--runs DIR] [--emobox] [--markdown FILE]

For each corpus folder (EmoDB, RAVDESS, TESS, or any kind `emoknn.corpora.load_corpus` detects):

- `emoknn crossval --preset frozen` (leave-one-speaker-out; TESS, with 2 speakers: see
  `scheme_for`) into `RUNS/<corpus>-frozen`: CE, CE+SCL, each ± kNN, the encoder probe and the
  classical baseline (openSMILE eGeMAPSv02 + logistic regression) on every fold;
- the same with `--speaker-norm` into `RUNS/<corpus>-frozen-spknorm`;
- with `--emobox`, for RAVDESS, `--scheme emobox` (EmoBox's six folds of 4 test actors) into
  `RUNS/<corpus>-emobox`, the row set beside EmoBox's published frozen-encoder figures.

Each run is the real command line (a subprocess, its output in `RUNS/<run>.log`), timed by wall
clock with the machine's load average before and after; its time, fill rate (feature-cache
entries computed per second, from the command's own "Feature cache: N of M entries computed in
S s" line) and load go to `RUNS/<run>/bench.json`. A run whose folder already has results.json
and bench.json is not run again (the table is rebuilt from them); an unfinished one resumes.
The feature cache is shared: a corpus whose encoder outputs are already cached has no fill.

The table gives, per run, the mean UA over folds with a 95 % t-interval (mean ± t_{0.975,n−1} ·
s/√n, s the sample std over folds), the wall time and the fill. `--markdown FILE` writes it (and a
per-run detail table) for docs/benchmarks.md. The audio is read from the folders given; nothing
of it, nor any feature or model, goes into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENCODER = "/root/.cache/emoknn-dev/whisper-base"
# The headline columns: (training, inference) of results.json's summary, and their names.
COLUMNS = (
    (("ce", "model"), "CE"),
    (("scl", "model"), "CE+SCL"),
    (("scl", "interpolated"), "CE+SCL + kNN"),
    (("probe", "model"), "probe"),
    (("baseline", "model"), "eGeMAPS baseline"),
)
FILL_LINE = re.compile(r"Feature cache: (\d+) of (\d+) entries computed in ([\d.]+) s")
# EmoBox's published RAVDESS UA (frozen encoders, its 6 folds), for the table's note.
EMOBOX_RAVDESS = {"whisper-large-v3": 75.3, "WavLM-large": 72.0, "HuBERT-base": 65.4,
                  "wav2vec2-base": 54.3}  # fmt: skip


def scheme_for(utterances: list) -> str:
    """Leave-one-speaker-out where the corpus has 3 speakers or more (test, validation, train);
    a 2-speaker corpus (TESS) gets `cross-speaker` (the other speaker trains and validates)."""
    return "speaker" if len({u.speaker for u in utterances}) >= 3 else "cross-speaker"


def planned_runs(corpus: Path, emobox: bool) -> list[dict[str, Any]]:
    """The runs of one corpus folder: name, scheme, speaker-norm flag."""
    from emoknn.corpora import detect_corpus_kind, load_corpus

    kind = detect_corpus_kind(corpus)
    utterances = load_corpus(corpus, kind)
    scheme = scheme_for(utterances)
    base = {"corpus": str(corpus), "kind": kind, "utterances": len(utterances),
            "speakers": len({u.speaker for u in utterances})}  # fmt: skip
    runs = [
        {**base, "name": f"{kind}-frozen", "scheme": scheme, "speaker_norm": False},
        {**base, "name": f"{kind}-frozen-spknorm", "scheme": scheme, "speaker_norm": True},
    ]
    if emobox and kind == "ravdess":
        runs.append({**base, "name": f"{kind}-emobox", "scheme": "emobox", "speaker_norm": False})
    return runs


def run(spec: dict[str, Any], runs_dir: Path, encoder: str, cache: Path | None) -> dict:
    """Run (or resume) one cross-validation through the CLI; time it; record bench.json."""
    out = runs_dir / spec["name"]
    record_file = out / "bench.json"
    if (out / "results.json").is_file() and record_file.is_file():
        return json.loads(record_file.read_text())
    command = [sys.executable, "-m", "emoknn", "crossval", "--corpus", spec["corpus"],
               "--kind", spec["kind"], "--scheme", spec["scheme"], "--out", str(out),
               "--preset", "frozen", "--encoder", encoder]  # fmt: skip
    if cache is not None:
        command += ["--feature-cache", str(cache)]
    if spec["speaker_norm"]:
        command.append("--speaker-norm")
    log = runs_dir / f"{spec['name']}.log"
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{spec['name']}: emoknn crossval failed; see {log}")
    fill = FILL_LINE.search(log.read_text())
    record = {
        **spec, "seconds": round(seconds, 1), "command": " ".join(command),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "fill_computed": int(fill.group(1)) if fill else 0,
        "fill_seconds": float(fill.group(3)) if fill else 0.0,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
    }  # fmt: skip
    record_file.write_text(json.dumps(record, indent=2))
    return record


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval, in %."""
    import numpy as np

    from emoknn.stats import mean_confidence_interval

    mean, low, high = mean_confidence_interval(np.array(values) * 100)
    return mean, (high - low) / 2


def summary_cells(results: dict[str, Any]) -> dict[tuple[str, str], str]:
    """`mean ± CI half-width` UA of every (training, inference) in results.json's records."""
    by_key: dict[tuple[str, str], list[float]] = {}
    for record in results["records"]:
        by_key.setdefault((record["training"], record["inference"]), []).append(record["ua"])
    cells = {}
    for key, values in by_key.items():
        mean, half = interval(values) if len(values) > 1 else (100 * values[0], float("nan"))
        cells[key] = f"{mean:.1f} ± {half:.1f}"
    return cells


def minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def fill_text(record: dict[str, Any]) -> str:
    if not record["fill_computed"]:
        return "cached"
    rate = record["fill_computed"] / max(record["fill_seconds"], 1e-9)
    return f"{record['fill_computed']} in {record['fill_seconds']:.0f} s ({rate:.1f}/s)"


def tables(records: list[dict[str, Any]], runs_dir: Path) -> str:
    """The headline table (one row per corpus and scheme) and the per-run detail."""
    by_name = {r["name"]: r for r in records}
    head = ("| corpus (folds) | " + " | ".join(name for _, name in COLUMNS)
            + " | CE+SCL + kNN, speaker-norm | wall time (fill) |")  # fmt: skip
    lines = [head, "|---" + "|---:" * (len(COLUMNS) + 2) + "|"]
    for record in records:
        if record["speaker_norm"]:
            continue
        results = json.loads((runs_dir / record["name"] / "results.json").read_text())
        cells = summary_cells(results)
        folds = len({r["fold"] for r in results["records"]})
        norm = by_name.get(record["name"].replace("-frozen", "-frozen-spknorm"))
        norm_cell = "—"
        if norm is not None and norm is not record:
            normed = json.loads((runs_dir / norm["name"] / "results.json").read_text())
            norm_cell = summary_cells(normed).get(("scl", "interpolated"), "—")
        label = {"speaker": "LOSO", "emobox": "EmoBox folds", "cross-speaker": "cross-speaker"}
        time_cell = f"{minutes(record['seconds'])} ({fill_text(record)})"
        if norm is not None and norm is not record:
            time_cell += f"; speaker-norm {minutes(norm['seconds'])}"
        lines.append(
            f"| {record['kind']} {label.get(record['scheme'], record['scheme'])} ({folds}) | "
            + " | ".join(cells.get(key, "—") for key, _ in COLUMNS)
            + f" | {norm_cell} | {time_cell} |"
        )
    lines += ["", "Per run (load average before → after; OMP_NUM_THREADS):", ""]
    for record in records:
        lines.append(f"- `{record['name']}`: {record['utterances']} clips, {record['speakers']} "
                     f"speakers, scheme {record['scheme']}, {minutes(record['seconds'])}, fill "
                     f"{fill_text(record)}, load {record['load_before']} → "
                     f"{record['load_after']}, threads {record['omp_threads']}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="laid-out corpus folders")
    parser.add_argument("--encoder", default=ENCODER)
    parser.add_argument("--feature-cache", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("emoknn-bench-real"))
    parser.add_argument("--emobox", action="store_true", help="also EmoBox's RAVDESS folds")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    records = []
    for corpus in args.corpora:
        for spec in planned_runs(corpus, args.emobox):
            log = args.runs / f"{spec['name']}.log"
            print(f"{spec['name']}: running (log {log}) ...", flush=True)
            records.append(run(spec, args.runs, args.encoder, args.feature_cache))
            print(f"  {minutes(records[-1]['seconds'])}, fill {fill_text(records[-1])}",
                  flush=True)  # fmt: skip
    text = tables(records, args.runs)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()

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

`--reuse DIR` names earlier cross-validations of the same settings (e.g. the day's frozen runs):
a run whose corpus, scheme, encoder and speaker-norm match one starts from a hard-linked copy of
its finished folds, so only what differs is computed (the eGeMAPS baseline, whose rows from
before openSMILE are redone); its time is then that of the remainder, and the table says so.

Each run is the real command line (a subprocess, its output in `RUNS/<run>.log`), timed by wall
clock with the machine's load average before and after; its time, fill rate (feature-cache
entries computed per second, from the command's own "Feature cache: N of M entries computed in
S s" line) and load go to `RUNS/<run>/bench.json`. A run whose folder already has results.json
and bench.json is not run again (the table is rebuilt from them); an unfinished one resumes.
The feature cache is shared: a corpus whose encoder outputs are already cached has no fill.

The table gives, per run, the mean UA over folds with a 95 % t-interval (mean ± t_{0.975,n−1} ·
s/√n, s the sample std over folds; with fewer than 3 folds, each fold's UA and their mean), the
wall time and the fill. `--markdown FILE` writes it (and a
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


def matching_run(spec: dict[str, Any], encoder: str, candidates: list[Path]) -> Path | None:
    """The first earlier cross-validation with this run's corpus, scheme, encoder, speaker-norm."""
    for folder in candidates:
        experiment = folder / "experiment.json"
        if not experiment.is_file():
            continue
        corpus = json.loads(experiment.read_text()).get("corpus", {})
        wanted = (str(Path(spec["corpus"]).resolve()), spec["scheme"], encoder,
                  spec["speaker_norm"], "frozen")  # fmt: skip
        found = (corpus.get("corpus"), corpus.get("scheme"), corpus.get("encoder"),
                 corpus.get("speaker_norm"), corpus.get("preset"))  # fmt: skip
        if found == wanted:
            return folder
    return None


def seed_from(source: Path, out: Path) -> None:
    """Hard-link (copy across devices) `source`'s experiment.json and finished fold folders
    into `out`; the baseline's are left out, so it is recomputed with today's features."""
    import shutil

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    out.mkdir(parents=True, exist_ok=True)
    link(str(source / "experiment.json"), str(out / "experiment.json"))
    for result in source.glob("*/*/fold_result.json"):
        fold_dir = result.parent
        if fold_dir.parent.name == "baseline":
            continue
        target = out / fold_dir.parent.name / fold_dir.name
        if not target.exists():
            shutil.copytree(fold_dir, target, copy_function=link)


def share_baseline_features(runs_dir: Path, spec: dict[str, Any], out: Path) -> None:
    """Hard-link the baseline's openSMILE features of another run of the same corpus into `out`
    (they do not depend on the scheme or on speaker normalisation; rows are keyed by file)."""
    for other in sorted(runs_dir.glob(f"{spec['kind']}-*/baseline/features-*.npz")):
        target = out / "baseline" / other.name
        if other.parent.parent != out and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(other, target)


def run(spec: dict[str, Any], runs_dir: Path, encoder: str, cache: Path | None,
        reuse: list[Path]) -> dict:  # fmt: skip
    """Run (or resume) one cross-validation through the CLI; time it; record bench.json."""
    out = runs_dir / spec["name"]
    record_file = out / "bench.json"
    if (out / "results.json").is_file() and record_file.is_file():
        return json.loads(record_file.read_text())
    source = None if out.exists() else matching_run(spec, encoder, reuse)
    if source is not None:
        seed_from(source, out)
    share_baseline_features(runs_dir, spec, out)
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
        "reused_from": None if source is None else str(source),
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
        if len(values) < 3:  # a t-interval over 1 or 2 folds says nothing: the folds themselves
            each = " / ".join(f"{100 * v:.1f}" for v in values)
            cells[key] = f"{each} (mean {100 * sum(values) / len(values):.1f})"
            continue
        mean, half = interval(values)
        cells[key] = f"{mean:.1f} ± {half:.1f}"
    return cells


def minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def time_text(record: dict[str, Any]) -> str:
    if record.get("reused_from"):
        return f"{minutes(record['seconds'])} (rows not reused: the baseline)"
    return minutes(record["seconds"])


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
        time_cell = f"{time_text(record)} ({fill_text(record)})"
        if norm is not None and norm is not record:
            time_cell += f"; speaker-norm {time_text(norm)}"
        lines.append(
            f"| {record['kind']} {label.get(record['scheme'], record['scheme'])} ({folds}) | "
            + " | ".join(cells.get(key, "—") for key, _ in COLUMNS)
            + f" | {norm_cell} | {time_cell} |"
        )
    lines += ["", "Per run (load average before → after; OMP_NUM_THREADS):", ""]
    for record in records:
        reused = record.get("reused_from")
        origin = f"(folds reused from `{reused}`) " if reused else ""
        lines.append(f"- `{record['name']}`: {origin}{record['utterances']} clips, "
                     f"{record['speakers']} speakers, scheme {record['scheme']}, "
                     f"{time_text(record)}, fill {fill_text(record)}, load "
                     f"{record['load_before']} → {record['load_after']}, "
                     f"threads {record['omp_threads']}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="laid-out corpus folders")
    parser.add_argument("--encoder", default=ENCODER)
    parser.add_argument("--feature-cache", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("emoknn-bench-real"))
    parser.add_argument("--emobox", action="store_true", help="also EmoBox's RAVDESS folds")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--reuse", type=Path, action="append", default=[],
                        help="an earlier cross-validation folder to start from (repeatable)")
    parser.add_argument("--only", default=None,
                        help="comma list of run names to run (others: table only if done)")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    records = []
    for corpus in args.corpora:
        for spec in planned_runs(corpus, args.emobox):
            done = (args.runs / spec["name"] / "bench.json").is_file()
            if args.only is not None and spec["name"] not in args.only.split(",") and not done:
                continue
            log = args.runs / f"{spec['name']}.log"
            print(f"{spec['name']}: running (log {log}) ...", flush=True)
            records.append(run(spec, args.runs, args.encoder, args.feature_cache, args.reuse))
            print(f"  {minutes(records[-1]['seconds'])}, fill {fill_text(records[-1])}",
                  flush=True)  # fmt: skip
    text = tables(records, args.runs)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()

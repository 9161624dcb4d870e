"""`emoknn demo`, the main job: the whole method on a generated corpus, on every fold, in minutes.

    synthetic corpus → frozen encoder (pretrained if one loads, else the tiny random one), its
    outputs cached → per fold: CE and CE+SCL heads, each alone, kNN alone and interpolated, the
    encoder probe and the classical baseline → table, paired comparisons, report → a trained
    model to try

This module holds the demo's decisions; the CLI prints. `choose_encoder` picks the encoder and says
in one line which and why; `verdict` says in plain words where the learned variants stand against
the encoder probe and the baseline; `try_it` names a trained model and the commands that use it.
"""

from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoknn import baseline, probe
from emoknn.corpora import CORPORA, load_corpus
from emoknn.errors import CorpusError, EmoknnError
from emoknn.stats import SIGNIFICANCE, WILCOXON_MIN_FOLDS, format_p

DEFAULT_ENCODER = "openai/whisper-base"
# Sized to finish in under 5 minutes on a 2-core CPU with whisper-base (docs/getting-started.md):
# 5 sessions × 2 speakers × 4 classes × 8 clips of 1–3 s = 320 utterances, 10 folds.
CORPUS_SETTINGS: dict[str, Any] = {"num_sessions": 5, "utterances_per_class": 8}
# The head is the `frozen` preset's as it stands (standardised layers, no cached views: chosen on
# validation speakers, docs/training.md), so the demo shows what a user's own frozen run gets.


@dataclass(frozen=True)
class DemoCorpus:
    """The corpus a demo runs on: a real one (`--corpus`)."""

    path: Path
    kind: str
    scheme: str  # the corpus's official split, else leave-one-speaker-out (cross-speaker for 2)
    line: str  # one line saying which corpus and why


def demo_corpus(
    spec: str,
    out: Path,
    accept_licence: bool,
    progress: Any = None,
    url: str | None = None,
    kind: str = "auto",
) -> DemoCorpus:
    """`--corpus NAME|PATH`: an existing folder or manifest is used as it is (its kind detected,
    or `kind`); a downloadable corpus NAME is downloaded into OUT/corpora/NAME once (its licence
    accepted first, `emoknn corpus download`'s code). When its site cannot be reached, raises
    DownloadError in one line saying where to get a copy and how to run the demo on it; a
    licence-gated NAME raises with where to get it."""
    from emoknn.corpora import detect_corpus_kind
    from emoknn.corpora.download import RECORD_FILE, DownloadError, download_corpus

    path = Path(spec)
    if path.exists():
        kind = detect_corpus_kind(path) if kind == "auto" else kind
        utterances = load_corpus(path, kind)
        return DemoCorpus(path, kind, _scheme_of(utterances), f"Corpus: {path} ({kind}).")
    if spec not in CORPORA:
        raise CorpusError(
            f"--corpus {spec!r}: neither an existing folder or manifest nor a corpus name "
            f"({', '.join(CORPORA)})"
        )
    info = CORPORA[spec]
    dest = out / "corpora" / spec
    if (dest / RECORD_FILE).is_file():
        return DemoCorpus(dest, spec, _scheme_of(load_corpus(dest, spec)),
                          f"Corpus: {spec}, downloaded in {dest}.")  # fmt: skip
    try:
        report = download_corpus(spec, dest, url=url, accept_licence=accept_licence,
                                 progress=progress)  # fmt: skip
    except DownloadError as error:
        if not getattr(error, "resumable", False):
            raise
        reason = " ".join(str(error).split())
        raise DownloadError(
            f"--corpus {spec}: {info.title} could not be downloaded ({reason}). Get a copy from "
            f"{info.where} (or give a mirror with --url), lay it out as {info.tree}, check it "
            f"with `emoknn corpus verify {spec} PATH`, then run `emoknn demo --corpus PATH`"
        ) from None
    return DemoCorpus(dest, spec, _scheme_of(load_corpus(dest, spec)), " ".join(report.lines))


def _scheme_of(utterances: list) -> str:
    """The corpus's official split where every clip has one; else leave-one-speaker-out, or
    cross-speaker (`emoknn.folds`) when there are too few speakers for it (TESS: 2)."""
    if all(u.split is not None for u in utterances):
        return "official"
    return "speaker" if len({u.speaker for u in utterances}) >= 3 else "cross-speaker"


@dataclass(frozen=True)
class EncoderChoice:
    encoder: str  # what the demo trains on: the requested encoder, or "tiny"
    line: str  # one line saying which and why


def choose_encoder(requested: str) -> EncoderChoice:
    """The requested encoder if it can be loaded now, else the tiny random-weight encoder.

    "Can be loaded" is decided before any training, in seconds: a local folder with a config, a
    hub name in the Hugging Face cache, or a reachable Hub (`emoknn.sources`: one short request, no
    retries); then its config is read. Anything else falls back to tiny, with the reason.
    """
    if requested == "tiny":
        return EncoderChoice("tiny", "Encoder: tiny (random weights), as asked.")
    from emoknn.sources import pretrained_kwargs

    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(requested, **pretrained_kwargs(requested))
    except (EmoknnError, OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        return EncoderChoice(
            "tiny",
            f"Encoder: tiny (random weights, the fallback) — {requested} could not be loaded: "
            f"{reason}",
        )
    return EncoderChoice(requested, f"Encoder: {requested} (pretrained, frozen; outputs cached).")


def _against(
    best: dict[str, Any], reference: dict[str, Any], what: str, results: dict[str, Any]
) -> str:
    """Where the best learned variant stands against one reference row, and whether the paired
    comparison tells the difference from fold-to-fold noise."""
    figures = f"{reference['variant']} UA {100 * reference['ua_mean']:.1f} %"
    test = next((c for c in results.get("comparisons", []) if c["b"] == reference["variant"]), None)
    if test is None or len(test["folds"]) < WILCOXON_MIN_FOLDS:
        noise = "too few folds to tell it from fold-to-fold noise"
    elif test["ua"]["p_value"] < SIGNIFICANCE:
        noise = f"beyond fold-to-fold noise, {format_p(test['ua']['p_value'])}"
    else:
        noise = f"within fold-to-fold noise, {format_p(test['ua']['p_value'])}"
    if best["ua_mean"] >= reference["ua_mean"]:
        verb = "beat" if noise.startswith("beyond") else "reach"
        return f"{verb} {what} ({figures}; {noise})"
    return f"stay below {what} ({figures}; {noise})"


REFERENCE_SENTENCES = {
    probe.NAME: "a logistic regression on one layer of the same frozen encoder, its layer and C "
    "chosen on the validation speaker: the bar a learned head has to clear",
    baseline.NAME: "the field's standard classical method on the same folds: openSMILE's "
    "eGeMAPSv02 functionals, no neural network",
}


def reference_rows(results: dict[str, Any]) -> list[str]:
    """One line each for the encoder probe's and the classical baseline's rows: the figures
    (mean UA and WA ± std over folds) and, in words, what the row is."""
    lines = []
    for row in results["summary"]:
        if row["training"] not in REFERENCE_SENTENCES:
            continue
        sentence = REFERENCE_SENTENCES[row["training"]]
        features = results.get("baseline_features")
        if row["training"] == baseline.NAME and features not in (None, baseline.DEFAULT_FEATURES):
            sentence = sentence.replace("eGeMAPSv02", str(features))
        lines.append(
            f"{row['variant']}: UA {100 * row['ua_mean']:.1f} ± {100 * row['ua_std']:.1f} %, "
            f"WA {100 * row['wa_mean']:.1f} ± {100 * row['wa_std']:.1f} % over {row['folds']} "
            f"folds — {sentence}."
        )
    return lines


def verdict(results: dict[str, Any], encoder: str) -> str:
    """One plain sentence: do the learned variants reach the encoder probe and the classical
    baseline here, and is each difference beyond fold-to-fold noise (the paired comparison's
    test)?"""
    summary = results["summary"]
    references = {row["training"]: row for row in summary
                  if row["training"] in (probe.NAME, baseline.NAME)}  # fmt: skip
    learned = [row for row in summary if row["training"] not in (probe.NAME, baseline.NAME)]
    if not learned or not references:
        return "No probe or baseline, or no learned variant, to compare."
    best = max(learned, key=lambda row: row["ua_mean"])
    wanted = ((probe.NAME, "the encoder probe"), (baseline.NAME, "the classical baseline"))
    parts = [_against(best, references[n], what, results) for n, what in wanted if n in references]
    sentence = (
        f"The learned variants (best: {best['variant']} UA {100 * best['ua_mean']:.1f} %) "
        f"{' and '.join(parts)} on this corpus."
    )
    if encoder == "tiny" and any(best["ua_mean"] < r["ua_mean"] for r in references.values()):
        sentence += (
            " The tiny encoder has random weights: the heads learn from random features, which "
            "is why a pretrained encoder (--encoder) is what the method needs."
        )
    return sentence


def try_it(
    crossval_dir: Path, results: dict[str, Any], corpus: Path, kind: str = "synthetic"
) -> list[str]:
    """Lines naming a trained model (CE+SCL on the first fold) and the commands that use it."""
    key = next((k for k in sorted(results["fold_dirs"]) if k.startswith("scl/")), None)
    if key is None:
        return []
    model_dir = Path(results["fold_dirs"][key])
    fold = key.split("/", 1)[1]
    with (model_dir / "predictions.csv").open(newline="") as handle:
        first = next(csv.DictReader(handle), None)
    paths = {u.id: u.path for u in load_corpus(corpus, kind)}
    clip = paths.get(first["id"]) if first else None
    speaker = first["speaker"] if first else "?"
    quoted = shlex.quote(str(model_dir))
    lines = [
        f"A trained model (CE+SCL, {fold}; its test speaker {speaker} was never seen in "
        f"training): {model_dir}",
    ]
    if clip is not None:
        lines.append(f"  emoknn predict {shlex.quote(str(clip))} --model {quoted}")
    lines.append(f"  emoknn serve --model {quoted}")
    return lines

"""The cross-corpus matrix: train on each corpus, test on every other (`emoknn crosscorpus`).

For corpora A, B, … and each ordered pair (train on A, test on B), A ≠ B:

    classes   = the classes A and B share (`emoknn.corpora.vocabulary`; B's names become A's)
    train     = A's clips of those classes, every speaker but one validation speaker (the one
                `speaker_folds(A)[0]` validates on)
    test      = B's clips of those classes, all of them
    run       = `emoknn.experiments.crossval` on that one fold: the classical baseline, the
                encoder probe, CE and CE+SCL each with its kNN stage tuned on the validation
                speaker, scored three ways (model, kNN, interpolated)

and on the diagonal (A, A): `crossval` of A's leave-one-speaker-out folds, restricted to the
classes every corpus given shares (so each row compares like with like), with the same settings:
the diagonal is exactly what `emoknn crossval --corpus A` gives with those settings and a label map
keeping those classes.

No clip of the test corpus reaches training, tuning or a choice: it is only the test speaker(s) of
its fold, as in any cross-validation. Test clips are renamed (`<corpus>:` before id and speaker)
only where an id or speaker name of the test corpus also occurs in the training corpus (two
synthetic corpora), so that fold checks and caches keep them apart.

Everything goes into OUT: `in-corpus/<A>/` and `cross/<A>-on-<B>/` (each a cross-validation
folder; an interrupted matrix resumes from its finished folds), `results.json`, `report.md` and
`figures/crosscorpus.png`. The frozen preset runs on a CPU: every cell reads one feature cache
(`--feature-cache`), and the baseline's features are computed once per clip for the whole matrix
(`baseline-features/`, copied into each cell's `baseline/` folder before it runs and back after).
Each off-diagonal cell has 95 % intervals from resampling the test corpus's speakers
(`emoknn.evaluation`).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from emoknn import __version__, baseline
from emoknn.config import TrainConfig, check_trainable
from emoknn.corpora import load_corpus
from emoknn.corpora.utterance import Utterance, label_names
from emoknn.corpora.vocabulary import canonical_label, shared_classes
from emoknn.errors import ConfigError
from emoknn.evaluation import LabelMatch, score_predictions
from emoknn.experiments import (
    INFERENCES,
    PREDICTIONS_FILE,
    collect_fold_results,
    crossval,
    result_records,
    summarize,
    variant_name,
)
from emoknn.files import atomic_path, write_json_atomic, write_text_atomic
from emoknn.folds import Fold, check_fold, speaker_folds

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
FIGURE_FILE = "figures/crosscorpus.png"
SHARED_BASELINE_DIR = "baseline-features"
# Variants drawn in the heat-map (all are tabulated): the method, its parts, and the two bars.
FIGURE_VARIANTS = ("CE+SCL", "CE+SCL kNN only", "CE+SCL + kNN", "Encoder probe (LR)",
                   "Baseline (features + LR)")  # fmt: skip


@dataclass(frozen=True)
class NamedCorpus:
    """One corpus of the matrix: a short unique name, where it is, and its clips."""

    name: str
    path: Path
    kind: str
    utterances: list[Utterance]

    @property
    def labels(self) -> list[str]:
        return label_names(self.utterances)


def load_corpora(paths: Sequence[Path], kinds: Sequence[str] | None = None) -> list[NamedCorpus]:
    """Load each corpus (kind `auto` unless given, one kind per path); names are the folder or
    file names, numbered where two are the same. At least two distinct corpora."""
    from emoknn.checks import check_choice
    from emoknn.corpora import CORPUS_KINDS

    kinds = list(kinds or [])
    if kinds and len(kinds) != len(paths):
        raise ConfigError(f"--kind: give one per --corpus ({len(paths)}), or none; got "
                          f"{len(kinds)}")  # fmt: skip
    for kind in kinds:
        check_choice(kind, "--kind", CORPUS_KINDS)
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) < 2:
        raise ConfigError("--corpus: give at least two different corpora")
    if len(set(resolved)) != len(resolved):
        raise ConfigError("--corpus: a corpus is given twice")
    corpora, used = [], set()
    for index, path in enumerate(resolved):
        kind = kinds[index] if kinds else "auto"
        name = path.stem if path.is_file() else path.name
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "corpus"
        base, number = name, 2
        while name in used:
            name, number = f"{base}-{number}", number + 1
        used.add(name)
        corpora.append(NamedCorpus(name, path, kind, load_corpus(path, kind)))
    return corpora


def common_classes(corpora: Sequence[NamedCorpus]) -> dict[str, list[str]]:
    """{corpus name: its classes that every other corpus also has (by canonical word)}."""
    words = [{canonical_label(label) for label in c.labels} for c in corpora]
    shared = set.intersection(*words)
    return {c.name: [label for label in c.labels if canonical_label(label) in shared]
            for c in corpora}  # fmt: skip


def restricted(utterances: Sequence[Utterance], rename: dict[str, str]) -> list[Utterance]:
    """The utterances whose label `rename` names, relabelled to its value."""
    return [replace(u, label=rename[u.label]) for u in utterances if u.label in rename]


def tagged_if_colliding(test: list[Utterance], train: list[Utterance], name: str
                        ) -> list[Utterance]:  # fmt: skip
    """`test` with `name:` before ids and speakers when any id or speaker also occurs in
    `train`; else unchanged (real corpora: their loaders' ids and speakers already differ)."""
    ids = {u.id for u in train}
    speakers = {u.speaker for u in train}
    if not any(u.id in ids or u.speaker in speakers for u in test):
        return test
    return [replace(u, id=f"{name}:{u.id}", speaker=f"{name}:{u.speaker}",
                    session=None if u.session is None else f"{name}:{u.session}")
            for u in test]  # fmt: skip


def cross_fold(train_corpus: list[Utterance], test: list[Utterance], test_name: str) -> Fold:
    """Train on every speaker of `train_corpus` but a validation speaker; test on `test`."""
    val_speaker = speaker_folds(train_corpus)[0].val_speaker
    fold = Fold(
        index=0,
        test_speaker=test_name,
        val_speaker=val_speaker,
        train=[u for u in train_corpus if u.speaker != val_speaker],
        val=[u for u in train_corpus if u.speaker == val_speaker],
        test=test,
    )
    check_fold(fold)
    return fold


@dataclass
class Cell:
    """One cell of the matrix: where it ran and on what."""

    train: str
    test: str
    classes: list[str]
    folder: Path
    utterances: list[Utterance]
    folds: list[Fold]

    @property
    def in_corpus(self) -> bool:
        return self.train == self.test


def plan_cells(corpora: Sequence[NamedCorpus], out_dir: Path) -> list[Cell]:
    """Every cell of the matrix, checked (classes, folds) before anything runs."""
    common = common_classes(corpora)
    cells = []
    for first in corpora:
        diagonal = [u for u in first.utterances if u.label in common[first.name]]
        if len(common[first.name]) < 2:
            raise ConfigError(
                f"the corpora share {len(common[first.name])} class(es) "
                f"({', '.join(common[first.name]) or 'none'}); the matrix needs at least 2"
            )
        folds = speaker_folds(diagonal)
        for fold in folds:
            check_trainable(fold.train, common[first.name])
        cells.append(Cell(first.name, first.name, common[first.name],
                          out_dir / "in-corpus" / first.name, diagonal, folds))  # fmt: skip
        for second in corpora:
            if second is first:
                continue
            pairs = shared_classes(second.labels, first.labels)  # test class → train class
            if len(pairs) < 2:
                raise ConfigError(
                    f"{first.name} and {second.name} share {len(pairs)} class(es); a pair needs "
                    "at least 2"
                )
            train = restricted(first.utterances, {v: v for v in pairs.values()})
            test = tagged_if_colliding(restricted(second.utterances, pairs), train, second.name)
            fold = cross_fold(train, test, second.name)
            check_trainable(fold.train, sorted(set(pairs.values())))
            cells.append(Cell(first.name, second.name, sorted(set(pairs.values())),
                              out_dir / "cross" / f"{first.name}-on-{second.name}",
                              train + test, [fold]))  # fmt: skip
    return cells


def _share_baseline_features(source: Path, target: Path) -> None:
    """Copy the baseline's feature files (not fold folders) from `source` into `target` where
    `target` lacks them or has fewer bytes (every copy holds a union of rows, so larger is more)."""
    if not source.is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if not path.is_file() or path.name.startswith("."):
            continue
        destination = target / path.name
        if not destination.is_file() or destination.stat().st_size < path.stat().st_size:
            with atomic_path(destination) as temporary:
                shutil.copyfile(path, temporary)


def run_cell(cell: Cell, config: TrainConfig, out_dir: Path, corpus_info: dict[str, Any],
             log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The cell's cross-validation (resumed where finished), its baseline features shared."""
    shared = out_dir / SHARED_BASELINE_DIR
    _share_baseline_features(shared, cell.folder / baseline.NAME)
    def done(result: dict[str, Any]) -> None:
        if log is not None:
            scores = result["scores"]
            knn = (f" (+kNN {100 * scores['interpolated']['ua']:.1f})"
                   if "interpolated" in scores else "")  # fmt: skip
            log(f"  {result['fold']} {result['label']:<8} UA {100 * scores['model']['ua']:.1f}"
                f"{knn}")  # fmt: skip

    results = crossval(cell.utterances, cell.folds, config, cell.folder, ("main",),
                       corpus_info, on_fold_done=done, log=log)  # fmt: skip
    _share_baseline_features(cell.folder / baseline.NAME, shared)
    return results


def _cell_intervals(fold_dir: Path, labels: list[str], inferences: Sequence[str]
                    ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """95 % intervals over the test corpus's speakers of a cross cell, from predictions.csv."""
    with (fold_dir / PREDICTIONS_FILE).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    match = LabelMatch(labels, {label: label for label in labels}, {})
    index = {label: i for i, label in enumerate(labels)}
    found = {}
    for inference in inferences:
        scores = score_predictions([r["label"] for r in rows],
                                   np.array([index[r[inference]] for r in rows]),
                                   [r["speaker"] for r in rows], match)  # fmt: skip
        found[inference] = {"ua_interval": scores.ua_interval, "wa_interval": scores.wa_interval,
                            "recall": scores.recall}  # fmt: skip
    return found


def cell_summary(cell: Cell, fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """The cell's figures per variant: mean ± std over folds (one fold off the diagonal, with
    intervals over the test speakers)."""
    records = result_records(fold_results)
    variants = {}
    for row in summarize(records):
        variants[row["variant"]] = {
            "training": row["training"], "inference": row["inference"], "folds": row["folds"],
            "ua": row["ua_mean"], "wa": row["wa_mean"], "ua_std": row["ua_std"],
            "wa_std": row["wa_std"],
        }  # fmt: skip
    if not cell.in_corpus:
        for result in fold_results:
            inferences = [i for i in INFERENCES if i in result["scores"]]
            intervals = _cell_intervals(Path(result["dir"]), cell.classes, inferences)
            for inference, extra in intervals.items():
                variants[variant_name(result["label"], inference)].update(extra)
    return {
        "train": cell.train, "test": cell.test, "in_corpus": cell.in_corpus,
        "classes": cell.classes, "folder": str(cell.folder),
        "num_train": len(cell.folds[0].train) if not cell.in_corpus else None,
        "num_test": sum(len(f.test) for f in cell.folds),
        "folds": len(cell.folds), "variants": variants,
    }  # fmt: skip


def crosscorpus(
    corpora: Sequence[NamedCorpus],
    config: TrainConfig,
    out_dir: str | os.PathLike,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of the matrix and write results.json; returns it."""
    out_dir = Path(out_dir)
    say = log or (lambda message: None)
    cells = plan_cells(corpora, out_dir)  # every check before anything is written
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    # Across corpora first: a few minutes each; the LOSO diagonals take a run per speaker.
    for cell in sorted(cells, key=lambda c: c.in_corpus):
        where = "in-corpus LOSO" if cell.in_corpus else f"trained on {cell.train}"
        say(f"── {cell.test} ({where}; {len(cell.classes)} classes: {', '.join(cell.classes)})")
        info = {"corpus": cell.train, "matrix_cell": f"{cell.train}-on-{cell.test}",
                "classes": cell.classes}  # fmt: skip
        run_cell(cell, config, out_dir, info, log)
        summaries[(cell.train, cell.test)] = cell_summary(cell,
                                                          collect_fold_results([cell.folder]))
    ordered = [summaries[(cell.train, cell.test)] for cell in cells]
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "emoknn_version": __version__,
        "corpora": [{"name": c.name, "path": str(c.path), "kind": c.kind, "labels": c.labels,
                     "num_utterances": len(c.utterances),
                     "num_speakers": len({u.speaker for u in c.utterances})}
                    for c in corpora],
        "common_classes": common_classes(corpora),
        "train_config": {k: v for k, v in vars(config).items() if k != "feature_cache"},
        "variants": list(dict.fromkeys(v for s in ordered for v in s["variants"])),
        "cells": ordered,
        "baseline": baseline.DESCRIPTION,
    }
    write_json_atomic(results, out_dir / RESULTS_FILE)
    return results


# ── report ──────────────────────────────────────────────────────────────────────────────────────


def _matrix(results: dict[str, Any], variant: str) -> tuple[list[str], np.ndarray]:
    names = [c["name"] for c in results["corpora"]]
    matrix = np.full((len(names), len(names)), np.nan)
    for cell in results["cells"]:
        scores = cell["variants"].get(variant)
        if scores is not None:
            matrix[names.index(cell["train"]), names.index(cell["test"])] = scores["ua"]
    return names, matrix


def plot_matrix(results: dict[str, Any], path: Path) -> None:
    """Heat-maps of UA (rows: trained on, columns: tested on), one panel per FIGURE_VARIANTS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in FIGURE_VARIANTS if v in results["variants"]]
    size = len(results["corpora"])
    width = 0.9 + (1.2 + 0.9 * size) * len(variants)
    figure, axes = plt.subplots(1, len(variants), squeeze=False, figsize=(width, 1.4 + 0.9 * size))
    for axis, variant in zip(axes[0], variants, strict=True):
        names, matrix = _matrix(results, variant)
        image = axis.imshow(100 * matrix, cmap="viridis", vmin=0, vmax=100)
        for i in range(size):
            for j in range(size):
                if not np.isnan(matrix[i, j]):
                    axis.text(j, i, f"{100 * matrix[i, j]:.1f}", ha="center", va="center",
                              color="white" if matrix[i, j] < 0.6 else "black", fontsize=9)
        axis.set_xticks(range(size), names, rotation=30)
        axis.set_yticks(range(size), names)
        axis.set_xlabel("tested on")
        axis.set_ylabel("trained on")
        axis.set_title(variant, fontsize=9)
    figure.colorbar(image, ax=axes[0].tolist(), fraction=0.02, label="UA %")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png", bbox_inches="tight")
    plt.close(figure)


def _cell_text(cell: dict[str, Any] | None, variant: str) -> str:
    scores = None if cell is None else cell["variants"].get(variant)
    if scores is None:
        return "–"
    if cell["in_corpus"]:
        return f"**{100 * scores['ua']:.1f} ± {100 * scores['ua_std']:.1f}**"
    interval = scores.get("ua_interval")
    spread = f" ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})" if interval else ""
    return f"{100 * scores['ua']:.1f}{spread}"


def report_lines(results: dict[str, Any]) -> list[str]:
    """report.md: the corpora and classes, then one UA table per variant."""
    names = [c["name"] for c in results["corpora"]]
    cell_at = {(c["train"], c["test"]): c for c in results["cells"]}
    config = results["train_config"]
    lines = [
        "# Cross-corpus matrix", "",
        f"Encoder `{config.get('encoder')}`, preset `{config.get('preset_name')}`, seed "
        f"{config.get('seed')}; emoknn {results['emoknn_version']}, {results['created']}.", "",
        "Rows: the corpus trained on; columns: the corpus tested on. UA % (mean of per-class "
        "recalls). Off the diagonal: trained on every speaker of the row's corpus but one "
        "validation speaker, tested on every clip of the column's corpus, on the classes the two "
        "share, with a 95 % interval from resampling the test corpus's speakers. On the diagonal "
        "(bold): the row corpus's leave-one-speaker-out cross-validation on the classes all "
        "corpora share, mean ± std over folds — what `emoknn crossval` gives with these "
        "settings.", "",
        "| corpus | clips | speakers | classes | classes all share |",
        "|---|---:|---:|---|---|",
    ]  # fmt: skip
    for corpus in results["corpora"]:
        lines.append(f"| {corpus['name']} | {corpus['num_utterances']} | "
                     f"{corpus['num_speakers']} | {', '.join(corpus['labels'])} | "
                     f"{', '.join(results['common_classes'][corpus['name']])} |")  # fmt: skip
    lines += ["", "Classes of each pair (train → test):", ""]
    for cell in results["cells"]:
        if not cell["in_corpus"]:
            lines.append(f"- {cell['train']} → {cell['test']}: {', '.join(cell['classes'])} "
                         f"({cell['num_train']} training clips, {cell['num_test']} test clips)")
    lines += ["", f"![UA heat-maps]({FIGURE_FILE})", ""]
    for variant in results["variants"]:
        lines += [f"## {variant}", "", "| trained on ↓ / tested on → | " + " | ".join(names)
                  + " |", "|---|" + "---:|" * len(names)]  # fmt: skip
        for row in names:
            cells = [_cell_text(cell_at.get((row, column)), variant) for column in names]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Baseline: " + results["baseline"] + ".", ""]
    return lines


def write_crosscorpus_report(results: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """report.md and the heat-map figure beside results.json."""
    out_dir = Path(out_dir)
    plot_matrix(results, out_dir / FIGURE_FILE)
    write_text_atomic(out_dir / REPORT_FILE, "\n".join(report_lines(results)))
    return out_dir / REPORT_FILE

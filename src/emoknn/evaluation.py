"""A trained model on another labelled corpus: `emoknn evaluate --model M --corpus C`.

    recognizer = EmotionRecognizer.load("runs/emodb/scl/fold00-emodb03")
    result = evaluate_model(recognizer, load_corpus("corpora/ravdess"))
    print(result.to_dict()["ua"], result.to_dict()["unknown_labels"])

Labels: the corpus's classes meet the model's by name, through one vocabulary
(`emoknn.corpora.vocabulary`: RAVDESS `fearful`, EmoDB `fearful` and a Hugging Face model's
`fear` are one class); a label map applied when loading the corpus (`--label-map`) renames or
drops classes first. A corpus class the model cannot predict is never folded into another: its
clips are counted in `unknown_labels` (with what the model called them, `unknown_predicted`) and
left out of UA and WA.

Scores, for each inference the model has (`model` alone; with a kNN stage also `knn` alone and
`interpolated`, the recognizer's own prediction):

    confusion[r, c] = clips of known true class r predicted as model class c
                      (rows: the model's classes present in the corpus; columns: all its classes)
    recall_r = confusion[r, r'] / Σ_c confusion[r, c]        r' = the column of class r
    UA = mean_r recall_r                                      over the rows, i.e. known classes
    WA = Σ_r confusion[r, r'] / Σ confusion

Bootstrap intervals resample the corpus's speakers, not its clips (clips of one speaker are not
independent): B draws of S speakers with replacement (numpy `default_rng(seed)`, so the same seed
gives the same interval), each draw's confusion = Σ over drawn speakers (with multiplicity) of
their own confusions; the interval is the 2.5th and 97.5th percentile of the draws' UA and WA
(percentile bootstrap). A draw in which a class has no clip leaves that class out of its UA.

Each speaker's clips are scored together (`Scorer`: a speaker's utterances and audio → class
probabilities per inference), so a scorer that standardises a speaker with that speaker's own
clips slots in without changing anything else. The default scorer is the recognizer's own
(`EmotionRecognizer.score`) on each clip's centred crop of the model's length, as cross-validation
evaluates its test speaker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emoknn.audio import center_crop, load_audio, max_samples
from emoknn.checks import check_int
from emoknn.corpora.utterance import Utterance
from emoknn.corpora.vocabulary import shared_classes
from emoknn.errors import ConfigError
from emoknn.files import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from emoknn.predict import EmotionRecognizer

EVALUATION_FILE = "evaluation.json"
BOOTSTRAP_DRAWS = 1000
CONFIDENCE = 0.95
INFERENCE_ORDER = ("model", "knn", "interpolated")

# (a speaker's utterances, their audio) → {inference: (N, C) class probabilities}
Scorer = Callable[[list[Utterance], list[np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class LabelMatch:
    """How a corpus's classes meet a model's."""

    model_labels: list[str]
    to_model: dict[str, str]  # corpus class → model class, for the classes the model knows
    unknown: dict[str, int]  # corpus class the model cannot predict → its number of clips

    @property
    def known_rows(self) -> list[str]:
        """The model classes the corpus has clips of, in the model's order: the confusion rows."""
        present = set(self.to_model.values())
        return [label for label in self.model_labels if label in present]


def match_labels(model_labels: Sequence[str], utterances: Sequence[Utterance]) -> LabelMatch:
    """Pair the corpus's classes with the model's by name (`emoknn.corpora.vocabulary`).

    Raises:
        ConfigError: the corpus is empty, or none of its classes is one the model predicts.
    """
    if not utterances:
        raise ConfigError("the corpus has no clips to evaluate on")
    counts: dict[str, int] = {}
    for utterance in utterances:
        counts[utterance.label] = counts.get(utterance.label, 0) + 1
    to_model = shared_classes(sorted(counts), model_labels)
    if not to_model:
        raise ConfigError(
            f"the corpus's classes ({', '.join(sorted(counts))}) share none with the model's "
            f"({', '.join(model_labels)}); map them with --label-map (a JSON file "
            '{"corpus class": "model class"})'
        )
    unknown = {label: count for label, count in sorted(counts.items()) if label not in to_model}
    return LabelMatch(list(model_labels), to_model, unknown)


def recognizer_scorer(recognizer: EmotionRecognizer, batch_size: int = 16) -> Scorer:
    """The recognizer's probabilities per inference: `model`, and with a kNN stage `knn` and
    `interpolated` (what `predict` gives)."""

    def score(utterances: list[Utterance], clips: list[np.ndarray]) -> dict[str, np.ndarray]:
        statistics = None
        if recognizer.speaker_norm:  # the model reads only features standardised per speaker:
            # this speaker's own unlabelled clips give its statistics (no label, no other speaker)
            statistics = recognizer.speaker_statistics(clips, utterances[0].speaker,
                                                       batch_size=batch_size)  # fmt: skip
        scores = recognizer.score(clips, batch_size, statistics=statistics)
        if scores["knn"] is None:
            return {"model": scores["model"]}
        return {"model": scores["model"], "knn": scores["knn"], "interpolated": scores["final"]}

    return score


@dataclass
class ClassScores:
    """UA, WA, recalls and the confusion of one inference, with bootstrap intervals."""

    ua: float
    wa: float
    recall: dict[str, float]
    confusion_rows: list[str]
    confusion_columns: list[str]
    confusion: np.ndarray  # (R, C) counts
    ua_interval: list[float] | None = None
    wa_interval: list[float] | None = None
    unknown_predicted: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ua": self.ua,
            "wa": self.wa,
            "ua_interval": self.ua_interval,
            "wa_interval": self.wa_interval,
            "recall": self.recall,
            "confusion": {"true": self.confusion_rows, "predicted": self.confusion_columns,
                          "counts": self.confusion.tolist()},
            "unknown_predicted": self.unknown_predicted,
        }


def _ua_wa(confusions: np.ndarray, diagonal_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UA and WA of confusions (..., R, C): UA over the rows that have clips."""
    rows = confusions.sum(axis=-1)  # (..., R)
    hits = confusions[..., np.arange(len(diagonal_columns)), diagonal_columns]  # (..., R)
    present = rows > 0
    recall = np.where(present, hits / np.maximum(rows, 1), 0.0)
    ua = recall.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)
    wa = hits.sum(axis=-1) / np.maximum(rows.sum(axis=-1), 1)
    return ua, wa


def bootstrap_intervals(
    speaker_confusions: np.ndarray,
    diagonal_columns: np.ndarray,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> tuple[list[float], list[float]] | None:
    """Percentile intervals (CONFIDENCE) of UA and WA over speakers resampled with replacement.

    speaker_confusions: (S, R, C) counts of each speaker; diagonal_columns: (R,) the column of
    each row's class. None with fewer than 2 speakers (nothing to resample) or no draws."""
    speakers = len(speaker_confusions)
    if speakers < 2 or draws == 0:
        return None
    rng = np.random.default_rng(seed)
    # times[b, s]: how often draw b took speaker s (S draws with replacement)
    times = rng.multinomial(speakers, np.full(speakers, 1.0 / speakers), size=draws)
    confusions = np.einsum("bs,src->brc", times, speaker_confusions)
    ua, wa = _ua_wa(confusions, diagonal_columns)
    tail = 100 * (1 - CONFIDENCE) / 2
    interval = lambda x: [float(v) for v in np.percentile(x, [tail, 100 - tail])]  # noqa: E731
    return interval(ua), interval(wa)


def score_predictions(
    truth: Sequence[str],
    predicted: np.ndarray,
    speakers: Sequence[str],
    match: LabelMatch,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> ClassScores:
    """ClassScores of predicted model-class ids for clips whose corpus classes are `truth`."""
    rows, columns = match.known_rows, match.model_labels
    row_of = {label: i for i, label in enumerate(rows)}
    diagonal_columns = np.array([columns.index(label) for label in rows])
    speaker_names = sorted(set(speakers))
    speaker_of = {name: i for i, name in enumerate(speaker_names)}
    per_speaker = np.zeros((len(speaker_names), len(rows), len(columns)), dtype=np.int64)
    unknown: dict[str, dict[str, int]] = {label: {} for label in match.unknown}
    for label, column, speaker in zip(truth, predicted, speakers, strict=True):
        if label in match.to_model:
            per_speaker[speaker_of[speaker], row_of[match.to_model[label]], int(column)] += 1
        else:
            called = unknown[label]
            called[columns[int(column)]] = called.get(columns[int(column)], 0) + 1
    confusion = per_speaker.sum(axis=0)
    ua, wa = _ua_wa(confusion, diagonal_columns)
    hits = confusion[np.arange(len(rows)), diagonal_columns]
    recall = {label: float(hits[r] / confusion[r].sum()) for r, label in enumerate(rows)}
    intervals = bootstrap_intervals(per_speaker, diagonal_columns, draws, seed)
    return ClassScores(
        float(ua), float(wa), recall, rows, list(columns), confusion,
        *(intervals or (None, None)),
        unknown_predicted={k: dict(sorted(v.items())) for k, v in unknown.items()},
    )  # fmt: skip


@dataclass
class Evaluation:
    """A model's scores on a labelled corpus (see the module docstring)."""

    match: LabelMatch
    scores: dict[str, ClassScores]  # by inference
    headline: str  # the inference `predict` uses: interpolated with a kNN stage, else model
    num_clips: int
    num_speakers: int
    draws: int
    seed: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON `emoknn evaluate` writes: the headline inference's scores at the top level,
        every inference under `inferences`."""
        top = self.scores[self.headline].to_dict()
        return {
            **self.info,
            "inference": self.headline,
            **top,
            "labels": self.match.model_labels,
            "label_pairs": self.match.to_model,
            "unknown_labels": self.match.unknown,
            "num_clips": self.num_clips,
            "num_scored": self.num_clips - sum(self.match.unknown.values()),
            "num_speakers": self.num_speakers,
            "bootstrap": {"draws": self.draws, "seed": self.seed, "confidence": CONFIDENCE,
                          "unit": "speaker"},
            "inferences": {name: scores.to_dict() for name, scores in self.scores.items()},
        }


def by_speaker(utterances: Sequence[Utterance]) -> list[list[Utterance]]:
    """The utterances grouped by speaker, speakers sorted, each group in corpus order."""
    groups: dict[str, list[Utterance]] = {}
    for utterance in utterances:
        groups.setdefault(utterance.speaker, []).append(utterance)
    return [groups[name] for name in sorted(groups)]


def corpus_probabilities(
    utterances: Sequence[Utterance],
    scorer: Scorer,
    max_seconds: float,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Utterance], dict[str, np.ndarray]]:
    """The scorer's probabilities of every clip, one speaker at a time: (the utterances in the
    order of the rows, {inference: (N, C)})."""
    length = max_samples(max_seconds)
    ordered: list[Utterance] = []
    parts: dict[str, list[np.ndarray]] = {}
    groups = by_speaker(utterances)
    for done, group in enumerate(groups, 1):
        clips = [center_crop(load_audio(u.path), length) for u in group]
        for name, probabilities in scorer(group, clips).items():
            parts.setdefault(name, []).append(np.asarray(probabilities))
        ordered += group
        if progress is not None:
            progress(done, len(groups))
    return ordered, {name: np.concatenate(p) for name, p in parts.items()}


def evaluate_model(
    recognizer: EmotionRecognizer,
    utterances: Sequence[Utterance],
    scorer: Scorer | None = None,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Score a recognizer on labelled utterances (see the module docstring); nothing is written.

    `scorer` (default `recognizer_scorer`) is called once per speaker with that speaker's clips.
    """
    check_int(draws, "draws", 0)
    check_int(seed, "seed", 0)
    if not recognizer.predicts_classes:
        raise ConfigError("this model predicts attributes only (no classes) to evaluate")
    match = match_labels(recognizer.labels, utterances)
    scorer = scorer or recognizer_scorer(recognizer, check_int(batch_size, "batch_size", 1))
    ordered, probabilities = corpus_probabilities(utterances, scorer, recognizer.max_seconds,
                                                  progress)  # fmt: skip
    truth = [u.label for u in ordered]
    speakers = [u.speaker for u in ordered]
    scores = {
        name: score_predictions(truth, probabilities[name].argmax(axis=1), speakers, match,
                                draws, seed)
        for name in INFERENCE_ORDER
        if name in probabilities
    }
    headline = "interpolated" if "interpolated" in scores else "model"
    evaluation = Evaluation(match, scores, headline, len(ordered), len(set(speakers)), draws, seed)
    if getattr(recognizer, "speaker_norm", False):
        evaluation.info["normalisation"] = {
            "kind": "speaker", "unlabelled_target_audio": True,
            "note": "each speaker standardised with the statistics of its own unlabelled clips "
                    "in this corpus (transductive: uses unlabelled target audio)",
        }  # fmt: skip
    return evaluation


# ── writing ─────────────────────────────────────────────────────────────────────────────────────


def confusion_file(inference: str) -> str:
    return f"confusion-{inference}.png"


def evaluation_files(inferences: Sequence[str] = INFERENCE_ORDER) -> set[str]:
    """The names `write_evaluation` writes (a folder holding only these may be written again)."""
    return {EVALUATION_FILE, *(confusion_file(name) for name in inferences)}


def check_evaluation_folder(out_dir: str | os.PathLike) -> Path:
    """`out_dir` is new, empty, or holds only an earlier evaluation's files (which a new one
    replaces); else ConfigError, before anything is computed."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    if out_dir.is_dir():
        others = sorted(p.name for p in out_dir.iterdir() if p.name not in evaluation_files())
        if others:
            raise ConfigError(
                f"--out {out_dir}: holds other files ({', '.join(others[:3])}); give a new or "
                "empty folder, or one an earlier `emoknn evaluate` wrote"
            )
    return out_dir


def plot_confusion(scores: ClassScores, title: str, path: Path) -> None:
    """Row-normalised confusion (rows true, columns predicted) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = scores.confusion
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    rows, columns = scores.confusion_rows, scores.confusion_columns
    figure, axes = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.2 + 0.6 * len(rows)))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(rows)):
        for j in range(len(columns)):
            color = "white" if normalised[i, j] > 0.6 else "black"
            axes.text(j, i, f"{normalised[i, j]:.2f}\n({counts[i, j]})", ha="center",
                      va="center", color=color, fontsize=7)  # fmt: skip
    axes.set_xticks(range(len(columns)), columns, rotation=30)
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def write_evaluation(evaluation: Evaluation, out_dir: str | os.PathLike) -> dict[str, Any]:
    """evaluation.json and one confusion PNG per inference into `out_dir` (checked with
    `check_evaluation_folder` first); returns the JSON written."""
    out_dir = check_evaluation_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = evaluation.to_dict()
    data["figures"] = {}
    for name, scores in evaluation.scores.items():
        title = f"{name}: UA {100 * scores.ua:.1f} %, WA {100 * scores.wa:.1f} %"
        plot_confusion(scores, title, out_dir / confusion_file(name))
        data["figures"][name] = confusion_file(name)
    write_json_atomic(data, out_dir / EVALUATION_FILE)
    return data

"""Adapt a trained or published emotion model to your own labelled clips: a kNN over them, a
refitted linear head, or both — whichever scores best on held-out folds of your clips.

    emoknn adapt --model M --data DIR|CSV --out NEW [--label-map hap=happy,exc=happy,fea=]
                 [--remedy best|zero-shot|knn|refit|refit+knn] [--source-corpus PATH]

The paper's inference step — interpolate the model with a kNN over labelled embeddings — is also a
way to move a model to a new domain, language or label set: embed a few hundred labelled clips of
your own, put them in the datastore, and tune k, α, T on them. What `adapt_model` does:

1. Reads the clips: a folder per label (`DIR/angry/*.wav`, …) or a CSV manifest
   `path,label[,speaker[,session]]` (paths relative to the CSV).
2. Builds the adapted model: M's weights unchanged, its labels mapped onto yours
   (`ModelConfig.label_map`): a label of yours gets the summed probability of the model labels
   mapped to it, renormalised over the model labels kept; model labels mapped to none of yours
   are dropped; your labels no model label maps to get p_model = 0 and are served by the kNN
   alone (α = 1 for them: see `emoknn.knn.interpolate` for the exact formula).
3. Embeds every clip once (evaluation mode, centre crop at M's window length).
4. Folds: grouped by speaker when the manifest names speakers (all of a speaker's clips in one
   fold, so no speaker is ever in both the datastore and the queries), otherwise stratified by
   label. Up to 10 folds, fewer when speakers or clips are few.
5. Held-out evaluation: for each fold, the datastore is the other folds' clips (plus M's own
   datastore with `keep_datastore`), k, α, T are tuned on those other folds by cross-validation
   in which each tuning query only sees neighbours of other speakers (or other folds) — never
   itself or its speaker — and the fold's clips are then scored three ways: the model alone, the
   kNN alone and the interpolation. Per-fold UA/WA, and paired comparisons over folds
   (`emoknn.stats`).
6. The adapted folder: the model, a datastore of all the clips (plus M's, if kept), k, α, T tuned
   on all of them the same way, `adapt.json` (everything above), and a model card `README.md`.
   It works wherever a model folder does: `predict`, `serve`, `export`, `EmotionRecognizer`.

The head refit (`emoknn.refit`; categorical models): across corpora the head, not the encoder, is
what fails, and a new linear head fitted on M's own training clips (a training run records its
corpus and fold; a frozen run's pooled layers come from its feature cache) plus your clips does
far better with few clips than the kNN (docs/adaptation.md). Per held-out fold it is fitted on the
source clips + the other folds' clips (its standardisation statistics too), and scored alone
("refit") and interpolated with a kNN over the other folds' clips in its own embedding
("refit_knn", tuned like the kNN remedy). Its layers are chosen on YOUR clips, nested inside
the held-out folds: for each held-out fold, on inner folds of the other folds' clips alone
(`emoknn.refit.choose_layers_on_folds`); for the shipped head, on the held-out folds themselves.
(The source's validation speakers pick the layer that is best inside the source corpus, which
transfers worse: docs/adaptation.md.) Where your clips are too few to fold, the layer chosen
on the run's validation speakers is used.
The folder ships the remedy with the best held-out mean UA (`remedy` "best"; ties go to
zero-shot, then the kNN) — zero-shot (the model alone, α = 0), the kNN ("interpolated"), the
refit (α = 0) or refit + kNN — and `adapt.json`'s `remedy` says which, every candidate's
figure, and the gain over zero-shot with its paired comparison. A refitted head is a plain model
head (standardisation, layer weights selecting the layers, a linear classifier), so
the folder needs no new file format.

A dimensional or multi-task model (`task` "dimensional" or "both") also needs every clip rated on
its attributes (manifest columns `arousal`, `valence`, `dominance`; a missing rating is refused
naming the row). The datastores then hold the ratings as values, the regression stage's k, α, T
are tuned for the mean CCC by the same grouped cross-validation, and `adapt.json`'s `dimensional`
section holds the held-out CCC per attribute of the three inferences (per fold, pooled, paired
comparisons of the per-fold mean CCC). A "dimensional" model's classifier was never trained: no
model label is kept: its `label` column (still required: any grouping of the clips) stratifies
the folds when no speakers are named and labels the datastore entries; only the kNN's held-out
UA/WA are reported on it, and prediction gives no class for such a model.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emoknn.checks import check_device
from emoknn.corpora.manifest import ATTRIBUTE_COLUMNS, parse_attribute
from emoknn.corpora.utterance import Utterance, check_unique_ids, require_files
from emoknn.errors import ConfigError, CorpusError, EmoknnError
from emoknn.files import check_writable_folder, write_json_atomic, write_text_atomic
from emoknn.inference import best_device, embed_pooled, embed_utterances, record_origins
from emoknn.inputs import AUDIO_SUFFIXES
from emoknn.knn import (
    Datastore,
    TuningResult,
    knn_predict_probs,
    knn_predict_values,
    store_knn_probs,
    store_knn_values,
    tune_knn,
    tune_knn_regression,
)
from emoknn.metrics import ccc, unweighted_accuracy, weighted_accuracy
from emoknn.model import EmotionModel, ModelConfig
from emoknn.model_folder import fingerprint_of, save_knn, save_model
from emoknn.refit import (
    RefitSettings,
    choose_layers,
    choose_layers_on_folds,
    fit_linear_head,
    pooled_utterances,
    refit_model,
    source_clips,
)
from emoknn.stats import METHOD_NOTE, compare, paired_test

ADAPT_REPORT_FILE = "adapt.json"
MAX_FOLDS = 10
INFERENCES = ("model", "knn", "interpolated")
REFIT_INFERENCES = ("refit", "refit_knn")
# The remedies the adapted folder may ship (`--remedy`), each an inference scored on held-out
# folds: zero-shot (the model alone), kNN (the model + a kNN over your clips: the paper's
# interpolation), refit (a new linear head on the source corpus + your clips: emoknn.refit) and
# refit+kNN (that head + a kNN over your clips in its embedding). "best" ships the one with the
# best held-out mean UA (WA with --criterion wa); ties go to the earlier one in this order.
REMEDIES = {"zero-shot": "model", "knn": "interpolated", "refit": "refit",
            "refit+knn": "refit_knn"}  # fmt: skip
REMEDY_CHOICES = ("best", *REMEDIES)
REFIT_C = 0.1  # the refit's inverse regularisation (chosen with bench/adaptation.py)
REFIT_TARGET_SHARE = 0.5  # your clips' share of the refit's total sample weight
# Inner folds of the clips outside a held-out fold that the refit's layers are chosen on: few,
# since every candidate layer is fitted once per inner fold.
REFIT_LAYER_FOLDS = 3
ORIGINAL_GROUP = "\0original"  # the source model's datastore: in no query's group, always visible
NO_SPEAKER = "unknown"  # the speaker of clips given without one (folds are then stratified)


@dataclass
class SourceModel:
    """The model being adapted, as loaded."""

    model: EmotionModel
    max_seconds: float
    store: Datastore | None  # its own datastore, if it has one
    description: dict[str, Any]  # what it is and where it came from (for adapt.json and the card)
    folder: Path | None = None  # the emoknn model folder it was read from (None: imported)


@dataclass
class AdaptResult:
    out_dir: Path
    labels: list[str]
    model_labels: list[str]  # the labels the model part can predict
    folds: int
    grouping: str  # "speaker" or "stratified"
    per_fold: list[dict[str, Any]]  # fold, clips, and per inference ua / wa
    summary: dict[str, dict[str, float]]  # inference → mean/std of ua and wa, pooled ua and wa
    comparisons: list[dict[str, Any]]
    tuning: TuningResult
    report: dict[str, Any] = field(default_factory=dict)


# ── the user's clips ─────────────────────────────────────────────────────────────────────────────


def load_labelled_clips(data: str | os.PathLike, rated: list[str] | None = None
                        ) -> tuple[list[Utterance], bool]:  # fmt: skip
    """Labelled clips and whether they name speakers: a CSV manifest `path,label[,speaker
    [,session][,arousal][,valence][,dominance]]`, a folder holding `manifest.csv`, or a folder
    per label (`DIR/label/…/*.wav`). `rated`: attributes every clip must have a rating of (a
    dimensional model's), which only a manifest can give."""
    data = Path(data)
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise CorpusError(f"{data}: expected a folder per label or a .csv manifest")
        return _read_manifest(data, rated)
    if not data.is_dir():
        raise CorpusError(f"{data}: not found; expected a folder per label or a .csv manifest")
    if (data / "manifest.csv").is_file():
        return _read_manifest(data / "manifest.csv", rated)
    if rated:
        raise CorpusError(
            f"{data}: the model predicts {', '.join(rated)}, and a folder per label has no "
            f"ratings; give a manifest.csv with columns path,label,{','.join(rated)}"
        )
    utterances = []
    for label_dir in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(label_dir.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith("."):
                clip_id = path.relative_to(data).with_suffix("").as_posix()
                utterances.append(Utterance(clip_id, path, label_dir.name, NO_SPEAKER))
    if not utterances:
        raise CorpusError(
            f"{data}: no audio found; expected a folder per label (e.g. {data}/angry/*.wav) or a "
            "manifest.csv"
        )
    check_unique_ids(utterances, str(data))
    return utterances, False


def _read_manifest(path: Path, rated: list[str] | None = None) -> tuple[list[Utterance], bool]:
    """`path,label[,speaker[,session]]` and optional ratings (`arousal`, `valence`, `dominance`:
    finite numbers or empty, read as training manifests read them); speakers either on every row
    or on none; every clip rated on each of `rated`."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "path" not in columns or "label" not in columns:
                raise CorpusError(
                    f"{path}: expected a header path,label[,speaker[,session]], found "
                    f"{columns or 'no header'}"
                )
            rows = [
                (number, {(k or "").strip(): (v or "").strip() for k, v in row.items()})
                for number, row in enumerate(reader, start=2)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CorpusError(f"{path}: cannot read the manifest ({error})") from error
    if not rows:
        raise CorpusError(f"{path}: the manifest has no rows")
    with_speaker = [bool(row.get("speaker")) for _, row in rows]
    if any(with_speaker) and not all(with_speaker):
        line = rows[with_speaker.index(False)][0]
        raise CorpusError(
            f"{path}:{line}: no speaker, though other rows name one; give every clip its speaker "
            "or leave the column empty throughout"
        )
    utterances = []
    for number, row in rows:
        if not row.get("path") or not row.get("label"):
            raise CorpusError(f"{path}:{number}: empty path or label")
        relative = Path(row["path"])
        audio = relative if relative.is_absolute() else path.parent / relative
        # relative to the manifest, also for absolute paths: an id is published with the model
        clip_id = Path(os.path.relpath(audio, path.parent)).with_suffix("").as_posix()
        speaker, session = row.get("speaker") or NO_SPEAKER, row.get("session") or None
        where = f"{path}:{number}"
        ratings = {name: parse_attribute(row, name, where) for name in ATTRIBUTE_COLUMNS}
        unrated = [name for name in rated or [] if ratings[name] is None]
        if unrated:
            raise CorpusError(
                f"{where}: no {' or '.join(unrated)} rating; the model predicts "
                f"{', '.join(rated or [])}, so every clip needs a number in each of those columns"
            )
        utterances.append(Utterance(clip_id, audio, row["label"], speaker, session, **ratings))
    check_unique_ids(utterances, str(path))
    return require_files(utterances, f"manifest {path}", skip_missing=False), all(with_speaker)


# ── labels ───────────────────────────────────────────────────────────────────────────────────────


def parse_label_map(text: str) -> dict[str, str | None]:
    """`"hap=happy,exc=happy,fea="` → {"hap": "happy", "exc": "happy", "fea": None} (None: drop)."""
    mapping: dict[str, str | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, equals, target = item.partition("=")
        if not equals or not source.strip():
            raise ConfigError(f"--label-map: expected MODEL_LABEL=YOUR_LABEL pairs, got {item!r}")
        if source.strip() in mapping:
            raise ConfigError(f"--label-map: {source.strip()!r} is mapped twice")
        mapping[source.strip()] = target.strip() or None
    return mapping


def resolve_label_map(
    model_labels: list[str], user_labels: list[str], label_map: dict[str, str | None] | None
) -> dict[str, str]:
    """Where each of the model's (output) labels goes among the user's; dropped ones left out.

    A model label not named in `label_map` keeps its name if the user has clips of that label,
    and is dropped otherwise.
    """
    label_map = dict(label_map or {})
    unknown = sorted(set(label_map) - set(model_labels))
    if unknown:
        raise ConfigError(
            f"--label-map names {', '.join(unknown)}, which the model does not have; its labels "
            f"are {', '.join(model_labels)}"
        )
    absent = sorted({t for t in label_map.values() if t is not None} - set(user_labels))
    if absent:
        raise ConfigError(
            f"--label-map maps onto {', '.join(absent)}, which none of your clips has; your labels "
            f"are {', '.join(user_labels)}"
        )
    resolved = {}
    for name in model_labels:
        target = label_map.get(name, name if name in user_labels else None)
        if target is not None:
            resolved[name] = target
    return resolved


def adapted_model(model: EmotionModel, user_labels: list[str], mapping: dict[str, str]
                  ) -> EmotionModel:  # fmt: skip
    """`model`'s weights answering in `user_labels` (see the module docstring, step 2). A model
    that was itself adapted composes its map with this one."""
    config = model.config
    previous = config.label_map or {name: name for name in config.labels}
    composed = {c: mapping[o] for c, o in previous.items() if o in mapping}
    new_config = ModelConfig(**{**config.to_dict(), "output_labels": list(user_labels),
                                "label_map": composed})  # fmt: skip
    adapted = EmotionModel(new_config)
    adapted.load_state_dict(model.state_dict(), strict=True)
    return adapted.eval()


# ── folds ────────────────────────────────────────────────────────────────────────────────────────


def assign_folds(
    labels: np.ndarray, speakers: list[str] | None, max_folds: int = MAX_FOLDS, seed: int = 0
) -> np.ndarray:
    """A fold index per clip.

    At least 3 folds, so that each held-out fold leaves two or more to tune on. With speakers:
    every clip of a speaker in the same fold; min(max_folds, #speakers) folds,
    speakers dealt largest first to the fold with the fewest clips (deterministic). Without:
    stratified, min(max_folds, smallest class size) folds, each class's clips shuffled (seeded)
    then dealt round-robin.
    """
    count = len(labels)
    folds = np.zeros(count, dtype=np.int64)
    if speakers is not None:
        sizes = Counter(speakers)
        if len(sizes) < 3:  # one held out, and two left to cross-validate the tuning on
            raise ConfigError(
                f"speaker-grouped folds need clips of at least 3 speakers, got {len(sizes)}; give "
                "more speakers or leave the speaker column empty (stratified folds)"
            )
        num_folds = min(max_folds, len(sizes))
        totals = np.zeros(num_folds, dtype=np.int64)
        fold_of = {}
        for speaker, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
            fold_of[speaker] = int(np.argmin(totals))
            totals[fold_of[speaker]] += size
        return np.array([fold_of[s] for s in speakers], dtype=np.int64)
    present = np.unique(labels)
    smallest = min(int((labels == c).sum()) for c in present)
    num_folds = min(max_folds, smallest)
    if num_folds < 3:  # one held out, and two left to cross-validate the tuning on
        raise ConfigError(
            f"stratified folds need at least 3 clips of every label, the rarest has {smallest}; "
            "add clips of it"
        )
    rng = np.random.default_rng(seed)
    for c in present:
        members = np.flatnonzero(labels == c)
        folds[rng.permutation(members)] = np.arange(len(members)) % num_folds
    return folds


# ── adaptation ───────────────────────────────────────────────────────────────────────────────────


def _scores(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    predicted = probabilities.argmax(axis=1)
    return {
        "ua": unweighted_accuracy(y_true, predicted),
        "wa": weighted_accuracy(y_true, predicted),
    }


def _store(keys, labels, ids, label_names, fingerprint, original: Datastore | None,
           values: np.ndarray | None = None, attributes: list[str] | None = None
           ) -> Datastore:  # fmt: skip
    """A datastore of the clips given (with their ratings `values` (N, A) of `attributes` for a
    dimensional model), plus the source model's (relabelled) entries if any."""
    store = Datastore(keys, labels, label_names, list(ids), fingerprint, values=values,
                      attributes=attributes)  # fmt: skip
    if original is not None and len(original):
        store.add(original.keys, original.labels, original.ids, original.sources,
                  original.speakers)  # fmt: skip
    return store


def relabel_store(store: Datastore, mapping: dict[str, str], user_labels: list[str],
                  fingerprint: str) -> Datastore | None:  # fmt: skip
    """The source model's datastore in the user's labels (entries of dropped labels left out),
    ids prefixed `original/` so they never clash with the user's clips."""
    target = np.array([user_labels.index(mapping[n]) if n in mapping else -1
                       for n in store.label_names])  # fmt: skip
    labels = target[store.labels]
    keep = labels >= 0
    if not keep.any():
        return None
    rows = np.flatnonzero(keep).tolist()
    ids = [f"original/{store.ids[i]}" for i in rows]
    return Datastore(store.keys[keep], labels[keep], user_labels, ids, fingerprint,
                     sources=[store.sources[i] for i in rows],
                     speakers=[store.speakers[i] for i in rows])  # fmt: skip


def tune_on(embeddings, labels, probs, ids, groups, user_labels, fingerprint,
            original: Datastore | None, model_labels: list[str] | None, criterion: str,
            rated: Rated | None = None) -> tuple[Datastore, TuningResult]:  # fmt: skip
    """A datastore of these clips (+ original) and k, α, T tuned on them by grouped
    cross-validation: each clip, as a query, sees only clips of other groups (and the original
    entries). With `rated` (a dimensional model's), the store also holds the clips' ratings and
    the regression stage's k, α, T are tuned the same way, for the mean CCC."""
    store = _store(embeddings, labels, ids, user_labels, fingerprint, original,
                   None if rated is None else rated.targets,
                   None if rated is None else rated.attributes)  # fmt: skip
    query_groups = np.asarray(groups, dtype=str)
    store_groups = np.concatenate([query_groups,
                                   np.full(len(store) - len(ids), ORIGINAL_GROUP)])  # fmt: skip
    tuning = tune_knn(embeddings, labels, probs, store, query_ids=list(ids),
                      criterion=criterion, query_groups=query_groups,
                      store_groups=store_groups, model_labels=model_labels)  # fmt: skip
    if rated is not None:
        tuning.regression = tune_knn_regression(
            embeddings, rated.targets, rated.predicted, store, query_ids=list(ids),
            query_groups=query_groups, store_groups=store_groups)  # fmt: skip
    return store, tuning


@dataclass
class Rated:
    """A dimensional model's side of some clips: their ratings and the model's predictions."""

    attributes: list[str]
    targets: np.ndarray  # (N, A) the clips' ratings
    predicted: np.ndarray  # (N, A) the model's own output for them

    def subset(self, rows: np.ndarray) -> Rated:
        return Rated(self.attributes, self.targets[rows], self.predicted[rows])


def _ccc_scores(truth: np.ndarray, predicted: np.ndarray, attributes: list[str]
                ) -> dict[str, float]:  # fmt: skip
    """CCC of each attribute (`emoknn.metrics.ccc`) and their mean."""
    scores = {name: ccc(truth[:, a], predicted[:, a]) for a, name in enumerate(attributes)}
    scores["mean"] = float(np.mean([scores[name] for name in attributes]))
    return scores


def check_distinct_audio(clips: list[Utterance], source: str) -> None:
    """Refuse the same audio given twice (two files with the same bytes): a clip and its copy in
    two folds would each find the other as an exact neighbour and inflate every held-out
    figure."""
    from emoknn.files import file_sha256

    first: dict[str, Utterance] = {}
    repeats = []
    for clip in clips:
        try:
            digest = file_sha256(clip.path)
        except OSError as error:
            raise CorpusError(f"{clip.path}: cannot read the audio file ({error.strerror})"
                              ) from error  # fmt: skip
        if digest in first:
            repeats.append((first[digest], clip))
        else:
            first[digest] = clip
    if repeats:
        a, b = repeats[0]
        more = f" (and {len(repeats) - 1} more pair(s))" if len(repeats) > 1 else ""
        raise CorpusError(
            f"{source}: {b.path} is the same audio as {a.path}{more}; give each clip once "
            "(a copy would be its own nearest neighbour and inflate the held-out scores)"
        )


def _check_distinct_embeddings(clips: list[Utterance], embeddings: np.ndarray, source: str
                               ) -> None:  # fmt: skip
    """The same check on decoded audio: identical embeddings (a re-encoded copy of a clip)."""
    _, first, counts = np.unique(embeddings, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        row = embeddings[first[np.flatnonzero(counts > 1)[0]]]
        same = np.flatnonzero((embeddings == row).all(axis=1))
        raise CorpusError(
            f"{source}: {clips[same[1]].path} holds the same audio as {clips[same[0]].path} (an "
            "identical embedding); give each clip once (a copy would be its own nearest "
            "neighbour and inflate the held-out scores)"
        )


# A kept source entry this close to one of the user's clips (relative to the embeddings' size)
# is that clip's own audio: float rounding between batchings is ~1e-6.
SAME_AUDIO_RELATIVE_DISTANCE = 1e-4


def drop_overlap(original: Datastore, clips: list[Utterance], embeddings: np.ndarray
                 ) -> tuple[Datastore | None, int]:  # fmt: skip
    """The source model's kept entries minus those that are one of the user's clips (same id or
    file name, or the same audio: an embedding at distance ~0), so that no query is ever scored
    against itself; and how many were dropped."""
    names = {u.id for u in clips} | {Path(u.path).stem for u in clips}
    source_ids = [entry.removeprefix("original/") for entry in original.ids]
    same = np.array([i in names or i.rsplit("/", 1)[-1] in names for i in source_ids])
    exact = original if original.index_type == "exact" else Datastore(
        original.keys, original.labels, original.label_names, original.ids, original.fingerprint)
    distances, rows = exact.search(embeddings, 1)  # (N, 1) nearest kept entry of each clip
    scale = float(np.linalg.norm(embeddings, axis=1).max()) or 1.0
    close = rows[:, 0][distances[:, 0] <= SAME_AUDIO_RELATIVE_DISTANCE * scale]
    same[close[close >= 0]] = True
    if not same.any():
        return original, 0
    keep = ~same
    if not keep.any():
        return None, int(same.sum())
    return original.subset(np.flatnonzero(keep)), int(same.sum())


# ── the head refit ───────────────────────────────────────────────────────────────────────────────


@dataclass
class RefitPlan:
    """What a head refit fits besides your clips: the source model's training clips (pooled
    layers, and their labels as indices of yours; empty when the model records none) and the
    settings, chosen before any of your folds."""

    source_pooled: np.ndarray  # (M, L + 1, P)
    source_labels: np.ndarray  # (M,) indices into your labels
    settings: RefitSettings
    report: dict[str, Any]

    def fit(self, pooled: np.ndarray, labels: np.ndarray, num_classes: int,
            layers: tuple[int, ...] | None = None):  # fmt: skip
        """The refitted head on the source clips + your clips `pooled`, `labels`, reading
        `layers` (default: the plan's)."""
        rows = np.concatenate([self.source_pooled, pooled])
        is_target = np.r_[np.zeros(len(self.source_labels), bool), np.ones(len(labels), bool)]
        settings = self.settings if layers is None else replace(self.settings, layers=layers)
        return fit_linear_head(rows, np.concatenate([self.source_labels, labels]), num_classes,
                               is_target, settings)  # fmt: skip

    def choose_layers(self, pooled: np.ndarray, labels: np.ndarray, folds: np.ndarray | None,
                      num_classes: int) -> tuple[tuple[int, ...], dict[str, float] | None]:
        """The refit's layers for your clips `pooled`, `labels` (and nothing else of yours):
        the best on `folds` of them (`emoknn.refit.choose_layers_on_folds`), or the plan's
        where they cannot be folded (None) or scored; with the candidates' scores."""
        if folds is None:
            return self.settings.layers, None
        layers, scores = choose_layers_on_folds(self.source_pooled, self.source_labels, pooled,
                                                labels, folds, num_classes, self.settings)
        return (layers, scores) if layers is not None else (self.settings.layers, None)


def inner_folds(labels: np.ndarray, groups: np.ndarray, has_speakers: bool, seed: int
                ) -> np.ndarray | None:  # fmt: skip
    """Folds of some of your clips (speaker-grouped when they name speakers) to choose the
    refit's layers on, or None when they are too few to fold."""
    try:
        return assign_folds(labels, groups.tolist() if has_speakers else None,
                            REFIT_LAYER_FOLDS, seed)  # fmt: skip
    except ConfigError:
        return None


def plan_refit(source: SourceModel, mapping: dict[str, str], user_labels: list[str],
               source_corpus: str | os.PathLike | None, batch_size: int, device: str
               ) -> RefitPlan:  # fmt: skip
    """The source clips a refit adds to yours (a training run's training and validation
    clips, their labels mapped onto yours as the model's are; clips of labels dropped are left
    out) and the layers it reads: chosen on the run's validation speakers
    (`emoknn.refit.choose_layers`), else the layer the model weighs most (its last without
    layer weights)."""
    model = source.model
    clips = None
    if source.folder is not None:
        clips = source_clips(source.folder, model, source.max_seconds, source_corpus,
                             batch_size, device)  # fmt: skip
    elif source_corpus is not None:
        raise ConfigError(f"{source.description['name']}: is not a training run, so it has no "
                          "source corpus to refit on; leave out --source-corpus")  # fmt: skip
    pooled = np.zeros((0, model.num_layers + 1, model.pooled_size), np.float32)
    labels = np.zeros(0, np.int64)
    report: dict[str, Any] = {"source_clips": 0, "source_corpus": None, "source_fold": None}
    if clips is None and source.folder is not None:
        report["source_note"] = ("the model folder records no training corpus and fold that can "
                                 "be read (give --source-corpus if the run's corpus moved)")
    if model.layer_weights is not None:
        layers: tuple[int, ...] = (int(model.layer_weights.detach().argmax()),)
    else:
        layers = (model.num_layers,)
    how = "the layer the source model weighs most" if model.layer_weights is not None else (
        "the encoder's last layer")  # fmt: skip
    if clips is not None:
        keep = np.array([mapping.get(label) is not None for label in clips.labels])
        pooled = clips.pooled[keep]
        labels = np.array([user_labels.index(mapping[label])
                           for label, kept in zip(clips.labels, keep, strict=True) if kept],
                          dtype=np.int64)  # fmt: skip
        validation = clips.is_validation[keep]
        report.update(source_clips=int(keep.sum()), source_corpus=clips.corpus,
                      source_fold=clips.fold)  # fmt: skip
        if len(np.unique(labels[validation])) >= 2 and len(np.unique(labels[~validation])) >= 2:
            layers, scores = choose_layers(pooled, labels, validation, len(user_labels),
                                           REFIT_C)  # fmt: skip
            how = "chosen on the source run's validation speakers"
            report["layer_scores"] = scores
    settings = RefitSettings(layers, REFIT_C, REFIT_TARGET_SHARE)
    report.update(settings.to_dict(), layer_choice=how)
    return RefitPlan(pooled, labels, settings, report)


def _refit_probabilities(plan: RefitPlan, pooled: np.ndarray, labels: np.ndarray,
                         rest: np.ndarray, test: np.ndarray, ids: list[str], groups: np.ndarray,
                         user_labels: list[str], criterion: str, layer_folds: np.ndarray | None
                         ) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:  # fmt: skip
    """The refit's and refit+kNN's probabilities of the held-out clips `test`, from a head
    fitted on the source clips + the clips `rest` (its layers chosen on `layer_folds` of `rest`)
    and a kNN over `rest` tuned as the kNN remedy's is: no clip of `test` reaches the layer
    choice, the fit, its statistics, the datastore or the tuning. Also the layers read."""
    layers, _ = plan.choose_layers(pooled[rest], labels[rest], layer_folds, len(user_labels))
    head = plan.fit(pooled[rest], labels[rest], len(user_labels), layers)
    embeddings, probs = head.embed(pooled).astype(np.float32), head.probs(pooled)
    store, tuning = tune_on(embeddings[rest], labels[rest], probs[rest],
                            [ids[i] for i in np.flatnonzero(rest)], groups[rest], user_labels,
                            "refit", None, None, criterion)  # fmt: skip
    return {"refit": probs[test],
            "refit_knn": knn_predict_probs(embeddings[test], probs[test], store,
                                           tuning.interpolated)}, layers  # fmt: skip


def choose_remedy(summary: dict[str, dict[str, float]], remedy: str, criterion: str,
                  model_knows_all: bool) -> str:  # fmt: skip
    """The inference the folder ships: the one `remedy` names, or with "best" the candidate with
    the best held-out mean `criterion` (ties: the earlier of REMEDIES, zero-shot first). The
    model alone is a candidate only when it predicts every one of your labels."""
    if remedy != "best":
        return REMEDIES[remedy]
    order = [name for name in REMEDIES.values() if name in summary
             and (name != "model" or model_knows_all)]  # fmt: skip
    if not order:  # the model knows none of your labels: the kNN serves them all
        return "interpolated"
    return max(order, key=lambda name: (summary[name][f"{criterion}_mean"], -order.index(name)))


def _remedy_report(chosen: str, remedy: str, summary: dict[str, dict[str, float]],
                   scores: dict[str, dict[str, dict[str, float]]], criterion: str
                   ) -> dict[str, Any]:  # fmt: skip
    """adapt.json's `remedy`: what was asked, what ships, every candidate's held-out figure,
    and the shipped one against the zero-shot model (paired over folds)."""
    public = {inference: name for name, inference in REMEDIES.items()}
    report: dict[str, Any] = {
        "asked": remedy,
        "chosen": public[chosen],
        "inference": chosen,
        "criterion": criterion,
        "candidates": {public[n]: summary[n][f"{criterion}_mean"] for n in public if n in summary},
        "zero_shot": summary["model"][f"{criterion}_mean"] if "model" in summary else None,
        "gain_over_zero_shot": None,
        "comparison": None,
    }
    if "model" in summary and chosen != "model":
        report["gain_over_zero_shot"] = (summary[chosen][f"{criterion}_mean"]
                                         - summary["model"][f"{criterion}_mean"])  # fmt: skip
        title = f"{public[chosen]} (shipped) vs zero-shot"
        report["comparison"] = compare(title, chosen, "model", scores).to_dict()
    return report


def check_new_folder(out_dir: str | os.PathLike) -> Path:
    """`out_dir` may be written: absent, or an empty folder, in a place that takes new files."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: already exists and is not empty; choose a new folder")
    return check_writable_folder(out_dir, "the model folder")


def adapt_model(
    source: SourceModel,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    label_map: dict[str, str | None] | None = None,
    keep_datastore: bool = False,
    max_folds: int = MAX_FOLDS,
    criterion: str = "ua",
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 16,
    licence: str | None = None,
    remedy: str = "best",
    source_corpus: str | os.PathLike | None = None,
) -> AdaptResult:
    """Adapt `source` to the labelled clips in `data` and write the adapted folder `out_dir`
    (see the module docstring). `remedy`: what the folder ships (REMEDY_CHOICES; "best": the
    best on held-out folds); `source_corpus`: where a training run's corpus lies now, if it
    moved (the head refit reads its training clips). Everything is checked before anything is
    written; the folder appears whole or not at all."""
    out_dir = check_new_folder(out_dir)
    source_name = source.description["name"]
    attributes = source.model.attributes  # a dimensional or multi-task model's, else None
    predicts_classes = source.model.predicts_classes
    if attributes is not None and keep_datastore:
        # Its entries' ratings would be on the source corpus's scale, not necessarily yours.
        raise ConfigError(
            f"{source_name}: predicts {', '.join(attributes)}; keeping its datastore is not "
            "built for such a model (its ratings may be on another scale than yours): leave out "
            "--keep-datastore"
        )
    if not predicts_classes and label_map:
        raise ConfigError(
            f"{source_name}: a dimensional model predicts no classes, so --label-map does not "
            "apply; leave it out"
        )
    check_device(device, "--device")  # before the clips are read: the same check as predict's
    if criterion not in ("ua", "wa"):
        raise ConfigError(f"criterion must be ua or wa, got {criterion!r}")
    if not 3 <= max_folds <= 100:
        raise ConfigError(f"folds must lie in [3, 100], got {max_folds}")
    if remedy not in REMEDY_CHOICES:
        raise ConfigError(f"remedy must be one of {', '.join(REMEDY_CHOICES)}, got {remedy!r}")
    # The head refit is a classifier: a dimensional model's regression head is not refitted.
    refits = remedy in ("best", "refit", "refit+knn") and attributes is None
    if remedy in ("refit", "refit+knn") and not refits:
        raise ConfigError(f"{source_name}: predicts {', '.join(attributes)}; the head refit is "
                          "built for class models only: use --remedy knn")  # fmt: skip
    clips, has_speakers = load_labelled_clips(data, attributes)
    user_labels = sorted({u.label for u in clips})
    if len(user_labels) < 2:
        raise CorpusError(f"{data}: clips of at least 2 labels are needed, found {user_labels}")
    if keep_datastore and source.store is None:
        raise ConfigError(f"{source.description['name']}: has no datastore to keep")
    check_distinct_audio(clips, str(data))
    # A dimensional model's classifier was never trained: none of its labels is kept, so the class
    # labels of the clips are served by the kNN alone (see the module docstring).
    mapping = (resolve_label_map(source.model.labels, user_labels, label_map)
               if predicts_classes else {})  # fmt: skip
    model_labels = sorted(set(mapping.values()), key=user_labels.index)
    # A model that keeps none of the user's labels gives every clip a uniform p_model: its
    # "model alone" figure would be the first label's share, not a measurement. Skip it.
    inferences = INFERENCES if model_labels else ("knn",)
    model = adapted_model(source.model, user_labels, mapping)
    fingerprint = fingerprint_of(model)
    original = None
    if keep_datastore:
        original = relabel_store(source.store, mapping, user_labels, fingerprint)
    labels = np.array([user_labels.index(u.label) for u in clips])
    folds = assign_folds(labels, [u.speaker for u in clips] if has_speakers else None, max_folds,
                         seed)  # fmt: skip
    groups = np.array([u.speaker for u in clips] if has_speakers else [str(f) for f in folds])
    known = None if model_labels == user_labels else model_labels

    device = device or best_device()
    plan = None
    seconds: dict[str, float] = {}  # where the time went (adapt.json's `seconds`)
    start = time.perf_counter()
    if refits:  # one encoder pass gives both heads' inputs: the pooled layers
        plan = plan_refit(source, mapping, user_labels, source_corpus, batch_size, device)
        seconds["source_clips_and_layer_choice"] = time.perf_counter() - start
        features = pooled_utterances(model, clips, source.max_seconds, batch_size, device)
        embedded = embed_pooled(model, clips, features)
        inferences = (*inferences, *REFIT_INFERENCES)
    else:
        embedded = embed_utterances(model, clips, source.max_seconds, batch_size, device)
    seconds["embedding_your_clips"] = time.perf_counter() - start - sum(seconds.values())
    E, P, ids = embedded.embeddings, embedded.probs.astype(np.float64), embedded.ids
    _check_distinct_embeddings(clips, E, str(data))
    dropped = 0
    if original is not None:
        original, dropped = drop_overlap(original, clips, E)
    rated = None
    if attributes is not None:  # every clip is rated (load_labelled_clips checked)
        rated = Rated(list(attributes), embedded.targets, embedded.attributes.astype(np.float64))
    dimensional_folds = []
    pooled_values = {name: np.zeros((len(clips), len(attributes or []))) for name in INFERENCES}

    per_fold, pooled = [], {name: np.zeros((len(clips), len(user_labels))) for name in inferences}
    for fold in range(int(folds.max()) + 1):
        test, rest = folds == fold, folds != fold
        rest_ids = [ids[i] for i in np.flatnonzero(rest)]
        store, tuning = tune_on(E[rest], labels[rest], P[rest], rest_ids, groups[rest],
                                user_labels, fingerprint, original, known, criterion,
                                None if rated is None else rated.subset(rest))  # fmt: skip
        if rated is not None:
            regression = tuning.regression
            values = {
                "model": rated.predicted[test],
                "knn": store_knn_values(E[test], store, regression.knn_only),
                "interpolated": knn_predict_values(E[test], rated.predicted[test], store,
                                                   regression.interpolated),
            }  # fmt: skip
            dimensional_folds.append(
                {"fold": fold, "clips": int(test.sum()), "k": regression.interpolated.k,
                 "alpha": regression.interpolated.alpha,
                 "temperature": regression.interpolated.to_dict()["temperature"],
                 "knn_only": {"k": regression.knn_only.k,
                              "temperature": regression.knn_only.to_dict()["temperature"]},
                 **{inference: _ccc_scores(rated.targets[test], values[inference], attributes)
                    for inference in INFERENCES}})  # fmt: skip
            for inference in INFERENCES:
                pooled_values[inference][test] = values[inference]
        probabilities = {
            "model": P[test],
            "knn": store_knn_probs(E[test], store, tuning.knn_only),
            "interpolated": knn_predict_probs(E[test], P[test], store, tuning.interpolated),
        }
        refit_layers = None
        if plan is not None:
            layer_folds = inner_folds(labels[rest], groups[rest], has_speakers, seed)
            refit_probs, refit_layers = _refit_probabilities(
                plan, features, labels, rest, test, ids, groups, user_labels, criterion,
                layer_folds)  # fmt: skip
            probabilities.update(refit_probs)
        record = {"fold": fold, "clips": int(test.sum()),
                  "speakers": sorted({clips[i].speaker for i in np.flatnonzero(test)})
                  if has_speakers else None,
                  "k": tuning.interpolated.k, "alpha": tuning.interpolated.alpha,
                  "temperature": tuning.interpolated.to_dict()["temperature"],
                  "knn_only": {"k": tuning.knn_only.k,
                               "temperature": tuning.knn_only.to_dict()["temperature"]},
                  "ids": [ids[i] for i in np.flatnonzero(test)]}  # fmt: skip
        if refit_layers is not None:
            record["refit_layers"] = list(refit_layers)
        for name in inferences:
            record[name] = _scores(labels[test], probabilities[name])
            pooled[name][test] = probabilities[name]
        per_fold.append(record)

    seconds["held_out_folds"] = time.perf_counter() - start - sum(seconds.values())
    summary = {}
    for name in inferences:
        ua = np.array([r[name]["ua"] for r in per_fold])
        wa = np.array([r[name]["wa"] for r in per_fold])
        pooled_scores = _scores(labels, pooled[name])  # every clip predicted once, held out
        summary[name] = {
            "ua_mean": float(ua.mean()), "ua_std": float(ua.std()),
            "wa_mean": float(wa.mean()), "wa_std": float(wa.std()),
            "pooled_ua": pooled_scores["ua"], "pooled_wa": pooled_scores["wa"],
        }  # fmt: skip
    scores = {name: {str(r["fold"]): r[name] for r in per_fold} for name in inferences}
    comparisons = [
        compare(title, a, b, scores).to_dict()
        for title, a, b in (("kNN-adapted vs the model alone", "interpolated", "model"),
                            ("kNN alone vs the model alone", "knn", "model"),
                            ("kNN-adapted vs kNN alone", "interpolated", "knn"))
        if a in inferences and b in inferences
    ]  # fmt: skip

    dimensional = None
    if rated is not None:
        dimensional = _dimensional_report(rated, dimensional_folds, pooled_values)
    chosen = choose_remedy(summary, remedy, criterion, model_labels == user_labels)
    if plan is not None:  # the shipped refit's layers: chosen on the held-out folds of every clip
        shipped_layers, layer_scores = plan.choose_layers(features, labels, folds,
                                                          len(user_labels))  # fmt: skip
        plan.report.update(layers=list(shipped_layers), your_layer_scores=layer_scores,
                           layer_choice=("chosen on your clips' held-out folds (each fold's "
                                         "refit: on inner folds of the other folds' clips)"
                                         if layer_scores is not None else
                                         plan.report["layer_choice"]
                                         + " (your clips are too few to fold)"))  # fmt: skip
    if chosen in REFIT_INFERENCES:  # the head refitted on the source clips + every clip
        # It predicts every one of your labels; the source datastore lies in another embedding.
        model_labels, original, dropped = list(user_labels), None, 0
        head = plan.fit(features, labels, len(user_labels), shipped_layers)
        model = refit_model(source.model, head, user_labels)
        store, tuning = tune_on(head.embed(features).astype(np.float32), labels,
                                head.probs(features), ids, groups, user_labels,
                                fingerprint_of(model), None, None, criterion)  # fmt: skip
    else:
        store, tuning = tune_on(E, labels, P, ids, groups, user_labels, fingerprint, original,
                                known, criterion, rated)  # fmt: skip
    if chosen in ("model", "refit"):  # the model alone: the datastore serves neighbours only
        tuning.interpolated = replace(tuning.interpolated, alpha=0.0)
    record_origins(store, clips, speakers=has_speakers)
    seconds["shipped_model"] = time.perf_counter() - start - sum(seconds.values())
    report = {
        "source": source.description,
        "data": {
            "path": str(data),
            "clips": len(clips),
            "per_label": {n: int((labels == i).sum()) for i, n in enumerate(user_labels)},
            "speakers": len({u.speaker for u in clips}) if has_speakers else None,
        },
        "labels": user_labels,
        "model_labels": model_labels,
        "label_map": mapping,
        # A refitted head's embedding is another space than the source datastore's: not kept.
        "kept_original_datastore": keep_datastore and chosen not in REFIT_INFERENCES,
        "original_entries": 0 if original is None else len(original),
        "original_entries_dropped": dropped,  # kept entries that were one of the clips
        "datastore_entries": len(store),
        "model_knows_no_label": not model_labels,
        "protocol": {
            "grouping": "speaker" if has_speakers else "stratified",
            "folds": len(per_fold),
            "criterion": criterion,
            "seed": seed,
            "statistics": METHOD_NOTE,
        },
        "per_fold": per_fold,
        "summary": summary,
        "comparisons": comparisons,
        "tuning": tuning.to_dict(),
        "dimensional": dimensional,
        "remedy": _remedy_report(chosen, remedy, summary, scores, criterion),
        "refit": None if plan is None else plan.report,
        "licence": licence,
        "max_seconds": source.max_seconds,
        "seconds": seconds,
    }
    _write_folder(out_dir, model, source.max_seconds, store, tuning, report)
    return AdaptResult(out_dir, user_labels, model_labels, len(per_fold),
                       report["protocol"]["grouping"], per_fold, summary, comparisons, tuning,
                       report)  # fmt: skip


def _dimensional_report(rated: Rated, folds: list[dict[str, Any]],
                        pooled: dict[str, np.ndarray]) -> dict[str, Any]:  # fmt: skip
    """adapt.json's `dimensional` section: held-out CCC per attribute of the model alone, the kNN
    alone and the interpolation, per fold and pooled (every clip predicted once, held out), and
    paired comparisons of the per-fold mean CCC."""
    summary = {}
    for inference in INFERENCES:
        means = np.array([f[inference]["mean"] for f in folds])
        summary[inference] = {
            "ccc_mean": float(means.mean()), "ccc_std": float(means.std()),
            "pooled": _ccc_scores(rated.targets, pooled[inference], rated.attributes),
        }  # fmt: skip
    comparisons = []
    for title, a, b in (("kNN-adapted vs the model alone", "interpolated", "model"),
                        ("kNN alone vs the model alone", "knn", "model"),
                        ("kNN-adapted vs kNN alone", "interpolated", "knn")):  # fmt: skip
        result = paired_test(np.array([f[a]["mean"] for f in folds]),
                             np.array([f[b]["mean"] for f in folds]))  # fmt: skip
        comparisons.append({"name": title, "a": a, "b": b, "metric": "ccc_mean",
                            "folds": [f["fold"] for f in folds], **asdict(result)})  # fmt: skip
    return {"attributes": rated.attributes, "per_fold": folds, "summary": summary,
            "comparisons": comparisons}  # fmt: skip


def _write_folder(out_dir: Path, model: EmotionModel, max_seconds: float, store: Datastore,
                  tuning: TuningResult, report: dict[str, Any]) -> None:  # fmt: skip
    """Write everything into a temporary sibling folder, then rename it into place."""
    from emoknn.card import model_card

    temporary = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        save_model(temporary, model, max_seconds)
        save_knn(temporary, store, tuning)
        write_json_atomic(report, temporary / ADAPT_REPORT_FILE)
        write_text_atomic(temporary / "README.md", model_card(report))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked before anything was computed)
        os.replace(temporary, out_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def load_source(model: str | os.PathLike, device: str = "cpu") -> SourceModel:
    """The model to adapt: an emoknn model folder, or a Hugging Face audio classifier (local
    folder or hub name, imported by `emoknn.hf_import`)."""
    from emoknn.hf_import import hf_classifier_architecture, import_hf_classifier
    from emoknn.hub import resolve_model
    from emoknn.model_folder import has_model, load_datastore, load_model, read_model_meta

    path = resolve_model(model)  # a Hub repo id → its cached snapshot folder
    if path.is_dir() and has_model(path):
        meta = read_model_meta(path)
        loaded = load_model(path, device)
        store = None
        if (path / "datastore.npz").is_file():
            store = load_datastore(path, meta.fingerprint, meta.labels, loaded.embedding_size)
        description = {"kind": "emoknn", "name": str(model), "encoder": loaded.config.encoder,
                       "labels": meta.labels}  # fmt: skip
        return SourceModel(loaded, meta.max_seconds, store, description, path)
    if not path.exists():
        raise EmoknnError(f"{path}: model not found (a model folder, or a Hub repo id owner/name)")
    if hf_classifier_architecture(path) is None:
        raise EmoknnError(
            f"{path}: neither an emoknn model folder (model.safetensors + model.json) nor a "
            "Hugging Face audio classifier (config.json with a *ForSequenceClassification or "
            "WhisperForAudioClassification architecture)"
        )
    imported, max_seconds = import_hf_classifier(path)
    description = {"kind": "huggingface", "name": str(model), "encoder": str(model),
                   "labels": imported.labels}  # fmt: skip
    return SourceModel(imported.to(device), max_seconds, None, description)

"""Adaptation curves: a model trained on one corpus, used on another, with n labelled clips/class.

    python bench/adaptation.py --source /work/shared/corpora/emodb \
        --target /work/shared/corpora/ravdess-16k --encoder <whisper-base> \
        --feature-cache /work/cache/features --out /tmp/adaptation

Frozen encoder features (the pooled layers of the feature cache, `emoknn.features`), the classes
both corpora share (EmoDB ↔ RAVDESS: angry, disgust, fearful, happy, neutral, sad). The target's
speakers are split into speaker-grouped test folds (`--test-folds`, RAVDESS: 6 × 4 actors); for
each test fold, each n in `--clips` and each draw, n labelled clips per class are drawn from the
target's other speakers, and each remedy is scored on the test fold's speakers (UA):

    zero-shot   the source model: `emoknn.refit`'s linear head fitted on the source corpus alone
    knn         that model + a kNN over the n·C clips (adapt's tuning: speaker-grouped, no clip
                finds itself or its speaker)
    refit       the head refitted on the source corpus + the n·C clips (`emoknn.refit`)
    refit+knn   the refitted head + the kNN over the clips in its embedding
    adapted     what `emoknn adapt` would ship: the one of the four that scores best on held-out
                folds of the n·C clips alone (`emoknn.adapt.assign_folds`), then refitted on all
                of them — the test speakers never reach it
    alone       the same head on the n·C clips alone, no source corpus
    in-corpus   the same head on all the target's other speakers, no source corpus

Each is run without normalisation ("none"), with domain statistics ("domain": each corpus's
features standardised with the mean and std of its own clips, labels unused) and with speaker
statistics ("speaker": each speaker's with that speaker's own clips, labels unused). Both use
unlabelled target audio, the test speakers' included (transductive, as `crossval
--speaker-norm`). The source model's layers (`--layers auto`) are chosen on source validation
speakers only. Prints a table (mean over folds × draws, 95 % interval over test folds) and writes
results.json and a plot. Also times `emoknn adapt`'s selection step on 60 clips (features given).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoknn.adapt import assign_folds, tune_on
from emoknn.corpora import load_corpus
from emoknn.knn import knn_predict_probs
from emoknn.metrics import unweighted_accuracy
from emoknn.refit import RefitSettings, choose_layers_on_folds, fit_linear_head
from emoknn.stats import mean_confidence_interval

SHARED = ("angry", "disgust", "fearful", "happy", "neutral", "sad")
NORMALISATIONS = ("none", "speaker", "domain")
REMEDIES = ("zero-shot", "knn", "refit", "refit+knn", "adapted", "alone", "in-corpus")
CANDIDATES = ("zero-shot", "knn", "refit", "refit+knn")  # what adapt chooses among
# The layers a source model may read: single layers. Runs of three adjacent layers averaged were
# tried first: chosen on EmoDB's validation speakers (1-3) they transferred worse to RAVDESS than
# one layer (zero-shot 32.6 against 43.1 with layer 3; 10 clips per class: 60.6 against 68.8).
LAYER_SETS = tuple((layer,) for layer in range(13))


@dataclass
class Corpus:
    name: str
    features: np.ndarray  # (N, L + 1, H) pooled layers
    labels: np.ndarray  # (N,) index into SHARED
    speakers: np.ndarray  # (N,) str


def load_features(path: str, encoder: str, cache_root: str, classes=SHARED) -> Corpus:
    """The corpus's clips of `classes` and their pooled layers from the feature cache (filled
    where missing), as a frozen `crossval` with this encoder caches them."""
    from emoknn.config import make_config, model_config_for
    from emoknn.features import FeatureCache
    from emoknn.model import EmotionModel

    utterances = [u for u in load_corpus(path) if u.label in classes]
    config = make_config("frozen", encoder=encoder)
    import torch

    torch.manual_seed(config.seed)  # a tiny encoder starts random: the seed crossval uses
    model = EmotionModel(model_config_for(config, list(classes))).eval()
    cache = FeatureCache(cache_root, model, config.max_seconds)
    features = cache.originals(utterances)
    return Corpus(Path(path).name, features,
                  np.array([classes.index(u.label) for u in utterances]),
                  np.array([u.speaker for u in utterances]))  # fmt: skip


def normalised(corpus: Corpus, how: str) -> Corpus:
    """`how` = none | domain | speaker: features standardised per (layer, value) with the
    corpus's (or each speaker's) own clips; labels unused."""
    if how == "none":
        return corpus
    features = corpus.features.astype(np.float64).copy()
    groups = [np.ones(len(features), bool)] if how == "domain" else [
        corpus.speakers == s for s in np.unique(corpus.speakers)]  # fmt: skip
    for rows in groups:
        part = features[rows]
        features[rows] = (part - part.mean(axis=0)) / np.maximum(part.std(axis=0), 1e-6)
    return Corpus(corpus.name, features.astype(np.float32), corpus.labels, corpus.speakers)


def test_folds(speakers: np.ndarray, count: int) -> list[np.ndarray]:
    """Speaker-grouped test folds: the sorted speakers dealt round-robin into `count` folds."""
    unique = sorted(set(speakers.tolist()))
    count = min(count, len(unique))
    return [np.isin(speakers, unique[i::count]) for i in range(count)]


def choose_layers(source: Corpus, c: float) -> tuple[int, ...]:
    """The layer set of LAYER_SETS whose refit on the source's other speakers scores best (UA)
    on its validation speakers (the last ~20 % of its sorted speakers); ties: the first."""
    unique = sorted(set(source.speakers.tolist()))
    val = np.isin(source.speakers, unique[-max(1, len(unique) // 5):])
    scores = []
    for layers in LAYER_SETS:
        if max(layers) >= source.features.shape[1]:
            scores.append(-1.0)
            continue
        head = fit_linear_head(source.features[~val], source.labels[~val], len(SHARED),
                               np.zeros((~val).sum(), bool), RefitSettings(layers, c))  # fmt: skip
        predicted = head.probs(source.features[val]).argmax(axis=1)
        scores.append(unweighted_accuracy(source.labels[val], predicted))
    return LAYER_SETS[int(np.argmax(scores))]


def draw_clips(labels: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator
               ) -> np.ndarray:  # fmt: skip
    """Indices of n clips per class drawn from the rows `pool` (fewer where a class has fewer)."""
    chosen = []
    for c in np.unique(labels[pool]):
        members = pool[labels[pool] == c]
        chosen.extend(rng.choice(members, size=min(n, len(members)), replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


INNER_FOLDS = 3  # folds of the labelled clips the refit's layers are chosen on (as adapt)


class Remedies:
    """Every remedy's class probabilities for some target clips, given labelled ones.
    `layer_choice` "target": the refit's layers are chosen on folds of the labelled clips it is
    fitted on (`emoknn.refit.choose_layers_on_folds`, as `emoknn adapt` does), falling back to
    the source's choice where they cannot be cross-validated; "source": always the source's."""

    def __init__(self, source: Corpus, settings: RefitSettings, layer_choice: str = "target"
                 ) -> None:  # fmt: skip
        self.source, self.settings, self.layer_choice = source, settings, layer_choice
        self.zero_shot = self._fit(source.features, source.labels, None)
        self.chosen_layers: list[tuple[int, ...]] = []  # every refit's layers, for the report

    def _fit(self, features, labels, target_rows: int | None, settings=None):
        is_target = np.zeros(len(labels), bool)
        if target_rows:
            is_target[-target_rows:] = True
        return fit_linear_head(features, labels, len(SHARED), is_target,
                               settings or self.settings)  # fmt: skip

    def layers_for(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[int, ...]:
        """The refit's layers for labelled clips (x, y): chosen on their own folds."""
        layers = None
        if self.layer_choice == "target":
            try:
                folds = assign_folds(y, groups.tolist(), INNER_FOLDS)
            except Exception:  # too few speakers or clips to fold: the source's choice
                folds = None
            if folds is not None:
                layers, _ = choose_layers_on_folds(self.source.features, self.source.labels, x,
                                                   y, folds, len(SHARED), self.settings)
        layers = layers or self.settings.layers
        self.chosen_layers.append(layers)
        return layers

    def refit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None):
        settings = self.settings
        if groups is not None:
            settings = RefitSettings(self.layers_for(x, y, groups), settings.c,
                                     settings.target_share)  # fmt: skip
        return self._fit(np.concatenate([self.source.features, x]),
                         np.concatenate([self.source.labels, y]), len(y), settings)  # fmt: skip

    def alone(self, x: np.ndarray, y: np.ndarray):
        return self._fit(x, y, len(y))

    @staticmethod
    def with_knn(head, x, y, groups, queries) -> np.ndarray:
        """The head interpolated with a kNN over (x, y), k/α/T tuned as adapt tunes them."""
        ids = [str(i) for i in range(len(y))]
        store, tuning = tune_on(head.embed(x).astype(np.float32), y, head.probs(x), ids, groups,
                                list(SHARED), "bench", None, None, "ua")  # fmt: skip
        return knn_predict_probs(head.embed(queries).astype(np.float32), head.probs(queries),
                                 store, tuning.interpolated)  # fmt: skip

    def candidates(self, x, y, groups, queries) -> dict[str, np.ndarray]:
        """The four candidates adapt chooses among, fitted on (x, y), for `queries`."""
        refit = self.refit(x, y, groups)
        return {
            "zero-shot": self.zero_shot.probs(queries),
            "knn": self.with_knn(self.zero_shot, x, y, groups, queries),
            "refit": refit.probs(queries),
            "refit+knn": self.with_knn(refit, x, y, groups, queries),
        }

    def choose(self, x, y, groups, max_folds: int) -> tuple[str, dict[str, float]]:
        """adapt's choice: each candidate scored on held-out folds of (x, y) (grouped by
        speaker, at most `max_folds`), the best mean UA kept (ties: the earlier in CANDIDATES,
        zero-shot first)."""
        folds = assign_folds(y, groups.tolist(), max_folds)
        scores = {name: [] for name in CANDIDATES}
        for fold in range(int(folds.max()) + 1):
            test, rest = folds == fold, folds != fold
            if len(np.unique(y[rest])) < 2:
                continue
            for name, probs in self.candidates(x[rest], y[rest], groups[rest], x[test]).items():
                scores[name].append(unweighted_accuracy(y[test], probs.argmax(axis=1)))
        means = {name: float(np.mean(values)) for name, values in scores.items()}
        return max(CANDIDATES, key=lambda name: (means[name], -CANDIDATES.index(name))), means


def run_direction(source: Corpus, target: Corpus, clips: list[int], draws: int, folds: int,
                  settings: RefitSettings, select_folds: int, log=print,
                  save=None, normalisations=NORMALISATIONS,
                  layer_choice: str = "target") -> list[dict]:  # fmt: skip
    """Every (normalisation, fold, n, draw, remedy) UA of one direction (`save(records)` after
    each normalisation: a long run keeps what it measured)."""
    records: list[dict] = []
    for how in normalisations:
        src, tgt = normalised(source, how), normalised(target, how)
        remedies = Remedies(src, settings, layer_choice)
        for fold, test in enumerate(test_folds(tgt.speakers, folds)):
            pool = np.flatnonzero(~test)
            x_test, y_test = tgt.features[test], tgt.labels[test]

            def score(probs, y_test=y_test):
                return unweighted_accuracy(y_test, probs.argmax(axis=1))

            base = {"normalisation": how, "fold": fold}
            records.append({**base, "n": 0, "draw": 0, "remedy": "zero-shot",
                            "ua": score(remedies.zero_shot.probs(x_test))})  # fmt: skip
            in_corpus = remedies.alone(tgt.features[pool], tgt.labels[pool])
            records.append({**base, "n": None, "draw": 0, "remedy": "in-corpus",
                            "ua": score(in_corpus.probs(x_test))})  # fmt: skip
            for n in clips:
                for draw in range(draws):
                    rng = np.random.default_rng([draw, fold, n])
                    rows = draw_clips(tgt.labels, pool, n, rng)
                    x, y, groups = tgt.features[rows], tgt.labels[rows], tgt.speakers[rows]
                    row = {**base, "n": n, "draw": draw}
                    for name, probs in remedies.candidates(x, y, groups, x_test).items():
                        records.append({**row, "remedy": name, "ua": score(probs)})
                    records[-2]["layers"] = list(remedies.chosen_layers[-1])  # the refit's
                    if n >= 2:
                        records.append({**row, "remedy": "alone",
                                        "ua": score(remedies.alone(x, y).probs(x_test))})
                    try:
                        chosen, _ = remedies.choose(x, y, groups, select_folds)
                    except Exception:  # too few speakers or clips to cross-validate: adapt refuses
                        chosen = None
                    if chosen is not None:
                        ua = next(r["ua"] for r in records[::-1]
                                  if r["remedy"] == chosen and r["n"] == n and r["draw"] == draw
                                  and r["fold"] == fold and r["normalisation"] == how)
                        records.append({**row, "remedy": "adapted", "ua": ua, "chosen": chosen})
            log(f"  {source.name}→{target.name} {how} fold {fold} done")
        if save is not None:
            save(records)
    return records


def summarise(records: list[dict]) -> dict:
    """(normalisation, remedy, n) → mean UA over folds × draws and a 95 % interval over folds
    (each fold's draws averaged first: the folds are the independent units)."""
    table: dict = {}
    keys = {(r["normalisation"], r["remedy"], r["n"]) for r in records}
    for key in keys:
        rows = [r for r in records if (r["normalisation"], r["remedy"], r["n"]) == key]
        per_fold = [np.mean([r["ua"] for r in rows if r["fold"] == f])
                    for f in sorted({r["fold"] for r in rows})]  # fmt: skip
        _, low, high = mean_confidence_interval(np.array(per_fold))
        chosen = [r["chosen"] for r in rows if "chosen" in r]
        table[key] = {"ua": 100 * float(np.mean([r["ua"] for r in rows])),
                      "low": 100 * low, "high": 100 * high, "folds": len(per_fold),
                      "chosen": {c: chosen.count(c) for c in sorted(set(chosen))}}  # fmt: skip
    return table


def print_table(table: dict, clips: list[int], title: str, log=print) -> None:
    ns = [0, *clips]
    log(f"\n{title}: UA % (mean over test folds × draws; 95 % interval over test folds)")
    log("| normalisation | remedy | " + " | ".join(f"n = {n}" for n in ns) + " | all |")
    log("|---|---|" + "---:|" * (len(ns) + 1))
    for how in NORMALISATIONS:
        for remedy in REMEDIES:
            cells = []
            for n in ns:
                adapting = remedy in ("adapted", "knn", "refit", "refit+knn")
                key = (how, "zero-shot", 0) if n == 0 and adapting else (how, remedy, n)
                row = table.get(key)
                cells.append("" if row is None or remedy == "in-corpus" else
                             f"{row['ua']:.1f} [{row['low']:.1f}, {row['high']:.1f}]")  # fmt: skip
            full = table.get((how, remedy, None))
            cells.append("" if full is None else f"{full['ua']:.1f} [{full['low']:.1f}, "
                                                 f"{full['high']:.1f}]")  # fmt: skip
            log(f"| {how} | {remedy} | " + " | ".join(cells) + " |")


def plot(tables: dict[str, dict], clips: list[int], path: Path) -> None:
    """One panel per (direction, normalisation): UA against n per remedy, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directions = list(tables)
    figure, axes = plt.subplots(len(directions), len(NORMALISATIONS), squeeze=False,
                                figsize=(4.2 * len(NORMALISATIONS), 3.4 * len(directions)),
                                sharey=True)  # fmt: skip
    ns = [0, *clips]
    positions = np.arange(len(ns))
    for row, direction in enumerate(directions):
        table = tables[direction]
        for column, how in enumerate(NORMALISATIONS):
            axis = axes[row][column]
            for remedy in ("zero-shot", "knn", "refit", "refit+knn", "adapted", "alone"):
                points = [(i, table.get((how, "zero-shot" if n == 0 else remedy, n)))
                          for i, n in enumerate(ns)
                          if n or remedy in ("adapted", "refit", "knn", "refit+knn")]  # fmt: skip
                points = [(i, r) for i, r in points if r is not None]
                if remedy == "zero-shot":  # a flat line (absent when `how` was not run)
                    base = table.get((how, "zero-shot", 0))
                    points = [(i, base) for i in range(len(ns))] if base else []
                if not points:
                    continue
                x = positions[[i for i, _ in points]]
                y = np.array([r["ua"] for _, r in points])
                low = np.array([r["low"] for _, r in points])
                high = np.array([r["high"] for _, r in points])
                style = "--" if remedy == "zero-shot" else "-"
                line, = axis.plot(x, y, style, marker="o", markersize=3, label=remedy)
                axis.fill_between(x, low, high, color=line.get_color(), alpha=0.12)
            full = table.get((how, "in-corpus", None))
            if full is not None:
                axis.axhline(full["ua"], color="black", linewidth=0.8, linestyle=":",
                             label="in-corpus (all other speakers)")  # fmt: skip
            axis.set_xticks(positions, [str(n) for n in ns])
            axis.set_title(f"{direction}, {how}", fontsize=9)
            axis.set_xlabel("labelled target clips per class")
            axis.grid(alpha=0.3)
        axes[row][0].set_ylabel("UA % on test speakers")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def time_adapt(run: str, target_path: str, out: Path, per_class: int = 10, log=print) -> dict:
    """`emoknn adapt` on a frozen run with `per_class` labelled clips per class of the target
    (60 for 6 classes), timed from the loaded model to the written folder."""
    import csv
    import shutil

    from emoknn.adapt import adapt_model, load_source

    utterances = [u for u in load_corpus(target_path) if u.label in SHARED]
    rng = np.random.default_rng(0)
    chosen = []
    for label in SHARED:
        members = [u for u in utterances if u.label == label]
        chosen += [members[i] for i in sorted(rng.choice(len(members), per_class, replace=False))]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "adapt-clips.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows([str(u.path), u.label, u.speaker] for u in chosen)
    target = out / "adapted"
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    source = load_source(run)
    loaded = time.perf_counter()
    result = adapt_model(source, manifest, target, device="cpu")
    seconds = time.perf_counter() - loaded
    remedy = result.report["remedy"]
    log(f"\nadapt with {len(chosen)} clips: {seconds:.1f} s after loading the model "
        f"({loaded - start:.1f} s to load); shipped {remedy['chosen']}; held-out UA "
        + ", ".join(f"{k} {100 * v:.1f}" for k, v in remedy["candidates"].items())
        + "; steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.report["seconds"].items())
        + f"; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    return {"clips": len(chosen), "seconds": seconds, "load_seconds": loaded - start,
            "steps": result.report["seconds"], "load": os.getloadavg()[0],
            "remedy": remedy}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="source corpus folder")
    parser.add_argument("--target", required=True, help="target corpus folder")
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--feature-cache", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", default="1,2,5,10,20", help="labelled clips per class, n > 0")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--test-folds", type=int, default=6)
    parser.add_argument("--both-ways", action="store_true", help="also target → source")
    parser.add_argument("--reverse", action="store_true", help="target → source only")
    parser.add_argument("--layers", default="auto", help="auto, or e.g. 2,3,4")
    parser.add_argument("--layer-choice", choices=("target", "source"), default="target",
                        help="the refit's layers: chosen on folds of the labelled target clips "
                        "(as emoknn adapt), or the source's choice")
    parser.add_argument("--normalisations", default=",".join(NORMALISATIONS))
    parser.add_argument("--c", type=float, default=0.1)
    parser.add_argument("--target-share", type=float, default=0.5)
    parser.add_argument("--select-folds", type=int, default=4,
                        help="most folds of the labelled clips adapt's choice is made on "
                        "(adapt itself: up to 10; fewer keeps the bench minutes)")
    parser.add_argument("--time-adapt-run", help="a frozen run folder of the source corpus: "
                        "time `emoknn adapt` with 10 target clips per class")
    args = parser.parse_args(argv)
    clips = [int(n) for n in args.clips.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    corpora = [load_features(args.source, args.encoder, args.feature_cache),
               load_features(args.target, args.encoder, args.feature_cache)]  # fmt: skip
    pairs = [(0, 1), (1, 0)] if args.both_ways else [(1, 0)] if args.reverse else [(0, 1)]
    tables, results = {}, {}
    for a, b in pairs:
        source, target = corpora[a], corpora[b]
        layers = (tuple(int(v) for v in args.layers.split(",")) if args.layers != "auto"
                  else choose_layers(source, args.c))  # fmt: skip
        settings = RefitSettings(layers, args.c, args.target_share)
        name = f"{source.name} → {target.name}"
        print(f"{name}: layers {list(layers)} (chosen on {source.name}'s validation speakers), "
              f"C {args.c}, target share {args.target_share}", flush=True)
        partial = args.out / f"records-{source.name}-{target.name}.json"
        records = run_direction(source, target, clips, args.draws, args.test_folds, settings,
                                args.select_folds, log=lambda m: print(m, flush=True),
                                save=lambda r, p=partial: p.write_text(json.dumps(r)),
                                normalisations=args.normalisations.split(","),
                                layer_choice=args.layer_choice)  # fmt: skip
        tables[name] = summarise(records)
        print_table(tables[name], clips, name)
        results[name] = {"settings": settings.to_dict(), "records": records,
                         "table": [{"normalisation": k[0], "remedy": k[1], "n": k[2], **v}
                                   for k, v in sorted(tables[name].items(), key=str)]}  # fmt: skip
    if args.time_adapt_run:
        results["adapt_timing"] = time_adapt(args.time_adapt_run, args.target, args.out)
    results["seconds"] = time.perf_counter() - start
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot(tables, clips, args.out / "adaptation.png")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'adaptation.png'} "
          f"({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
